"""Tests of the ptgaze gaze ports (drsf_jax/models/gaze.py, weights_conversion/gaze.py)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support import randomize_torch, read_frames, shared_file
from drsf_jax.io import checkpoints
from drsf_jax.models import gaze
from weights_conversion import gaze as gaze_conversion
from weights_conversion.common import ConversionError, StateDict, load_state_dict

MODELS = (gaze.MPIIGAZE, gaze.MPIIFACEGAZE, gaze.ETH_XGAZE)
MPIIGAZE_WEIGHTS = ("weights", "mpiigaze_resnet_preact.pth")


def _rel_err(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _ptgaze_config(model: str):
  """The OmegaConf config ptgaze's ``create_model`` builds ``model`` from (no downloads)."""
  omegaconf = pytest.importorskip("omegaconf")
  cfg = {"mode": model, "device": "cpu"}
  if model == gaze.MPIIGAZE:
    cfg["model"] = {"name": "resnet_preact"}
  elif model == gaze.MPIIFACEGAZE:
    cfg["model"] = {"name": "resnet_simple",
                    "backbone": {"name": "resnet_simple", "pretrained": None,
                                 "resnet_block": "basic", "resnet_layers": [2, 2, 2]}}
  else:
    cfg["model"] = {"name": "resnet18"}
  cfg["gaze_estimator"] = {"image_size": [224, 224]}
  return omegaconf.OmegaConf.create(cfg)


def _ptgaze_model(model: str):
  """ptgaze's own PyTorch model (``ptgaze.models.create_model``), eval mode."""
  pytest.importorskip("torch")
  pytest.importorskip("timm")
  models = pytest.importorskip("ptgaze.models")
  return models.create_model(_ptgaze_config(model)).eval()


def _convert_via_file(module, model: str, tmp_path):
  """Round trip through ``torch.save`` + ``load_state_dict`` + our converter."""
  import torch
  path = os.path.join(tmp_path, f"{model}.pth")
  torch.save({"model": module.state_dict()}, path)
  return gaze_conversion.convert(StateDict(load_state_dict(path), path), model,
                                 gaze.DEFAULT_CONFIGS[model])


def _random_inputs(model: str, seed: int, batch: int = 2):
  rng = np.random.default_rng(seed)
  h, w = gaze.DEFAULT_CONFIGS[model]["input_size"]
  if model == gaze.MPIIGAZE:
    x = rng.uniform(0.0, 1.0, (batch, h, w, 1)).astype(np.float32)
    return x, rng.normal(0.0, 0.3, (batch, 2)).astype(np.float32)
  return rng.normal(0.0, 1.0, (batch, h, w, 3)).astype(np.float32), None


def _torch_forward(module, x, head_pose):
  import torch
  with torch.no_grad():
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    if head_pose is None:
      return module(xt).numpy()
    return module(xt, torch.from_numpy(head_pose)).numpy()


def _jit_apply(model: str):
  config = gaze.DEFAULT_CONFIGS[model]
  if model == gaze.MPIIGAZE:
    return jax.jit(lambda v, x, hp: gaze.apply(v, x, config, head_pose=hp))
  return jax.jit(lambda v, x, hp: gaze.apply(v, x, config))


@pytest.mark.parity
@pytest.mark.parametrize("model", MODELS)
def test_random_weight_parity(model, tmp_path):
  torch_model = randomize_torch(_ptgaze_model(model), seed=1, gain=np.sqrt(2.0))
  variables = _convert_via_file(torch_model, model, tmp_path)
  checkpoints.check_tree(gaze.expected_variables(model, gaze.DEFAULT_CONFIGS[model]), variables)
  x, hp = _random_inputs(model, seed=2)
  want = _torch_forward(torch_model, x, hp)
  got = np.asarray(_jit_apply(model)(variables, x, hp))
  assert got.shape == want.shape == (2, 2)
  err = _rel_err(got, want)
  print(f"{model}: rel err {err:.2e}")
  assert err <= 1e-5

  if model == gaze.ETH_XGAZE:
    # torchvision's resnet18 has the same key layout and forward as timm's.
    torchvision = pytest.importorskip("torchvision")
    tv = randomize_torch(torchvision.models.resnet18(num_classes=2), seed=3, gain=np.sqrt(2.0))
    assert set(tv.state_dict()) == set(torch_model.state_dict())
    tv_vars = _convert_via_file(tv, model, tmp_path)
    err_tv = _rel_err(_jit_apply(model)(tv_vars, x, hp), _torch_forward(tv, x, hp))
    print(f"{model} (torchvision resnet18): rel err {err_tv:.2e}")
    assert err_tv <= 1e-5


def test_convert_save_load_round_trip(tmp_path):
  torch_model = randomize_torch(_ptgaze_model(gaze.MPIIGAZE), seed=4, gain=np.sqrt(2.0))
  variables = _convert_via_file(torch_model, gaze.MPIIGAZE, tmp_path)
  path = checkpoints.save(os.path.join(tmp_path, "MPIIGaze.msgpack"), variables,
                          {"model": gaze.MPIIGAZE, "config": gaze.DEFAULT_CONFIGS[gaze.MPIIGAZE]})
  loaded, meta = checkpoints.read(path)
  assert meta["config"] == gaze.DEFAULT_CONFIGS[gaze.MPIIGAZE]
  checkpoints.check_tree(gaze.expected_variables(gaze.MPIIGAZE), loaded)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, loaded)


# ----------------------------------------------------------------------------------------
# Real MPIIGaze weights on real eye patches.
# ----------------------------------------------------------------------------------------
def _eye_patches(video: str, frame_ids):
  """60x36 eye patches cut around fixed fractions of a scikit-image LBP face box.

  Returns (right_eyes, left_eyes) as uint8 BGR (N, 36, 60, 3): the subject's right eye
  is on the image's left.
  """
  import cv2
  from skimage import data as skdata
  from skimage.feature import Cascade
  detector = Cascade(skdata.lbp_frontal_face_cascade_filename())
  frames = read_frames(shared_file("data", video), max(frame_ids) + 1)
  right, left = [], []
  for i in frame_ids:
    image = frames[min(i, len(frames) - 1)]
    faces = detector.detect_multi_scale(img=image, scale_factor=1.2, step_ratio=1,
                                        min_size=(80, 80), max_size=(250, 250))
    if not faces:
      continue
    f = max(faces, key=lambda d: d["width"])
    size = f["width"]
    for fx, out in ((0.3, right), (0.7, left)):
      cx, cy = f["c"] + fx * size, f["r"] + 0.37 * size
      pw, ph = 0.32 * size, 0.192 * size
      m = np.float32([[60 / pw, 0, -(cx - pw / 2) * 60 / pw],
                      [0, 36 / ph, -(cy - ph / 2) * 36 / ph]])
      patch = cv2.warpAffine(image, m, (60, 36), flags=cv2.INTER_LINEAR)
      out.append(cv2.cvtColor(patch, cv2.COLOR_RGB2BGR))
  return np.stack(right), np.stack(left)


@pytest.mark.parity
def test_real_weights_mpiigaze_two_eyes():
  import cv2
  torch = pytest.importorskip("torch")
  estimator_mod = pytest.importorskip("ptgaze.gaze_estimator")
  from ptgaze.common import NormalizedPatch
  from ptgaze.transforms import create_transform

  path = shared_file(*MPIIGAZE_WEIGHTS)
  torch_model = _ptgaze_model(gaze.MPIIGAZE)
  torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in load_state_dict(path).items()})
  torch_model.eval()
  variables = gaze_conversion.convert(StateDict(load_state_dict(path), path), gaze.MPIIGAZE)

  rng = np.random.default_rng(5)
  r_a, l_a = _eye_patches("talking_head_a.mp4", (0, 70, 140, 210))
  r_b, l_b = _eye_patches("talking_head_b.mp4", (0, 140, 280, 420))
  right_bgr, left_bgr = np.concatenate([r_a, r_b]), np.concatenate([l_a, l_b])
  n = len(right_bgr)
  assert n >= 4, f"only {n} faces found"  # >= 8 eye patches.

  def eq(bgr):  # What ptgaze's HeadPoseNormalizer does after the warp (grayscale=True).
    return np.stack([cv2.equalizeHist(cv2.cvtColor(p, cv2.COLOR_BGR2GRAY)) for p in bgr])

  right_u8, left_u8 = eq(right_bgr), eq(left_bgr)
  right_pose = rng.normal(0.0, 0.15, (n, 2)).astype(np.float32)
  left_pose = rng.normal(0.0, 0.15, (n, 2)).astype(np.float32)

  # ptgaze's own two-eye logic, on a GazeEstimator without camera/detector set-up.
  est = object.__new__(estimator_mod.GazeEstimator)
  est._config = _ptgaze_config(gaze.MPIIGAZE)
  est._transform = create_transform(est._config)
  est._gaze_estimation_model = torch_model
  want_r, want_l = [], []
  for k in range(n):
    r, l = est._run_mpiigaze_model(
        NormalizedPatch(right_u8[k], None, right_pose[k].astype(np.float64)),
        NormalizedPatch(left_u8[k], None, left_pose[k].astype(np.float64)))
    want_r.append(r)
    want_l.append(l)
  want_r, want_l = np.stack(want_r), np.stack(want_l)

  to_input = lambda u8: jnp.asarray(u8[..., None], jnp.float32) / 255.0
  got_l, got_r = jax.jit(gaze.mpiigaze_two_eyes)(
      variables, to_input(left_u8), to_input(right_u8), left_pose, right_pose)
  err = max(np.abs(np.asarray(got_l) - want_l).max(), np.abs(np.asarray(got_r) - want_r).max())
  print(f"MPIIGaze real weights, {2 * n} eye patches: max |err| {err:.2e} rad, "
        f"|gaze| up to {np.abs(want_l).max():.3f} rad")
  assert err <= 1e-4
  # The mirrored path matters: without it the right-eye result would differ.
  plain_r = gaze.apply(variables, to_input(right_u8), gaze.DEFAULT_CONFIGS[gaze.MPIIGAZE],
                       right_pose)
  assert np.abs(np.asarray(plain_r) - want_r).max() > 1e-3

  # In-graph preprocessing: gray conversion + the host-side equalisation table reproduce
  # OpenCV on uint8 data (gray-valued RGB avoids OpenCV's uint8 rounding of the gray).
  gray_bgr = np.stack([cv2.cvtColor(p, cv2.COLOR_BGR2GRAY) for p in left_bgr])
  luts = gaze.equalize_hist_lut(gray_bgr)
  rgb01 = np.repeat(gray_bgr[..., None], 3, axis=-1).astype(np.float32) / 255.0
  pre = np.asarray(gaze.preprocess(gaze.MPIIGAZE, rgb01, equalize_lut=luts))
  np.testing.assert_allclose(pre * 255.0, left_u8[..., None].astype(np.float32), atol=1e-3)


# ----------------------------------------------------------------------------------------
# Preprocessing, outputs, strictness, gradients.
# ----------------------------------------------------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("model", (gaze.MPIIFACEGAZE, gaze.ETH_XGAZE))
def test_preprocess_matches_ptgaze_transform(model):
  transforms = pytest.importorskip("ptgaze.transforms")
  transform = transforms.create_transform(_ptgaze_config(model))
  rng = np.random.default_rng(6)
  rgb_u8 = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
  want = transform(np.ascontiguousarray(rgb_u8[..., ::-1])).numpy().transpose(1, 2, 0)  # BGR in.
  got = np.asarray(gaze.preprocess(model, rgb_u8[None].astype(np.float32) / 255.0))[0]
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_gray_and_equalize_match_opencv():
  import cv2
  rng = np.random.default_rng(7)
  rgb_u8 = (rng.uniform(0, 1, (4, 36, 60, 3)) ** rng.uniform(0.4, 2.5) * 200 + 20).astype(np.uint8)
  gray_cv = np.stack([cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in rgb_u8])
  gray = np.asarray(gaze.preprocess(gaze.MPIIGAZE, rgb_u8.astype(np.float32) / 255.0))[..., 0]
  # OpenCV rounds to uint8 and uses 14-bit fixed-point weights (4899, 9617, 1868) / 2**14.
  assert np.abs(gray * 255.0 - gray_cv).max() <= 0.51
  for g in list(gray_cv) + [np.full((36, 60), 77, np.uint8)]:
    lut = gaze.equalize_hist_lut(g)
    want = cv2.equalizeHist(g)
    np.testing.assert_array_equal(lut[g].astype(np.uint8), want)
    got = np.asarray(gaze.apply_intensity_lut(jnp.asarray(g[None], jnp.float32) / 255.0, lut))[0]
    np.testing.assert_allclose(got * 255.0, want, atol=1e-3)


def test_gaze_vector_matches_ptgaze():
  gaze_mod = pytest.importorskip("ptgaze.common.gaze")
  rng = np.random.default_rng(8)
  angles = rng.uniform(-1.2, 1.2, (6, 2)).astype(np.float32)
  vec = np.asarray(gaze.gaze_vector(angles))
  for a, v in zip(angles, vec):
    np.testing.assert_allclose(v, gaze_mod.gaze_angles_to_vector(a.astype(np.float64)), atol=1e-6)
    np.testing.assert_allclose(gaze_mod.gaze_vector_to_angles(v.astype(np.float64)), a, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gaze.pitch_yaw_from_vector(vec)), angles, atol=1e-5)


def test_wrong_family_checkpoint_names_a_key():
  path = shared_file(*MPIIGAZE_WEIGHTS)
  with pytest.raises(ConversionError, match=r"conv1\.weight"):
    gaze_conversion.convert(StateDict(load_state_dict(path), path), gaze.ETH_XGAZE)
  with pytest.raises(ConversionError, match=r"feature_extractor\.conv1\.weight"):
    gaze_conversion.convert(StateDict(load_state_dict(path), path), gaze.MPIIFACEGAZE)


def test_extra_and_misshaped_keys_name_the_key():
  path = shared_file(*MPIIGAZE_WEIGHTS)
  sd = load_state_dict(path)
  extra = dict(sd, **{"fc2.weight": np.zeros((2, 2), np.float32)})
  with pytest.raises(ConversionError, match=r"fc2\.weight"):
    gaze_conversion.convert(StateDict(extra), gaze.MPIIGAZE)
  bad = dict(sd, **{"fc.weight": np.zeros((2, 64), np.float32)})
  with pytest.raises(ConversionError, match=r"'fc\.weight'.*\(2, 64\)"):
    gaze_conversion.convert(StateDict(bad), gaze.MPIIGAZE)
  with pytest.raises(ValueError, match="arch"):
    gaze.build(gaze.ETH_XGAZE, gaze.DEFAULT_CONFIGS[gaze.MPIIGAZE])


@pytest.mark.parametrize("model", MODELS)
def test_gradient_wrt_images_is_finite_and_nonzero(model):
  config = gaze.DEFAULT_CONFIGS[model]
  module = gaze.build(model, config)
  h, w = config["input_size"]
  rng = np.random.default_rng(9)
  images = jnp.asarray(rng.uniform(0.05, 0.95, (1, h, w, 3)), jnp.float32)
  target = jnp.asarray([[0.1, -0.2]], jnp.float32)
  if model == gaze.MPIIGAZE:
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, 1)), jnp.zeros((1, 2)))
    lut = gaze.equalize_hist_lut(np.asarray(images * 255, np.uint8)[..., 0])
    pose = jnp.asarray([[0.05, 0.1]], jnp.float32)

    def loss(x):
      left = gaze.preprocess(model, x, lut)
      right = gaze.preprocess(model, x[:, :, ::-1], lut)
      out_l, out_r = gaze.mpiigaze_two_eyes(variables, left, right, pose, pose)
      return jnp.mean((out_l - target) ** 2) + jnp.mean((out_r - target) ** 2)
  else:
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3)))

    def loss(x):
      return jnp.mean((gaze.apply(variables, gaze.preprocess(model, x), config) - target) ** 2)

  g = np.asarray(jax.jit(jax.grad(loss))(images))
  assert np.all(np.isfinite(g))
  assert np.abs(g).max() > 0
