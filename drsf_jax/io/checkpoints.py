"""Converted-weight files: where they live, how they are written and read.

Format (documented in README, "Weights"): one ``flax.serialization`` msgpack file per
model name, ``<weights_dir>/<model>.msgpack``, holding::

    {"format": "drsf-jax/weights/2",
     "meta": "<JSON string>",        # family, model, config, source file + sha256, converter version
     "variables_sha256": "<hex>",    # sha256 of the "variables" bytes below
     "variables": <bytes>}           # flax msgpack of {"params": ..., "batch_stats": ...}

The model config (e.g. RetinaFace anchor sizes and activation slope) travels inside
``meta`` so that the weights alone say how to build the model. The tensor payload is
checksummed: a file damaged after conversion is an error, not a model that silently
computes garbage. Files of format 1 were written before the RetinaFace config carried its
activation (``leaky_slope``) and would load the shared ReLU checkpoint into the LeakyReLU
network, so they are refused with the command that re-creates them. Reading is strict:
the stored tree must have exactly the keys and shapes of the Flax module it is loaded
into, and any mismatch is an error that names the key.
"""

import hashlib
import json
import os
import tempfile
from typing import Any, Mapping

import flax.serialization
import jax
import numpy as np

FORMAT = "drsf-jax/weights/2"
OLD_FORMATS = ("drsf-jax/weights/1",)
CONVERTER_VERSION = 2
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
  blob = flax.serialization.msgpack_serialize(_to_numpy_tree(dict(variables)))
  payload = {
      "format": FORMAT,
      "meta": json.dumps(dict(meta), sort_keys=True),
      "variables_sha256": hashlib.sha256(blob).hexdigest(),
      "variables": blob,
  }
  data = flax.serialization.msgpack_serialize(payload)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".msgpack",
                             dir=os.path.dirname(os.path.abspath(path)))
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make the weights private to their writer.
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def _reconvert_hint(path: str, meta_text) -> str:
  """``; re-create it with: <command>`` for the model named in a file's metadata."""
  try:
    model = check_model_name(json.loads(meta_text)["model"])
  except Exception:  # pylint: disable=broad-except
    model = os.path.splitext(os.path.basename(path))[0]
    if model not in MODEL_FAMILIES:
      return "; re-create it with scripts/convert_weights.py"
  wdir = os.path.dirname(os.path.abspath(path))
  return f"; re-create it with: {convert_command(model)} --weights_dir {wdir}"


def read(path: str) -> tuple[dict, dict]:
  """Reads a converted-weights file: ``(variables, meta)``. Raises ``WeightsError``.

  The tensor payload's sha256 is verified before anything is decoded from it.
  """
  if not os.path.isfile(path):
    raise WeightsError(f"weights file not found: {path}")
  try:
    with open(path, "rb") as f:
      payload = flax.serialization.msgpack_restore(f.read())
  except Exception as e:  # msgpack raises several unrelated types on garbage.
    raise WeightsError(f"{path}: not a drsf-jax weights file ({type(e).__name__}: {e})"
                       f"{_reconvert_hint(path, None)}") from None
  fmt = payload.get("format") if isinstance(payload, dict) else None
  if fmt in OLD_FORMATS:
    raise WeightsError(
        f"{path}: written by an older converter (format {fmt!r}; RetinaFace files of that "
        f"format lack the activation config){_reconvert_hint(path, payload.get('meta'))}")
  if fmt != FORMAT:
    raise WeightsError(f"{path}: format {fmt!r} is not {FORMAT!r}{_reconvert_hint(path, None)}")
  blob = payload.get("variables")
  if not isinstance(blob, bytes) or hashlib.sha256(blob).hexdigest() != payload.get("variables_sha256"):
    raise WeightsError(f"{path}: corrupted (the tensor payload's sha256 does not match)"
                       f"{_reconvert_hint(path, payload.get('meta'))}")
  try:
    meta = json.loads(payload["meta"])
  except (KeyError, TypeError, ValueError) as e:
    raise WeightsError(f"{path}: unreadable metadata ({e}){_reconvert_hint(path, None)}") from None
  try:
    variables = flax.serialization.msgpack_restore(blob)
  except Exception as e:  # pylint: disable=broad-except
    raise WeightsError(f"{path}: unreadable tensors ({type(e).__name__}: {e})"
                       f"{_reconvert_hint(path, payload.get('meta'))}") from None
  return variables, meta


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
