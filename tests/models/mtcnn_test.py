"""Tests of the MTCNN port (drsf_jax.models.mtcnn, weights_conversion.mtcnn).

Parity is against facenet-pytorch 2.6.0 itself: its P/R/ONet classes with random
weights, and ``MTCNN(keep_all=True).detect`` with its packaged weights on real images.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support import astronaut, read_frames, read_image, shared_file
from drsf_jax.geometry.bbox import box_iou
from drsf_jax.io import checkpoints
from drsf_jax.models import mtcnn
from weights_conversion import common
from weights_conversion import mtcnn as mtcnn_conv

NETS = ("pnet", "rnet", "onet")


def _rel(a, b) -> float:
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------------
# Random-weight parity with facenet-pytorch's PNet / RNet / ONet.
# ---------------------------------------------------------------------------------
def _randomize(net, torch):
  """Fresh random values for every parameter (seeded by the caller)."""
  with torch.no_grad():
    for name, p in net.named_parameters():
      if "prelu" in name:
        p.copy_(torch.rand_like(p) * 0.45 + 0.05)
      elif name.endswith("bias"):
        p.copy_(torch.randn_like(p) * 0.1)
      else:
        fan_in = int(np.prod(p.shape[1:]))
        p.copy_(torch.randn_like(p) * (1.5 / np.sqrt(fan_in)))
  return net.eval()


@pytest.fixture(scope="module")
def random_nets(tmp_path_factory):
  """Randomised torch nets, saved as pnet/rnet/onet.pt and converted by our converter."""
  torch = pytest.importorskip("torch")
  fp = pytest.importorskip("facenet_pytorch.models.mtcnn")
  torch.manual_seed(0)
  nets = {"pnet": _randomize(fp.PNet(pretrained=False), torch),
          "rnet": _randomize(fp.RNet(pretrained=False), torch),
          "onet": _randomize(fp.ONet(pretrained=False), torch)}
  d = tmp_path_factory.mktemp("mtcnn_random")
  for name, net in nets.items():
    torch.save(net.state_dict(), os.path.join(d, f"{name}.pt"))
  sd = mtcnn_conv.load_mtcnn_state_dict(str(d))
  variables = mtcnn_conv.convert(common.StateDict(sd, "random"), "mtcnn", None)
  return nets, sd, variables


@pytest.mark.parity
@pytest.mark.parametrize("net,shape", [("pnet", (2, 3, 61, 47)),
                                       ("rnet", (4, 3, 24, 24)),
                                       ("onet", (4, 3, 48, 48))])
def test_random_weight_parity(random_nets, net, shape):
  torch = pytest.importorskip("torch")
  nets, _, variables = random_nets
  x = np.random.default_rng(NETS.index(net) + 1).normal(size=shape).astype(np.float32)
  with torch.no_grad():
    ref = [t.numpy() for t in nets[net](torch.from_numpy(x))]
  apply = {"pnet": mtcnn.pnet_apply, "rnet": mtcnn.rnet_apply, "onet": mtcnn.onet_apply}[net]
  got = jax.device_get(apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
  assert len(got) == len(ref)
  for g, r in zip(got, ref):
    if r.ndim == 4:
      r = r.transpose(0, 2, 3, 1)
    assert g.shape == r.shape
    assert _rel(g, r) <= 1e-5, (net, _rel(g, r))


# ---------------------------------------------------------------------------------
# Converter strictness and the weights file round trip.
# ---------------------------------------------------------------------------------
def test_converter_strict(random_nets):
  _, sd, variables = random_nets
  checkpoints.check_tree(mtcnn.expected_variables("mtcnn", None), variables)

  bad = dict(sd)
  del bad["rnet.dense4.bias"]
  with pytest.raises(common.ConversionError, match=r"rnet\.dense4\.bias"):
    mtcnn_conv.convert(common.StateDict(bad), "mtcnn", None)

  bad = dict(sd)
  bad["onet.dense7.weight"] = np.ones((3, 3), np.float32)
  with pytest.raises(common.ConversionError, match=r"onet\.dense7\.weight"):
    mtcnn_conv.convert(common.StateDict(bad), "mtcnn", None)

  bad = dict(sd)
  bad["pnet.conv2.weight"] = np.ones((16, 10, 5, 5), np.float32)
  with pytest.raises(common.ConversionError, match=r"pnet\.conv2\.weight"):
    mtcnn_conv.convert(common.StateDict(bad), "mtcnn", None)

  bad = dict(sd)
  bad["onet.prelu5.weight"] = np.ones((255,), np.float32)
  with pytest.raises(common.ConversionError, match=r"onet\.prelu5\.weight"):
    mtcnn_conv.convert(common.StateDict(bad), "mtcnn", None)

  with pytest.raises(common.ConversionError, match="retinaface"):
    mtcnn_conv.convert(common.StateDict(sd), "retinaface", None)


def test_weights_round_trip(random_nets, tmp_path):
  _, _, variables = random_nets
  path = checkpoints.save(str(tmp_path / "mtcnn.msgpack"), variables, {"model": "mtcnn"})
  back, meta = checkpoints.load("mtcnn", str(tmp_path))
  assert meta["model"] == "mtcnn"
  checkpoints.check_tree(mtcnn.expected_variables("mtcnn", None), back)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert os.path.isfile(path)


def test_find_facenet_weights(monkeypatch, tmp_path):
  pytest.importorskip("facenet_pytorch")
  paths = mtcnn_conv.find_facenet_weights()
  assert sorted(paths) == sorted(NETS) and all(os.path.isfile(p) for p in paths.values())
  import importlib.util  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(common.ConversionError, match="pip install --no-deps facenet-pytorch==2.6.0"):
    mtcnn_conv.find_facenet_weights()
  with pytest.raises(common.ConversionError, match="directory"):
    mtcnn_conv.load_mtcnn_state_dict(str(tmp_path / "nowhere"))


def test_contract_and_helpers():
  modules = mtcnn.build("mtcnn", mtcnn.DEFAULT_CONFIGS["mtcnn"])
  assert sorted(modules) == sorted(NETS)
  with pytest.raises(ValueError):
    mtcnn.build("mtcnn", {"no_such_key": 1})
  dets = [{"boxes": np.array([[0, 0, 10, 10], [5, 5, 40, 30]], np.float32),
           "onet_boxes": np.array([[0, 0, 11, 11], [4, 4, 41, 31]], np.float32)},
          {"boxes": np.zeros((0, 4), np.float32), "onet_boxes": np.zeros((0, 4), np.float32)}]
  assert mtcnn.largest_face(dets[0]) == 1
  assert mtcnn.largest_face(dets[1]) is None
  boxes, mask = mtcnn.stack_boxes(dets, k=1)
  assert boxes.shape == (2, 1, 4) and mask.tolist() == [[True], [False]]


def test_detect_shapes_without_torch():
  """The whole cascade runs (random weights, thresholds 0) and returns per-frame arrays."""
  variables = mtcnn.init(0)
  frames = np.random.default_rng(0).random((2, 40, 33, 3)).astype(np.float32)
  dets = mtcnn.detect(variables, frames, {"thresholds": [0.0, 0.0, 0.0]})
  assert len(dets) == 2
  for d in dets:
    n = len(d["boxes"])
    assert n >= 1
    assert d["boxes"].shape == (n, 4) and d["scores"].shape == (n,)
    assert d["landmarks"].shape == (n, 5, 2) and d["onet_boxes"].shape == (n, 4)
  empty = mtcnn.detect(variables, frames[:, :10, :10])
  assert [len(d["boxes"]) for d in empty] == [0, 0]


# ---------------------------------------------------------------------------------
# Real-weight parity with facenet-pytorch's MTCNN.detect.
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real():
  """(our converted packaged weights, facenet-pytorch's MTCNN(keep_all=True))."""
  pytest.importorskip("torch")
  fp = pytest.importorskip("facenet_pytorch")
  sd = mtcnn_conv.load_mtcnn_state_dict()
  variables = mtcnn_conv.convert(common.StateDict(sd, "facenet-pytorch"), "mtcnn", None)
  return variables, fp.MTCNN(keep_all=True, device="cpu")


def _tie_explains(box, onet_box, ref_box) -> bool:
  """Whether ``ref_box`` is ONet's output on another candidate with our integer crop.

  facenet-pytorch's final "Min" NMS breaks exact score ties with numpy's unstable
  argsort. A tie happens when two candidate boxes truncate to the same crop: ONet's
  outputs (score and regression ``r``) are then bit-identical. Recover ``r`` from our
  face (``box = onet_box + r * size``), invert the calibration for ``ref_box`` and check
  that the candidate it came from has the same integer crop as ours.
  """
  o = onet_box.astype(np.float64)
  b = box.astype(np.float64)
  t = np.asarray(ref_box, np.float64)
  w, h = o[2] - o[0] + 1, o[3] - o[1] + 1
  r = np.array([(b[0] - o[0]) / w, (b[1] - o[1]) / h, (b[2] - o[2]) / w, (b[3] - o[3]) / h])
  wp = (t[2] - t[0] + 1) / (1 + r[2] - r[0])
  hp = (t[3] - t[1] + 1) / (1 + r[3] - r[1])
  cand = np.array([t[0] - r[0] * wp, t[1] - r[1] * hp, t[2] - r[2] * wp, t[3] - r[3] * hp])
  return bool(np.array_equal(np.trunc(cand), np.trunc(o)))


def _compare(ours: dict, ref_boxes, ref_probs, ref_points, where: str) -> dict:
  """Asserts detection parity; returns the measured errors."""
  if ref_boxes is None:
    assert len(ours["boxes"]) == 0, where
    return {}
  ref_boxes = np.asarray(ref_boxes, np.float64)
  ref_probs = np.asarray(ref_probs, np.float64)
  ref_points = np.asarray(ref_points.tolist(), np.float64)
  n = len(ref_boxes)
  assert len(ours["boxes"]) == n, (where, len(ours["boxes"]), n)
  iou = box_iou(ours["boxes"], ref_boxes)
  match = iou.argmax(1)
  assert len(set(match.tolist())) == n, where
  best = iou[np.arange(n), match]
  ok = best >= 0.999
  ties = np.where(~ok)[0]
  # Exact score ties (see _tie_explains) are the only accepted mismatches; a handful at
  # most among the hundreds of crowd faces.
  assert len(ties) <= max(1, n // 100), (where, ties, best[ties])
  for i in ties:
    assert abs(float(ours["scores"][i]) - ref_probs[match[i]]) <= 1e-6, where
    assert _tie_explains(ours["boxes"][i], ours["onet_boxes"][i], ref_boxes[match[i]]), (
        where, ours["boxes"][i], ref_boxes[match[i]])
  score_err = np.abs(ours["scores"] - ref_probs[match]).max()
  lm_err = np.abs(ours["landmarks"][ok] - ref_points[match[ok]]).max()
  assert score_err <= 1e-4, (where, score_err)
  assert lm_err <= 0.5, (where, lm_err)
  return {"min_iou": float(best[ok].min()), "score": float(score_err), "landmarks": float(lm_err),
          "ties": len(ties)}


@pytest.mark.parity
def test_real_parity_astronaut(real):
  variables, ref = real
  img = astronaut()
  ours = mtcnn.detect(variables, img)
  assert len(ours) == 1 and len(ours[0]["boxes"]) == 1
  err = _compare(ours[0], *ref.detect(img, landmarks=True), "astronaut")
  assert err["ties"] == 0
  # [0, 1] float input gives the same faces.
  ours_f = mtcnn.detect(variables, img.astype(np.float32) / 255.0)
  np.testing.assert_allclose(ours_f[0]["boxes"], ours[0]["boxes"], atol=1e-2)


@pytest.mark.parity
def test_real_parity_talking_head(real):
  variables, ref = real
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), 4)
  ours = mtcnn.detect(variables, frames)  # One batched call; the reference runs per frame.
  assert len(ours) == 4
  for i, f in enumerate(frames):
    assert len(ours[i]["boxes"]) >= 1
    err = _compare(ours[i], *ref.detect(f, landmarks=True), f"talking_head_a[{i}]")
    assert err["ties"] == 0


@pytest.mark.parity
@pytest.mark.slow
def test_real_parity_crowd(real):
  """312 faces; one of them is an exact score tie (see ``_tie_explains``)."""
  variables, ref = real
  img = read_image(shared_file("data", "crowd_selfie.jpg"))
  ours = mtcnn.detect(variables, img)[0]
  assert len(ours["boxes"]) > 100
  _compare(ours, *ref.detect(img, landmarks=True), "crowd_selfie")


# ---------------------------------------------------------------------------------
# The static-shape, differentiable ONet on fixed boxes.
# ---------------------------------------------------------------------------------
@pytest.mark.parity
def test_onet_on_boxes(real):
  variables, _ = real
  img = astronaut()
  dets = mtcnn.detect(variables, img)
  boxes, mask = mtcnn.stack_boxes(dets, k=1)
  assert mask.all()
  frames = jnp.asarray(img[None].astype(np.float32) / 255.0)

  scores, reg, lms = mtcnn.onet_on_boxes(variables, frames, jnp.asarray(boxes))
  assert scores.shape == (1, 1) and reg.shape == (1, 1, 4) and lms.shape == (1, 1, 5, 2)
  # 'area' resampling is detect()'s own interpolation: same outputs up to float rounding.
  np.testing.assert_allclose(np.asarray(lms[0, 0]), dets[0]["landmarks"][0], atol=1e-2)
  np.testing.assert_allclose(np.asarray(scores[0, 0]), dets[0]["scores"][0], atol=1e-5)
  np.testing.assert_allclose(np.asarray(mtcnn.calibrate(jnp.asarray(boxes), reg))[0, 0],
                             dets[0]["boxes"][0], atol=1e-2)

  # Bilinear resampling of the same window: landmarks within a few pixels.
  s_b, _, lms_b = mtcnn.onet_on_boxes(variables, frames, jnp.asarray(boxes), resample="bilinear")
  assert np.abs(np.asarray(lms_b[0, 0]) - dets[0]["landmarks"][0]).max() <= 3.0
  assert float(s_b[0, 0]) > 0.9

  def objective(f, resample):
    s, r, l = mtcnn.onet_on_boxes(variables, f, jnp.asarray(boxes), resample=resample)
    return s.sum() + r.sum() + 1e-2 * l.sum()

  for resample in ("area", "bilinear"):
    g = np.asarray(jax.grad(objective)(frames, resample))
    assert g.shape == frames.shape
    assert np.isfinite(g).all() and np.abs(g).max() > 0, resample
    # Gradient only inside the face crop.
    y0 = int(boxes[0, 0, 1])
    assert np.abs(g[0, : max(y0 - 2, 0)]).max() == 0


# ---------------------------------------------------------------------------------
# The attack's PNet pyramid and RNet stage against facenet-pytorch's detect_face.
# ---------------------------------------------------------------------------------
def _capture_detect_face(real, img, monkeypatch):
  """Runs facenet-pytorch's ``MTCNN.detect`` on ``img`` and records what its stages saw.

  Returns ``{'pnet': [(input, reg, prob)] per pyramid level, 'rnet_boxes': the (K, 4)
  boxes ``detect_face`` cropped for RNet, 'rnet': (input, reg, prob)}`` (NCHW torch).
  """
  import torch
  from facenet_pytorch.models.utils import detect_face as fdf
  _, ref = real
  seen = {"pnet": [], "rnet": [], "pad": []}
  orig_pad = fdf.pad

  def pad(boxes, w, h):
    seen["pad"].append(boxes[:, :4].clone())
    return orig_pad(boxes, w, h)

  monkeypatch.setattr(fdf, "pad", pad)
  hooks = [getattr(ref, n).register_forward_hook(
      lambda m, inp, out, n=n: seen[n].append((inp[0].detach().clone(), *[o.detach().clone() for o in out])))
      for n in ("pnet", "rnet")]
  try:
    with torch.no_grad():
      ref.detect(img)
  finally:
    for h in hooks:
      h.remove()
  rnet = tuple(torch.cat([c[i] for c in seen["rnet"]]) for i in range(3))
  return {"pnet": seen["pnet"], "rnet_boxes": seen["pad"][0].numpy(), "rnet": rnet}


def _nhwc(t):
  return np.transpose(t.numpy(), (0, 2, 3, 1))


@pytest.mark.parity
@pytest.mark.parametrize("size", [(256, 256), (183, 127), (12, 31), (100, 300)])
def test_resize_area_matches_torch_area_interpolate(size):
  """``resize_area`` = ``F.interpolate(mode='area')`` (facenet's ``imresample``), shrinking
  and enlarging, on a real frame in 0..255."""
  torch = pytest.importorskip("torch")
  img = read_frames(shared_file("data", "talking_head_a.mp4"), 1, start=5).astype(np.float32)
  ours = np.asarray(mtcnn.resize_area(jnp.asarray(img), size))
  ref = torch.nn.functional.interpolate(torch.from_numpy(img).permute(0, 3, 1, 2), size=size, mode="area")
  assert ours.shape == (1, *size, 3)
  assert _rel(ours, _nhwc(ref)) <= 1e-5


@pytest.mark.parametrize("size", [256, 960])
def test_pnet_windows_equal_the_pyramid_where_proposals_are(real, size):
  """The attack's PNet windows (mtcnn.pnet_windows / pnet_pyramid_windows) hold every
  position the original proposed and give the full pyramid's outputs there, on real
  frames: talking_head_a at 256x256, and pasted into a 960x960 cabin frame, where the
  windows are a small part of the pyramid (the cost follows the face)."""
  from drsf_jax.io import samples
  variables, _ = real
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), 2, start=40)
  if size != 256:
    frames = samples.cabin_frames(frames, size, size, 560, 420)
  x = jnp.asarray(frames.astype(np.float32) / 255.0)
  full = mtcnn.pnet_pyramid(variables, x)
  pos = [np.asarray(p) >= 0.3 for _, p in full]
  windows, sizes = mtcnn.pnet_windows(pos, (size, size))
  parts = mtcnn.pnet_pyramid_windows(variables, x, windows)
  assert len(parts) == len(full)
  level_positions = window_positions = 0
  for (reg, prob), (reg_w, prob_w), wnd, p in zip(full, parts, windows, pos):
    r0, c0 = int(wnd["p0"]), int(wnd["q0"])
    n, m = prob_w.shape[1:]
    assert p[:, r0:r0 + n, c0:c0 + m].sum() == p.sum()  # Every proposal inside.
    assert _rel(prob_w, prob[:, r0:r0 + n, c0:c0 + m]) <= 1e-5
    assert _rel(reg_w, reg[:, r0:r0 + n, c0:c0 + m]) <= 1e-5
    level_positions += prob.shape[1] * prob.shape[2]
    window_positions += n * m
  print(size, f"windows: {window_positions} of {level_positions} PNet positions")
  assert sizes == [tuple(p.shape[1:]) for _, p in parts]
  # Sizes only grow from at_least (the attack keeps them across a video's batches).
  grown = [(r + 16, c) for r, c in sizes]
  again, sizes2 = mtcnn.pnet_windows(pos, (size, size), at_least=grown)
  assert all(s2[0] >= min(g[0], p.shape[1]) and s2[1] >= s1[1]
             for s1, s2, g, (_, p) in zip(sizes, sizes2, grown, full))
  assert window_positions < (0.75 if size == 256 else 0.1) * level_positions


@pytest.mark.parity
@pytest.mark.parametrize("which", ["talking_head", "astronaut"])
def test_pnet_pyramid_and_rnet_on_boxes_match_detect_face(real, monkeypatch, which):
  """The attack's differentiable PNet pyramid and RNet-on-boxes reproduce what
  facenet-pytorch's ``detect_face`` computes: every pyramid level's resized input and
  PNet outputs, and RNet's outputs on the very boxes ``detect_face`` cropped for it
  (relative error <= 1e-5)."""
  pytest.importorskip("torch")
  img = (read_frames(shared_file("data", "talking_head_a.mp4"), 1, start=5)[0] if which == "talking_head"
         else astronaut())
  variables, _ = real
  seen = _capture_detect_face(real, img, monkeypatch)
  frames = jnp.asarray(img[None].astype(np.float32) / 255.0)
  h, w = img.shape[:2]
  scales = mtcnn.pyramid_scales(h, w, 20, 0.709)
  levels = mtcnn.pnet_pyramid(variables, frames)
  assert len(levels) == len(seen["pnet"]) == len(scales)
  errs = []
  for scale, (reg, prob), (x_ref, reg_ref, prob_ref) in zip(scales, levels, seen["pnet"]):
    level = mtcnn.resize_area(frames * 255.0, (int(h * scale + 1), int(w * scale + 1)))
    x = (level - mtcnn.PIXEL_MEAN) * mtcnn.PIXEL_SCALE
    errs.append((_rel(x, _nhwc(x_ref)), _rel(reg, _nhwc(reg_ref)), _rel(prob, prob_ref.numpy()[:, 1])))
  print(which, "pnet levels: max rel error (input, reg, prob)", np.max(errs, axis=0))
  assert np.max(errs) <= 1e-5

  boxes = seen["rnet_boxes"]
  assert len(boxes) >= 1 and len(boxes) == len(seen["rnet"][0])
  scores, reg = mtcnn.rnet_on_boxes(variables, frames, jnp.asarray(boxes[None]))
  _, reg_ref, prob_ref = seen["rnet"]
  e_s, e_r = _rel(scores[0], prob_ref[:, 1].numpy()), _rel(reg[0], reg_ref.numpy())
  print(which, f"rnet on {len(boxes)} boxes: rel error score {e_s:.2e}, reg {e_r:.2e}")
  assert e_s <= 1e-5 and e_r <= 1e-5
