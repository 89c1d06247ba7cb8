"""Pinhole cameras: intrinsics and distortion in ptgaze's / OpenCV's conventions.

:class:`Camera` is read from a ptgaze calibration YAML or made as ptgaze's dummy camera
(focal = width, principal point at the centre, no distortion) when a video has none;
:func:`make_camera` checks that a calibration matches the frames' size. Host-side NumPy.
"""

import dataclasses
import os
from typing import Any, Mapping

import cv2
import numpy as np


# ---- camera ------------------------------------------------------------------------------

_CV_DIST_LENGTHS = (4, 5, 8, 12, 14)


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
  """A pinhole camera: intrinsics and distortion, in ptgaze's / OpenCV's conventions.

  Attributes:
    width: image width in pixels.
    height: image height in pixels.
    camera_matrix: (3, 3) float64 intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
    dist_coefficients: (N,) float64 OpenCV distortion coefficients (k1, k2, p1, p2[, k3...]).
  """
  width: int
  height: int
  camera_matrix: np.ndarray
  dist_coefficients: np.ndarray

  @classmethod
  def dummy(cls, width: int, height: int) -> "Camera":
    """ptgaze's dummy camera: fx = fy = width, principal point (width // 2, height // 2).

    The integer division follows ptgaze's ``Camera.create_dummy`` exactly (for odd sizes
    the principal point is half a pixel left/up of the geometric centre). No distortion.
    """
    k = np.array([[width, 0, width // 2], [0, width, height // 2], [0, 0, 1]], np.float64)
    return cls(int(width), int(height), k, np.zeros(5, np.float64))

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> "Camera":
    """Reads a calibration YAML file in ptgaze's (OpenCV-calibration-like) format::

        image_width: 640
        image_height: 480
        camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
        distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, p1, p2, k3]}

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file does not parse or a field is missing or malformed; the
        message names the file and the problem.
    """
    import yaml  # PyYAML ships with flax; imported lazily, only calibration files need it.
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
      text = f.read()
    try:
      data = yaml.safe_load(text)
    except yaml.YAMLError as e:
      raise ValueError(f"camera calibration {path!r} is not valid YAML: {e}") from e
    return cls.from_dict(data, source=path)

  @classmethod
  def from_dict(cls, data: Any, source: str = "<dict>") -> "Camera":
    """Builds a camera from the parsed calibration mapping (see :meth:`from_file`)."""
    def fail(problem: str):
      raise ValueError(f"camera calibration {source!r}: {problem}")

    if not isinstance(data, Mapping):
      fail(f"expected a mapping at the top level, got {type(data).__name__}")
    for key in ("image_width", "image_height", "camera_matrix", "distortion_coefficients"):
      if key not in data:
        fail(f"missing field {key!r}")
    size = {}
    for key in ("image_width", "image_height"):
      v = data[key]
      if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v <= 0:
        fail(f"field {key!r} must be a positive integer, got {v!r}")
      size[key] = int(v)

    def matrix(key: str) -> np.ndarray:
      node = data[key]
      if not isinstance(node, Mapping) or "data" not in node:
        fail(f"field {key!r} must be a mapping with a 'data' list")
      try:
        values = np.asarray(node["data"], dtype=np.float64).ravel()
      except (TypeError, ValueError):
        fail(f"field {key}.data must be a list of numbers, got {node['data']!r}")
      if not np.all(np.isfinite(values)):
        fail(f"field {key}.data has non-finite values")
      if "rows" in node and "cols" in node:
        try:
          n = int(node["rows"]) * int(node["cols"])
        except (TypeError, ValueError):
          fail(f"field {key}.rows/cols must be integers")
        if n != values.size:
          fail(f"field {key} declares {node['rows']}x{node['cols']} but data has "
               f"{values.size} values")
      return values

    k = matrix("camera_matrix")
    if k.size != 9:
      fail(f"camera_matrix.data must have 9 values (3x3), got {k.size}")
    k = k.reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
      fail(f"camera_matrix focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}")
    if not np.allclose(k[2], [0, 0, 1]) or k[1, 0] != 0:
      fail(f"camera_matrix must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {k.tolist()}")
    dist = matrix("distortion_coefficients")
    if dist.size not in _CV_DIST_LENGTHS:
      fail(f"distortion_coefficients.data must have one of {_CV_DIST_LENGTHS} values, "
           f"got {dist.size}")
    return cls(size["image_width"], size["image_height"], k, dist)

  @property
  def has_distortion(self) -> bool:
    return bool(np.any(self.dist_coefficients != 0))

  def undistort(self, image: np.ndarray) -> np.ndarray:
    """``cv2.undistort`` with this camera (what ptgaze's demo does before detection)."""
    if not self.has_distortion:
      return image
    return cv2.undistort(image, self.camera_matrix, self.dist_coefficients)


def make_camera(calibration: str | os.PathLike | None, width: int, height: int) -> Camera:
  """The camera for frames of ``width`` x ``height``: from a calibration file, else dummy.

  Raises:
    ValueError: the calibration is malformed or was made for another image size (its
      intrinsics would not describe these frames).
  """
  if calibration is None:
    return Camera.dummy(width, height)
  cam = Camera.from_file(calibration)
  if (cam.width, cam.height) != (width, height):
    raise ValueError(f"camera calibration {os.fspath(calibration)!r} is for "
                     f"{cam.width}x{cam.height} images but the frames are {width}x{height}")
  return cam
