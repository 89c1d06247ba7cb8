"""face-alignment 2D-FAN checkpoint -> Flax variables for ``drsf_jax.models.fan.FAN``.

The published 2DFAN-4 file (``2DFAN4-cd938726ad.zip``) is a TorchScript archive
(``torch.jit.save``); ``common.load_state_dict`` reads it with ``torch.jit.load`` and
returns the same keys as ``face_alignment.models.FAN(4).state_dict()``. Plain state
dicts (``torch.save(model.state_dict())``) work the same way.

Key map (PyTorch -> Flax path), everything else follows the generic conv/BN rules:

* ``conv1``, ``bn1`` -> ``conv1``, ``bn1``; ``conv2`` .. ``conv4`` are ``ConvBlock``s;
* ``ConvBlock``: ``bn1, conv1, bn2, conv2, bn3, conv3`` and, when the width changes,
  ``downsample.0`` (BN) / ``downsample.2`` (1x1 conv) -> ``downsample_0`` / ``downsample_2``;
* hourglass ``m{i}.b1_{d}`` / ``b2_{d}`` / ``b3_{d}`` / ``b2_plus_1`` -> same names under ``m{i}``;
* per stack: ``top_m_{i}``, ``conv_last{i}``, ``bn_end{i}``, ``l{i}``, and ``bl{i}``, ``al{i}``
  for every stack but the last.
"""

from typing import Mapping

import numpy as np

from weights_conversion import common

_STEM_WIDTHS = (("conv2", 64, 128), ("conv3", 128, 128), ("conv4", 128, None))


def _conv_block(vb: common.VariablesBuilder, flax_path: str, prefix: str, downsample: bool):
  for name in ("bn1", "bn2", "bn3"):
    vb.bn(f"{flax_path}/{name}", f"{prefix}.{name}")
  for name in ("conv1", "conv2", "conv3"):
    vb.conv(f"{flax_path}/{name}", f"{prefix}.{name}", bias=False)
  if downsample:
    vb.bn(f"{flax_path}/downsample_0", f"{prefix}.downsample.0")
    vb.conv(f"{flax_path}/downsample_2", f"{prefix}.downsample.2", bias=False)


def convert(sd: common.StateDict | Mapping[str, np.ndarray], model: str = "fan",
            config: dict | None = None) -> dict:
  """Converts a 2D-FAN state dict into ``{'params': ..., 'batch_stats': ...}``.

  Args:
    sd: a ``common.StateDict`` (or a plain ``{key: array}`` mapping).
    model: the model name (``'fan'``).
    config: the model config; ``num_modules``, ``hourglass_depth`` and
      ``num_features`` decide which keys are expected.

  Raises:
    common.ConversionError: naming any missing, unexpected or mis-shaped key.
  """
  from drsf_jax.models import fan as fan_model  # pylint: disable=import-outside-toplevel
  if model not in fan_model.DEFAULT_CONFIGS:
    raise common.ConversionError(f"not a FAN model: {model!r}")
  cfg = dict(fan_model.DEFAULT_CONFIGS[model])
  cfg.update(config or {})
  if not isinstance(sd, common.StateDict):
    sd = common.StateDict(sd)
  num_modules = int(cfg["num_modules"])
  depth = int(cfg["hourglass_depth"])
  features = int(cfg["num_features"])

  vb = common.VariablesBuilder(sd)
  vb.conv("conv1", "conv1", bias=True)
  vb.bn("bn1", "bn1")
  for name, cin, cout in _STEM_WIDTHS:
    _conv_block(vb, name, name, downsample=cin != (cout or features))
  for i in range(num_modules):
    hg = f"m{i}"
    for level in range(depth, 0, -1):
      for b in ("b1", "b2", "b3"):
        _conv_block(vb, f"{hg}/{b}_{level}", f"{hg}.{b}_{level}", downsample=False)
    _conv_block(vb, f"{hg}/b2_plus_1", f"{hg}.b2_plus_1", downsample=False)
    _conv_block(vb, f"top_m_{i}", f"top_m_{i}", downsample=False)
    vb.conv(f"conv_last{i}", f"conv_last{i}", bias=True)
    vb.bn(f"bn_end{i}", f"bn_end{i}")
    vb.conv(f"l{i}", f"l{i}", bias=True)
    if i < num_modules - 1:
      vb.conv(f"bl{i}", f"bl{i}", bias=True)
      vb.conv(f"al{i}", f"al{i}", bias=True)
  return vb.variables()
