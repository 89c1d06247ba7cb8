"""ptgaze gaze checkpoints -> Flax variables of ``drsf_jax.models.gaze``.

Key maps (torch state-dict prefix -> Flax module path):

* ``MPIIGaze`` (``resnet_preact``): ``conv`` -> ``conv``;
  ``stage{s}.block{b}.{bn1,conv1,bn2,conv2}`` -> ``stage{s}_block{b}/{...}``;
  ``stage{s}.block{b}.shortcut.conv`` -> ``stage{s}_block{b}/shortcut_conv``;
  ``bn`` -> ``bn``; ``fc`` -> ``fc``.
* ``MPIIFaceGaze`` (``resnet_simple``): ``feature_extractor.{conv1,bn1}`` and
  ``feature_extractor.layer{i}.{j}.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}`` ->
  ``feature_extractor/{conv1,bn1}``, ``feature_extractor/layer{i}_{j}/{...,
  downsample_0, downsample_1}``; ``conv`` -> ``conv``; ``fc`` -> ``fc``.
* ``ETH-XGaze`` (timm ``resnet18``, torchvision key layout): the same trunk without the
  ``feature_extractor.`` prefix, four layers, and ``fc``.

Every key is consumed exactly once (``StateDict.finish``), and every converted tensor is
checked against ``drsf_jax.models.gaze.expected_variables``: a missing, unexpected or
mis-shaped key raises ``ConversionError`` naming the PyTorch key. ptgaze publishes
``{'model': state_dict}`` files, unwrapped by ``common.load_state_dict``.
"""

from typing import Any, Mapping

import numpy as np

from drsf_jax.models import gaze
from weights_conversion.common import ConversionError, StateDict, VariablesBuilder


class _Mapper:
  """A ``VariablesBuilder`` that remembers which torch prefix filled each Flax path."""

  def __init__(self, sd: StateDict):
    self.builder = VariablesBuilder(sd)
    self.torch_of: dict[str, str] = {}

  def conv(self, flax_path: str, torch_prefix: str, bias: bool):
    self.builder.conv(flax_path, torch_prefix, bias)
    self.torch_of[flax_path] = torch_prefix

  def bn(self, flax_path: str, torch_prefix: str):
    self.builder.bn(flax_path, torch_prefix)
    self.torch_of[flax_path] = torch_prefix

  def linear(self, flax_path: str, torch_prefix: str):
    self.builder.linear(flax_path, torch_prefix, bias=True)
    self.torch_of[flax_path] = torch_prefix


def _preact(m: _Mapper, config: Mapping[str, Any]):
  depth = int(config.get("depth", 8))
  n_blocks = (depth - 2) // 6
  base = int(config.get("base_channels", 16))
  m.conv("conv", "conv", bias=False)
  in_ch = base
  for s, width in enumerate((base, 2 * base, 4 * base), start=1):
    for b in range(1, n_blocks + 1):
      t, f = f"stage{s}.block{b}", f"stage{s}_block{b}"
      m.bn(f"{f}/bn1", f"{t}.bn1")
      m.conv(f"{f}/conv1", f"{t}.conv1", bias=False)
      m.bn(f"{f}/bn2", f"{t}.bn2")
      m.conv(f"{f}/conv2", f"{t}.conv2", bias=False)
      if in_ch != width:
        m.conv(f"{f}/shortcut_conv", f"{t}.shortcut.conv", bias=False)
      in_ch = width
  m.bn("bn", "bn")
  m.linear("fc", "fc")


def _trunk(m: _Mapper, layers, flax_prefix: str = "", torch_prefix: str = ""):
  m.conv(f"{flax_prefix}conv1", f"{torch_prefix}conv1", bias=False)
  m.bn(f"{flax_prefix}bn1", f"{torch_prefix}bn1")
  in_ch = 64
  for i, n in enumerate(layers):
    width = 64 * 2 ** i
    for j in range(n):
      stride = 2 if (i > 0 and j == 0) else 1
      f, t = f"{flax_prefix}layer{i + 1}_{j}", f"{torch_prefix}layer{i + 1}.{j}"
      m.conv(f"{f}/conv1", f"{t}.conv1", bias=False)
      m.bn(f"{f}/bn1", f"{t}.bn1")
      m.conv(f"{f}/conv2", f"{t}.conv2", bias=False)
      m.bn(f"{f}/bn2", f"{t}.bn2")
      if stride != 1 or in_ch != width:
        m.conv(f"{f}/downsample_0", f"{t}.downsample.0", bias=False)
        m.bn(f"{f}/downsample_1", f"{t}.downsample.1")
      in_ch = width


def _torch_shape(leaf_name: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  if leaf_name == "kernel" and len(flax_shape) == 4:
    return tuple(flax_shape[i] for i in (3, 2, 0, 1))
  if leaf_name == "kernel" and len(flax_shape) == 2:
    return (flax_shape[1], flax_shape[0])
  return tuple(flax_shape)


_TORCH_LEAF = {"kernel": "weight", "bias": "bias", "scale": "weight",
               "mean": "running_mean", "var": "running_var"}


def _check_shapes(variables: dict, expected: Mapping[str, Any], torch_of: dict[str, str],
                  source: str):
  """Raises ``ConversionError`` naming the torch key of the first mis-shaped tensor."""
  def walk(got, exp, path):
    for k, e in exp.items():
      p = f"{path}/{k}" if path else k
      if isinstance(e, Mapping):
        walk(got.get(k, {}), e, p)
        continue
      module_path = p.split("/", 1)[1].rsplit("/", 1)[0]  # Drop collection and leaf.
      torch_key = f"{torch_of.get(module_path, module_path)}.{_TORCH_LEAF.get(k, k)}"
      if k not in got:
        raise ConversionError(f"{source}: missing key {torch_key!r}")
      shape = tuple(np.shape(got[k]))
      if shape != tuple(e.shape):
        raise ConversionError(
            f"{source}: key {torch_key!r} has shape {_torch_shape(k, shape)}, "
            f"expected {_torch_shape(k, tuple(e.shape))}")
  walk(variables, expected, "")


def convert(sd: StateDict, model: str, config: Mapping[str, Any] | None = None) -> dict:
  """Converts a ptgaze state dict to the Flax variables of gaze model ``model``.

  Args:
    sd: the checkpoint (``StateDict(load_state_dict(path))``).
    model: ``MPIIGaze``, ``MPIIFaceGaze`` or ``ETH-XGaze``.
    config: the model config (default ``drsf_jax.models.gaze.DEFAULT_CONFIGS[model]``).

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` of numpy float32 arrays.

  Raises:
    ConversionError: naming the key, for a missing, unexpected or mis-shaped tensor
      (e.g. a checkpoint of another gaze model).
  """
  if model not in gaze.DEFAULT_CONFIGS:
    raise ConversionError(f"unknown gaze model {model!r}")
  config = gaze.DEFAULT_CONFIGS[model] if config is None else config
  expected = gaze.expected_variables(model, config)  # Also validates model vs. arch.
  m = _Mapper(sd)
  arch = config["arch"]
  if arch == "resnet_preact":
    _preact(m, config)
  elif arch == "resnet_simple":
    _trunk(m, [int(n) for n in config.get("resnet_layers", (2, 2, 2))],
           "feature_extractor/", "feature_extractor.")
    m.conv("conv", "conv", bias=True)
    m.linear("fc", "fc")
  elif arch == "resnet18":
    _trunk(m, (2, 2, 2, 2))
    m.linear("fc", "fc")
  else:
    raise ConversionError(f"unknown gaze architecture {arch!r}")
  variables = m.builder.variables()  # Raises on unexpected keys.
  _check_shapes(variables, expected, m.torch_of, sd.source)
  return variables
