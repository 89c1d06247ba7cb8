"""Geometry shared by every stage: boxes, warps, cameras, head pose, gaze normalisation.

Owns: ``bbox`` (IoU, largest face, the obfuscated square around a face), ``warping``
(bilinear sampling, OpenCV-compatible affine / perspective warps in jnp, differentiable in
the image), ``face_model`` (ptgaze's 3D templates, 68 -> 5 landmarks), ``cameras``
(pinhole cameras, calibration files), ``headpose`` (solvePnP head pose, rotations),
``normalization`` (ptgaze's normalised cameras, face/eye centres, homographies, eye-patch
equalisation), ``gaze_vectors`` (pitch/yaw <-> vectors, angles).

The lowest layer: NumPy, OpenCV and JAX only.

May import: nothing in drsf_jax.
"""
