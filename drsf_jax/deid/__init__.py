"""De-identification: obfuscate the faces, attack the obfuscated frames, write the video.

Owns: ``obfuscation`` (pixelate / blur / gaussian / solid on each face's square),
``attacks`` (Optax attacks over the frames and the jitted stopping-cascade loop), ``crop``
(the crop-local window around a batch's faces), ``temporal`` (missed frames and lost faces
filled from neighbours), ``pipeline`` (``DeidConfig``, ``Deidentifier``, ``deidentify``,
the verification of the written file), ``corpus`` (many videos, resumable, across
processes), ``report`` (the privacy-utility grid over obfuscation levels).

May import: geometry, io, models, victims, evaluation.
"""
