"""RetinaFace face detector (biubug6/Pytorch_Retinaface semantics) in Flax.

Two backbones share the same detection trunk:

* ``retinaface``: MobileNet-0.25 (``body.stage1`` .. ``body.stage3``), FPN/SSH width 64;
* ``retinaface_r50``: torchvision ResNet-50 (``body.conv1`` .. ``body.layer4``), width 256.

The network sees BGR pixel values minus the per-channel mean (104, 117, 123), without any
scaling, exactly as biubug6's ``detect.py`` feeds it. Every public function here instead
takes frames as NHWC ``float32`` RGB in [0, 1] (the library-wide convention) and the
module converts internally, so gradients flow to the [0, 1] frames.

Outputs per anchor: box regression ``loc`` (4), class probabilities ``conf`` (2, softmax,
index 1 = face) and landmark regression ``landm`` (10). Anchors ("priors") are laid out
level by level (strides ``steps``), row-major over the feature map, ``len(min_sizes[k])``
anchors per cell, as ``PriorBox`` does. Anchor sizes are a config value: the shared
MobileNet checkpoint was trained with ``[[10, 20], [32, 64], [128, 256]]`` while upstream
uses ``[[16, 32], [64, 128], [256, 512]]``, so everything reads ``config['min_sizes']``.

The activation is a config value too: ``leaky_slope`` is the negative slope of every
``LeakyReLU`` the upstream code sets. biubug6/Pytorch_Retinaface uses 0.1 (stem, every
depthwise block, and FPN/SSH when they are at most 64 channels wide); the shared
MobileNet checkpoint comes from biubug6/Face-Detector-1MB-with-landmark, whose
``models/net.py`` has the same layer names but plain ReLU everywhere, i.e. slope 0.
Running that file through the 0.1 network misses faces and shrinks boxes.

Submodule names mirror the PyTorch state-dict keys so that the converter is a plain
mapping: torch ``body.stage1.1.3`` -> Flax ``body/stage1_1_3``, ``fpn.merge1.0`` ->
``fpn/merge1_0``, ``ssh2.conv7x7_3.1`` -> ``ssh2/conv7x7_3_1``, ``ClassHead.0.conv1x1``
-> ``ClassHead_0/conv1x1``.

Public API:

* ``apply(variables, frames, config)``: raw ``(loc, conf, landm)``; jit-able, differentiable.
* ``prior_box(config, height, width)``: normalised priors, exactly ``PriorBox.forward()``.
* ``pixel_priors(config, height, width)``: the same priors in pixels of the input.
* ``decode(loc, landm, priors, variance)``: boxes and landmarks in the units of ``priors``.
* ``detect_topk(variables, frames, config, k)``: static-shape top-k detections (jit-able).
* ``detect(variables, frames, config)``: final detections as in ``detect.py`` (host NMS).
* ``nms(boxes, scores, threshold)``: greedy NMS with ``py_cpu_nms``'s ``+1`` convention.
* ``largest_face(dets)``: index of the largest detected box.
"""

import json
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from drsf_jax.geometry import bbox
from drsf_jax.models import layers

# BGR channel means subtracted from 0..255 pixel values (biubug6 detect.py).
BGR_MEAN = (104.0, 117.0, 123.0)

_COMMON = {
    "leaky_slope": 0.1,
    "min_sizes": [[16, 32], [64, 128], [256, 512]],
    "steps": [8, 16, 32],
    "variance": [0.1, 0.2],
    "clip": False,
    "confidence": 0.5,
    "nms": 0.4,
    "top_k": 5000,
    "keep_top_k": 750,
}

DEFAULT_CONFIGS: dict[str, dict] = {
    "retinaface": {"backbone": "mobilenet0.25", "in_channel": 32, "out_channel": 64, **_COMMON},
    "retinaface_r50": {"backbone": "resnet50", "in_channel": 256, "out_channel": 256, **_COMMON},
}

BACKBONES = ("mobilenet0.25", "resnet50")
RESNET50_BLOCKS = (3, 4, 6, 3)


# ----------------------------------------------------------------------------------
# Building blocks (named after the torch nn.Sequential indices they replace).
# ----------------------------------------------------------------------------------
def _conv_bn(x, name: str, features: int, stride: int = 1, kernel: int = 3,
             leaky: float | None = 0.0, groups: int = 1):
  """``Conv2d(bias=False) -> BatchNorm2d [-> LeakyReLU]`` as torch ``{name}.0/.1``.

  ``leaky=None`` omits the activation (``conv_bn_no_relu``). Must be called inside a
  compact method: the layers attach to the calling module.
  """
  x = layers.Conv2d(features, kernel, stride=stride, padding=kernel // 2, groups=groups,
                    use_bias=False, name=f"{name}_0")(x)
  x = layers.BatchNorm2d(name=f"{name}_1")(x)
  if leaky is not None:
    x = layers.leaky_relu(x, leaky)
  return x


def _conv_dw(x, name: str, features: int, stride: int, leaky: float):
  """Depthwise-separable block ``conv_dw``: torch ``{name}.0,1`` (dw) and ``.3,.4`` (pw)."""
  c = x.shape[-1]
  x = layers.Conv2d(c, 3, stride=stride, padding=1, groups=c, use_bias=False,
                    name=f"{name}_0")(x)
  x = layers.leaky_relu(layers.BatchNorm2d(name=f"{name}_1")(x), leaky)
  x = layers.Conv2d(features, 1, use_bias=False, name=f"{name}_3")(x)
  return layers.leaky_relu(layers.BatchNorm2d(name=f"{name}_4")(x), leaky)


# (output channels, stride) of each conv_dw block; stage1 starts with a conv_bn(3->8, s2).
MOBILENET_STAGES = {
    "stage1": ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1)),
    "stage2": ((128, 2),) + ((128, 1),) * 5,
    "stage3": ((256, 2), (256, 1)),
}


class MobileNetV1Body(nn.Module):
  """MobileNet-0.25 trunk returning the stride 8/16/32 features (64/128/256 channels).

  ``leaky_slope`` is the stem's and every depthwise block's LeakyReLU slope (0 = ReLU).
  """
  leaky_slope: float = 0.1

  @nn.compact
  def __call__(self, x):
    x = _conv_bn(x, "stage1_0", 8, stride=2, leaky=self.leaky_slope)
    feats = []
    for stage, blocks in MOBILENET_STAGES.items():
      first = 1 if stage == "stage1" else 0
      for i, (c, s) in enumerate(blocks):
        x = _conv_dw(x, f"{stage}_{i + first}", c, s, self.leaky_slope)
      feats.append(x)
    return feats


def _bottleneck(x, name: str, width: int, stride: int, downsample: bool):
  """torchvision ``Bottleneck`` (expansion 4) as torch ``{name}.conv1`` .. ``.downsample``."""
  identity = x
  y = layers.Conv2d(width, 1, use_bias=False, name=f"{name}_conv1")(x)
  y = jax.nn.relu(layers.BatchNorm2d(name=f"{name}_bn1")(y))
  y = layers.Conv2d(width, 3, stride=stride, padding=1, use_bias=False, name=f"{name}_conv2")(y)
  y = jax.nn.relu(layers.BatchNorm2d(name=f"{name}_bn2")(y))
  y = layers.Conv2d(width * 4, 1, use_bias=False, name=f"{name}_conv3")(y)
  y = layers.BatchNorm2d(name=f"{name}_bn3")(y)
  if downsample:
    identity = _conv_bn(x, f"{name}_downsample", width * 4, stride=stride, kernel=1, leaky=None)
  return jax.nn.relu(y + identity)


class ResNet50Body(nn.Module):
  """torchvision ``resnet50`` trunk (v1.5: stride on the 3x3), returning layer2..layer4."""

  @nn.compact
  def __call__(self, x):
    x = layers.Conv2d(64, 7, stride=2, padding=3, use_bias=False, name="conv1")(x)
    x = jax.nn.relu(layers.BatchNorm2d(name="bn1")(x))
    x = layers.max_pool2d(x, 3, 2, 1)
    feats = []
    for li, n in enumerate(RESNET50_BLOCKS):
      width = 64 * 2**li
      for b in range(n):
        stride = 2 if (b == 0 and li > 0) else 1
        x = _bottleneck(x, f"layer{li + 1}_{b}", width, stride, downsample=b == 0)
      if li > 0:
        feats.append(x)
    return feats

def _leaky_for(out_channels: int, leaky_slope: float) -> float:
  """biubug6's FPN/SSH use ``LeakyReLU(leaky_slope)`` when narrow (<= 64 channels), ReLU otherwise."""
  return leaky_slope if out_channels <= 64 else 0.0


class FPN(nn.Module):
  """Top-down feature pyramid: 1x1 lateral convs, nearest upsampling, 3x3 merges."""
  out_channels: int
  leaky_slope: float = 0.1

  @nn.compact
  def __call__(self, feats: Sequence[jax.Array]):
    leaky = _leaky_for(self.out_channels, self.leaky_slope)
    o1, o2, o3 = (_conv_bn(f, f"output{i + 1}", self.out_channels, kernel=1, leaky=leaky)
                  for i, f in enumerate(feats))
    o2 = o2 + layers.interpolate_nearest(o3, o2.shape[1:3])
    o2 = _conv_bn(o2, "merge2", self.out_channels, leaky=leaky)
    o1 = o1 + layers.interpolate_nearest(o2, o1.shape[1:3])
    o1 = _conv_bn(o1, "merge1", self.out_channels, leaky=leaky)
    return [o1, o2, o3]


class SSH(nn.Module):
  """Single-stage context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches."""
  out_channels: int
  leaky_slope: float = 0.1

  @nn.compact
  def __call__(self, x):
    c = self.out_channels
    if c % 4:
      raise ValueError(f"SSH needs out_channels divisible by 4, got {c}")
    leaky = _leaky_for(c, self.leaky_slope)
    b3 = _conv_bn(x, "conv3X3", c // 2, leaky=None)
    t = _conv_bn(x, "conv5X5_1", c // 4, leaky=leaky)
    b5 = _conv_bn(t, "conv5X5_2", c // 4, leaky=None)
    t = _conv_bn(t, "conv7X7_2", c // 4, leaky=leaky)
    b7 = _conv_bn(t, "conv7x7_3", c // 4, leaky=None)
    return jax.nn.relu(jnp.concatenate([b3, b5, b7], axis=-1))


class Head(nn.Module):
  """A 1x1 prediction conv (``conv1x1``) reshaped to ``(B, h * w * anchors, values)``."""
  num_anchors: int
  values: int

  @nn.compact
  def __call__(self, x):
    y = layers.Conv2d(self.num_anchors * self.values, 1, name="conv1x1")(x)
    return y.reshape(y.shape[0], -1, self.values)


class RetinaFace(nn.Module):
  """RetinaFace on NHWC RGB frames in [0, 1].

  Returns ``(loc (B, A, 4), conf (B, A, 2) softmaxed, landm (B, A, 10))``.
  """
  backbone: str = "mobilenet0.25"
  in_channel: int = 32
  out_channel: int = 64
  num_anchors: int = 2
  leaky_slope: float = 0.1

  @nn.compact
  def __call__(self, frames):
    x = preprocess(frames)
    if self.backbone == "mobilenet0.25":
      feats = MobileNetV1Body(self.leaky_slope, name="body")(x)
    elif self.backbone == "resnet50":
      feats = ResNet50Body(name="body")(x)
    else:
      raise ValueError(f"unknown RetinaFace backbone {self.backbone!r}; known: {BACKBONES}")
    expect = [self.in_channel * m for m in (2, 4, 8)]
    if [f.shape[-1] for f in feats] != expect:
      raise ValueError(f"backbone {self.backbone} gives {[f.shape[-1] for f in feats]} "
                       f"channels, config in_channel={self.in_channel} expects {expect}")
    pyramid = FPN(self.out_channel, self.leaky_slope, name="fpn")(feats)
    feats = [SSH(self.out_channel, self.leaky_slope, name=f"ssh{i + 1}")(p)
             for i, p in enumerate(pyramid)]
    heads = {}
    for kind, values in (("BboxHead", 4), ("ClassHead", 2), ("LandmarkHead", 10)):
      heads[kind] = jnp.concatenate(
          [Head(self.num_anchors, values, name=f"{kind}_{i}")(f) for i, f in enumerate(feats)],
          axis=1)
    return (heads["BboxHead"], jax.nn.softmax(heads["ClassHead"], axis=-1),
            heads["LandmarkHead"])


def preprocess(frames: jax.Array) -> jax.Array:
  """RGB [0, 1] -> the network's input: BGR in 0..255 minus ``BGR_MEAN``."""
  frames = jnp.asarray(frames, jnp.float32)
  return frames[..., ::-1] * 255.0 - jnp.asarray(BGR_MEAN, jnp.float32)


# ----------------------------------------------------------------------------------
# Family contract.
# ----------------------------------------------------------------------------------
# Config keys that define the network and its anchors (the rest are detection thresholds).
ARCH_KEYS = ("backbone", "in_channel", "out_channel", "leaky_slope", "min_sizes", "steps",
             "variance", "clip")


def _check_config(config: Mapping[str, Any]) -> None:
  missing = [k for k in ARCH_KEYS if k not in config]
  if missing:
    raise ValueError(f"RetinaFace config lacks {missing}")
  slope = config["leaky_slope"]
  if (isinstance(slope, bool) or not isinstance(slope, (int, float)) or not math.isfinite(slope)
      or not 0.0 <= slope < 1.0):
    raise ValueError(f"RetinaFace config leaky_slope must be a number in [0, 1) (0.1 for "
                     f"Pytorch_Retinaface, 0 for Face-Detector-1MB), got {slope!r}")
  if len(config["min_sizes"]) != len(config["steps"]) or len(config["steps"]) != 3:
    raise ValueError("RetinaFace needs 3 pyramid levels: min_sizes and steps of length 3, got "
                     f"{config['min_sizes']} / {config['steps']}")
  counts = {len(m) for m in config["min_sizes"]}
  if len(counts) != 1:
    raise ValueError(f"every level needs the same number of anchors, got {config['min_sizes']}")


def _module(config: Mapping[str, Any]) -> RetinaFace:
  _check_config(config)
  return RetinaFace(backbone=config["backbone"], in_channel=int(config["in_channel"]),
                    out_channel=int(config["out_channel"]),
                    num_anchors=len(config["min_sizes"][0]),
                    leaky_slope=float(config["leaky_slope"]))


def build(model: str, config: Mapping[str, Any]) -> RetinaFace:
  """The Flax module of ``model`` (``retinaface`` or ``retinaface_r50``) for ``config``."""
  if model not in DEFAULT_CONFIGS:
    raise ValueError(f"unknown RetinaFace model {model!r}; known: {sorted(DEFAULT_CONFIGS)}")
  return _module(config)


def expected_variables(model: str, config: Mapping[str, Any]):
  """``jax.ShapeDtypeStruct`` tree of the variables that ``convert`` must produce."""
  module = build(model, config)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), x)


# ----------------------------------------------------------------------------------
# Anchors and decoding.
# ----------------------------------------------------------------------------------
def prior_box(config: Mapping[str, Any], height: int, width: int) -> np.ndarray:
  """Normalised priors ``(A, 4)`` = (cx, cy, w, h) / image size, as ``PriorBox.forward()``.

  Computed in float64 with the same operation order as upstream's Python floats, then
  rounded to float32 like ``torch.Tensor(anchors)``.
  """
  out = []
  for step, sizes in zip(config["steps"], config["min_sizes"]):
    fh, fw = math.ceil(height / step), math.ceil(width / step)
    cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / height,
                         (np.arange(fw) + 0.5) * step / width, indexing="ij")
    per = []
    for s in sizes:
      per.append(np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cx, s / height)],
                          axis=-1))
    out.append(np.stack(per, axis=2).reshape(-1, 4))  # (fh, fw, anchors, 4) row-major.
  priors = np.concatenate(out, axis=0).astype(np.float32)
  if config.get("clip", False):
    priors = np.clip(priors, 0.0, 1.0)
  return priors


def pixel_priors(config: Mapping[str, Any], height: int, width: int) -> np.ndarray:
  """Priors ``(A, 4)`` in pixels of a ``height`` x ``width`` input (decode gives pixels)."""
  scale = np.asarray([width, height, width, height], np.float32)
  return prior_box(config, height, width) * scale


def decode(loc: jax.Array, landm: jax.Array, priors: jax.Array,
           variance: Sequence[float]) -> tuple[jax.Array, jax.Array]:
  """SSD-style decoding of box and landmark regressions against ``priors``.

  Args:
    loc: (..., A, 4) box regressions.
    landm: (..., A, 10) landmark regressions.
    priors: (A, 4) (cx, cy, w, h); ``pixel_priors`` for pixel outputs.
    variance: (centre variance, size variance), e.g. (0.1, 0.2).

  Returns:
    ``boxes (..., A, 4)`` as (x1, y1, x2, y2) and ``landmarks (..., A, 5, 2)`` as (x, y),
    in the units of ``priors``.
  """
  v0, v1 = float(variance[0]), float(variance[1])
  priors = jnp.asarray(priors, jnp.float32)
  centre, size = priors[:, :2], priors[:, 2:]
  c = centre + loc[..., :2] * v0 * size
  wh = size * jnp.exp(loc[..., 2:] * v1)
  top_left = c - wh / 2
  boxes = jnp.concatenate([top_left, top_left + wh], axis=-1)
  pts = landm.reshape(landm.shape[:-1] + (5, 2))
  landmarks = centre[:, None, :] + pts * v0 * size[:, None, :]
  return boxes, landmarks


def apply(variables, frames: jax.Array, config: Mapping[str, Any]):
  """Raw network outputs ``(loc (B,A,4), conf (B,A,2) softmaxed, landm (B,A,10))``.

  ``frames`` are NHWC float32 RGB in [0, 1]. Pure, jit-able, differentiable in ``frames``.
  """
  return _module(config).apply(variables, frames)


def _decoded(variables, frames, config):
  """Network + decoding: pixel ``boxes``, face ``scores``, pixel ``landmarks``."""
  loc, conf, landm = apply(variables, frames, config)
  priors = pixel_priors(config, frames.shape[1], frames.shape[2])
  boxes, landmarks = decode(loc, landm, priors, config["variance"])
  return boxes, conf[..., 1], landmarks


def nms_mask(boxes: jax.Array, candidates: jax.Array, threshold: float) -> jax.Array:
  """Static-shape greedy NMS over boxes already sorted by decreasing score.

  Args:
    boxes: (k, 4) boxes sorted by score (highest first).
    candidates: (k,) bool; only candidates are kept or may suppress others.
    threshold: a box is dropped when its overlap with a kept box exceeds this.

  Returns:
    (k,) bool: the boxes ``py_cpu_nms`` keeps among the candidates (same ``+1`` areas).
  """
  x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)
  w = jnp.maximum(0.0, jnp.minimum(x2[:, None], x2[None]) - jnp.maximum(x1[:, None], x1[None]) + 1)
  h = jnp.maximum(0.0, jnp.minimum(y2[:, None], y2[None]) - jnp.maximum(y1[:, None], y1[None]) + 1)
  inter = w * h
  overlap = inter / (areas[:, None] + areas[None] - inter)
  k = boxes.shape[0]
  later = jnp.arange(k)[None, :] > jnp.arange(k)[:, None]
  suppress = (overlap > threshold) & later

  def body(i, keep):
    return jnp.where(keep[i], keep & ~suppress[i], keep)

  return jax.lax.fori_loop(0, k, body, candidates)


def detect_topk(variables, frames: jax.Array, config: Mapping[str, Any], k: int,
                with_nms: bool = True) -> dict[str, jax.Array]:
  """The ``k`` highest-scoring anchors of each frame, with static shapes (jit-able).

  Args:
    variables: converted RetinaFace variables.
    frames: (B, H, W, 3) float32 RGB in [0, 1].
    config: model config (anchors, variance, ``confidence``, ``nms``).
    k: number of anchors kept per frame (static; at most the anchor count).
    with_nms: also compute ``keep`` with a greedy NMS over the ``k`` candidates (k x k
      overlaps, so keep ``k`` modest); otherwise ``keep`` equals ``valid``.

  Returns:
    dict with ``boxes (B,k,4)`` and ``landmarks (B,k,5,2)`` in pixels, ``scores (B,k)``
    sorted decreasing, ``indices (B,k)`` anchor indices, ``valid (B,k)`` = score >
    ``config['confidence']``, and ``keep (B,k)`` = valid and not suppressed by NMS at
    ``config['nms']``. Because greedy NMS only suppresses by higher scores, the kept
    boxes are exactly the first detections ``detect`` returns, whenever ``k`` covers them.
  """
  boxes, scores, landmarks = _decoded(variables, frames, config)
  if k > scores.shape[1]:
    raise ValueError(f"k={k} exceeds the {scores.shape[1]} anchors of a "
                     f"{frames.shape[1]}x{frames.shape[2]} input")
  top, idx = jax.lax.top_k(scores, k)
  boxes = jnp.take_along_axis(boxes, idx[..., None], axis=1)
  landmarks = jnp.take_along_axis(landmarks, idx[..., None, None], axis=1)
  valid = top > config["confidence"]
  if with_nms:
    keep = jax.vmap(lambda b, v: nms_mask(b, v, config["nms"]))(boxes, valid)
  else:
    keep = valid
  return {"boxes": boxes, "scores": top, "landmarks": landmarks, "indices": idx,
          "valid": valid, "keep": keep}


# ----------------------------------------------------------------------------------
# Host-side detection (biubug6 detect.py).
# ----------------------------------------------------------------------------------
_JITTED: dict[str, Any] = {}


def _network_fn(config: Mapping[str, Any]):
  """One cached ``jax.jit`` of network + decoding per architecture/anchor config."""
  key = json.dumps({k: config[k] for k in ARCH_KEYS}, sort_keys=True)
  fn = _JITTED.get(key)
  if fn is None:
    frozen = json.loads(key)
    fn = jax.jit(lambda variables, frames: _decoded(variables, frames, frozen))
    _JITTED[key] = fn
  return fn


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
  """Greedy NMS with ``py_cpu_nms``'s conventions (``+1`` areas, drop overlap > threshold).

  Returns the kept indices, highest score first.
  """
  boxes = np.asarray(boxes, np.float32)
  x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = np.asarray(scores).argsort()[::-1]
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
    h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
    inter = w * h
    order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
  return np.asarray(keep, np.int64)


def _select(boxes, scores, landmarks, confidence, nms_threshold, top_k, keep_top_k):
  """detect.py's selection for one frame: threshold, top_k, NMS, keep_top_k."""
  ok = np.where(scores > confidence)[0]
  boxes, scores, landmarks = boxes[ok], scores[ok], landmarks[ok]
  order = scores.argsort()[::-1][:top_k]
  boxes, scores, landmarks = boxes[order], scores[order], landmarks[order]
  keep = nms(boxes, scores, nms_threshold)[:keep_top_k]
  return {"boxes": boxes[keep], "scores": scores[keep], "landmarks": landmarks[keep]}


def detect(variables, frames, config: Mapping[str, Any], confidence: float | None = None,
           nms: float | None = None) -> list[dict[str, np.ndarray]]:  # pylint: disable=redefined-outer-name
  """Final detections per frame, as biubug6's ``detect.py`` selects them.

  The network and decoding run under one cached ``jax.jit`` (compiled once per input
  shape); the selection runs on the host: score > ``confidence``, the ``top_k`` best
  before NMS, greedy NMS at ``nms`` (``py_cpu_nms`` conventions), then ``keep_top_k``.

  Args:
    variables: converted RetinaFace variables.
    frames: (B, H, W, 3) float32 RGB in [0, 1] (uint8 is accepted and divided by 255).
    config: model config.
    confidence: score threshold; ``config['confidence']`` when None.
    nms: NMS overlap threshold; ``config['nms']`` when None.

  Returns:
    One dict per frame: ``boxes (N, 4)`` (x1, y1, x2, y2), ``scores (N,)`` decreasing,
    ``landmarks (N, 5, 2)``, numpy float32, in pixels of the input.
  """
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    frames = frames.astype(np.float32) / 255.0
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be (B, H, W, 3), got {frames.shape}")
  confidence = config["confidence"] if confidence is None else confidence
  nms_threshold = config["nms"] if nms is None else nms
  boxes, scores, landmarks = jax.device_get(
      _network_fn(config)(variables, jnp.asarray(frames, jnp.float32)))
  return [_select(b, s, l, confidence, nms_threshold, config["top_k"], config["keep_top_k"])
          for b, s, l in zip(boxes, scores, landmarks)]


largest_face = bbox.largest_face
