"""Gaze normalisation (presets, homographies, eye patches, equalisation) against ptgaze and cv2."""

import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drsf_jax.geometry import cameras
from drsf_jax.geometry import face_model
from drsf_jax.geometry import headpose
from drsf_jax.geometry import normalization
from tests.geometry.common import MODES, PTGAZE_FILES


@pytest.mark.parity
def test_presets_match_ptgaze_configs(ptgaze_dir):
  import yaml
  from ptgaze.common.camera import Camera as PtCamera
  for mode in MODES:
    ref = PtCamera.from_file(os.path.join(ptgaze_dir, "data", "normalized_camera_params",
                                          PTGAZE_FILES[mode]))
    preset = normalization.PRESETS[mode]
    np.testing.assert_array_equal(preset.camera_matrix, ref.camera_matrix)
    assert preset.size_hw == (ref.height, ref.width)
    with open(os.path.join(ptgaze_dir, "data", "configs", PTGAZE_FILES[mode])) as f:
      config = yaml.safe_load(f)
    assert preset.distance == config["gaze_estimator"]["normalized_camera_distance"]


@pytest.mark.parity
def test_normalization_matches_ptgaze_and_cv2(faces, ptgaze_dir):
  """Rotation, head pose and images against HeadPoseNormalizer; jnp warp against cv2."""
  from ptgaze.common.camera import Camera as PtCamera
  from ptgaze.head_pose_estimation.head_pose_normalizer import HeadPoseNormalizer
  from scipy.spatial.transform import Rotation
  frames = jnp.asarray(np.stack([f for _, f, _ in faces]), jnp.float32) / 255.0
  for mode in MODES:
    preset = normalization.PRESETS[mode]
    ref_norm = HeadPoseNormalizer(
        PtCamera.create_dummy(256, 256),
        PtCamera.from_file(os.path.join(ptgaze_dir, "data", "normalized_camera_params",
                                        PTGAZE_FILES[mode])),
        preset.distance)
    parts = ("reye", "leye") if preset.per_eye else ("face",)
    for part in parts:
      homs, luts, refs = [], [], []
      for name, frame, lm in faces:
        cam = cameras.Camera.dummy(frame.shape[1], frame.shape[0])
        pose = headpose.estimate_head_pose(lm, cam)
        geo = normalization.normalization_geometry(pose, cam, mode)[part]
        h2, r2 = normalization.normalizing_matrix(cam, geo.center, pose.rotation_vector, preset.focal,
                                       preset.distance, preset.size_hw)
        np.testing.assert_array_equal(h2, geo.homography)
        ref = ref_norm.normalize(frame[..., ::-1] if preset.per_eye else frame,
                                 Rotation.from_rotvec(pose.rotation_vector), geo.center,
                                 grayscale=preset.per_eye)
        np.testing.assert_allclose(geo.rotation, ref.normalizing_rot.as_matrix(), atol=1e-9)
        np.testing.assert_allclose(geo.head_pitch_yaw, ref.head_rot2d, atol=1e-9)
        assert ref.image.shape[:2] == preset.size_hw
        host = normalization.normalize_host(frame, geo.homography, preset.size_hw)
        if preset.per_eye:
          host, lut = normalization.normalize_eye_host(frame, geo.homography, preset.size_hw)
          luts.append(lut)
        np.testing.assert_array_equal(host, ref.image)  # same cv2 calls: bit-exact
        homs.append(geo.homography)
        refs.append(ref.image)
      homs, refs = np.stack(homs), np.stack(refs).astype(np.float32) / 255.0
      patches = normalization.normalize(frames, homs, preset.size_hw)
      assert patches.shape == (len(faces),) + preset.size_hw + (3,)
      if preset.per_eye:
        gray = normalization.rgb_to_gray(patches) * 255.0
        cv_gray = np.stack([cv2.cvtColor(normalization.normalize_host(f, hm, preset.size_hw),
                                         cv2.COLOR_RGB2GRAY) for (_, f, _), hm in zip(faces, homs)])
        mad_gray = float(np.abs(np.asarray(gray) - cv_gray).mean())
        assert mad_gray <= 1.0, (mode, part, mad_gray)
        eq = normalization.normalize_gray_equalized(frames, homs, np.stack(luts), preset.size_hw)
        mad = float(np.abs(np.asarray(eq) - refs).mean())
        smooth = normalization.normalize_gray_equalized(frames, homs, np.stack(luts), preset.size_hw,
                                             match_opencv=False)
        mad_smooth = float(np.abs(np.asarray(smooth) - refs).mean())
        assert mad_smooth < 2.0 / 255, (mode, part, mad_smooth)  # measured 0.9-1.4 / 255
      else:
        mad = float(np.abs(np.asarray(patches) - refs).mean())
      assert mad <= 1.0 / 255, (mode, part, mad * 255)


def test_equalization_lut_is_cv2_equalize_hist(rng):
  images = [rng.integers(0, 256, (36, 60), dtype=np.uint8),
            rng.integers(90, 140, (36, 60), dtype=np.uint8),  # narrow range, empty bins
            (rng.integers(0, 8, (17, 23)) * 30).astype(np.uint8),  # few levels
            np.full((5, 7), 77, np.uint8)]  # constant
  for img in images:
    lut = normalization.equalization_lut(img)
    np.testing.assert_array_equal(lut[img].astype(np.uint8), cv2.equalizeHist(img))
    # At integer levels the interpolated table is the table itself.
    out = normalization.equalize_with_lut(jnp.asarray(img[None], jnp.float32) / 255.0, lut[None])
    np.testing.assert_allclose(np.asarray(out)[0] * 255.0, cv2.equalizeHist(img), atol=1e-3)
  with pytest.raises(ValueError, match="uint8"):
    normalization.equalization_lut(np.zeros((3, 3), np.float32))


def test_grad_through_normalize(faces):
  _, frame, lm = faces[0]
  cam = cameras.Camera.dummy(frame.shape[1], frame.shape[0])
  pose = headpose.estimate_head_pose(lm, cam)
  x = jnp.asarray(frame[None], jnp.float32) / 255.0
  face = normalization.normalization_geometry(pose, cam, "ETH-XGaze")["face"]
  eyes = normalization.normalization_geometry(pose, cam, "MPIIGaze")
  eye_h = np.stack([eyes["reye"].homography])
  _, lut = normalization.normalize_eye_host(frame, eye_h[0])
  w = jnp.asarray(np.random.default_rng(1).normal(size=(1, 224, 224, 3)), jnp.float32)

  def loss(frames):
    face_patch = normalization.normalize(frames, face.homography[None], (224, 224))
    eye_patch = normalization.normalize_gray_equalized(frames, eye_h, lut[None])
    return jnp.sum(face_patch * w) + jnp.sum(eye_patch ** 2)

  g = np.asarray(jax.grad(loss)(x))
  assert np.all(np.isfinite(g))
  assert np.abs(g).sum() > 0
  # Only pixels the warps sample receive gradient; the eye loss reaches the eye region.
  ex, ey = face_model.landmarks68_to_5(lm)[0].round().astype(int)
  assert np.abs(g[0, ey - 3:ey + 4, ex - 3:ex + 4]).sum() > 0
  assert np.abs(g[0, :, :20]).sum() == 0


def test_equalization_lut_levels_is_bit_identical_to_cv2(rng):
  images = [rng.integers(0, 256, (36, 60), dtype=np.uint8),
            rng.integers(90, 140, (36, 60), dtype=np.uint8),
            (rng.integers(0, 8, (36, 60)) * 30).astype(np.uint8),
            np.full((36, 60), 77, np.uint8)]
  luts = np.asarray(normalization.equalization_lut_levels(jnp.asarray(np.stack(images), jnp.float32)))
  for img, lut in zip(images, luts):
    np.testing.assert_array_equal(lut, normalization.equalization_lut(img))
    if img.min() != img.max():
      np.testing.assert_array_equal(lut[img].astype(np.uint8), cv2.equalizeHist(img))


def test_refitted_equalization_is_what_ptgaze_computes_on_the_attacked_frame(faces):
  """On a perturbed frame (±6/255 noise, as an attack leaves it), the re-fitted path's value
  is ptgaze's host pipeline on that frame; the original frame's fixed table is not."""
  _, frame, lm = faces[0]
  cam = cameras.Camera.dummy(frame.shape[1], frame.shape[0])
  eyes = normalization.normalization_geometry(headpose.estimate_head_pose(lm, cam), cam, "MPIIGaze")
  homs = np.stack([eyes["reye"].homography, eyes["leye"].homography])
  noise = np.random.default_rng(3).integers(-6, 7, frame.shape)
  attacked = np.clip(frame.astype(np.int32) + noise, 0, 255).astype(np.uint8)
  x = jnp.asarray(np.stack([attacked, attacked]), jnp.float32) / 255.0
  host = np.stack([normalization.normalize_eye_host(attacked, h)[0] for h in homs]).astype(np.float32) / 255
  fixed_luts = np.stack([normalization.normalize_eye_host(frame, h)[1] for h in homs])
  refit = np.asarray(normalization.normalize_gray_equalized(x, homs, None))
  fixed = np.asarray(normalization.normalize_gray_equalized(x, homs, fixed_luts))
  err_refit, err_fixed = np.abs(refit - host).mean() * 255, np.abs(fixed - host).mean() * 255
  print(f"mean |patch - ptgaze| grey levels: refit {err_refit:.3f}, fixed table {err_fixed:.3f}")
  assert err_refit <= 0.05 and err_fixed > 4 * max(err_refit, 0.05)
  g = np.asarray(jax.grad(lambda y: jnp.sum(normalization.normalize_gray_equalized(y, homs, None) ** 2))(x))
  assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
