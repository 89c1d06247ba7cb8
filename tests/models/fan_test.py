"""Tests for the Flax 2D-FAN port (drsf_jax.models.fan) and its converter."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support import randomize_torch, random_flax_variables, read_frames, shared_file
from drsf_jax.io import checkpoints
from drsf_jax.models import fan
from weights_conversion import common
from weights_conversion import fan as fan_conversion

# A fixed face box (x1, y1, x2, y2) on talking_head_a.mp4 (256x256, one frontal face,
# forehead to chin). OpenCV 5's wheel no longer ships the Haar cascade classifier, so the
# box is fixed; fractional corners exercise sub-pixel crop matrices. The 200 * scale crop
# (~284 px) overflows the frame, which exercises the zero border too.
FACE_BOX = (62.5, 68.0, 193.5, 214.0)


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def torch_fan(tmp_path_factory):
  """Randomised face_alignment FAN(4), saved as a plain state dict and as TorchScript."""
  torch = pytest.importorskip("torch")
  fa_models = pytest.importorskip("face_alignment.models")
  torch.manual_seed(0)
  model = randomize_torch(fa_models.FAN(4), seed=1, gain=0.5)
  d = tmp_path_factory.mktemp("fan")
  plain = os.path.join(d, "fan_state_dict.pth")
  torch.save(model.state_dict(), plain)
  scripted = os.path.join(d, "fan_torchscript.zip")
  traced = torch.jit.trace(model, torch.rand(1, 3, 256, 256), check_trace=False, strict=False)
  torch.jit.save(traced, scripted)
  x = torch.from_numpy(np.random.default_rng(7).random((2, 3, 256, 256), np.float32))
  with torch.no_grad():
    outs = [o.numpy().transpose(0, 2, 3, 1) for o in model(x)]
  return {"model": model, "plain": plain, "torchscript": scripted,
          "x": x.numpy().transpose(0, 2, 3, 1), "outs": outs}


@functools.lru_cache(maxsize=None)
def _jit_apply_all():
  return jax.jit(lambda v, x: fan.apply(v, x, fan.DEFAULT_CONFIGS["fan"], all_stacks=True))


@pytest.mark.parity
@pytest.mark.parametrize("source", ["plain", "torchscript"])
def test_random_weight_parity(torch_fan, source):
  sd = common.load_state_dict(torch_fan[source])
  ref_sd = torch_fan["model"].state_dict()
  assert set(sd) == set(ref_sd)
  cfg = fan.DEFAULT_CONFIGS["fan"]
  variables = fan_conversion.convert(common.StateDict(sd, source=source), "fan", cfg)
  checkpoints.check_tree(fan.expected_variables("fan", cfg), variables)
  outs = _jit_apply_all()(variables, jnp.asarray(torch_fan["x"]))
  assert len(outs) == 4
  for i, (got, want) in enumerate(zip(outs, torch_fan["outs"])):
    assert got.shape == (2, 64, 64, 68)
    err = _rel(got, want)
    assert err <= 1e-4, (source, i, err)


@pytest.mark.parity
def test_decode_matches_get_preds_fromhm(torch_fan):
  fa_utils = pytest.importorskip("face_alignment.utils")
  rng = np.random.default_rng(3)
  # Synthetic peaked heatmaps: a Gaussian per landmark, peaks on the border included.
  yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
  px = rng.uniform(-0.4, 63.4, (2, 68)).astype(np.float32)
  py = rng.uniform(-0.4, 63.4, (2, 68)).astype(np.float32)
  px[0, :4], py[0, :4] = [0, 63, 10, 0], [5, 63, 0, 0]
  synth = np.exp(-((xx[None, None] - px[..., None, None]) ** 2
                   + (yy[None, None] - py[..., None, None]) ** 2) / (2 * 1.5 ** 2))
  synth += 0.01 * rng.random(synth.shape)
  synth[1, 0] = 0.0  # A flat map: ties and zero differences.
  synth[1, 0, 20, 30] = 1.0  # Equal neighbours on both sides: sign(0) -> no step.
  synth = synth.astype(np.float32)
  heatmaps_nchw = [synth, torch_fan["outs"][-1].transpose(0, 3, 1, 2).copy()]
  centers = np.array([[127.3, 110.9], [300.25, 180.5]], np.float32)
  scales = np.array([1.4205, 0.83], np.float32)

  decode = jax.jit(fan.decode_heatmaps)
  for hm in heatmaps_nchw:
    pts, _ = fan.heatmap_peaks(jnp.asarray(hm.transpose(0, 2, 3, 1)))
    got = np.asarray(decode(jnp.asarray(hm.transpose(0, 2, 3, 1)), centers, scales))
    for b in range(hm.shape[0]):
      want_hm, want_int, want_scores = fa_utils.get_preds_fromhm(hm[b:b + 1].copy(), centers[b],
                                                                 float(scales[b]))
      np.testing.assert_allclose(np.asarray(pts[b]), want_hm[0], atol=1e-3)
      # Their image coordinates are the same inverse transform cast to int (trunc).
      h = 200.0 * float(scales[b])
      t = np.array([[64 / h, 0, 64 * (-centers[b, 0] / h + 0.5)],
                    [0, 64 / h, 64 * (-centers[b, 1] / h + 0.5)], [0, 0, 1]])
      homog = np.concatenate([want_hm[0], np.ones((68, 1), np.float32)], 1)
      want_float = (np.linalg.pinv(t) @ homog.T).T[:, :2]
      np.testing.assert_allclose(got[b], want_float, atol=1e-3)
      clear = np.abs(got[b] - np.round(got[b])) > 1e-3
      np.testing.assert_array_equal(np.trunc(got[b])[clear], want_int[0][clear])
      _, scores = fan.heatmap_peaks(jnp.asarray(hm[b:b + 1].transpose(0, 2, 3, 1)))
      np.testing.assert_allclose(np.asarray(scores)[0], want_scores[0], rtol=1e-6)


def test_crop_transform_and_matrix():
  center, scale = fan.crop_transform(np.array([FACE_BOX, (10, 20, 110, 140)], np.float32))
  np.testing.assert_allclose(center, [[128.0, 141.0 - 0.12 * 146.0], [60.0, 80.0 - 0.12 * 120.0]],
                             rtol=1e-6)
  np.testing.assert_allclose(scale, [(131.0 + 146.0) / 195.0, 220.0 / 195.0], rtol=1e-6)
  m = np.asarray(fan.crop_matrix(center, scale))
  # The square of side 200 * scale around the centre maps onto [0, 256].
  for b in range(2):
    half = 100.0 * float(scale[b])
    for corner, want in (((-half, -half), (0, 0)), ((half, half), (256, 256))):
      p = np.array([center[b, 0] + corner[0], center[b, 1] + corner[1], 1.0])
      np.testing.assert_allclose(m[b] @ p, want, atol=1e-3)
  # Decoding is the inverse of the crop at the heatmap resolution.
  pts = np.array([[[0.0, 0.0], [64.0, 64.0], [17.25, 40.5]]] * 2, np.float32)
  img = np.asarray(fan.heatmap_to_image(pts, center, scale))
  back = np.einsum("bij,bkj->bki", m, np.concatenate([img, np.ones((2, 3, 1))], -1))
  np.testing.assert_allclose(back / 4.0, pts, atol=1e-4)


def _frames_and_geometry(n=2, box=FACE_BOX):
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), n, start=50)
  center, scale = fan.crop_transform(np.array([box] * n, np.float32))
  return frames, np.asarray(center), np.asarray(scale)


def test_crop_matches_opencv_on_real_frames():
  import cv2
  frames, center, scale = _frames_and_geometry()
  m = np.asarray(fan.crop_matrix(center, scale))
  got = np.asarray(jax.jit(fan.crop)(jnp.asarray(frames, jnp.float32) / 255.0, m))
  assert got.shape == (2, 256, 256, 3)
  for b in range(2):
    want = cv2.warpAffine(frames[b], m[b].astype(np.float64), (256, 256), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mad = np.abs(got[b] * 255.0 - want.astype(np.float64)).mean()
    assert mad <= 1.0, mad
    assert got[b].std() > 0.05  # A real face, not an empty crop.


def _face_alignment_crop_matrix(center, scale, res=256):
  """The affine map that face_alignment.utils.crop realises (integer corners + resize)."""
  from face_alignment import utils as fa_utils
  center = np.asarray(center, np.float64)
  ul = fa_utils.transform([1, 1], center, float(scale), res, True).numpy()
  br = fa_utils.transform([res, res], center, float(scale), res, True).numpy()
  # crop() copies image pixels [ul, br) and cv2.resize()s them (half-pixel centres).
  s = res / (br - ul).astype(np.float64)
  return np.array([[s[0], 0, (0.5 - ul[0]) * s[0] - 0.5],
                   [0, s[1], (0.5 - ul[1]) * s[1] - 0.5]], np.float32)


@pytest.mark.parity
def test_crop_vs_face_alignment_crop():
  """Our crop follows transform() exactly; face_alignment's crop is offset by <= ~1 px.

  face_alignment.utils.crop takes the integer-truncated images of the crop corners [1, 1]
  and [256, 256] (1-based), copies the pixels between them and resizes: a region
  255/256 as wide, starting ~h/256 source px (one crop px) right/down of ours, plus up to
  one source px of int() truncation. Warping with the matrix of that convention
  reproduces their crop, which pins the difference on the convention.
  """
  fa_utils = pytest.importorskip("face_alignment.utils")
  frames, center, scale = _frames_and_geometry()
  ours = np.asarray(fan.crop(jnp.asarray(frames, jnp.float32),
                             fan.crop_matrix(center, scale)))
  m_fa = np.stack([_face_alignment_crop_matrix(center[b], scale[b]) for b in range(2)])
  theirs_conv = np.asarray(fan.crop(jnp.asarray(frames, jnp.float32), jnp.asarray(m_fa)))
  for b in range(2):
    # float64 centre as in face_alignment's api (torch refuses numpy.float32 scalars).
    theirs = fa_utils.crop(frames[b], center[b].astype(np.float64), float(scale[b]))
    theirs = theirs.astype(np.float64)
    mad_ours = np.abs(ours[b] - theirs).mean()  # Measured: 3.24 grey levels.
    mad_conv = np.abs(theirs_conv[b] - theirs).mean()  # Measured: 0.20.
    # Same convention -> same pixels (up to uint8 rounding and cv2's 1/32-px weights).
    assert mad_conv <= 1.0, mad_conv
    # Different convention -> a visible but bounded difference (~1 px shift at most).
    assert mad_conv < mad_ours < 20.0, (mad_conv, mad_ours)
    # Sampling positions differ by ~h/256 source px (1 crop px) from the 1-based corner,
    # plus up to 1 source px where int() truncates a corner (towards zero).
    m_ours = np.asarray(fan.crop_matrix(center[b:b + 1], scale[b:b + 1]))[0]
    corners = np.array([[0, 0, 1], [255, 255, 1]], np.float64)
    inv = lambda m: np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]  # pylint: disable=unnecessary-lambda-assignment
    shift = (inv(m_fa[b]) @ corners.T - inv(m_ours) @ corners.T) * m_ours[0, 0]
    assert np.abs(shift).max() <= 1.0 + 1.5 * m_ours[0, 0], shift


def test_conversion_is_strict():
  torch = pytest.importorskip("torch")
  fa_models = pytest.importorskip("face_alignment.models")
  torch.manual_seed(0)
  sd = common.state_dict_from_module(fa_models.FAN(2))
  cfg = dict(fan.DEFAULT_CONFIGS["fan"], num_modules=2)
  variables = fan_conversion.convert(common.StateDict(dict(sd)), "fan", cfg)
  checkpoints.check_tree(fan.expected_variables("fan", cfg), variables)

  missing = dict(sd)
  del missing["m1.b2_plus_1.conv3.weight"]
  with pytest.raises(common.ConversionError, match=r"m1\.b2_plus_1\.conv3\.weight"):
    fan_conversion.convert(common.StateDict(missing), "fan", cfg)
  extra = dict(sd, **{"m1.b1_4.extra.weight": np.zeros((3,), np.float32)})
  with pytest.raises(common.ConversionError, match=r"m1\.b1_4\.extra\.weight"):
    fan_conversion.convert(common.StateDict(extra), "fan", cfg)
  # A FAN-2 checkpoint is not a FAN-1: the second stack's keys are unexpected.
  with pytest.raises(common.ConversionError, match=r"unexpected key"):
    fan_conversion.convert(common.StateDict(dict(sd)), "fan", dict(cfg, num_modules=1))


def test_grad_through_crop_and_fan_is_finite():
  # A small box, so that the crop square lies inside the frame.
  frames, center, scale = _frames_and_geometry(1, box=(90.0, 90.0, 150.0, 160.0))
  cfg = fan.DEFAULT_CONFIGS["fan"]
  variables = random_flax_variables(fan.expected_variables("fan", cfg), seed=0)
  m = fan.crop_matrix(center, scale)
  x = jnp.asarray(frames, jnp.float32) / 255.0
  target = jax.random.normal(jax.random.PRNGKey(1), (1, 64, 64, 68))

  @jax.jit
  def loss(frames):
    heatmaps = fan.apply(variables, fan.crop(frames, m), cfg)
    return jnp.mean((heatmaps - target) ** 2)

  g = np.asarray(jax.grad(loss)(x))
  assert g.shape == x.shape
  assert np.all(np.isfinite(g))
  assert np.abs(g).max() > 0
  # Pixels outside the crop square get no gradient; pixels inside do.
  half = 100.0 * float(scale[0])
  lo = np.floor(center[0] - half).astype(int) - 1
  hi = np.ceil(center[0] + half).astype(int) + 2
  assert lo.min() > 0 and hi.max() < 256, (lo, hi)
  assert np.abs(g[0, :, :lo[0]]).max() == 0 and np.abs(g[0, :, hi[0]:]).max() == 0
  assert np.abs(g[0, :lo[1]]).max() == 0 and np.abs(g[0, hi[1]:]).max() == 0
  assert np.abs(g[0, lo[1] + 2:hi[1] - 2, lo[0] + 2:hi[0] - 2]).mean() > 0


@pytest.mark.parity
def test_registry_round_trip_from_torchscript(torch_fan, tmp_path):
  from weights_conversion import registry
  path, meta = registry.convert("fan", torch_fan["torchscript"], wdir=str(tmp_path))
  assert meta["config"]["num_modules"] == 4
  variables, meta2 = checkpoints.load("fan", str(tmp_path))
  assert meta2["model"] == "fan" and os.path.isfile(path)
  checkpoints.check_tree(fan.expected_variables("fan", meta2["config"]), variables)
  direct = fan_conversion.convert(common.StateDict(common.load_state_dict(torch_fan["plain"])),
                                  "fan", meta2["config"])
  for a, b in zip(jax.tree_util.tree_leaves(direct), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
