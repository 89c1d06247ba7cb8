"""facenet-pytorch MTCNN (``pnet.pt``, ``rnet.pt``, ``onet.pt``) -> Flax variables.

facenet-pytorch 2.6.0 ships the three nets as plain state dicts (legacy torch format)
in ``facenet_pytorch/data``. :func:`load_mtcnn_state_dict` merges them into one dict
whose keys carry the net as prefix (``pnet.conv1.weight``, ``onet.dense6_3.bias``...),
and :func:`convert` maps them onto ``drsf_jax.models.mtcnn``'s layout::

    torch  <net>.<layer>.weight / .bias   (Conv2d)  -> <net>/params/<layer>/kernel (HWIO), bias
    torch  <net>.<layer>.weight / .bias   (Linear)  -> <net>/params/<layer>/kernel (.T), bias
    torch  <net>.<layer>.weight           (PReLU)   -> <net>/params/<layer>/alpha

Every tensor's shape is checked against the Flax module, and every key must be used:
a missing, unexpected or mis-shaped key raises ``ConversionError`` naming it.
"""

import importlib.util
import os
from typing import Any, Mapping

from drsf_jax.models import mtcnn as mtcnn_model
from weights_conversion import common

# (layer name, kind) per net, in facenet-pytorch's attribute order.
LAYERS: dict[str, tuple[tuple[str, str], ...]] = {
    "pnet": (("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("conv4_1", "conv"), ("conv4_2", "conv")),
    "rnet": (("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("dense4", "linear"), ("prelu4", "prelu"),
             ("dense5_1", "linear"), ("dense5_2", "linear")),
    "onet": (("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("conv4", "conv"), ("prelu4", "prelu"),
             ("dense5", "linear"), ("prelu5", "prelu"), ("dense6_1", "linear"),
             ("dense6_2", "linear"), ("dense6_3", "linear")),
}

PIP_COMMAND = "pip install --no-deps facenet-pytorch==2.6.0"


def convert(sd: common.StateDict, model: str, config: Mapping[str, Any] | None = None) -> dict:
  """Converts the merged MTCNN state dict into ``{'pnet': {'params': ...}, ...}``.

  Args:
    sd: strict view of the merged state dict (keys prefixed ``pnet.``/``rnet.``/``onet.``).
    model: must be ``'mtcnn'``.
    config: MTCNN config (detection settings only; it does not change the weights).

  Raises:
    ConversionError: naming any missing, unexpected or mis-shaped key.
  """
  if model != "mtcnn":
    raise common.ConversionError(f"weights_conversion.mtcnn converts model 'mtcnn', not {model!r}")
  expected = mtcnn_model.expected_variables(model, config)
  out = {}
  for net, layer_list in LAYERS.items():
    builder = common.VariablesBuilder(sd)
    shapes = expected[net]["params"]
    for layer, kind in layer_list:
      key = f"{net}.{layer}"
      if kind == "prelu":
        sd.take(f"{key}.weight", shapes[layer]["alpha"].shape)
        builder.prelu(layer, key)
      elif kind == "conv":
        kh, kw, cin, cout = shapes[layer]["kernel"].shape
        sd.take(f"{key}.weight", (cout, cin, kh, kw))
        builder.conv(layer, key, bias=True)
      else:
        cin, cout = shapes[layer]["kernel"].shape
        sd.take(f"{key}.weight", (cout, cin))
        builder.linear(layer, key, bias=True)
    out[net] = {"params": builder.params}
  sd.finish()
  return out


def find_facenet_weights() -> dict[str, str]:
  """Paths of facenet-pytorch's packaged ``{pnet,rnet,onet}.pt``, without importing it.

  (Importing ``facenet_pytorch`` pulls in torchvision; ``find_spec`` only locates it.)

  Raises:
    ConversionError: when the package or one of the files is absent, with the pip command.
  """
  spec = importlib.util.find_spec("facenet_pytorch")
  if spec is None or not spec.submodule_search_locations:
    raise common.ConversionError(
        f"facenet-pytorch is not installed; it ships the MTCNN weights. Install it with: {PIP_COMMAND}")
  data = os.path.join(list(spec.submodule_search_locations)[0], "data")
  paths = {n: os.path.join(data, f"{n}.pt") for n in mtcnn_model.NETS}
  missing = [p for p in paths.values() if not os.path.isfile(p)]
  if missing:
    raise common.ConversionError(
        f"facenet-pytorch at {data} lacks {', '.join(missing)}; reinstall it with: {PIP_COMMAND}")
  return paths


def load_mtcnn_state_dict(src: str | None = None) -> dict:
  """Merged ``{'pnet.<key>': array, 'rnet.<key>': ..., 'onet.<key>': ...}``.

  Args:
    src: a directory holding ``pnet.pt``, ``rnet.pt`` and ``onet.pt``, or None for the
      files shipped by the installed facenet-pytorch package.
  """
  if src is None:
    paths = find_facenet_weights()
  else:
    if not os.path.isdir(src):
      raise common.ConversionError(
          f"MTCNN source must be a directory holding pnet.pt, rnet.pt and onet.pt: {src}")
    paths = {n: os.path.join(src, f"{n}.pt") for n in mtcnn_model.NETS}
  merged = {}
  for net, path in paths.items():
    for k, v in common.load_state_dict(path).items():
      merged[f"{net}.{k}"] = v
  return merged
