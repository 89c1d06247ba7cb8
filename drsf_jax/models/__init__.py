"""Flax ports of the victim networks, one module per family (networks only, no I/O).

Owns: ``layers`` (PyTorch-exact blocks), ``retinaface``, ``mtcnn``, ``fan``, ``gaze``
(MPIIGaze, MPIIFaceGaze, ETH-XGaze).

May import: geometry, io.
"""
