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
