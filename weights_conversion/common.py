"""Reading upstream PyTorch checkpoints and the generic tensor rules.

``load_state_dict`` accepts every format the upstream projects publish: a plain state
dict, ``{'model': sd}``, ``{'state_dict': sd}``, ``{'net': sd}``, keys prefixed by
``module.`` (DataParallel), legacy (non-zip) and zip ``torch.save`` files,
TorchScript archives (``torch.jit.save``, as 2DFAN-4 is published) and ``.safetensors``.

``StateDict`` hands tensors out under the generic rules (conv OIHW -> HWIO, linear
transpose, BatchNorm running statistics into ``batch_stats``, PReLU slopes) and keeps
the bookkeeping strict: asking for a key that is absent, or with the wrong shape, raises
``ConversionError`` naming it, and ``finish()`` raises naming every key never used.
"""

import os
import zipfile
from typing import Any, Mapping

import numpy as np


class ConversionError(Exception):
  """A checkpoint cannot be converted: wrong family, missing/unexpected/mis-shaped key."""


_WRAPPER_KEYS = ("model", "state_dict", "net", "model_state_dict")


def _is_torchscript(path: str) -> bool:
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as z:
    return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Loads a PyTorch checkpoint of any published layout as ``{key: float32 ndarray}``."""
  import torch  # Conversion-time dependency only.

  if not os.path.isfile(path):
    raise ConversionError(f"checkpoint not found: {path}")
  if path.endswith(".safetensors"):  # Newer ptgaze releases publish safetensors.
    try:
      from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
      sd = load_file(path)
    except Exception as e:  # pylint: disable=broad-except
      raise ConversionError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return {(k[len("module."):] if k.startswith("module.") else k): np.asarray(v) for k, v in sd.items()}
  obj: Any
  try:
    if _is_torchscript(path):
      obj = torch.jit.load(path, map_location="cpu").state_dict()
    else:
      try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
      except Exception:  # pylint: disable=broad-except
        # Some legacy checkpoints pickle extra objects (e.g. argparse Namespaces).
        obj = torch.load(path, map_location="cpu", weights_only=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
  for _ in range(2):  # {'model': {'state_dict': ...}} also occurs.
    if isinstance(obj, Mapping):
      for k in _WRAPPER_KEYS:
        if k in obj and isinstance(obj[k], Mapping):
          obj = obj[k]
          break
  if hasattr(obj, "state_dict") and not isinstance(obj, Mapping):
    obj = obj.state_dict()  # A whole pickled nn.Module.
  if not isinstance(obj, Mapping):
    raise ConversionError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state dict")
  out = {}
  for k, v in obj.items():
    if not hasattr(v, "detach"):
      continue  # Non-tensor entries (e.g. epoch counters) are not weights.
    if k.startswith("module."):
      k = k[len("module."):]
    out[k] = v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
  if not out:
    raise ConversionError(f"{path}: checkpoint holds no tensors")
  return out


def state_dict_from_module(module) -> dict[str, np.ndarray]:
  """``module.state_dict()`` as numpy (used by parity tests)."""
  return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
          for k, v in module.state_dict().items()}


class StateDict:
  """Strict, consuming view of a PyTorch state dict with the generic conversion rules."""

  IGNORED_SUFFIXES = ("num_batches_tracked",)

  def __init__(self, sd: Mapping[str, np.ndarray], source: str = "checkpoint"):
    self._sd = dict(sd)
    self._used: set[str] = set()
    self.source = source

  def keys(self):
    return self._sd.keys()

  def has(self, key: str) -> bool:
    return key in self._sd

  def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if key not in self._sd:
      raise ConversionError(f"{self.source}: missing key {key!r}")
    v = np.asarray(self._sd[key], dtype=np.float32)
    if shape is not None and tuple(v.shape) != tuple(shape):
      raise ConversionError(f"{self.source}: key {key!r} has shape {tuple(v.shape)}, expected {tuple(shape)}")
    self._used.add(key)
    return v

  # ---- generic rules -------------------------------------------------------------
  def conv(self, prefix: str, bias: bool | None = None) -> dict[str, np.ndarray]:
    """Conv2d (plain, depthwise or grouped): OIHW -> HWIO, i.e. transpose (2, 3, 1, 0)."""
    w = self.take(f"{prefix}.weight")
    if w.ndim != 4:
      raise ConversionError(f"{self.source}: key {prefix + '.weight'!r} is {w.ndim}-D, expected a 4-D conv weight")
    out = {"kernel": np.transpose(w, (2, 3, 1, 0))}
    if bias is None:
      bias = self.has(f"{prefix}.bias")
    if bias:
      out["bias"] = self.take(f"{prefix}.bias", (w.shape[0],))
    return out

  def linear(self, prefix: str, bias: bool | None = None) -> dict[str, np.ndarray]:
    w = self.take(f"{prefix}.weight")
    if w.ndim != 2:
      raise ConversionError(f"{self.source}: key {prefix + '.weight'!r} is {w.ndim}-D, expected a 2-D linear weight")
    out = {"kernel": w.T.copy()}
    if bias is None:
      bias = self.has(f"{prefix}.bias")
    if bias:
      out["bias"] = self.take(f"{prefix}.bias", (w.shape[0],))
    return out

  def bn(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """BatchNorm: ``(params, batch_stats)`` = ({scale, bias}, {mean, var})."""
    scale = self.take(f"{prefix}.weight")
    c = scale.shape
    params = {"scale": scale, "bias": self.take(f"{prefix}.bias", c)}
    stats = {"mean": self.take(f"{prefix}.running_mean", c), "var": self.take(f"{prefix}.running_var", c)}
    if self.has(f"{prefix}.num_batches_tracked"):
      self._used.add(f"{prefix}.num_batches_tracked")
    return params, stats

  def prelu(self, prefix: str) -> dict[str, np.ndarray]:
    return {"alpha": self.take(f"{prefix}.weight").reshape(-1)}

  def finish(self):
    """Raises naming every key of the checkpoint that no rule consumed."""
    left = sorted(k for k in self._sd if k not in self._used
                  and not k.endswith(self.IGNORED_SUFFIXES))
    if left:
      raise ConversionError(
          f"{self.source}: {len(left)} unexpected key(s): " + ", ".join(left[:12])
          + (" ..." if len(left) > 12 else ""))


def put(tree: dict, path: str, value: Any):
  """``put(t, 'a/b/c', v)`` sets ``t['a']['b']['c'] = v``, creating dicts on the way."""
  parts = path.split("/")
  for p in parts[:-1]:
    tree = tree.setdefault(p, {})
  if parts[-1] in tree:
    raise ConversionError(f"internal: flax path {path!r} written twice")
  tree[parts[-1]] = value


class VariablesBuilder:
  """Collects ``params`` and ``batch_stats`` for a Flax module from a ``StateDict``."""

  def __init__(self, sd: StateDict):
    self.sd = sd
    self.params: dict = {}
    self.batch_stats: dict = {}

  def conv(self, flax_path: str, torch_prefix: str, bias: bool | None = None):
    put(self.params, flax_path, self.sd.conv(torch_prefix, bias))

  def linear(self, flax_path: str, torch_prefix: str, bias: bool | None = None):
    put(self.params, flax_path, self.sd.linear(torch_prefix, bias))

  def bn(self, flax_path: str, torch_prefix: str):
    p, s = self.sd.bn(torch_prefix)
    put(self.params, flax_path, p)
    put(self.batch_stats, flax_path, s)

  def prelu(self, flax_path: str, torch_prefix: str):
    put(self.params, flax_path, self.sd.prelu(torch_prefix))

  def variables(self) -> dict:
    self.sd.finish()
    out = {"params": self.params}
    if self.batch_stats:
      out["batch_stats"] = self.batch_stats
    return out
