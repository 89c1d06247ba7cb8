"""biubug6/Pytorch_Retinaface checkpoints -> Flax variables of ``drsf_jax.models.retinaface``.

The key map is the architecture written out layer by layer: every torch prefix is
converted to the Flax path that replaces its dots by underscores below the top-level
module (``body.stage1.1.3`` -> ``body/stage1_1_3``; heads keep their ``conv1x1`` child:
``ClassHead.0.conv1x1`` -> ``ClassHead_0/conv1x1``). Shapes are checked per key against
the Flax model built from ``config``, so a mis-shaped tensor is an error naming its key;
``VariablesBuilder.variables()`` rejects keys that no rule consumed.
"""

from typing import Any, Iterator, Mapping

from drsf_jax.models import retinaface as rf
from weights_conversion.common import ConversionError, StateDict, VariablesBuilder

TOP_LEVEL = ("body", "fpn", "ssh1", "ssh2", "ssh3")


def flax_path(torch_prefix: str) -> str:
  """``body.stage1.0.0`` -> ``body/stage1_0_0``; ``ClassHead.2.conv1x1`` -> ``ClassHead_2/conv1x1``."""
  top, rest = torch_prefix.split(".", 1)
  if top in TOP_LEVEL:
    return f"{top}/{rest.replace('.', '_')}"
  index, child = rest.split(".", 1)
  return f"{top}_{index}/{child}"


def _conv_bn(prefix: str) -> Iterator[tuple[str, str]]:
  yield "conv", f"{prefix}.0"
  yield "bn", f"{prefix}.1"


def _mobilenet_layers() -> Iterator[tuple[str, str]]:
  yield from _conv_bn("body.stage1.0")
  for stage, blocks in rf.MOBILENET_STAGES.items():
    first = 1 if stage == "stage1" else 0
    for i in range(len(blocks)):
      p = f"body.{stage}.{i + first}"
      for kind, j in (("conv", 0), ("bn", 1), ("conv", 3), ("bn", 4)):
        yield kind, f"{p}.{j}"


def _resnet50_layers() -> Iterator[tuple[str, str]]:
  yield "conv", "body.conv1"
  yield "bn", "body.bn1"
  for li, n in enumerate(rf.RESNET50_BLOCKS):
    for b in range(n):
      p = f"body.layer{li + 1}.{b}"
      for j in (1, 2, 3):
        yield "conv", f"{p}.conv{j}"
        yield "bn", f"{p}.bn{j}"
      if b == 0:
        yield from _conv_bn(f"{p}.downsample")


def layer_map(config: Mapping[str, Any]) -> list[tuple[str, str]]:
  """Every ``(kind, torch prefix)`` of the model described by ``config``.

  ``kind`` is ``conv`` (no bias), ``bn`` or ``head`` (a 1x1 conv with bias).
  """
  if config["backbone"] == "mobilenet0.25":
    out = list(_mobilenet_layers())
  elif config["backbone"] == "resnet50":
    out = list(_resnet50_layers())
  else:
    raise ConversionError(f"unknown RetinaFace backbone {config['backbone']!r}")
  for name in ("output1", "output2", "output3", "merge1", "merge2"):
    out += _conv_bn(f"fpn.{name}")
  for i in (1, 2, 3):
    for name in ("conv3X3", "conv5X5_1", "conv5X5_2", "conv7X7_2", "conv7x7_3"):
      out += _conv_bn(f"ssh{i}.{name}")
  for head in ("ClassHead", "BboxHead", "LandmarkHead"):
    out += [("head", f"{head}.{i}.conv1x1") for i in range(3)]
  return out


def _lookup(tree: Mapping[str, Any], path: str):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def convert(sd: StateDict, model: str, config: Mapping[str, Any]) -> dict:
  """Converts a biubug6 RetinaFace state dict (either backbone) for ``model``/``config``.

  Raises:
    ConversionError: naming the first missing or mis-shaped key, or every unexpected key.
  """
  expected = rf.expected_variables(model, config)["params"]
  vb = VariablesBuilder(sd)
  for kind, prefix in layer_map(config):
    path = flax_path(prefix)
    want = _lookup(expected, path)
    if kind == "bn":
      sd.take(f"{prefix}.weight", want["scale"].shape)
      vb.bn(path, prefix)
    else:
      kh, kw, cin, cout = want["kernel"].shape
      sd.take(f"{prefix}.weight", (cout, cin, kh, kw))
      vb.conv(path, prefix, bias=kind == "head")
  return vb.variables()
