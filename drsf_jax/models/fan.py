"""2D-FAN (Bulat & Tzimiropoulos, face-alignment) in Flax: 68-point facial landmarks.

A port of ``face_alignment.models.FAN`` (2DFAN-4 uses ``num_modules=4``): a stem
(7x7/2 conv, three pre-activation ``ConvBlock``s, one 2x2 average pool) followed by
``num_modules`` stacked hourglasses, each emitting 68 heatmaps of 64x64 for a 256x256
face crop. Submodule names mirror the PyTorch ones (``conv1``, ``bn1``, ``conv2`` ..
``conv4``, ``m0`` with ``b1_4`` .. ``b2_plus_1``, ``top_m_0``, ``conv_last0``,
``bn_end0``, ``l0``, ``bl0``, ``al0``), so ``weights_conversion/fan.py`` is a plain key
map; a ``Sequential`` child ``downsample.2`` becomes ``downsample_2``.

Besides the network this module holds the geometry around it:

* :func:`crop_transform`: detector box -> (center, scale), the face-alignment rule
  (center moved up by 0.12 box heights, ``scale = (w + h) / 195``);
* :func:`crop_matrix` / :func:`crop`: the 256x256 crop of the ``200 * scale`` square
  around ``center`` as a differentiable bilinear warp;
* :func:`heatmap_peaks` / :func:`decode_heatmaps`: face-alignment's
  ``get_preds_fromhm`` (arg-max, +-0.25 sub-pixel step, -0.5 shift, inverse crop
  transform), in ``jnp`` and kept in floats.

Crop convention: :func:`crop_matrix` is face-alignment's ``transform()`` matrix at the
crop resolution (``u = res / h * (x - cx) + res / 2`` with ``h = 200 * scale``),
applied with OpenCV's pixel-centre convention (``cv2.warpAffine``). Decoding uses the
inverse of the same matrix at the heatmap resolution, exactly as ``get_preds_fromhm``
does, so crop and decode are mutually consistent. face-alignment's own ``crop()``
instead copies the pixels between the *integer-truncated* images of the crop corners
``[1, 1]`` and ``[res, res]`` and resizes them with ``cv2.resize``: it samples a
``255/256 * h`` wide region starting about ``h / 256`` source pixels (one crop pixel)
right/below ours, shrinking to ~0 at the bottom-right, plus up to one source pixel more
where ``int()`` truncates a corner towards zero (measured on a 256x256 video frame with
``h`` = 284: 1.9 crop pixels at the top-left corner, 0.4 at the bottom-right; mean
absolute difference of the two crops 3.2 grey levels on a face, while warping with the
matrix of their convention reproduces their crop to 0.2 grey levels; tests/models/fan_test.py).
We keep the exact continuous transform because it is the one the decoder inverts (crop
and decode are exact inverses), it has no integer corners (no jitter when the box moves
by a fraction of a pixel between frames), and it is a plain affine warp.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsf_jax.geometry import warping
from drsf_jax.models import layers

NUM_LANDMARKS = 68

DEFAULT_CONFIGS: dict[str, dict[str, Any]] = {
    "fan": {
        "num_modules": 4,          # Stacked hourglasses (2DFAN-4).
        "hourglass_depth": 4,      # Levels per hourglass (b1_4 .. b1_1).
        "num_features": 256,       # Channels inside the hourglasses.
        "num_landmarks": NUM_LANDMARKS,
        "resolution": 256,         # Input crop side.
        "heatmap_resolution": 64,  # Output heatmap side.
        "reference_scale": 195.0,  # scale = (w + h) / reference_scale.
        "scale_factor": 200.0,     # The crop covers a (scale_factor * scale) square.
        "center_y_offset": 0.12,   # Center moved up by this fraction of the box height.
    },
}


# ---- network --------------------------------------------------------------------------

def _avg_pool2(x):
  """``F.avg_pool2d(x, 2, stride=2)`` (a reshape-mean when the sizes are even)."""
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    return layers.avg_pool2d(x, 2, 2)
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample2(x):
  """``F.interpolate(x, scale_factor=2, mode='nearest')`` as a broadcast (no gather)."""
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return x.reshape(n, 2 * h, 2 * w, c)


class ConvBlock(nn.Module):
  """face-alignment's pre-activation residual block with concatenated branches.

  ``out = concat(c1, c2, c3) + residual`` where ``c1 = conv1(relu(bn1(x)))`` has
  ``features / 2`` channels and ``c2``, ``c3`` have ``features / 4``; the residual is a
  BN-ReLU-1x1 conv (``downsample_0``, ``downsample_2``) when the width changes.
  """
  features: int

  @nn.compact
  def __call__(self, x):
    half, quarter = self.features // 2, self.features // 4
    out1 = layers.Conv2d(half, 3, padding=1, use_bias=False, name="conv1")(
        jax.nn.relu(layers.BatchNorm2d(name="bn1")(x)))
    out2 = layers.Conv2d(quarter, 3, padding=1, use_bias=False, name="conv2")(
        jax.nn.relu(layers.BatchNorm2d(name="bn2")(out1)))
    out3 = layers.Conv2d(quarter, 3, padding=1, use_bias=False, name="conv3")(
        jax.nn.relu(layers.BatchNorm2d(name="bn3")(out2)))
    residual = x
    if x.shape[-1] != self.features:
      residual = layers.Conv2d(self.features, 1, use_bias=False, name="downsample_2")(
          jax.nn.relu(layers.BatchNorm2d(name="downsample_0")(x)))
    return jnp.concatenate([out1, out2, out3], axis=-1) + residual


class HourGlass(nn.Module):
  """Recursive hourglass; level ``d`` owns ``b1_d``, ``b2_d``, ``b3_d`` (+ ``b2_plus_1``)."""
  depth: int
  features: int

  def _level(self, level: int, x):
    up1 = ConvBlock(self.features, name=f"b1_{level}")(x)
    low = ConvBlock(self.features, name=f"b2_{level}")(_avg_pool2(x))
    if level > 1:
      low = self._level(level - 1, low)
    else:
      low = ConvBlock(self.features, name=f"b2_plus_{level}")(low)
    low = ConvBlock(self.features, name=f"b3_{level}")(low)
    return up1 + _upsample2(low)

  @nn.compact
  def __call__(self, x):
    return self._level(self.depth, x)


class FAN(nn.Module):
  """``face_alignment.models.FAN(num_modules)`` on NHWC input.

  Input: (B, 256, 256, 3) float32 RGB crops in [0, 1] (face-alignment divides the uint8
  crop by 255 and applies no other normalization). Output: a tuple with one
  (B, 64, 64, 68) heatmap tensor per stack; the last one is the prediction.
  """
  num_modules: int = 4
  hourglass_depth: int = 4
  num_features: int = 256
  num_landmarks: int = NUM_LANDMARKS

  @nn.compact
  def __call__(self, x) -> tuple[jax.Array, ...]:
    x = layers.Conv2d(64, 7, stride=2, padding=3, name="conv1")(x)
    x = jax.nn.relu(layers.BatchNorm2d(name="bn1")(x))
    x = _avg_pool2(ConvBlock(128, name="conv2")(x))
    x = ConvBlock(128, name="conv3")(x)
    x = ConvBlock(self.num_features, name="conv4")(x)

    previous = x
    outputs = []
    for i in range(self.num_modules):
      hg = HourGlass(self.hourglass_depth, self.num_features, name=f"m{i}")(previous)
      ll = ConvBlock(self.num_features, name=f"top_m_{i}")(hg)
      ll = layers.Conv2d(self.num_features, 1, name=f"conv_last{i}")(ll)
      ll = jax.nn.relu(layers.BatchNorm2d(name=f"bn_end{i}")(ll))
      heatmaps = layers.Conv2d(self.num_landmarks, 1, name=f"l{i}")(ll)
      outputs.append(heatmaps)
      if i < self.num_modules - 1:
        ll = layers.Conv2d(self.num_features, 1, name=f"bl{i}")(ll)
        back = layers.Conv2d(self.num_features, 1, name=f"al{i}")(heatmaps)
        previous = previous + ll + back
    return tuple(outputs)


# ---- family contract -----------------------------------------------------------------

def _config(model: str, config: dict | None) -> dict:
  if model not in DEFAULT_CONFIGS:
    raise ValueError(f"unknown FAN model {model!r}; known: {sorted(DEFAULT_CONFIGS)}")
  cfg = dict(DEFAULT_CONFIGS[model])
  cfg.update(config or {})
  return cfg


def build(model: str = "fan", config: dict | None = None) -> FAN:
  """The Flax :class:`FAN` for ``model`` (``config`` overrides the defaults)."""
  cfg = _config(model, config)
  return FAN(num_modules=int(cfg["num_modules"]), hourglass_depth=int(cfg["hourglass_depth"]),
             num_features=int(cfg["num_features"]), num_landmarks=int(cfg["num_landmarks"]))


def expected_variables(model: str = "fan", config: dict | None = None):
  """``jax.ShapeDtypeStruct`` tree of the variables the converter must produce."""
  cfg = _config(model, config)
  net = build(model, cfg)
  res = int(cfg["resolution"])
  x = jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32)
  return jax.eval_shape(net.init, jax.random.PRNGKey(0), x)


def apply(variables, crops: jax.Array, config: dict | None = None, all_stacks: bool = False):
  """Runs FAN on face crops.

  Args:
    variables: ``{'params': ..., 'batch_stats': ...}`` (converted weights).
    crops: (B, 256, 256, 3) float32 RGB in [0, 1], e.g. from :func:`crop`.
    config: the model config (static; defaults to ``DEFAULT_CONFIGS['fan']``).
    all_stacks: return every stack's heatmaps instead of the last one only.

  Returns:
    (B, 64, 64, 68) heatmaps of the last stack, or a tuple with one per stack.
  """
  outputs = build("fan", config).apply(variables, crops)
  return outputs if all_stacks else outputs[-1]


# ---- crop geometry -------------------------------------------------------------------

def crop_transform(boxes, reference_scale: float = 195.0, center_y_offset: float = 0.12):
  """Detector boxes (N, 4) ``x1, y1, x2, y2`` -> ``(center (N, 2), scale (N,))``.

  ``center`` is the box centre moved up by ``center_y_offset`` box heights and
  ``scale = (w + h) / reference_scale``: the crop then covers a ``200 * scale`` square.
  """
  boxes = jnp.asarray(boxes, jnp.float32)
  x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
  w, h = x2 - x1, y2 - y1
  center = jnp.stack([x2 - w / 2.0, y2 - h / 2.0 - h * center_y_offset], axis=-1)
  return center, (w + h) / reference_scale


def crop_matrix(center, scale, res: int = 256, scale_factor: float = 200.0):
  """(N, 2, 3) affine maps from image pixels to the ``res x res`` crop.

  This is face-alignment's ``transform()``: ``u = res / h * (x - cx) + res / 2`` with
  ``h = scale_factor * scale`` (same for ``v``/``y``). Use it with :func:`crop` (or
  ``cv2.warpAffine``); :func:`decode_heatmaps` inverts it at the heatmap resolution.
  """
  center = jnp.asarray(center, jnp.float32).reshape(-1, 2)
  scale = jnp.asarray(scale, jnp.float32).reshape(-1)
  s = res / (scale_factor * scale)
  zero = jnp.zeros_like(s)
  tx = res * 0.5 - s * center[:, 0]
  ty = res * 0.5 - s * center[:, 1]
  return jnp.stack([jnp.stack([s, zero, tx], -1), jnp.stack([zero, s, ty], -1)], axis=1)


def crop(frames, matrices, res: int = 256):
  """Bilinear ``res x res`` crops (B, res, res, C) of ``frames`` (B, H, W, C).

  Differentiable in ``frames``; pixels outside the frame are zero (as in face-alignment).
  """
  return warping.warp_affine_batch(frames, matrices, (res, res))


# ---- heatmap decoding ----------------------------------------------------------------

def heatmap_peaks(heatmaps):
  """face-alignment's peak rule on (B, H, W, L) heatmaps, in heatmap coordinates.

  Arg-max (first maximum on ties), then a +-0.25 step along x and y towards the larger
  neighbour when the peak is not on the border, then -0.5. The result equals
  ``get_preds_fromhm(...)[0]`` (which is 1-based before the shift: ``col + 1 - 0.5``).

  Returns:
    ``(points (B, L, 2) float32 (x, y), scores (B, L))``.
  """
  b, h, w, l = heatmaps.shape
  hm = jnp.moveaxis(heatmaps, -1, 1).reshape(b, l, h * w)  # (B, L, H*W): small (64x64).
  idx = jnp.argmax(hm, axis=-1)
  scores = jnp.take_along_axis(hm, idx[..., None], axis=-1)[..., 0]
  row, col = idx // w, idx % w

  def at(r, c):
    r = jnp.clip(r, 0, h - 1)
    c = jnp.clip(c, 0, w - 1)
    return jnp.take_along_axis(hm, (r * w + c)[..., None], axis=-1)[..., 0]

  inside = (col > 0) & (col < w - 1) & (row > 0) & (row < h - 1)
  dx = jnp.sign(at(row, col + 1) - at(row, col - 1))
  dy = jnp.sign(at(row + 1, col) - at(row - 1, col))
  step = jnp.where(inside[..., None], jnp.stack([dx, dy], -1) * 0.25, 0.0)
  points = jnp.stack([col, row], -1).astype(jnp.float32) + 0.5 + step
  return points, scores


def heatmap_to_image(points, center, scale, heatmap_resolution: int = 64,
                     scale_factor: float = 200.0):
  """Maps heatmap coordinates (B, L, 2) to image coordinates (inverse crop transform)."""
  center = jnp.asarray(center, jnp.float32).reshape(-1, 1, 2)
  h = scale_factor * jnp.asarray(scale, jnp.float32).reshape(-1, 1, 1)
  return (points / heatmap_resolution - 0.5) * h + center


def decode_heatmaps(heatmaps, center, scale, scale_factor: float = 200.0):
  """(B, 64, 64, 68) heatmaps -> (B, 68, 2) landmarks in float image coordinates.

  ``get_preds_fromhm`` without its final integer cast: :func:`heatmap_peaks`, then the
  inverse of :func:`crop_matrix` at the heatmap resolution.
  """
  points, _ = heatmap_peaks(heatmaps)
  return heatmap_to_image(points, center, scale, heatmaps.shape[1], scale_factor)


def boxes_to_crops(frames, boxes, config: dict | None = None):
  """Convenience: frames (B, H, W, 3) and one box per frame -> (crops, center, scale)."""
  cfg = _config("fan", config)
  center, scale = crop_transform(boxes, cfg["reference_scale"], cfg["center_y_offset"])
  m = crop_matrix(center, scale, int(cfg["resolution"]), cfg["scale_factor"])
  return crop(frames, m, int(cfg["resolution"])), center, scale


__all__: Sequence[str] = (
    "DEFAULT_CONFIGS", "FAN", "ConvBlock", "HourGlass", "build", "expected_variables", "apply",
    "crop_transform", "crop_matrix", "crop", "heatmap_peaks", "heatmap_to_image",
    "decode_heatmaps", "boxes_to_crops", "NUM_LANDMARKS",
)
