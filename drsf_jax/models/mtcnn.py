"""MTCNN face detector (facenet-pytorch 2.6.0 semantics) in Flax.

Three small networks form a cascade (Zhang et al. 2016, as ported by facenet-pytorch):

* ``PNet``: fully convolutional proposal net run on an image pyramid; per 12x12 window
  (stride 2) it gives a box regression (4) and face probabilities (2, softmax).
* ``RNet``: refines 24x24 crops of the proposals: regression (4), probabilities (2).
* ``ONet``: final 48x48 crops: regression (4), five landmarks (10, all x then all y, as
  fractions of the box) and probabilities (2).

Variables hold the three nets side by side: ``{'pnet': {'params': ...}, 'rnet': {...},
'onet': {...}}``. Submodule names are the PyTorch attribute names (``conv1``, ``prelu1``,
``dense5``, ``conv4_1``...), so torch key ``onet.dense6_3.weight`` is Flax path
``onet/params/dense6_3/kernel`` (transposed).

Input conventions:

* ``pnet_apply``/``rnet_apply``/``onet_apply`` take **network input**, i.e. NHWC RGB
  already normalised as the weights were trained: ``(x255 - 127.5) * 0.0078125``
  (use :func:`normalize` on [0, 1] frames). They return NHWC outputs in facenet-pytorch's
  order: PNet ``(reg (B, h, w, 4), prob (B, h, w, 2))``, RNet ``(reg (N, 4), prob (N, 2))``,
  ONet ``(reg (N, 4), landmarks (N, 10), prob (N, 2))``. Index 1 of ``prob`` is "face".
* :func:`detect` and :func:`onet_on_boxes` take **frames**: NHWC float32 RGB in [0, 1]
  (``detect`` also accepts uint8 0..255, used as is, which reproduces facenet-pytorch
  bit for bit up to the network arithmetic). The original DRSF code fed [0, 1] frames
  straight into the nets, which were trained on ``(x - 127.5) / 128``: a defect we fix by
  normalising inside.

The host-side :func:`detect` reproduces ``facenet_pytorch.models.utils.detect_face.
detect_face`` followed by ``MTCNN.detect(landmarks=True)`` (``select_largest=True``):
pyramid with ``min_face_size`` and ``factor``, area-interpolated resampling, thresholds,
per-scale NMS 0.5 and cross-scale NMS 0.7 (torchvision IoU: no ``+1``), box calibration,
squaring (``rerec``), integer padding (``pad``), RNet (NMS 0.7), ONet (landmarks,
calibration, NMS 0.7 with the "Min" overlap and the ``+1`` convention). Float32 is used
for every box operation in the same order as the reference, so that truncations to
integer crop coordinates agree. The nets run under ``jax.jit`` (cached per shape; RNet
and ONet batches are padded to a few bucket sizes); the variable-length bookkeeping is
numpy. Frames of a batch are processed independently (facenet-pytorch's batched NMS
shifts boxes by image index, which can change float rounding; a per-image call to
facenet-pytorch is what we match).

For the attack, :func:`onet_on_boxes` is static-shape and differentiable in the frames:
it crops fixed boxes, resamples them to 48x48 (by default with the exact area
interpolation that ``detect`` uses, written as two averaging matrices; bilinear sampling
is available) and runs ONet.
"""

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


from drsf_jax.geometry import bbox
from drsf_jax.models import layers

NETS = ("pnet", "rnet", "onet")
INPUT_SIZES = {"pnet": 12, "rnet": 24, "onet": 48}

DEFAULT_CONFIGS: dict[str, dict] = {
    "mtcnn": {
        "min_face_size": 20,
        "thresholds": [0.6, 0.7, 0.7],
        "factor": 0.709,
        # NMS IoU thresholds: PNet within one scale, PNet across scales, after RNet, and
        # after ONet (the last one uses the "Min" overlap: inter / min(area)).
        "nms_thresholds": [0.5, 0.7, 0.7, 0.7],
    },
}

# facenet-pytorch's input normalisation of 0..255 pixel values.
PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125

# Bucketed batch sizes for RNet/ONet in ``detect`` (limits recompilation).
_SMALL_BATCH = 64
_CHUNK = 512


# ----------------------------------------------------------------------------------
# Networks.
# ----------------------------------------------------------------------------------
def _wh_flatten(x):
  """Flattens NHWC as facenet-pytorch's ``x.permute(0, 3, 2, 1).view(N, -1)`` on NCHW.

  That permutation gives (N, W, H, C), so the dense layers see a W-major, then H, then
  channel order.
  """
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


class PNet(nn.Module):
  """Proposal net: normalised NHWC input (any size >= 12) -> ``(reg, prob)`` maps."""

  @nn.compact
  def __call__(self, x):
    x = layers.PReLU(name="prelu1")(layers.Conv2d(10, 3, name="conv1")(x))
    x = layers.max_pool2d(x, 2, 2, ceil_mode=True)
    x = layers.PReLU(name="prelu2")(layers.Conv2d(16, 3, name="conv2")(x))
    x = layers.PReLU(name="prelu3")(layers.Conv2d(32, 3, name="conv3")(x))
    prob = jax.nn.softmax(layers.Conv2d(2, 1, name="conv4_1")(x), axis=-1)
    reg = layers.Conv2d(4, 1, name="conv4_2")(x)
    return reg, prob


class RNet(nn.Module):
  """Refinement net: normalised (N, 24, 24, 3) -> ``(reg (N, 4), prob (N, 2))``."""

  @nn.compact
  def __call__(self, x):
    x = layers.PReLU(name="prelu1")(layers.Conv2d(28, 3, name="conv1")(x))
    x = layers.max_pool2d(x, 3, 2, ceil_mode=True)
    x = layers.PReLU(name="prelu2")(layers.Conv2d(48, 3, name="conv2")(x))
    x = layers.max_pool2d(x, 3, 2, ceil_mode=True)
    x = layers.PReLU(name="prelu3")(layers.Conv2d(64, 2, name="conv3")(x))
    x = layers.PReLU(name="prelu4")(layers.Linear(128, name="dense4")(_wh_flatten(x)))
    prob = jax.nn.softmax(layers.Linear(2, name="dense5_1")(x), axis=-1)
    reg = layers.Linear(4, name="dense5_2")(x)
    return reg, prob


class ONet(nn.Module):
  """Output net: normalised (N, 48, 48, 3) -> ``(reg (N, 4), landmarks (N, 10), prob (N, 2))``."""

  @nn.compact
  def __call__(self, x):
    x = layers.PReLU(name="prelu1")(layers.Conv2d(32, 3, name="conv1")(x))
    x = layers.max_pool2d(x, 3, 2, ceil_mode=True)
    x = layers.PReLU(name="prelu2")(layers.Conv2d(64, 3, name="conv2")(x))
    x = layers.max_pool2d(x, 3, 2, ceil_mode=True)
    x = layers.PReLU(name="prelu3")(layers.Conv2d(64, 3, name="conv3")(x))
    x = layers.max_pool2d(x, 2, 2, ceil_mode=True)
    x = layers.PReLU(name="prelu4")(layers.Conv2d(128, 2, name="conv4")(x))
    x = layers.PReLU(name="prelu5")(layers.Linear(256, name="dense5")(_wh_flatten(x)))
    prob = jax.nn.softmax(layers.Linear(2, name="dense6_1")(x), axis=-1)
    reg = layers.Linear(4, name="dense6_2")(x)
    landmarks = layers.Linear(10, name="dense6_3")(x)
    return reg, landmarks, prob


_MODULES = {"pnet": PNet(), "rnet": RNet(), "onet": ONet()}


# ----------------------------------------------------------------------------------
# Family contract.
# ----------------------------------------------------------------------------------
def _config(config: Mapping[str, Any] | None) -> dict:
  cfg = dict(DEFAULT_CONFIGS["mtcnn"])
  if config:
    unknown = set(config) - set(cfg)
    if unknown:
      raise ValueError(f"unknown mtcnn config keys {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(config)
  if len(cfg["thresholds"]) != 3 or len(cfg["nms_thresholds"]) != 4:
    raise ValueError("mtcnn config needs 3 thresholds and 4 nms_thresholds, got "
                     f"{cfg['thresholds']} and {cfg['nms_thresholds']}")
  return cfg


def _check_model(model: str):
  if model != "mtcnn":
    raise ValueError(f"the mtcnn family has one model, 'mtcnn', not {model!r}")


def build(model: str, config: Mapping[str, Any] | None = None) -> dict[str, nn.Module]:
  """The three modules ``{'pnet': PNet(), 'rnet': RNet(), 'onet': ONet()}``."""
  _check_model(model)
  _config(config)
  return dict(_MODULES)


def expected_variables(model: str, config: Mapping[str, Any] | None = None):
  """``{'pnet': {'params': ...}, 'rnet': ..., 'onet': ...}`` of ``jax.ShapeDtypeStruct``."""
  modules = build(model, config)
  out = {}
  for name in NETS:
    s = INPUT_SIZES[name]
    x = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
    out[name] = jax.eval_shape(modules[name].init, jax.random.PRNGKey(0), x)
  return out


def init(seed: int = 0) -> dict:
  """Random variables of the three nets (tests, shapes), drawn with numpy.

  Kernels are normal with std ``1 / sqrt(fan_in)``, biases small normal, PReLU slopes
  0.25. (Faster than ``module.init``, whose random-number code takes seconds to compile.)
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "alpha":
      return np.full(leaf.shape, 0.25, np.float32)
    if name == "bias":
      return (rng.standard_normal(leaf.shape) * 0.1).astype(np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, expected_variables("mtcnn"))


# ----------------------------------------------------------------------------------
# Forward passes (jit-able, differentiable).
# ----------------------------------------------------------------------------------
def _net_vars(variables: Mapping[str, Any], name: str):
  """Accepts the family variables ``{'pnet': ...}`` or one net's ``{'params': ...}``."""
  return variables[name] if name in variables else variables


def normalize(frames: jax.Array) -> jax.Array:
  """[0, 1] frames -> network input ``(x * 255 - 127.5) * 0.0078125``."""
  return (frames * 255.0 - PIXEL_MEAN) * PIXEL_SCALE


@jax.jit
def pnet_apply(variables, x):
  """PNet on normalised NHWC input: ``(reg (B, h, w, 4), prob (B, h, w, 2))``."""
  return _MODULES["pnet"].apply(_net_vars(variables, "pnet"), x)


@jax.jit
def rnet_apply(variables, x):
  """RNet on normalised (N, 24, 24, 3) input: ``(reg (N, 4), prob (N, 2))``."""
  return _MODULES["rnet"].apply(_net_vars(variables, "rnet"), x)


@jax.jit
def onet_apply(variables, x):
  """ONet on normalised (N, 48, 48, 3): ``(reg (N, 4), landmarks (N, 10), prob (N, 2))``."""
  return _MODULES["onet"].apply(_net_vars(variables, "onet"), x)


# ----------------------------------------------------------------------------------
# Differentiable, static-shape ONet on fixed boxes (for the attack).
# ----------------------------------------------------------------------------------
def crop_windows(boxes: jax.Array, height: int, width: int):
  """Integer crop windows of float boxes, as facenet-pytorch's ``pad``.

  Returns ``(x0, y0, x1, y1)`` int32 with the crop ``image[y0:y1, x0:x1]``: coordinates
  truncated toward zero, ``x0 = max(trunc(x1b), 1) - 1``, ``x1 = min(trunc(x2b), W)``.
  """
  b = jnp.trunc(boxes).astype(jnp.int32)
  x0 = jnp.maximum(b[..., 0], 1) - 1
  y0 = jnp.maximum(b[..., 1], 1) - 1
  x1 = jnp.minimum(b[..., 2], width)
  y1 = jnp.minimum(b[..., 3], height)
  return x0, y0, x1, y1


def _area_matrix(start, stop, size: int, out: int):
  """(..., out, size) averaging-window indicator for ``F.interpolate(mode='area')``.

  Output cell ``i`` of a crop ``[start, stop)`` of length ``n`` averages the input rows
  ``start + floor(i n / out)`` .. ``start + ceil((i + 1) n / out) - 1``. Returns the
  0/1 matrix and the window lengths (at least 1, so an empty crop gives zeros).
  """
  n = jnp.maximum(stop - start, 0)[..., None]
  i = jnp.arange(out, dtype=jnp.int32)
  lo = start[..., None] + (i * n) // out
  hi = start[..., None] + ((i + 1) * n + out - 1) // out
  pos = jnp.arange(size, dtype=jnp.int32)
  mat = ((pos >= lo[..., None]) & (pos < hi[..., None])).astype(jnp.float32)
  return mat, jnp.maximum(hi - lo, 1).astype(jnp.float32)


def _area_matrix_np(size: int, out: int) -> np.ndarray:
  """:func:`_area_matrix` of the whole range ``[0, size)``, row-normalised, in NumPy."""
  i = np.arange(out)
  lo = (i * size) // out
  hi = ((i + 1) * size + out - 1) // out
  pos = np.arange(size)
  mat = ((pos >= lo[:, None]) & (pos < hi[:, None])).astype(np.float32)
  return mat / np.maximum(hi - lo, 1).astype(np.float32)[:, None]


def crop_area(frames: jax.Array, boxes: jax.Array, size: int) -> jax.Array:
  """Area-interpolated crops of fixed boxes, differentiable in ``frames``.

  Args:
    frames: (B, H, W, C) float.
    boxes: (B, K, 4) float boxes (x1, y1, x2, y2); cropped as in ``detect`` (``pad``).
    size: output side.

  Returns:
    (B, K, size, size, C): window sums divided by the window height, then width, which
    is ``F.interpolate(crop, (size, size), mode='area')``.
  """
  _, h, w, _ = frames.shape
  x0, y0, x1, y1 = crop_windows(jax.lax.stop_gradient(boxes), h, w)
  rows, kh = _area_matrix(y0, y1, h, size)  # (B, K, size, H)
  cols, kw = _area_matrix(x0, x1, w, size)  # (B, K, size, W)
  hi = jax.lax.Precision.HIGHEST
  t = jnp.einsum("bkiy,byxc->bkixc", rows, frames, precision=hi)
  t = jnp.einsum("bkjx,bkixc->bkijc", cols, t, precision=hi)
  return t / kh[..., :, None, None] / kw[..., None, :, None]


def crop_bilinear(frames: jax.Array, boxes: jax.Array, size: int) -> jax.Array:
  """Bilinear crops of the same integer windows as :func:`crop_area` (pixel centres)."""
  from drsf_jax.geometry import warping  # pylint: disable=import-outside-toplevel
  _, h, w, _ = frames.shape
  x0, y0, x1, y1 = crop_windows(jax.lax.stop_gradient(boxes), h, w)
  t = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  ww = jnp.maximum(x1 - x0, 1).astype(jnp.float32)[..., None]
  hh = jnp.maximum(y1 - y0, 1).astype(jnp.float32)[..., None]
  xs = x0[..., None] + t * ww - 0.5  # (B, K, size)
  ys = y0[..., None] + t * hh - 0.5
  xs = jnp.clip(xs, 0.0, w - 1.0)
  ys = jnp.clip(ys, 0.0, h - 1.0)
  gx = jnp.broadcast_to(xs[..., None, :], xs.shape[:-1] + (size, size))
  gy = jnp.broadcast_to(ys[..., :, None], ys.shape[:-1] + (size, size))
  return jax.vmap(warping.bilinear_sample)(frames, gx, gy)


def landmarks_to_image(boxes, points):
  """ONet's landmark fractions (..., 10) -> pixels (..., 5, 2) of float ``boxes``.

  As ``detect_face``: ``x = (x2 - x1 + 1) * p + x1 - 1`` (same for y).
  """
  w = (boxes[..., 2] - boxes[..., 0] + 1)[..., None]
  h = (boxes[..., 3] - boxes[..., 1] + 1)[..., None]
  px = w * points[..., :5] + boxes[..., 0:1] - 1
  py = h * points[..., 5:] + boxes[..., 1:2] - 1
  return jnp.stack([px, py], axis=-1)


@functools.partial(jax.jit, static_argnames=("resample",))
def onet_on_boxes(variables, frames: jax.Array, boxes: jax.Array, resample: str = "area"):
  """ONet on fixed boxes of each frame; static shapes, differentiable in ``frames``.

  Args:
    variables: MTCNN variables (``variables['onet']`` is used).
    frames: (B, H, W, 3) float32 RGB in [0, 1].
    boxes: (B, K, 4) float boxes x1y1x2y2, e.g. ``detect()``'s ``onet_boxes`` (the
      boxes ONet saw); treated as constants.
    resample: ``'area'`` (exactly ``detect``'s interpolation) or ``'bilinear'``.

  Returns:
    ``scores (B, K)`` (face probability), ``box_reg (B, K, 4)`` (raw ONet regression;
    the final box is ``box + reg * (size + 1)``), ``landmarks (B, K, 5, 2)`` in pixels.
  """
  b, k = boxes.shape[:2]
  crop_fn = {"area": crop_area, "bilinear": crop_bilinear}[resample]
  crops = crop_fn(frames * 255.0, boxes, INPUT_SIZES["onet"])
  x = ((crops - PIXEL_MEAN) * PIXEL_SCALE).reshape((b * k,) + crops.shape[2:])
  reg, points, prob = _MODULES["onet"].apply(_net_vars(variables, "onet"), x)
  boxes = jax.lax.stop_gradient(boxes.astype(jnp.float32))
  lms = landmarks_to_image(boxes, points.reshape(b, k, 10))
  return prob[:, 1].reshape(b, k), reg.reshape(b, k, 4), lms


@jax.jit
def rnet_on_boxes(variables, frames: jax.Array, boxes: jax.Array):
  """RNet on fixed boxes (area crops, 24x24): ``scores (B, K)``, ``box_reg (B, K, 4)``.

  Static shapes, differentiable in ``frames``; ``boxes`` are ``detect()``'s ``rnet_boxes``.
  """
  b, k = boxes.shape[:2]
  crops = crop_area(frames * 255.0, boxes, INPUT_SIZES["rnet"])
  x = ((crops - PIXEL_MEAN) * PIXEL_SCALE).reshape((b * k,) + crops.shape[2:])
  reg, prob = _MODULES["rnet"].apply(_net_vars(variables, "rnet"), x)
  return prob[:, 1].reshape(b, k), reg.reshape(b, k, 4)


def resize_area(frames: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """Whole-frame area resize (B, H, W, C) -> (B, oh, ow, C), differentiable (as the pyramid)."""
  _, h, w, c = frames.shape
  oh, ow = out_hw
  return _resize_matmuls(frames, _area_matrix_np(h, oh), _fold_channels(_area_matrix_np(w, ow), c))


def _fold_channels(cols: np.ndarray, c: int) -> np.ndarray:
  """(ow, w) column averaging matrix -> (w c, ow c), the channels folded in (Kronecker)."""
  return np.kron(cols.T, np.eye(c, dtype=np.float32))


def _resize_matmuls(frames: jax.Array, rows, cols) -> jax.Array:
  """(B, h, w, C) -> (B, oh, ow, C) by ``rows`` (oh, h) and channel-folded ``cols`` (w C, ow C).

  Host-built averaging matrices applied as two plain 2-D matmuls, so that the backward
  pass's dots come out in natural order. As einsums, the gradient of every pyramid level
  came out transposed (C = 3 minor), and XLA:CPU fused the transposing sum of all levels
  into each optimizer moment: 2 x 27 ms of a 130 ms MTCNN attack step on 4x256x256.
  """
  return _resize_rows_first(jnp.transpose(frames, (1, 0, 2, 3)), rows, cols)


def _resize_rows_first(t: jax.Array, rows, cols) -> jax.Array:
  """:func:`_resize_matmuls` of frames already transposed to (h, B, w, C)."""
  h, b, w, c = t.shape
  oh, ow = rows.shape[0], cols.shape[1] // c
  t = rows @ t.reshape(h, b * w * c)                # (oh, b w c)
  t = t.reshape(oh * b, w * c) @ cols              # (oh b, ow c)
  return jnp.transpose(t.reshape(oh, b, ow, c), (1, 0, 2, 3))


def _pnet_on_level(variables, level255: jax.Array):
  """PNet on one pyramid level in 0..255: ``(reg, face_prob)``."""
  reg, prob = _MODULES["pnet"].apply(_net_vars(variables, "pnet"), (level255 - PIXEL_MEAN) * PIXEL_SCALE)
  return reg, prob[..., 1]


def pnet_pyramid(variables, frames: jax.Array, config: Mapping[str, Any] | None = None):
  """PNet on every level of ``detect``'s image pyramid; static shapes, differentiable.

  Args:
    variables: MTCNN variables.
    frames: (B, H, W, 3) float32 RGB in [0, 1].
    config: overrides of ``DEFAULT_CONFIGS['mtcnn']`` (min_face_size, factor).

  Returns:
    One ``(reg (B, h, w, 4), face_prob (B, h, w))`` per pyramid level.
  """
  cfg = _config(config)
  h, w = frames.shape[1], frames.shape[2]
  out = []
  for scale in pyramid_scales(h, w, cfg["min_face_size"], cfg["factor"]):
    out.append(_pnet_on_level(variables, resize_area(frames * 255.0, (int(h * scale + 1), int(w * scale + 1)))))
  return out


# PNet maps are cut into windows of multiples of this many positions (fewer compiled shapes).
PNET_WINDOW_BUCKET = 16


def _pnet_map_size(level: int) -> int:
  """PNet's output positions along a level side of ``level`` px (3x3 valid, 2x2 ceil pool,
  3x3, 3x3): position ``j`` reads level pixels ``2j .. 2j + 11``."""
  return -(-(level - 2) // 2) - 4


def _window_axis(pos_any: np.ndarray, bucket: int, at_least: int = 0) -> tuple[int, int]:
  """``(p0, n)``: the map positions ``p0 .. p0 + n - 1`` that hold every true entry of
  ``pos_any``, ``n`` a multiple of ``bucket`` and at least ``at_least``; the whole axis
  (0, size) when such a window would reach the last position (which reads the pool's ceil
  padding) or hold it all."""
  size = len(pos_any)
  idx = np.flatnonzero(pos_any)
  lo, hi = (int(idx[0]), int(idx[-1])) if len(idx) else (0, 0)
  n = max(-(-(hi - lo + 1) // bucket) * bucket, at_least)
  if n >= size - 1 or hi >= size - 1:
    return 0, size
  return min(lo, size - 1 - n), n


def _band_matrix(start: int, length: int, level: int, size: int):
  """Rows ``start .. start + length - 1`` of the ``size`` -> ``level`` area resize, as a
  (length, band) averaging matrix over input rows ``b0 .. b0 + band - 1``: ``(b0, mat)``.
  The band's length depends only on ``length``, ``level`` and ``size`` (one shape)."""
  band = min(size, -(-length * size // level) + 2)
  full = _area_matrix_np(size, level)[start:start + length]
  b0 = min(int(np.flatnonzero(full.any(axis=0))[0]), size - band)
  assert not full[:, :b0].any() and not full[:, b0 + band:].any()
  return b0, np.ascontiguousarray(full[:, b0:b0 + band])


def pnet_windows(pos: Sequence[np.ndarray], frame_hw: tuple[int, int],
                 config: Mapping[str, Any] | None = None, bucket: int = PNET_WINDOW_BUCKET,
                 at_least: Sequence[tuple[int, int]] | None = None):
  """Host-side windows of the pyramid where a loss needs PNet: per level, the map positions
  that hold every true entry of ``pos[level]`` (B, mh, mw) in any frame, the level pixels
  they read, and the frame rows and columns those pixels average.

  :func:`pnet_pyramid_windows` on them gives PNet's outputs at those positions equal to
  :func:`pnet_pyramid`'s (the same window sums in another order), at a cost that grows with
  the positions rather than the frame: a 960x960 frame's pyramid is ~14x a 256x256 one's.

  ``at_least``: per level, the least window size (rows, columns) in map positions, e.g.
  the sizes returned for earlier batches: windows that only grow keep a video to a few
  compiled shapes (each new set of sizes compiles the attack step anew).

  Returns ``(windows, sizes)``: one dict per level: ``p0``, ``q0`` (int32: the window's
  first map row and column), ``rows`` (lr, band_h) and ``cols`` (band_w * 3, lc * 3)
  averaging matrices (the columns' with the channels folded in, as
  :func:`resize_area`), ``y0``, ``x0`` (int32: the bands' first frame row and column);
  and the windows' sizes (rows, columns), on which alone the shapes depend.
  """
  cfg = _config(config)
  h, w = frame_hw
  out, sizes = [], []
  scales = pyramid_scales(h, w, cfg["min_face_size"], cfg["factor"])
  at_least = list(at_least) if at_least is not None else [(0, 0)] * len(scales)
  if len(pos) != len(scales) or len(at_least) != len(scales):
    raise ValueError(f"{len(pos)} PNet maps and {len(at_least)} sizes for a {len(scales)}-level pyramid")
  for scale, p, (least_r, least_c) in zip(scales, pos, at_least):
    p = np.asarray(p) > 0
    lh, lw = int(h * scale + 1), int(w * scale + 1)
    if p.shape[1:] != (_pnet_map_size(lh), _pnet_map_size(lw)):
      raise ValueError(f"PNet map {p.shape[1:]} does not match a {lh}x{lw} pyramid level")
    p0, nr = _window_axis(p.any(axis=(0, 2)), bucket, least_r)
    q0, nc = _window_axis(p.any(axis=(0, 1)), bucket, least_c)
    sizes.append((nr, nc))
    lr = lh if nr == p.shape[1] else 2 * nr + 10
    lc = lw if nc == p.shape[2] else 2 * nc + 10
    y0, rows = _band_matrix(2 * p0, lr, lh, h)
    x0, cols = _band_matrix(2 * q0, lc, lw, w)
    out.append({"p0": np.int32(p0), "q0": np.int32(q0), "y0": np.int32(y0), "x0": np.int32(x0),
                "rows": rows, "cols": _fold_channels(cols, 3)})
  return out, sizes


def pnet_pyramid_windows(variables, frames: jax.Array, windows: Sequence[Mapping[str, Any]]):
  """PNet on the windows of :func:`pnet_windows`; static shapes, differentiable.

  Returns one ``(reg (B, nr, nc, 4), face_prob (B, nr, nc))`` per level: the maps of
  :func:`pnet_pyramid` at rows ``p0 .. p0 + nr - 1`` and columns ``q0 .. q0 + nc - 1``.
  """
  b, _, _, c = frames.shape
  # Rows first, once for every level: (H, B, W, C), whose row bands are what the row
  # matmul of _resize_matmuls reads (each level transposing its own band cost more than
  # its matmuls on the coarse levels).
  rows_first = jnp.transpose(frames * 255.0, (1, 0, 2, 3))
  out = []
  for wnd in windows:
    bh, bw = wnd["rows"].shape[1], wnd["cols"].shape[0] // c
    band = jax.lax.dynamic_slice(rows_first, (wnd["y0"], 0, wnd["x0"], 0), (bh, b, bw, c))
    out.append(_pnet_on_level(variables, _resize_rows_first(band, wnd["rows"], wnd["cols"])))
  return out


def calibrate(boxes, box_reg):
  """Applies a box regression as ``bbreg``: ``box + reg * (x2 - x1 + 1, y2 - y1 + 1)``."""
  w = boxes[..., 2] - boxes[..., 0] + 1
  h = boxes[..., 3] - boxes[..., 1] + 1
  return jnp.stack([boxes[..., 0] + box_reg[..., 0] * w, boxes[..., 1] + box_reg[..., 1] * h,
                    boxes[..., 2] + box_reg[..., 2] * w, boxes[..., 3] + box_reg[..., 3] * h],
                   axis=-1)


# ----------------------------------------------------------------------------------
# Host-side detection (numpy bookkeeping, float32 like the reference).
# ----------------------------------------------------------------------------------
_F32 = np.float32


def _integral(img: np.ndarray) -> np.ndarray:
  """(H, W, C) -> (H + 1, W + 1, C) float64 summed-area table (exact for 0..255 ints)."""
  h, w, c = img.shape
  s = np.zeros((h + 1, w + 1, c), np.float64)
  np.cumsum(np.cumsum(img, axis=0, dtype=np.float64), axis=1, out=s[1:, 1:])
  return s


def _area_windows(start: np.ndarray, stop: np.ndarray, out: int):
  """Window bounds (N, out) of area interpolation for crops ``[start, stop)``."""
  n = (stop - start)[:, None]
  i = np.arange(out)[None]
  return start[:, None] + (i * n) // out, start[:, None] - ((-(i + 1) * n) // out)


def _area_resize(integral: np.ndarray, x0, y0, x1, y1, oh: int, ow: int) -> np.ndarray:
  """Area-resized crops ``[y0:y1, x0:x1]`` (arrays of N) -> (N, oh, ow, C) float32.

  Matches ``F.interpolate(mode='area')`` on CPU: float32 window sum, then ``/ kh / kw``.
  """
  ys, ye = _area_windows(np.asarray(y0), np.asarray(y1), oh)
  xs, xe = _area_windows(np.asarray(x0), np.asarray(x1), ow)
  a = integral[ye[:, :, None], xe[:, None, :]] - integral[ys[:, :, None], xe[:, None, :]]
  a -= integral[ye[:, :, None], xs[:, None, :]] - integral[ys[:, :, None], xs[:, None, :]]
  kh = (ye - ys).astype(_F32)[:, :, None, None]
  kw = (xe - xs).astype(_F32)[:, None, :, None]
  return a.astype(_F32) / kh / kw


def _to_net(x: np.ndarray) -> np.ndarray:
  return (x - _F32(PIXEL_MEAN)) * _F32(PIXEL_SCALE)


def nms_iou(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
  """torchvision ``nms``: stable descending score order, IoU without ``+1``, ``> thr``."""
  boxes = boxes.astype(_F32)
  x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
  areas = (x2 - x1) * (y2 - y1)
  order = np.argsort(-scores, kind="stable")
  suppressed = np.zeros(len(boxes), bool)
  keep = []
  for n, i in enumerate(order):
    if suppressed[i]:
      continue
    keep.append(i)
    rest = order[n + 1:]
    rest = rest[~suppressed[rest]]
    if rest.size == 0:
      continue
    w = np.maximum(_F32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
    h = np.maximum(_F32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
    inter = w * h
    ovr = inter / (areas[i] + areas[rest] - inter)
    suppressed[rest[ovr.astype(np.float64) > threshold]] = True
  return np.asarray(keep, np.int64)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
  """facenet-pytorch's ``nms_numpy(..., 'Min')``: overlap = inter / min(area), ``+1`` areas.

  Boxes are visited by decreasing score; a box is dropped when ``inter / min(area)``
  with an already kept box exceeds ``threshold``. Exact score ties do occur here: two
  candidates whose float boxes truncate to the same integer crop get bit-identical ONet
  outputs. Like facenet-pytorch we order by numpy's (unstable) ``np.argsort``, so ties
  are broken exactly as there when all scores agree bit for bit; since the winner of a
  tie depends on every score in the array, scores that differ by float rounding
  elsewhere can select the other tied box (same score, box up to ~1 px away; 1 of 312
  faces on the crowd test image).
  """
  if boxes.shape[0] == 0:
    return np.zeros((0,), np.int64)
  x1, y1, x2, y2 = (boxes[:, j].astype(_F32) for j in range(4))
  area = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = np.argsort(scores)
  keep = []
  while order.size > 0:
    i = order[-1]
    keep.append(i)
    idx = order[:-1]
    w = np.maximum(0.0, np.minimum(x2[i], x2[idx]) - np.maximum(x1[i], x1[idx]) + 1)
    h = np.maximum(0.0, np.minimum(y2[i], y2[idx]) - np.maximum(y1[i], y1[idx]) + 1)
    inter = w * h
    o = inter / np.minimum(area[i], area[idx])
    order = order[np.where(o <= threshold)]
  return np.asarray(keep, np.int64)


def _rerec(b: np.ndarray) -> np.ndarray:
  """Squares boxes around their centres (``rerec``), float32, in the reference's order."""
  b = b.copy()
  h = b[:, 3] - b[:, 1]
  w = b[:, 2] - b[:, 0]
  l = np.maximum(w, h)
  b[:, 0] = b[:, 0] + w * _F32(0.5) - l * _F32(0.5)
  b[:, 1] = b[:, 1] + h * _F32(0.5) - l * _F32(0.5)
  b[:, 2] = b[:, 0] + l
  b[:, 3] = b[:, 1] + l
  return b


def _bbreg(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
  b = b.copy()
  w = b[:, 2] - b[:, 0] + 1
  h = b[:, 3] - b[:, 1] + 1
  out = np.stack([b[:, 0] + reg[:, 0] * w, b[:, 1] + reg[:, 1] * h,
                  b[:, 2] + reg[:, 2] * w, b[:, 3] + reg[:, 3] * h], axis=1)
  b[:, :4] = out
  return b


def _pad(b: np.ndarray, w: int, h: int):
  """facenet-pytorch ``pad``: (x0, y0, x1, y1) of the crops ``[y0:y1, x0:x1]``, and validity."""
  t = np.trunc(b[:, :4]).astype(np.int64)
  x = np.maximum(t[:, 0], 1)
  y = np.maximum(t[:, 1], 1)
  ex = np.minimum(t[:, 2], w)
  ey = np.minimum(t[:, 3], h)
  valid = (ey > y - 1) & (ex > x - 1)
  return x - 1, y - 1, ex, ey, valid


def pyramid_scales(h: int, w: int, min_face_size: float, factor: float) -> list[float]:
  """facenet-pytorch's image-pyramid scales for an ``h`` x ``w`` frame."""
  m = 12.0 / min_face_size
  minl = min(h, w) * m
  scales = []
  scale = m
  while minl >= 12:
    scales.append(scale)
    scale = scale * factor
    minl = minl * factor
  return scales


def _bucket_sizes(n: int) -> list[tuple[int, int]]:
  """Splits ``n`` rows into ``(start, padded size)`` chunks of bucketed sizes."""
  out = []
  for s in range(0, n, _CHUNK):
    m = min(_CHUNK, n - s)
    out.append((s, _SMALL_BATCH if m <= _SMALL_BATCH else _CHUNK))
  return out


def _run_bucketed(fn, variables, x: np.ndarray):
  """Runs a jitted net on (N, s, s, 3) in padded chunks; returns numpy outputs of N rows."""
  outs = []
  for start, size in _bucket_sizes(x.shape[0]):
    chunk = x[start:start + size]
    m = chunk.shape[0]
    if m < size:
      chunk = np.concatenate([chunk, np.zeros((size - m,) + chunk.shape[1:], chunk.dtype)])
    res = jax.device_get(fn(variables, jnp.asarray(chunk)))
    outs.append([np.asarray(r)[:m] for r in res])
  return [np.concatenate(parts) for parts in zip(*outs)]


def _as_pixels(frames) -> np.ndarray:
  """(B, H, W, 3) or (H, W, 3) uint8 0..255 / float 0..1 -> float32 0..255, (B, H, W, 3)."""
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be (B, H, W, 3) RGB, got {frames.shape}")
  if frames.dtype == np.uint8:
    return frames.astype(_F32)
  return frames.astype(_F32) * _F32(255.0)


def detect(variables, frames, config: Mapping[str, Any] | None = None
           ) -> list[dict[str, np.ndarray]]:
  """MTCNN detections per frame, as facenet-pytorch's ``MTCNN(keep_all=True).detect``.

  Args:
    variables: converted MTCNN variables ``{'pnet', 'rnet', 'onet'}``.
    frames: (B, H, W, 3) or (H, W, 3) RGB, float32 in [0, 1] or uint8 in 0..255.
    config: overrides of ``DEFAULT_CONFIGS['mtcnn']``.

  Returns:
    One dict per frame, numpy float32, faces sorted by decreasing box area:
    ``boxes (N, 4)`` x1y1x2y2 in pixels, ``scores (N,)`` (ONet face probability),
    ``landmarks (N, 5, 2)`` (x, y of the two eyes, nose, two mouth corners; image-left
    eye/corner first),
    ``onet_boxes (N, 4)``: the (float) boxes ONet saw, to pass to
    :func:`onet_on_boxes` (``boxes == calibrate(onet_boxes, box_reg)``), and
    ``rnet_boxes (N, 4)``: the boxes RNet saw for those faces (``onet_boxes ==
    rerec(calibrate(rnet_boxes, rnet_reg))``), for :func:`rnet_on_boxes`.
  """
  cfg = _config(config)
  pix = _as_pixels(frames)
  n_frames, h, w, _ = pix.shape
  thr = [_F32(t) for t in cfg["thresholds"]]
  nms_scale, nms_pnet, nms_rnet, nms_onet = cfg["nms_thresholds"]
  integrals = [_integral(p) for p in pix]

  # Stage 1: PNet on the pyramid, all frames of a scale in one call.
  per_frame = [[] for _ in range(n_frames)]
  z = np.zeros(1, np.int64)
  for scale in pyramid_scales(h, w, cfg["min_face_size"], cfg["factor"]):
    oh, ow = int(h * scale + 1), int(w * scale + 1)
    level = np.concatenate([_area_resize(s, z, z, z + w, z + h, oh, ow) for s in integrals])
    reg, prob = jax.device_get(pnet_apply(variables, jnp.asarray(_to_net(level))))
    reg, prob = np.asarray(reg), np.asarray(prob)
    for f in range(n_frames):
      p = prob[f, :, :, 1]
      yy, xx = np.nonzero(p >= thr[0])
      if yy.size == 0:
        continue
      bb = np.stack([xx, yy], axis=1).astype(_F32)
      q1 = np.floor((2 * bb + 1) / _F32(scale))
      q2 = np.floor((2 * bb + 12) / _F32(scale))
      cand = np.concatenate([q1, q2, p[yy, xx][:, None], reg[f, yy, xx]], axis=1)
      per_frame[f].append(cand[nms_iou(cand[:, :4], cand[:, 4], nms_scale)])

  stage1 = []
  for f in range(n_frames):
    if not per_frame[f]:
      stage1.append(np.zeros((0, 5), _F32))
      continue
    c = np.concatenate(per_frame[f])
    c = c[nms_iou(c[:, :4], c[:, 4], nms_pnet)]
    regw = c[:, 2] - c[:, 0]
    regh = c[:, 3] - c[:, 1]
    b = np.stack([c[:, 0] + c[:, 5] * regw, c[:, 1] + c[:, 6] * regh,
                  c[:, 2] + c[:, 7] * regw, c[:, 3] + c[:, 8] * regh, c[:, 4]], axis=1)
    stage1.append(_rerec(b))

  # Stage 2: RNet on 24x24 crops.
  reg_all, prob_all = _crops_through(variables, rnet_apply, integrals, stage1, w, h, 24,
                                      (4, 2))
  stage2 = []
  rnet_src = []  # Per frame: for each stage-2 box, the (float) box RNet saw.
  for f in range(n_frames):
    b, reg, prob = stage1[f], reg_all[f], prob_all[f]
    if b.shape[0] == 0:
      stage2.append(b)
      rnet_src.append(np.zeros((0, 4), _F32))
      continue
    score = prob[:, 1]
    ok = score > thr[1]
    b = np.concatenate([b[ok, :4], score[ok, None]], axis=1)
    reg = reg[ok]
    keep = nms_iou(b[:, :4], b[:, 4], nms_rnet)
    rnet_src.append(np.asarray(b[keep, :4], _F32).reshape(-1, 4))
    stage2.append(_rerec(_bbreg(b[keep], reg[keep])))

  # Stage 3: ONet on 48x48 crops, landmarks, calibration, "Min" NMS.
  outs = _crops_through(variables, onet_apply, integrals, stage2, w, h, 48, (4, 10, 2))
  results = []
  for f in range(n_frames):
    b, reg, pts, prob = stage2[f], outs[0][f], outs[1][f], outs[2][f]
    if b.shape[0] == 0:
      results.append(_frame_result(np.zeros((0, 5), _F32), np.zeros((0, 5, 2), _F32),
                                   np.zeros((0, 4), _F32), np.zeros((0, 4), _F32)))
      continue
    score = prob[:, 1]
    ok = score > thr[2]
    onet_boxes = b[ok, :4]
    rnet_boxes = rnet_src[f][ok]
    b = np.concatenate([onet_boxes, score[ok, None]], axis=1)
    pts = pts[ok]
    wi = b[:, 2] - b[:, 0] + 1
    hi = b[:, 3] - b[:, 1] + 1
    px = wi[:, None] * pts[:, :5] + b[:, 0:1] - 1
    py = hi[:, None] * pts[:, 5:] + b[:, 1:2] - 1
    lms = np.stack([px, py], axis=-1)
    b = _bbreg(b, reg[ok])
    keep = nms_min(b[:, :4], b[:, 4], nms_onet)
    results.append(_frame_result(b[keep], lms[keep], onet_boxes[keep], rnet_boxes[keep]))
  return results


def _crops_through(variables, fn, integrals, stage, w: int, h: int, size: int,
                   out_dims: Sequence[int]):
  """Crops every frame's boxes (as ``pad``), resizes them (area) and runs ``fn``.

  Returns, per output of ``fn``, a list (per frame) of arrays aligned with the boxes.
  A box whose crop is empty (wholly outside the image) gets zero outputs, hence a zero
  face score (facenet-pytorch would misalign its outputs in that case).
  """
  crops, valids = [], []
  for f, b in enumerate(stage):
    x0, y0, x1, y1, valid = _pad(b, w, h)
    valids.append(valid)
    if valid.any():
      crops.append(_area_resize(integrals[f], x0[valid], y0[valid], x1[valid], y1[valid],
                                size, size))
  outs = _run_bucketed(fn, variables, _to_net(np.concatenate(crops))) if crops else None
  per_output = [[] for _ in out_dims]
  start = 0
  for valid in valids:
    n = int(valid.sum())
    for j, d in enumerate(out_dims):
      arr = np.zeros((valid.shape[0], d), _F32)
      if n:
        arr[valid] = outs[j][start:start + n]
      per_output[j].append(arr)
    start += n
  return per_output


def _frame_result(b: np.ndarray, lms: np.ndarray, onet_boxes: np.ndarray,
                  rnet_boxes: np.ndarray) -> dict:
  """Sorts one frame's faces by decreasing area (``select_largest=True``)."""
  area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  order = np.argsort(area)[::-1]
  return {
      "boxes": np.ascontiguousarray(b[order, :4], _F32),
      "scores": np.ascontiguousarray(b[order, 4], _F32),
      "landmarks": np.ascontiguousarray(lms[order], _F32).reshape(-1, 5, 2),
      "onet_boxes": np.ascontiguousarray(onet_boxes[order], _F32).reshape(-1, 4),
      "rnet_boxes": np.ascontiguousarray(rnet_boxes[order], _F32).reshape(-1, 4),
  }


largest_face = bbox.largest_face


def stack_boxes(dets: Sequence[Mapping[str, np.ndarray]], k: int = 1,
                key: str = "onet_boxes") -> tuple[np.ndarray, np.ndarray]:
  """Fixed-shape (B, k, 4) boxes (largest first) and a (B, k) validity mask.

  Missing faces are filled with a dummy box (0, 0, 48, 48) and ``mask == False``; feed
  the boxes to :func:`onet_on_boxes` and weight its outputs by the mask.
  """
  boxes = np.tile(np.array([0, 0, 48, 48], _F32), (len(dets), k, 1))
  mask = np.zeros((len(dets), k), bool)
  for i, d in enumerate(dets):
    n = min(k, len(d[key]))
    boxes[i, :n] = d[key][:n]
    mask[i, :n] = True
  return boxes, mask
