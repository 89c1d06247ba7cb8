"""Constants and helpers of the geometry tests (fixtures are in conftest.py)."""

import numpy as np

MODES = ("ETH-XGaze", "MPIIFaceGaze", "MPIIGaze")
PTGAZE_FILES = {"ETH-XGaze": "eth-xgaze.yaml", "MPIIFaceGaze": "mpiifacegaze.yaml",
                "MPIIGaze": "mpiigaze.yaml"}


def rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def rotation_angle_deg(r1: np.ndarray, r2: np.ndarray) -> float:
  c = (np.trace(r1.T @ r2) - 1.0) / 2.0
  return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
