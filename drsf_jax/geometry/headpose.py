"""Head pose: a 3D face template fitted to 2D landmarks with ``cv2.solvePnP``, as ptgaze.

Reproduces hysts' ptgaze (v0.3.0): :func:`estimate_head_pose` fits the 68-point template
of :mod:`drsf_jax.geometry.face_model` (or its 5-point subset, when a detector's 5
landmarks are all there is) to image landmarks through a camera
(:mod:`drsf_jax.geometry.cameras`); :class:`HeadPose` holds the rotation vector and translation (metres) and
places the full 68-point template for the normalisation of
:mod:`drsf_jax.geometry.normalization`; :func:`head_pose_euler_deg` gives pitch, yaw and
roll for people to read. Host side (NumPy / OpenCV), once per frame, outside the attack
loop.

Coordinate conventions (as ptgaze): camera coordinates have X to the right *as seen
from the camera* (image right), Y down, Z forward (into the scene), in metres. The face
template has its axes aligned with the camera when the face looks straight into the
camera (identity head rotation); the face looks along its own -Z. "Right eye" (``reye``)
is the **subject's** right eye, which appears on the **image-left** side (68-point
indices 36-41). 5-point landmarks from RetinaFace (biubug6) and MTCNN (facenet-pytorch)
are in the template's 5-point order already (``[eye on the image left, eye on the image
right, nose tip, mouth corner on the image left, mouth corner on the image right]``), so
they are passed unchanged.
"""

from typing import NamedTuple

import cv2
import numpy as np

from drsf_jax.geometry.cameras import Camera
from drsf_jax.geometry.face_model import FACE_MODEL_68, TEMPLATES, landmarks68_to_5


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
