"""Converted-weight files: where they live, how they are written and read.

Format (documented in README, "Weights"): one ``flax.serialization`` msgpack file per
model name, ``<weights_dir>/<model>.msgpack``, holding::

    {"format": "drsf-jax/weights/1",
     "meta": "<JSON string>",        # family, model, config, source file + sha256, converter version
     "variables": {"params": ..., "batch_stats": ...}}   # Flax variable collections

The model config (e.g. RetinaFace anchor sizes) travels inside ``meta`` so that the
weights alone say how to build the model. Reading is strict: the stored tree must have
exactly the keys and shapes of the Flax module it is loaded into, and any mismatch is an
error that names the key.
"""

import hashlib
import json
import os
import tempfile
from typing import Any, Mapping

import flax.serialization
import jax
import numpy as np

FORMAT = "drsf-jax/weights/1"
CONVERTER_VERSION = 1
ENV_WEIGHTS_DIR = "DRSF_JAX_WEIGHTS"
DEFAULT_WEIGHTS_DIR = os.path.join("~", ".cache", "drsf_jax")

# Every model name used in flags, files and the victim registry, with its family.
MODEL_FAMILIES = {
    "retinaface": "retinaface",
    "retinaface_r50": "retinaface",
    "mtcnn": "mtcnn",
    "fan": "fan",
    "MPIIGaze": "gaze",
    "MPIIFaceGaze": "gaze",
    "ETH-XGaze": "gaze",
}


class WeightsError(Exception):
  """A converted-weights file is missing, corrupt, or does not fit the model."""


def weights_dir(override: str | None = None) -> str:
  """``--weights_dir`` if given, else ``$DRSF_JAX_WEIGHTS``, else ``~/.cache/drsf_jax``."""
  d = override or os.environ.get(ENV_WEIGHTS_DIR) or DEFAULT_WEIGHTS_DIR
  return os.path.abspath(os.path.expanduser(d))


def check_model_name(model: str) -> str:
  if model not in MODEL_FAMILIES:
    raise WeightsError(
        f"unknown model {model!r}; known models: {', '.join(sorted(MODEL_FAMILIES))}")
  return model


def weights_path(model: str, wdir: str | None = None) -> str:
  check_model_name(model)
  return os.path.join(weights_dir(wdir), f"{model}.msgpack")


def convert_command(model: str) -> str:
  """The command a user runs to create the converted weights of ``model``."""
  if model == "mtcnn":
    return "python scripts/convert_weights.py --model mtcnn"
  return f"python scripts/convert_weights.py --model {model} --src PATH_TO_UPSTREAM_CHECKPOINT"


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while True:
      b = f.read(chunk)
      if not b:
        break
      h.update(b)
  return h.hexdigest()


def _to_numpy_tree(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float32), tree)


def save(path: str, variables: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
  """Writes converted weights atomically (temporary file, then rename)."""
  payload = {
      "format": FORMAT,
      "meta": json.dumps(dict(meta), sort_keys=True),
      "variables": _to_numpy_tree(dict(variables)),
  }
  data = flax.serialization.msgpack_serialize(payload)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".msgpack",
                             dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def read(path: str) -> tuple[dict, dict]:
  """Reads a converted-weights file: ``(variables, meta)``. Raises ``WeightsError``."""
  if not os.path.isfile(path):
    raise WeightsError(f"weights file not found: {path}")
  try:
    with open(path, "rb") as f:
      payload = flax.serialization.msgpack_restore(f.read())
  except Exception as e:  # msgpack raises several unrelated types on garbage.
    raise WeightsError(f"{path}: not a drsf-jax weights file ({type(e).__name__}: {e})") from None
  if not isinstance(payload, dict) or payload.get("format") != FORMAT:
    fmt = payload.get("format") if isinstance(payload, dict) else None
    raise WeightsError(f"{path}: format {fmt!r} is not {FORMAT!r}")
  try:
    meta = json.loads(payload["meta"])
  except (KeyError, TypeError, ValueError) as e:
    raise WeightsError(f"{path}: unreadable metadata ({e})") from None
  return payload["variables"], meta


def load(model: str, wdir: str | None = None) -> tuple[dict, dict]:
  """Loads the converted weights of ``model`` from the weights directory.

  The error for missing weights names the command that creates them.
  """
  path = weights_path(model, wdir)
  if not os.path.isfile(path):
    raise WeightsError(
        f"no converted weights for {model!r} at {path}; create them with: "
        f"{convert_command(model)}" + (f" --weights_dir {wdir}" if wdir else ""))
  variables, meta = read(path)
  if meta.get("model") != model:
    raise WeightsError(f"{path}: holds weights of model {meta.get('model')!r}, not {model!r}")
  return variables, meta


def _flat(tree: Mapping[str, Any], prefix=()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def check_tree(expected: Mapping[str, Any], got: Mapping[str, Any], what: str = "weights"):
  """Strict structural comparison: same keys and shapes, else an error naming the keys.

  ``expected`` is usually ``jax.eval_shape(model.init, ...)``; leaves need ``.shape``.
  """
  e, g = _flat(expected), _flat(got)
  missing = sorted("/".join(k) for k in e.keys() - g.keys())
  unexpected = sorted("/".join(k) for k in g.keys() - e.keys())
  bad = sorted(f"{'/'.join(k)}: expected {tuple(e[k].shape)}, got {tuple(np.shape(g[k]))}"
               for k in e.keys() & g.keys() if tuple(e[k].shape) != tuple(np.shape(g[k])))
  problems = []
  if missing:
    problems.append("missing keys: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
  if unexpected:
    problems.append("unexpected keys: " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
  if bad:
    problems.append("shape mismatch: " + "; ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
  if problems:
    raise WeightsError(f"{what} do not fit the model: " + " | ".join(problems))
