"""The models the attack must keep working, behind one interface.

Owns: ``interface`` (the :class:`~drsf_jax.victims.interface.Victim` protocol: predict /
targets / loss, and :class:`FaceContext`), ``detectors`` (loading the detectors by name for
detection on the host), ``registry`` (``load_victim``: the detector and FAN victims),
``gaze`` (the gaze victims: ptgaze geometry, jittered geometries, re-fitted equalisation),
``inference`` (``Predictor`` and ``run``: the authorized models on a video, as schema-1
predictions).

May import: geometry, io, models.
"""
