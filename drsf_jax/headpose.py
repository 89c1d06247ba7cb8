"""Head pose and ptgaze-style gaze normalisation (host geometry + differentiable warps).

This module reproduces the geometry of hysts' ptgaze (v0.3.0): fitting a 3D face
template to 2D landmarks with ``cv2.solvePnP``, computing the face and eye centres,
the normalising rotation and homography of ``HeadPoseNormalizer`` (Zhang et al.,
"Revisiting data normalization for appearance-based gaze estimation", ETRA 2018), and
the conversion of predicted (pitch, yaw) back to a gaze vector in camera coordinates.

Split of the work:

* Host side (numpy / OpenCV, once per frame, outside the attack loop): :class:`Camera`,
  :func:`estimate_head_pose`, :func:`face_centers`, :func:`normalizing_matrix`,
  :func:`normalization_geometry`, :func:`normalize_host`, :func:`normalize_eye_host`,
  :func:`equalization_lut`, :func:`head_pose_euler_deg`. Their outputs (homographies,
  rotations, look-up tables) are fixed data for the loss.
* Inside the loss (jnp, differentiable in the frames): :func:`normalize`,
  :func:`normalize_gray_equalized` (MPIIGaze eye patches; :func:`rgb_to_gray`,
  :func:`equalize_with_lut`), :func:`pitch_yaw_to_vector`, :func:`vector_to_pitch_yaw`,
  :func:`denormalize_gaze`, :func:`angle_between_deg`.

Normalised cameras (:data:`PRESETS`, from ptgaze's configs): ETH-XGaze 224x224, f = 960,
distance 0.6 m, face centre from eye corners + nose; MPIIFaceGaze 224x224, f = 1600,
distance **1.0** m, face centre from eye corners + mouth; MPIIGaze one 60x36 (w x h)
patch per eye, f = 960, distance 0.6 m, grayscale + ``cv2.equalizeHist``. Sizes are
given as ``size_hw = (height, width)`` throughout, like array shapes.

Coordinate conventions (as ptgaze): camera coordinates have X to the right *as seen
from the camera* (image right), Y down, Z forward (into the scene), in metres. The face
template has its axes aligned with the camera when the face looks straight into the
camera (identity head rotation); the face looks along its own -Z. "Right eye" (``reye``)
is the **subject's** right eye, which appears on the **image-left** side (68-point
indices 36-41); "left eye" (``leye``) is the subject's left eye, on the image right
(indices 42-47).

5-point landmarks: RetinaFace (biubug6) and MTCNN (facenet-pytorch) both return
``[eye on the image left, eye on the image right, nose tip, mouth corner on the image
left, mouth corner on the image right]`` in image pixel coordinates, i.e. for a
frontal, upright face ``[subject's right eye, subject's left eye, nose, subject's right
mouth corner, subject's left mouth corner]``. :data:`FACE_MODEL_5` is ordered the same
way, so those detector outputs can be passed unchanged (no mirroring or reordering).
Its eye points are the means of the template's 6 eye-contour points (the detectors mark
roughly the eye centre / pupil); the face and eye *centres* used for normalisation are
always taken from the full 68-point template placed with the fitted pose.
"""

import dataclasses
import os
from typing import Any, Mapping, NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from drsf_jax import geometry

# ---- 3D face templates -------------------------------------------------------------------

# Canonical 3D positions of the 68 Multi-PIE / iBUG landmarks (0-based indices), in metres,
# in the template frame described in the module docstring (origin at the nose tip, point
# 30; outer eye corners 36 and 45 are 90 mm apart). Numeric data from hysts/ptgaze
# (ptgaze/common/face_model_68.py, FaceModel68.LANDMARKS, v0.3.0), MIT licence,
# Copyright (c) 2020 hysts.
FACE_MODEL_68 = np.array([
    [-0.07141807, -0.02827123,  0.08114384],  # 0
    [-0.07067417, -0.00961522,  0.08035654],  # 1
    [-0.06844646,  0.00895837,  0.08046731],  # 2
    [-0.06474301,  0.02708319,  0.08045689],  # 3
    [-0.05778475,  0.04384917,  0.07802191],  # 4
    [-0.04673809,  0.05812865,  0.07192291],  # 5
    [-0.03293922,  0.06962711,  0.06106274],  # 6
    [-0.01744018,  0.07850638,  0.04752971],  # 7
    [ 0.00000000,  0.08105961,  0.04251950],  # 8
    [ 0.01744018,  0.07850638,  0.04752971],  # 9
    [ 0.03293922,  0.06962711,  0.06106274],  # 10
    [ 0.04673809,  0.05812865,  0.07192291],  # 11
    [ 0.05778475,  0.04384917,  0.07802191],  # 12
    [ 0.06474301,  0.02708319,  0.08045689],  # 13
    [ 0.06844646,  0.00895837,  0.08046731],  # 14
    [ 0.07067417, -0.00961522,  0.08035654],  # 15
    [ 0.07141807, -0.02827123,  0.08114384],  # 16
    [-0.05977758, -0.04478580,  0.04562813],  # 17
    [-0.05055506, -0.05334294,  0.03834846],  # 18
    [-0.03756330, -0.05609241,  0.03158344],  # 19
    [-0.02423648, -0.05463779,  0.02510117],  # 20
    [-0.01168798, -0.04986641,  0.02050337],  # 21
    [ 0.01168798, -0.04986641,  0.02050337],  # 22
    [ 0.02423648, -0.05463779,  0.02510117],  # 23
    [ 0.03756330, -0.05609241,  0.03158344],  # 24
    [ 0.05055506, -0.05334294,  0.03834846],  # 25
    [ 0.05977758, -0.04478580,  0.04562813],  # 26
    [ 0.00000000, -0.03515768,  0.02038099],  # 27
    [ 0.00000000, -0.02350421,  0.01366667],  # 28
    [ 0.00000000, -0.01196914,  0.00658284],  # 29
    [ 0.00000000,  0.00000000,  0.00000000],  # 30
    [-0.01479319,  0.00949072,  0.01708772],  # 31
    [-0.00762319,  0.01179908,  0.01419133],  # 32
    [ 0.00000000,  0.01381676,  0.01205559],  # 33
    [ 0.00762319,  0.01179908,  0.01419133],  # 34
    [ 0.01479319,  0.00949072,  0.01708772],  # 35
    [-0.04500000, -0.03241500,  0.03976718],  # 36
    [-0.03705460, -0.03717230,  0.03579593],  # 37
    [-0.02751660, -0.03714814,  0.03425518],  # 38
    [-0.01919724, -0.03101962,  0.03359268],  # 39
    [-0.02813814, -0.02943970,  0.03345652],  # 40
    [-0.03763013, -0.02948442,  0.03497732],  # 41
    [ 0.01919724, -0.03101962,  0.03359268],  # 42
    [ 0.02751660, -0.03714814,  0.03425518],  # 43
    [ 0.03705460, -0.03717230,  0.03579593],  # 44
    [ 0.04500000, -0.03241500,  0.03976718],  # 45
    [ 0.03763013, -0.02948442,  0.03497732],  # 46
    [ 0.02813814, -0.02943970,  0.03345652],  # 47
    [-0.02847002,  0.03331642,  0.03667993],  # 48
    [-0.01796181,  0.02843251,  0.02335485],  # 49
    [-0.00742947,  0.02580570,  0.01630812],  # 50
    [ 0.00000000,  0.02755550,  0.01538404],  # 51
    [ 0.00742947,  0.02580570,  0.01630812],  # 52
    [ 0.01796181,  0.02843251,  0.02335485],  # 53
    [ 0.02847002,  0.03331642,  0.03667993],  # 54
    [ 0.01836060,  0.04233930,  0.02523355],  # 55
    [ 0.00808323,  0.04614537,  0.01820142],  # 56
    [ 0.00000000,  0.04688623,  0.01716318],  # 57
    [-0.00808323,  0.04614537,  0.01820142],  # 58
    [-0.01836060,  0.04233930,  0.02523355],  # 59
    [-0.02409981,  0.03367606,  0.03421466],  # 60
    [-0.00756874,  0.03192644,  0.01851247],  # 61
    [ 0.00000000,  0.03263345,  0.01732347],  # 62
    [ 0.00756874,  0.03192644,  0.01851247],  # 63
    [ 0.02409981,  0.03367606,  0.03421466],  # 64
    [ 0.00771924,  0.03711846,  0.01940396],  # 65
    [ 0.00000000,  0.03791103,  0.01808050],  # 66
    [-0.00771924,  0.03711846,  0.01940396],  # 67
], dtype=np.float64)
FACE_MODEL_68.setflags(write=False)

# 68-point index groups (0-based). "R" is the subject's right (image left).
REYE_CORNERS = (36, 39)
LEYE_CORNERS = (42, 45)
REYE_CONTOUR = tuple(range(36, 42))
LEYE_CONTOUR = tuple(range(42, 48))
NOSE_TIP = 30
NOSE_WINGS = (31, 35)
MOUTH_CORNERS = (48, 54)


def landmarks68_to_5(points: np.ndarray) -> np.ndarray:
  """The RetinaFace/MTCNN-style 5 points from 68 points (2D or 3D), ``(..., 68, D) -> (..., 5, D)``.

  Order: [image-left eye centre (subject's right eye: mean of points 36-41), image-right
  eye centre (mean of 42-47), nose tip (30), image-left mouth corner (48), image-right
  mouth corner (54)]: the order RetinaFace and MTCNN emit.
  """
  p = np.asarray(points, np.float64)
  if p.shape[-2] != 68:
    raise ValueError(f"expected 68 points on axis -2, got shape {p.shape}")
  return np.stack([
      p[..., REYE_CONTOUR, :].mean(axis=-2),
      p[..., LEYE_CONTOUR, :].mean(axis=-2),
      p[..., NOSE_TIP, :],
      p[..., MOUTH_CORNERS[0], :],
      p[..., MOUTH_CORNERS[1], :],
  ], axis=-2)


# The 5-point subset of the template, in the RetinaFace / MTCNN landmark order.
FACE_MODEL_5 = landmarks68_to_5(FACE_MODEL_68)
FACE_MODEL_5.setflags(write=False)

TEMPLATES = {"68": FACE_MODEL_68, "5": FACE_MODEL_5}


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


# ---- rotations ---------------------------------------------------------------------------

def _as_rotation_matrix(rotation: np.ndarray) -> np.ndarray:
  """A (3, 3) rotation matrix from a rotation vector (3,) or a matrix (3, 3)."""
  r = np.asarray(rotation, np.float64)
  if r.shape == (3,):
    return cv2.Rodrigues(r.reshape(3, 1))[0]
  if r.shape == (3, 3):
    return r
  raise ValueError(f"rotation must be a rotation vector (3,) or a matrix (3, 3), got {r.shape}")


def head_pose_euler_deg(rotation: np.ndarray) -> np.ndarray:
  """Head pose as (pitch, yaw, roll) in degrees, as ptgaze's demo reports it.

  ptgaze takes ``Rotation.as_euler("XYZ")`` (intrinsic X, then Y, then Z: R = Rx(a)
  Ry(b) Rz(c)) and flips signs with ``Face.change_coordinate_system`` (x [-1, 1, -1]).
  So pitch = -a (positive: head up), yaw = b, roll = -c; all zero for a face looking
  straight into the camera. Gimbal lock at |yaw| = 90 degrees is not special-cased.

  Args:
    rotation: head rotation as a rotation vector (3,) or matrix (3, 3).
  """
  r = _as_rotation_matrix(rotation)
  a = np.arctan2(-r[1, 2], r[2, 2])
  b = np.arcsin(np.clip(r[0, 2], -1.0, 1.0))
  c = np.arctan2(-r[0, 1], r[0, 0])
  return np.degrees(np.array([a, b, c])) * np.array([-1.0, 1.0, -1.0])


# ---- head pose ---------------------------------------------------------------------------

class HeadPose(NamedTuple):
  """A fitted head pose: template (model) coordinates -> camera coordinates.

  ``X_cam = R(rotation_vector) @ X_model + translation`` (metres).

  Attributes:
    rotation_vector: (3,) Rodrigues vector of the head rotation.
    translation: (3,) position of the template origin (nose tip) in the camera frame.
    template: which template was fitted, ``"68"`` or ``"5"``.
  """
  rotation_vector: np.ndarray
  translation: np.ndarray
  template: str

  @property
  def rotation_matrix(self) -> np.ndarray:
    return _as_rotation_matrix(self.rotation_vector)

  def model3d(self) -> np.ndarray:
    """The full 68-point template in camera coordinates (68, 3), whatever was fitted."""
    return FACE_MODEL_68 @ self.rotation_matrix.T + self.translation


def estimate_head_pose(landmarks: np.ndarray, camera: Camera,
                       template: str | None = None) -> HeadPose:
  """Fits the 3D face template to 2D landmarks with ``cv2.solvePnP``, as ptgaze does.

  Same call as ptgaze's ``FaceModel.estimate_head_pose``: ``SOLVEPNP_ITERATIVE``
  (Levenberg-Marquardt on the reprojection error) with ``useExtrinsicGuess`` from an
  unrotated head 1 m in front of the camera (rvec = 0, tvec = (0, 0, 1)), the template
  in metres without any rescaling, and **zero** distortion: the landmarks must come
  from an undistorted image (see :meth:`Camera.undistort`).

  Args:
    landmarks: (68, 2) iBUG 68-point or (5, 2) RetinaFace/MTCNN-order landmarks, in
      pixels of the (undistorted) image.
    camera: the camera of the image.
    template: ``"68"``, ``"5"`` or None (chosen from the number of landmarks). ``"5"``
      with 68 landmarks reduces them with :func:`landmarks68_to_5` first.

  Returns:
    A :class:`HeadPose` ``(rotation_vector, translation, template)``.
  """
  pts = np.asarray(landmarks, np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] not in (5, 68):
    raise ValueError(f"landmarks must be (68, 2) or (5, 2), got {pts.shape}")
  if not np.all(np.isfinite(pts)):
    raise ValueError("landmarks contain non-finite values")
  if template is None:
    template = "68" if pts.shape[0] == 68 else "5"
  if template not in TEMPLATES:
    raise ValueError(f"template must be '68' or '5', got {template!r}")
  if template == "5" and pts.shape[0] == 68:
    pts = landmarks68_to_5(pts)
  if pts.shape[0] != TEMPLATES[template].shape[0]:
    raise ValueError(f"template {template!r} needs {TEMPLATES[template].shape[0]} "
                     f"landmarks, got {pts.shape[0]}")
  ok, rvec, tvec = cv2.solvePnP(
      np.ascontiguousarray(TEMPLATES[template]), np.ascontiguousarray(pts),
      camera.camera_matrix, np.zeros((1, 5)), np.zeros((3, 1)), np.array([[0.0], [0.0], [1.0]]),
      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
  if not ok:
    raise RuntimeError("cv2.solvePnP failed")
  return HeadPose(np.asarray(rvec, np.float64).reshape(3), np.asarray(tvec, np.float64).reshape(3),
                  template)


class FaceCenters(NamedTuple):
  """Face and eye centres in camera coordinates (metres), as ptgaze's ``compute_centers``.

  Attributes:
    face: (3,) the face centre: mean of both eyes' corners (36, 39, 42, 45) and the nose
      wings (31, 35) for ETH-XGaze, or the mouth corners (48, 54) for MPII(Face)Gaze.
    reye: (3,) subject's right eye (image left): mean of corners 36 and 39.
    leye: (3,) subject's left eye (image right): mean of corners 42 and 45.
  """
  face: np.ndarray
  reye: np.ndarray
  leye: np.ndarray


def face_centers(pose: HeadPose, mode: "str | NormalizationPreset") -> FaceCenters:
  """ptgaze's face/eye centres for ``mode`` ("ETH-XGaze", "MPIIFaceGaze", "MPIIGaze").

  The full 68-point template is placed with ``pose`` (also when only 5 points were
  fitted), then the centres are means of template points, exactly as ptgaze.
  """
  m = pose.model3d()
  third = NOSE_WINGS if get_preset(mode).face_center == "nose" else MOUTH_CORNERS
  face = m[list(REYE_CORNERS + LEYE_CORNERS + third)].mean(axis=0)
  return FaceCenters(face, m[list(REYE_CORNERS)].mean(axis=0), m[list(LEYE_CORNERS)].mean(axis=0))


# ---- normalisation (host geometry) -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NormalizationPreset:
  """A gaze model's normalised camera (ptgaze ``data/configs`` + ``normalized_camera_params``).

  Attributes:
    name: the mode name as ptgaze and the CLI spell it.
    focal: normalised camera focal length (pixels); principal point = size / 2.
    distance: ``normalized_camera_distance`` in metres.
    size_hw: normalised image (height, width).
    per_eye: True for MPIIGaze (one patch per eye, grayscale + histogram equalisation).
    face_center: the third pair of points in the face centre, besides the eye corners:
      ``"nose"`` (wings 31, 35; ETH-XGaze) or ``"mouth"`` (corners 48, 54; MPII*).
  """
  name: str
  focal: float
  distance: float
  size_hw: tuple[int, int]
  per_eye: bool = False
  face_center: str = "mouth"

  @property
  def camera_matrix(self) -> np.ndarray:
    return normalized_camera_matrix(self.focal, self.size_hw)


# From ptgaze v0.3.0 data/configs/{eth-xgaze,mpiifacegaze,mpiigaze}.yaml and
# data/normalized_camera_params/*.yaml. Note MPIIFaceGaze uses distance 1.0, not 0.6.
PRESETS = {
    "ETH-XGaze": NormalizationPreset("ETH-XGaze", 960.0, 0.6, (224, 224), face_center="nose"),
    "MPIIFaceGaze": NormalizationPreset("MPIIFaceGaze", 1600.0, 1.0, (224, 224)),
    "MPIIGaze": NormalizationPreset("MPIIGaze", 960.0, 0.6, (36, 60), per_eye=True),
}


def get_preset(preset: str | NormalizationPreset) -> NormalizationPreset:
  if isinstance(preset, NormalizationPreset):
    return preset
  if preset not in PRESETS:
    raise ValueError(f"unknown normalisation preset {preset!r}; known: {sorted(PRESETS)}")
  return PRESETS[preset]


def normalized_camera_matrix(focal: float, size_hw: tuple[int, int]) -> np.ndarray:
  """``[[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]]``: ptgaze's normalised cameras."""
  h, w = size_hw
  return np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]], np.float64)


def normalizing_rotation(center_3d: np.ndarray, head_rotation: np.ndarray) -> np.ndarray:
  """The normalising rotation R (rows = new x, y, z axes in camera coordinates).

  z points from the camera to ``center_3d``; y = z x (head x axis), x = y x z, so the
  normalised camera looks at the centre with the head's x axis in its x-z plane
  (Zhang et al. 2018, Sec. 4.2).
  """
  z = np.asarray(center_3d, np.float64).ravel()
  z = z / np.linalg.norm(z)
  head_x = _as_rotation_matrix(head_rotation)[:, 0]
  y = np.cross(z, head_x)
  y = y / np.linalg.norm(y)
  x = np.cross(y, z)
  x = x / np.linalg.norm(x)
  return np.stack([x, y, z])


def normalizing_matrix(camera: Camera, center_3d: np.ndarray, head_rotation: np.ndarray,
                       focal: float, distance: float = 0.6,
                       size_hw: tuple[int, int] = (224, 224)) -> tuple[np.ndarray, np.ndarray]:
  """ptgaze ``HeadPoseNormalizer``'s warp: homography and normalising rotation.

  ``H = K_n @ S @ R @ K^-1`` with ``K_n`` the normalised camera (``focal``, principal
  point ``size / 2``), ``S = diag(1, 1, distance / |center_3d|)`` and ``R`` from
  :func:`normalizing_rotation`. ``cv2.warpPerspective(image, H, (w, h))`` (or
  :func:`normalize`) gives the normalised patch.

  Args:
    camera: the real camera.
    center_3d: (3,) face or eye centre in camera coordinates (metres).
    head_rotation: head rotation vector (3,) or matrix (3, 3).
    focal: normalised focal length (960 ETH-XGaze / MPIIGaze, 1600 MPIIFaceGaze).
    distance: normalised distance (0.6 ETH-XGaze / MPIIGaze, 1.0 MPIIFaceGaze).
    size_hw: normalised image (height, width), e.g. (224, 224) or (36, 60).

  Returns:
    ``(H, R)``: (3, 3) homography from source to normalised pixels, (3, 3) rotation.
  """
  center = np.asarray(center_3d, np.float64).ravel()
  r = normalizing_rotation(center, head_rotation)
  s = np.diag([1.0, 1.0, distance / np.linalg.norm(center)])
  h = normalized_camera_matrix(focal, size_hw) @ s @ r @ np.linalg.inv(camera.camera_matrix)
  return h, r


def normalized_head_pose(head_rotation: np.ndarray, normalizing_rot: np.ndarray) -> np.ndarray:
  """The normalised head pose (pitch, yaw) the MPIIGaze model takes, as ptgaze.

  The z axis of ``R @ R_head`` gives ``(arcsin(z_y), arctan2(z_x, z_z))`` (radians).
  """
  z = (np.asarray(normalizing_rot, np.float64) @ _as_rotation_matrix(head_rotation))[:, 2]
  return np.array([np.arcsin(np.clip(z[1], -1, 1)), np.arctan2(z[0], z[2])])


class PatchGeometry(NamedTuple):
  """Fixed geometry of one normalised patch (a face, or one eye for MPIIGaze).

  Attributes:
    homography: (3, 3) source -> normalised pixel homography.
    rotation: (3, 3) normalising rotation R (for :func:`denormalize_gaze`).
    head_pitch_yaw: (2,) normalised head pose (radians), see :func:`normalized_head_pose`.
    center: (3,) the face/eye centre the patch looks at (camera coordinates, metres).
  """
  homography: np.ndarray
  rotation: np.ndarray
  head_pitch_yaw: np.ndarray
  center: np.ndarray


def normalization_geometry(pose: HeadPose, camera: Camera,
                           preset: str | NormalizationPreset) -> dict[str, PatchGeometry]:
  """All patches a gaze model needs for one face: ``{"face": ...}`` or ``{"reye", "leye"}``.

  MPIIGaze patches are ordered as ptgaze runs them: "reye" (subject's right eye, image
  left; ptgaze mirrors it horizontally before the model and flips the predicted yaw),
  then "leye".
  """
  p = get_preset(preset)
  centers = face_centers(pose, p)
  rot = pose.rotation_matrix
  parts = {"reye": centers.reye, "leye": centers.leye} if p.per_eye else {"face": centers.face}
  out = {}
  for name, c in parts.items():
    h, r = normalizing_matrix(camera, c, rot, p.focal, p.distance, p.size_hw)
    out[name] = PatchGeometry(h, r, normalized_head_pose(rot, r), c)
  return out


# ---- normalisation (images) --------------------------------------------------------------

def normalize_host(image: np.ndarray, homography: np.ndarray,
                   size_hw: tuple[int, int]) -> np.ndarray:
  """Host-side normalised patch: ``cv2.warpPerspective`` (bilinear, zero border), as ptgaze."""
  h, w = size_hw
  return cv2.warpPerspective(image, np.asarray(homography, np.float64), (w, h))


def equalization_lut(gray: np.ndarray) -> np.ndarray:
  """The look-up table ``cv2.equalizeHist`` applies to this uint8 image, (256,) float32.

  Same formula as OpenCV: with ``i0`` the lowest occupied level and ``cdf`` the cumulative
  histogram, ``lut[k] = round((cdf[k] - cdf[i0]) * 255 / (N - cdf[i0]))`` for
  ``k >= i0`` (round half to even, float32 as OpenCV) and 0 below ``i0``; a constant
  image maps to itself (identity table). ``lut[gray]`` equals ``cv2.equalizeHist(gray)``.
  """
  g = np.asarray(gray)
  if g.dtype != np.uint8:
    raise ValueError(f"equalization_lut needs a uint8 image, got {g.dtype}")
  hist = np.bincount(g.ravel(), minlength=256).astype(np.int64)
  total = int(g.size)
  i0 = int(np.flatnonzero(hist)[0])
  if hist[i0] == total:
    return np.arange(256, dtype=np.float32)
  scale = np.float32(255.0) / np.float32(total - hist[i0])
  cdf = np.cumsum(hist) - hist[i0]
  lut = np.rint(cdf.astype(np.float32) * scale)
  lut[:i0] = 0
  return np.clip(lut, 0, 255).astype(np.float32)


def normalize_eye_host(image: np.ndarray, homography: np.ndarray,
                       size_hw: tuple[int, int] = (36, 60)) -> tuple[np.ndarray, np.ndarray]:
  """ptgaze's MPIIGaze eye patch on the host: warp, grayscale, ``cv2.equalizeHist``.

  Args:
    image: (H, W, 3) uint8 **RGB** frame (``RGB2GRAY`` here equals ptgaze's
      ``BGR2GRAY`` on its BGR frame).
    homography: the eye's (3, 3) homography.
    size_hw: patch (height, width).

  Returns:
    ``(patch, lut)``: the (h, w) uint8 equalised patch the model sees (before ptgaze's
    ``ToTensor`` / 255 and the right eye's mirroring), and the (256,) equalisation table
    fitted on this patch, for :func:`equalize_with_lut` inside the loss.
  """
  img = np.asarray(image)
  if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
  gray = cv2.cvtColor(normalize_host(img, homography, size_hw), cv2.COLOR_RGB2GRAY)
  lut = equalization_lut(gray)
  return cv2.equalizeHist(gray), lut


def normalize(frames: jax.Array, homographies: jax.Array,
              size_hw: tuple[int, int]) -> jax.Array:
  """Differentiable normalisation warp: (B, H, W, C) frames -> (B, h, w, C) patches.

  Bilinear sampling with a zero border through :func:`geometry.warp_perspective_batch`
  (``cv2.warpPerspective`` conventions); values stay in the frames' range (no rounding).

  Args:
    frames: (B, H, W, C) float frames (RGB in [0, 1] in this project).
    homographies: (B, 3, 3) from :func:`normalizing_matrix`, fixed data.
    size_hw: static (height, width) of the patches.
  """
  return geometry.warp_perspective_batch(frames, jnp.asarray(homographies, jnp.float32),
                                         tuple(size_hw))


def rgb_to_gray(images: jax.Array) -> jax.Array:
  """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of (..., 3) RGB (OpenCV's weights)."""
  return images @ jnp.array([0.299, 0.587, 0.114], images.dtype)


def _opencv_gray_levels(rgb_levels: jax.Array) -> jax.Array:
  """``cv2.cvtColor(RGB2GRAY)`` on integer-valued (..., 3) levels 0..255, as floats.

  OpenCV 5 (the wheel used here) computes ``(9798 R + 19235 G + 3735 B + 2^14) >> 15``;
  every intermediate is an integer below 2^24, so float32 evaluates it exactly.
  """
  acc = rgb_levels @ jnp.array([9798.0, 19235.0, 3735.0], jnp.float32) + 16384.0
  return jnp.floor(acc / 32768.0)


def _lookup(lut: jax.Array, levels: jax.Array) -> jax.Array:
  """``lut[levels]`` with integer-valued float ``levels``; lut (256,) or (B, 256)."""
  k = jnp.clip(levels, 0, 255).astype(jnp.int32)
  if lut.ndim == 1:
    return lut[k]
  return jnp.take_along_axis(lut, k.reshape(k.shape[0], -1), axis=1).reshape(k.shape)


def equalize_with_lut(gray: jax.Array, lut: jax.Array) -> jax.Array:
  """Smooth stand-in for ``cv2.equalizeHist``: a fixed table, linearly interpolated.

  The attack cannot differentiate through histogram equalisation (a rank transform),
  so the table fitted on the **original** frame's patch (:func:`equalization_lut`) is
  held fixed and applied by piecewise-linear interpolation between integer grey
  levels: ``y = lut[k] + (x - k) (lut[k + 1] - lut[k])`` with ``x = 255 gray``,
  ``k = floor(x)``. At integer inputs this is exactly the table (cv2's output);
  between levels it interpolates, and its gradient is the table's local slope. The
  table is not re-fitted as the perturbed frame changes (the approximation).

  Args:
    gray: (B, ...) float grey levels in [0, 1].
    lut: (256,) or (B, 256) table in grey levels 0..255 (e.g. from :func:`equalization_lut`).

  Returns:
    Equalised values in [0, 1], shape of ``gray``.
  """
  lut = jnp.asarray(lut, gray.dtype)
  x = jnp.clip(gray * 255.0, 0.0, 255.0)
  k = jnp.clip(jnp.floor(jax.lax.stop_gradient(x)), 0, 254)
  lo = _lookup(lut, k)
  hi = _lookup(lut, k + 1)
  return (lo + (x - k) * (hi - lo)) / 255.0


def equalization_lut_levels(levels: jax.Array) -> jax.Array:
  """:func:`equalization_lut` in jnp, per patch: (N, ...) integer grey levels -> (N, 256).

  The same float32 arithmetic as OpenCV (and :func:`equalization_lut`), so the table is
  bit-identical to ``cv2.equalizeHist``'s for the same uint8 patch. Not differentiable
  (a histogram); used under ``stop_gradient`` by :func:`normalize_gray_equalized`.
  """
  flat = jnp.clip(levels.reshape(levels.shape[0], -1), 0, 255).astype(jnp.int32)
  total = flat.shape[1]
  hist = jax.vmap(lambda v: jnp.bincount(v, length=256))(flat).astype(jnp.int32)
  i0 = jnp.argmax(hist > 0, axis=1)
  h0 = jnp.take_along_axis(hist, i0[:, None], axis=1)
  scale = jnp.float32(255.0) / (total - h0).astype(jnp.float32)
  cdf = (jnp.cumsum(hist, axis=1) - h0).astype(jnp.float32)
  lut = jnp.clip(jnp.rint(cdf * scale), 0.0, 255.0)
  lut = jnp.where(jnp.arange(256)[None] < i0[:, None], 0.0, lut)
  identity = jnp.broadcast_to(jnp.arange(256, dtype=jnp.float32), lut.shape)
  return jnp.where(h0 == total, identity, lut)


def normalize_gray_equalized(frames: jax.Array, homographies: jax.Array, luts: jax.Array | None,
                             size_hw: tuple[int, int] = (36, 60),
                             match_opencv: bool = True) -> jax.Array:
  """MPIIGaze eye patches inside the loss: warp, luma, fixed-table equalisation.

  Gradient: always that of the smooth path ``equalize_with_lut(rgb_to_gray(normalize(
  frames)))`` (bilinear warp, luma, interpolated table).

  Value: with ``match_opencv`` (default), the value of ptgaze's uint8 pipeline on the
  8-bit frame: ``round(255 frames)`` -> ``cv2.warpPerspective`` (rounded per channel) ->
  ``cv2.cvtColor`` (OpenCV's fixed-point luma) -> the table (a straight-through
  estimator, ``smooth + stop_gradient(exact - smooth)``). The equalisation table is
  steep (slope ~255 / number of occupied levels), so the half-level rounding
  differences of the smooth path alone become about one grey level after it
  (measured 0.9-1.4 / 255 mean absolute on the test videos), while the matched value
  is within 0.01 / 255 (mean) of ``cv2.equalizeHist`` on the original frame. With
  ``match_opencv=False`` the smooth path is returned as is (value and gradient).

  With ``luts=None`` the table is re-fitted inside the graph on each call, from the
  patch being evaluated (:func:`equalization_lut_levels` on its OpenCV grey levels):
  the value is then exactly what ptgaze computes on these frames, which is what
  inference measures on the attacked output; the gradient is the smooth path's with
  that table. A fixed table from the original frame (the default when ``luts`` is
  given) lets the loss converge while the equalisation inference recomputes on the
  attacked patch drifts (README, "Fidelity").

  Args:
    frames: (B, H, W, 3) RGB in [0, 1].
    homographies: (B, 3, 3) eye homographies.
    luts: (B, 256) tables from :func:`normalize_eye_host` on the original frames, or
      None to re-fit the table on ``frames`` (needs ``match_opencv``).
    size_hw: patch (height, width).
    match_opencv: whether the forward value replicates the uint8 OpenCV pipeline.

  Returns:
    (B, h, w) equalised grey patches in [0, 1] (ptgaze's ``ToTensor`` scale).
  """
  if luts is None and not match_opencv:
    raise ValueError("re-fitting the equalisation table (luts=None) needs match_opencv")
  gray = rgb_to_gray(normalize(frames, homographies, size_hw))
  if match_opencv:
    levels = jax.lax.stop_gradient(jnp.round(jnp.clip(frames, 0.0, 1.0) * 255.0))
    gray_levels = _opencv_gray_levels(jnp.round(normalize(levels, homographies, size_hw)))
    if luts is None:
      luts = equalization_lut_levels(gray_levels)
  luts = jax.lax.stop_gradient(jnp.asarray(luts, jnp.float32))
  smooth = equalize_with_lut(gray, luts)
  if not match_opencv:
    return smooth
  exact = _lookup(luts, gray_levels) / 255.0
  return smooth + jax.lax.stop_gradient(exact - smooth)


# ---- gaze vectors ------------------------------------------------------------------------

def pitch_yaw_to_vector(pitch_yaw: jax.Array) -> jax.Array:
  """(..., 2) (pitch, yaw) radians -> (..., 3) unit vector ``-[cos p sin y, sin p, cos p cos y]``.

  ptgaze's ``gaze_angles_to_vector``: (0, 0) looks along -z, i.e. back at the camera.
  """
  py = jnp.asarray(pitch_yaw)
  p, y = py[..., 0], py[..., 1]
  return -jnp.stack([jnp.cos(p) * jnp.sin(y), jnp.sin(p), jnp.cos(p) * jnp.cos(y)], axis=-1)


def vector_to_pitch_yaw(vector: jax.Array) -> jax.Array:
  """(..., 3) gaze vector -> (..., 2) (pitch, yaw): ``(arcsin(-y), arctan2(-x, -z))``.

  The vector is normalised first (ptgaze assumes a unit vector).
  """
  v = jnp.asarray(vector)
  v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
  return jnp.stack([jnp.arcsin(jnp.clip(-v[..., 1], -1.0, 1.0)),
                    jnp.arctan2(-v[..., 0], -v[..., 2])], axis=-1)


def denormalize_gaze(pitch_yaw: jax.Array, normalizing_rotation: jax.Array) -> jax.Array:
  """Normalised-space (pitch, yaw) -> gaze vector in camera coordinates.

  ``R^T @ pitch_yaw_to_vector(pitch_yaw)`` (ptgaze: row vector ``v @ R``).

  Args:
    pitch_yaw: (..., 2) radians.
    normalizing_rotation: (..., 3, 3) R of the patch (broadcasts against ``pitch_yaw``).

  Returns:
    (..., 3) unit gaze vectors in camera coordinates.
  """
  v = pitch_yaw_to_vector(pitch_yaw)
  return jnp.einsum("...i,...ij->...j", v, jnp.asarray(normalizing_rotation, v.dtype))


def angle_between_deg(v1: jax.Array, v2: jax.Array) -> jax.Array:
  """Angle in degrees between (..., 3) vectors (``atan2(|a x b|, a . b)``, stable near 0).

  The one angle function of the project (gaze error in :mod:`drsf_jax.metrics` and
  DiffScore's gaze term use it too). A zero-length or non-finite vector has no direction:
  its angle is NaN, never 0 (``atan2(0, 0)`` would score it as a perfect match).
  """
  # NumPy inputs (host-side metrics) are computed in NumPy: XLA may contract a*b - c*d into
  # an FMA, which makes a x a non-zero (~1e-7 deg) where NumPy gives exactly 0.
  xp = np if isinstance(v1, np.ndarray) and isinstance(v2, np.ndarray) else jnp
  a = xp.asarray(v1)
  b = xp.asarray(v2)
  cross = xp.linalg.norm(xp.cross(a, b), axis=-1)
  dot = xp.sum(a * b, axis=-1)
  with np.errstate(invalid="ignore"):
    defined = (xp.linalg.norm(a, axis=-1) > 0) & (xp.linalg.norm(b, axis=-1) > 0)  # False for NaN.
    return xp.where(defined, xp.degrees(xp.arctan2(cross, dot)), xp.nan)
