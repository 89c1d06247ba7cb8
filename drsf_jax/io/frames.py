"""Frame arrays at the boundary: uint8 0..255 or float [0, 1], never a guessed scale.

The lowest layer of the package (NumPy only). Every public entry point that takes frames
converts them with one of these two functions, so uint8 frames are never read as values
0..255 by a model that expects [0, 1] (the trap ``np.asarray(frames, np.float32)`` set).
"""

import numpy as np


def as_uint8_frames(frames, what: str = "frames") -> np.ndarray:
  """uint8 RGB frames as they are; float frames in [0, 1] rounded to uint8.

  Raises ValueError for other dtypes, floats outside [0, 1] (beyond 1e-3) or a last axis
  that is not 3.
  """
  a = np.asarray(frames)
  if a.ndim < 3 or a.shape[-1] != 3:
    raise ValueError(f"{what} must be RGB (..., H, W, 3), got shape {a.shape}")
  if a.dtype == np.uint8:
    return a
  if np.issubdtype(a.dtype, np.floating):
    _check_unit_range(a, what)
    return np.clip(np.rint(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
  raise ValueError(f"{what} must be uint8 (0..255) or float in [0, 1], got dtype {a.dtype}")


def as_unit_frames(frames, what: str = "frames") -> np.ndarray:
  """float32 RGB frames in [0, 1]: uint8 divided by 255, floats checked and cast.

  Raises ValueError like :func:`as_uint8_frames`.
  """
  a = np.asarray(frames)
  if a.ndim < 3 or a.shape[-1] != 3:
    raise ValueError(f"{what} must be RGB (..., H, W, 3), got shape {a.shape}")
  if a.dtype == np.uint8:
    return a.astype(np.float32) / 255.0
  if np.issubdtype(a.dtype, np.floating):
    _check_unit_range(a, what)
    return a.astype(np.float32, copy=False)
  raise ValueError(f"{what} must be uint8 (0..255) or float in [0, 1], got dtype {a.dtype}")


def _check_unit_range(a: np.ndarray, what: str):
  if a.size and not np.isfinite(a).all():
    raise ValueError(f"{what} hold NaN or infinite values")
  if a.size and (float(a.min()) < -1e-3 or float(a.max()) > 1.0 + 1e-3):
    raise ValueError(f"float {what} must be in [0, 1] (got values in [{float(a.min()):.3g}, "
                     f"{float(a.max()):.3g}]); pass uint8 frames or divide by 255")
