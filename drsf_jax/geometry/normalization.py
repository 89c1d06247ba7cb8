"""ptgaze-style gaze normalisation: normalised cameras, face/eye centres, homographies,
eye-patch equalisation (host geometry once per frame, differentiable image warps in the loss).

Reproduces ptgaze v0.3.0's ``HeadPoseNormalizer`` (Zhang et al., "Revisiting data
normalization for appearance-based gaze estimation", ETRA 2018). Normalised cameras
(:data:`PRESETS`): ETH-XGaze 224x224, f = 960, distance 0.6 m, face centre from eye
corners + nose; MPIIFaceGaze 224x224, f = 1600, distance **1.0** m, face centre from eye
corners + mouth; MPIIGaze one 60x36 (w x h) patch per eye, f = 960, distance 0.6 m,
grayscale + ``cv2.equalizeHist``. Sizes are ``size_hw = (height, width)``.

Host side (NumPy / OpenCV, outside the attack loop): :func:`face_centers`,
:func:`normalizing_matrix`, :func:`normalization_geometry`, :func:`normalize_host`,
:func:`normalize_eye_host`, :func:`equalization_lut`. Inside the loss (jnp,
differentiable in the frames): :func:`normalize`, :func:`normalize_gray_equalized`
(:func:`rgb_to_gray`, :func:`equalize_with_lut`, :func:`equalization_lut_levels`).
"""

import dataclasses
from typing import NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from drsf_jax.geometry import warping
from drsf_jax.geometry.cameras import Camera
from drsf_jax.geometry.face_model import LEYE_CORNERS, MOUTH_CORNERS, NOSE_WINGS, REYE_CORNERS
from drsf_jax.geometry.headpose import HeadPose, _as_rotation_matrix


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

  Bilinear sampling with a zero border through :func:`warping.warp_perspective_batch`
  (``cv2.warpPerspective`` conventions); values stay in the frames' range (no rounding).

  Args:
    frames: (B, H, W, C) float frames (RGB in [0, 1] in this project).
    homographies: (B, 3, 3) from :func:`normalizing_matrix`, fixed data.
    size_hw: static (height, width) of the patches.
  """
  return warping.warp_perspective_batch(frames, jnp.asarray(homographies, jnp.float32),
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
