"""Gaze estimators of hysts/ptgaze in Flax: ``MPIIGaze``, ``MPIIFaceGaze``, ``ETH-XGaze``.

All three regress the gaze direction as ``(pitch, yaw)`` in radians in the *normalised*
camera frame (see ``drsf_jax.geometry.normalization`` for the normalisation warp):

* ``MPIIGaze`` -- ptgaze ``models/mpiigaze/resnet_preact.py``: a pre-activation
  ResNet-8 (base 16 channels, stages 16 -> 32 -> 64, one block per stage) on a 36x60
  grayscale eye patch; the globally averaged 64 features are concatenated with the
  normalised head pose ``(pitch, yaw)`` and ``fc`` (66 -> 2) gives the gaze. ptgaze runs
  it once per eye and mirrors the right eye (see ``mpiigaze_two_eyes``).
* ``MPIIFaceGaze`` -- ptgaze ``models/mpiifacegaze/resnet_simple.py``: a torchvision
  ResNet with BasicBlocks ``[2, 2, 2]`` (``layer4``, ``avgpool`` and ``fc`` removed),
  giving 256x14x14 features on a 224x224 face; a 1x1 ``conv`` (256 -> 1, with bias) and a
  ReLU make a spatial weight map that multiplies the features, and ``fc``
  (256*14*14 -> 2) reads them in PyTorch's NCHW flatten order.
* ``ETH-XGaze`` -- ``timm.create_model('resnet18', num_classes=2)`` (ptgaze's
  ``models/__init__.py``): a standard ResNet-18 (same state-dict keys as torchvision's)
  with a 2-way ``fc`` on a 224x224 face.

Flax submodule names follow the PyTorch state-dict keys with ``.`` inside a block name
replaced by ``_`` (torch ``stage2.block1.shortcut.conv`` -> Flax
``stage2_block1/shortcut_conv``; torch ``layer2.0.downsample.1`` -> Flax
``layer2_0/downsample_1``), so ``weights_conversion/gaze.py`` is a plain key map.

Input normalisation (``preprocess``), as ptgaze feeds each model:

* ``MPIIFaceGaze``: BGR channel order, ``(x - [0.406, 0.456, 0.485]) / [0.225, 0.224,
  0.229]`` (ImageNet statistics in BGR order).
* ``ETH-XGaze``: RGB, ``(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]``.
* ``MPIIGaze``: ptgaze's ``HeadPoseNormalizer`` warps the eye patch, converts it with
  ``cv2.cvtColor(BGR2GRAY)`` and equalises its histogram with ``cv2.equalizeHist`` (both
  on uint8), and the transform is a bare ``ToTensor`` (``/ 255``, no mean/std). Here the
  grayscale conversion (``0.299 R + 0.587 G + 0.114 B``) is in-graph and differentiable;
  histogram equalisation is a per-patch look-up table that depends on the patch's own
  histogram and is not differentiable. It is split in two: ``equalize_hist_lut``
  (host side, numpy) computes OpenCV's exact table from the uint8 patch of the original
  frame, and ``apply_intensity_lut`` (in-graph, jnp) applies that fixed table with linear
  interpolation between its 256 entries, so the attack differentiates through a frozen
  equalisation exactly as it does through the frozen normalisation warp. On uint8 input
  the in-graph path reproduces ``cv2.equalizeHist`` exactly; on continuous input it
  differs from OpenCV only by OpenCV's rounding to uint8 (of the gray value and of the
  output).

ptgaze's face transforms also ``cv2.resize`` to 224x224, a no-op because the normalised
face camera is already 224x224; ``preprocess`` requires inputs of the configured size.
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from drsf_jax.geometry import gaze_vectors
from drsf_jax.geometry import normalization
from drsf_jax.models.layers import BatchNorm2d, Conv2d, Linear, max_pool2d, nchw_flatten

MPIIGAZE = "MPIIGaze"
MPIIFACEGAZE = "MPIIFaceGaze"
ETH_XGAZE = "ETH-XGaze"

# Normalised cameras from ptgaze's data/normalized_camera_params/*.yaml and the
# `normalized_camera_distance` of its data/configs/*.yaml. They are carried with the
# weights so that the gaze-normalisation code can read them from the model config.
DEFAULT_CONFIGS: dict[str, dict[str, Any]] = {
    MPIIGAZE: {
        "arch": "resnet_preact",
        "depth": 8,
        "base_channels": 16,
        "input_size": [36, 60],  # (height, width)
        "input_channels": 1,
        "normalized_camera": {"focal": 960.0, "center": [30.0, 18.0], "width": 60,
                              "height": 36, "distance": 0.6},
    },
    MPIIFACEGAZE: {
        "arch": "resnet_simple",
        "resnet_layers": [2, 2, 2],
        "input_size": [224, 224],
        "input_channels": 3,
        "normalized_camera": {"focal": 1600.0, "center": [112.0, 112.0], "width": 224,
                              "height": 224, "distance": 1.0},
    },
    ETH_XGAZE: {
        "arch": "resnet18",
        "num_classes": 2,
        "input_size": [224, 224],
        "input_channels": 3,
        "normalized_camera": {"focal": 960.0, "center": [112.0, 112.0], "width": 224,
                              "height": 224, "distance": 0.6},
    },
}

_ARCH_OF_MODEL = {MPIIGAZE: "resnet_preact", MPIIFACEGAZE: "resnet_simple",
                  ETH_XGAZE: "resnet18"}

# (mean, std) per channel of the model's *input* channel order.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------
# MPIIGaze: pre-activation ResNet.
# --------------------------------------------------------------------------------------
class PreactBlock(nn.Module):
  """ptgaze's pre-activation BasicBlock.

  ``a = relu(bn1(x)); y = conv2(relu(bn2(conv1(a)))) + shortcut(a)``. Note that the
  shortcut takes the *activated* input ``a`` (also when it is the identity), as ptgaze
  reassigns ``x`` before the residual sum.
  """
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    a = jax.nn.relu(BatchNorm2d(name="bn1")(x))
    y = Conv2d(self.features, 3, self.stride, 1, use_bias=False, name="conv1")(a)
    y = jax.nn.relu(BatchNorm2d(name="bn2")(y))
    y = Conv2d(self.features, 3, 1, 1, use_bias=False, name="conv2")(y)
    if x.shape[-1] != self.features:
      a = Conv2d(self.features, 1, self.stride, 0, use_bias=False, name="shortcut_conv")(a)
    return y + a


class ResNetPreact(nn.Module):
  """ptgaze ``mpiigaze.resnet_preact.Model``: eye image + head pose -> (pitch, yaw)."""
  depth: int = 8
  base_channels: int = 16

  @nn.compact
  def __call__(self, x, head_pose):
    """Args: ``x`` (B, 36, 60, 1) gray in [0, 1]; ``head_pose`` (B, 2). Returns (B, 2)."""
    n_blocks = (self.depth - 2) // 6
    if n_blocks * 6 + 2 != self.depth:
      raise ValueError(f"depth must be 6n + 2, got {self.depth}")
    widths = (self.base_channels, self.base_channels * 2, self.base_channels * 4)
    x = Conv2d(widths[0], 3, 1, 1, use_bias=False, name="conv")(x)
    for s, (w, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
      for b in range(1, n_blocks + 1):
        x = PreactBlock(w, stride if b == 1 else 1, name=f"stage{s}_block{b}")(x)
    x = jax.nn.relu(BatchNorm2d(name="bn")(x))
    x = jnp.mean(x, axis=(1, 2))  # adaptive_avg_pool2d(1) + view(B, -1)
    x = jnp.concatenate([x, head_pose.astype(x.dtype)], axis=-1)
    return Linear(2, name="fc")(x)


# --------------------------------------------------------------------------------------
# torchvision/timm ResNet (MPIIFaceGaze backbone, ETH-XGaze).
# --------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
  """torchvision/timm ``BasicBlock`` (post-activation, expansion 1)."""
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    y = Conv2d(self.features, 3, self.stride, 1, use_bias=False, name="conv1")(x)
    y = jax.nn.relu(BatchNorm2d(name="bn1")(y))
    y = Conv2d(self.features, 3, 1, 1, use_bias=False, name="conv2")(y)
    y = BatchNorm2d(name="bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = Conv2d(self.features, 1, self.stride, 0, use_bias=False, name="downsample_0")(x)
      x = BatchNorm2d(name="downsample_1")(x)
    return jax.nn.relu(y + x)


def _resnet_trunk(x, layers: Sequence[int]):
  """Stem + ``layer1 .. layer{len(layers)}`` of a BasicBlock ResNet.

  Called inside a compact ``__call__``: the submodules (``conv1``, ``bn1``,
  ``layer{i}_{j}``) belong to the calling module, as in torchvision's key layout.
  """
  x = Conv2d(64, 7, 2, 3, use_bias=False, name="conv1")(x)
  x = jax.nn.relu(BatchNorm2d(name="bn1")(x))
  x = max_pool2d(x, 3, 2, 1)
  for i, n in enumerate(layers):
    width = 64 * 2 ** i
    for j in range(n):
      stride = 2 if (i > 0 and j == 0) else 1
      x = BasicBlock(width, stride, name=f"layer{i + 1}_{j}")(x)
  return x


class ResNetSimpleBackbone(nn.Module):
  """ptgaze ``mpiifacegaze.backbones.resnet_simple.Model``: torchvision ResNet to layer3."""
  layers: Sequence[int] = (2, 2, 2)

  @nn.compact
  def __call__(self, x):
    return _resnet_trunk(x, self.layers)


class ResNetSimple(nn.Module):
  """ptgaze ``mpiifacegaze.resnet_simple.Model``: 224x224 face -> (pitch, yaw)."""
  layers: Sequence[int] = (2, 2, 2)

  @nn.compact
  def __call__(self, x):
    """Args: ``x`` (B, 224, 224, 3) normalised BGR. Returns (B, 2)."""
    x = ResNetSimpleBackbone(tuple(self.layers), name="feature_extractor")(x)
    y = jax.nn.relu(Conv2d(1, 1, 1, 0, name="conv")(x))
    x = nchw_flatten(x * y)
    return Linear(2, name="fc")(x)


class ResNet18(nn.Module):
  """timm/torchvision ``resnet18`` with ``num_classes`` outputs (ETH-XGaze: 2)."""
  num_classes: int = 2

  @nn.compact
  def __call__(self, x):
    """Args: ``x`` (B, 224, 224, 3) ImageNet-normalised RGB. Returns (B, num_classes)."""
    x = _resnet_trunk(x, (2, 2, 2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return Linear(self.num_classes, name="fc")(x)


# --------------------------------------------------------------------------------------
# Family contract.
# --------------------------------------------------------------------------------------
def _module_from_config(config: Mapping[str, Any]) -> nn.Module:
  arch = config.get("arch")
  if arch == "resnet_preact":
    return ResNetPreact(depth=int(config.get("depth", 8)),
                        base_channels=int(config.get("base_channels", 16)))
  if arch == "resnet_simple":
    return ResNetSimple(layers=tuple(int(n) for n in config.get("resnet_layers", (2, 2, 2))))
  if arch == "resnet18":
    return ResNet18(num_classes=int(config.get("num_classes", 2)))
  raise ValueError(f"unknown gaze architecture {arch!r} (config {dict(config)})")


def build(model: str, config: Mapping[str, Any] | None = None) -> nn.Module:
  """The Flax module of gaze model ``model`` (``MPIIGaze``, ``MPIIFaceGaze``, ``ETH-XGaze``)."""
  if model not in DEFAULT_CONFIGS:
    raise ValueError(f"unknown gaze model {model!r}; known: {', '.join(DEFAULT_CONFIGS)}")
  config = DEFAULT_CONFIGS[model] if config is None else config
  if config.get("arch") != _ARCH_OF_MODEL[model]:
    raise ValueError(f"{model} needs arch {_ARCH_OF_MODEL[model]!r}, "
                     f"config has {config.get('arch')!r}")
  return _module_from_config(config)


def _dummy_inputs(config: Mapping[str, Any], batch: int = 1):
  h, w = config["input_size"]
  x = jnp.zeros((batch, h, w, int(config["input_channels"])), jnp.float32)
  if config["arch"] == "resnet_preact":
    return (x, jnp.zeros((batch, 2), jnp.float32))
  return (x,)


def expected_variables(model: str, config: Mapping[str, Any] | None = None):
  """``jax.ShapeDtypeStruct`` tree of the variables ``weights_conversion.gaze.convert`` makes."""
  config = DEFAULT_CONFIGS[model] if config is None else config
  module = build(model, config)
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), *_dummy_inputs(config))


def apply(variables, x: jax.Array, config: Mapping[str, Any],
          head_pose: jax.Array | None = None) -> jax.Array:
  """Runs a gaze model on already-normalised NHWC float32 input.

  Args:
    variables: converted ``{'params', 'batch_stats'}``.
    x: (B, H, W, C) model input as produced by ``preprocess``.
    config: the model config (``DEFAULT_CONFIGS[name]`` or the one stored with the
      weights); its ``arch`` selects the network.
    head_pose: (B, 2) normalised head pose ``(pitch, yaw)``, MPIIGaze only (required).

  Returns:
    (B, 2) gaze ``(pitch, yaw)`` in radians, in the normalised camera frame.
  """
  module = _module_from_config(config)
  if config["arch"] == "resnet_preact":
    if head_pose is None:
      raise ValueError("MPIIGaze (resnet_preact) needs the (B, 2) head pose")
    return module.apply(variables, x, head_pose)
  if head_pose is not None:
    raise ValueError(f"{config['arch']} takes no head pose")
  return module.apply(variables, x)


# --------------------------------------------------------------------------------------
# Input normalisation.
# --------------------------------------------------------------------------------------
def equalize_hist_lut(gray_u8: np.ndarray) -> np.ndarray:
  """Host side: ``cv2.equalizeHist``'s look-up table(s) for uint8 gray patches.

  :func:`drsf_jax.geometry.normalization.equalization_lut` per patch; (H, W) -> (256,), (B, H, W) ->
  (B, 256), float32 values in [0, 255].
  """
  g = np.asarray(gray_u8)
  if g.dtype != np.uint8:
    raise ValueError(f"equalize_hist_lut needs uint8 patches, got {g.dtype}")
  if g.ndim == 3:
    return np.stack([normalization.equalization_lut(p) for p in g])
  if g.ndim != 2:
    raise ValueError(f"expected (H, W) or (B, H, W), got shape {g.shape}")
  return normalization.equalization_lut(g)


def apply_intensity_lut(gray: jax.Array, lut: jax.Array) -> jax.Array:
  """In-graph: a fixed 256-entry table, linearly interpolated (:func:`normalization.equalize_with_lut`).

  Exact at the 256 levels ``k / 255`` and differentiable (piecewise linear) in between;
  ``gray`` (B, H, W) or (B, H, W, 1) in [0, 1], ``lut`` (256,) or (B, 256).
  """
  return normalization.equalize_with_lut(gray, jnp.asarray(lut, jnp.float32))


def rgb_to_gray(images_rgb01: jax.Array) -> jax.Array:
  """(…, 3) RGB -> (…, 1) gray with OpenCV's BT.601 weights (no uint8 rounding)."""
  return normalization.rgb_to_gray(images_rgb01)[..., None]


def preprocess(model: str, images_rgb01: jax.Array,
               equalize_lut: jax.Array | None = None) -> jax.Array:
  """The input normalisation ptgaze applies for ``model``, in-graph.

  Args:
    model: ``MPIIGaze``, ``MPIIFaceGaze`` or ``ETH-XGaze``.
    images_rgb01: (B, H, W, 3) normalised (warped) patches, RGB in [0, 1], at the model's
      input size (36x60 eyes for MPIIGaze, 224x224 faces otherwise).
    equalize_lut: MPIIGaze only: (256,) or (B, 256) histogram-equalisation tables from
      ``equalize_hist_lut`` on the original patches. ``None`` skips equalisation (ptgaze
      always equalises; pass the tables to match it).

  Returns:
    (B, H, W, C) model input: MPIIGaze (B, 36, 60, 1) gray in [0, 1]; MPIIFaceGaze BGR
    mean/std-normalised; ETH-XGaze RGB mean/std-normalised.
  """
  config = DEFAULT_CONFIGS.get(model)
  if config is None:
    raise ValueError(f"unknown gaze model {model!r}")
  x = jnp.asarray(images_rgb01, jnp.float32)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"expected (B, H, W, 3) RGB images, got shape {x.shape}")
  if list(x.shape[1:3]) != list(config["input_size"]):
    raise ValueError(f"{model} expects {tuple(config['input_size'])} (H, W) patches, "
                     f"got {tuple(x.shape[1:3])}")
  if model == MPIIGAZE:
    g = rgb_to_gray(x)
    if equalize_lut is not None:
      g = apply_intensity_lut(g, equalize_lut)
    return g
  if equalize_lut is not None:
    raise ValueError(f"{model} takes no equalisation table")
  mean = jnp.asarray(IMAGENET_MEAN_RGB, jnp.float32)
  std = jnp.asarray(IMAGENET_STD_RGB, jnp.float32)
  x = (x - mean) / std
  if model == MPIIFACEGAZE:
    x = x[..., ::-1]  # BGR order; mean/std flip with the channels.
  return x


# --------------------------------------------------------------------------------------
# Outputs.
# --------------------------------------------------------------------------------------
# ptgaze's angle <-> vector conventions live in drsf_jax.geometry.
gaze_vector = gaze_vectors.pitch_yaw_to_vector
pitch_yaw_from_vector = gaze_vectors.vector_to_pitch_yaw


_FLIP_YAW = (1.0, -1.0)


def mpiigaze_two_eyes(variables, left_eye: jax.Array, right_eye: jax.Array,
                      left_pose: jax.Array, right_pose: jax.Array,
                      config: Mapping[str, Any] | None = None) -> tuple[jax.Array, jax.Array]:
  """Both eyes through MPIIGaze as ptgaze's ``GazeEstimator._run_mpiigaze_model``.

  The model works in the left-eye convention: the right eye's patch is mirrored
  horizontally and the yaw of its head pose negated on input, and the yaw of its
  prediction is negated back. Both eyes run in one batch.

  Args:
    variables: converted MPIIGaze variables.
    left_eye: (B, 36, 60, 1) the subject's left eye (ptgaze ``LEYE``), model input
      (``preprocess`` output).
    right_eye: (B, 36, 60, 1) the subject's right eye (ptgaze ``REYE``), *unmirrored*.
    left_pose: (B, 2) normalised head pose ``(pitch, yaw)`` of the left-eye patch.
    right_pose: (B, 2) normalised head pose of the right-eye patch, unmirrored.
    config: MPIIGaze config (default ``DEFAULT_CONFIGS['MPIIGaze']``).

  Returns:
    ``(left_pitch_yaw, right_pitch_yaw)``, each (B, 2), radians, in each eye's normalised
    camera frame.
  """
  config = DEFAULT_CONFIGS[MPIIGAZE] if config is None else config
  flip = jnp.asarray(_FLIP_YAW, jnp.float32)
  b = left_eye.shape[0]
  images = jnp.concatenate([right_eye[:, :, ::-1], left_eye], axis=0)
  poses = jnp.concatenate([right_pose * flip, left_pose], axis=0)
  out = apply(variables, images, config, head_pose=poses)
  return out[b:], out[:b] * flip
