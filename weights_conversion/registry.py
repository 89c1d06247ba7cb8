"""Which upstream checkpoint is which, and the one entry point that converts a file.

``KNOWN_CHECKPOINTS`` maps the sha256 of upstream files to the model they hold and the
config that must travel with them (e.g. RetinaFace anchor sizes differ between two
files with identical keys). A file not in the table takes the family's default config,
overridden by explicit flags, and the conversion says so.
"""

import hashlib
import importlib
import json
import logging
import os
import urllib.request
from typing import Any, Mapping

import jax

from drsf_jax.io import checkpoints
from weights_conversion import common

# sha256 -> (model, config overrides, description)
KNOWN_CHECKPOINTS: dict[str, tuple[str, dict, str]] = {
    "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1": (
        "retinaface", {"min_sizes": [[10, 20], [32, 64], [128, 256]], "leaky_slope": 0.0},
        "RetinaFace MobileNet-0.25 from biubug6/Face-Detector-1MB-with-landmark (plain ReLU, "
        "small anchors; drsf shared weights)"),
    "93e82f852b1c2d5bc5ca2228c87561fec6743cb17adec698eb57491cbcaf13ed": (
        "MPIIGaze", {}, "ptgaze v0.1.0 mpiigaze_resnet_preact.pth"),
}

# Torch-hub style files carry a sha256 prefix in their names; these prefixes identify them.
KNOWN_SHA256_PREFIXES: dict[str, tuple[str, dict, str]] = {
    "cd938726ad": ("fan", {}, "face-alignment 2DFAN4-cd938726ad.zip (TorchScript)"),
}

# Upstream download locations. A download is only accepted when its sha256 (or, for
# torch-hub files, the sha256 prefix in the file name) matches; for files whose checksum
# is not pinned here the user must pass --sha256.
DOWNLOADS: dict[str, dict[str, str]] = {
    "retinaface": {
        "url": "https://github.com/elliottzheng/face-detection/releases/download/0.0.1/mobilenet0.25_Final.pth",
        "sha256": "",
    },
    "retinaface_r50": {
        "url": "https://github.com/elliottzheng/face-detection/releases/download/0.0.1/Resnet50_Final.pth",
        "sha256": "",
    },
    "fan": {
        "url": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip",
        "sha256_prefix": "cd938726ad",
    },
    "MPIIGaze": {
        "url": "https://github.com/hysts/pytorch_mpiigaze_demo/releases/download/v0.1.0/mpiigaze_resnet_preact.pth",
        "sha256": "93e82f852b1c2d5bc5ca2228c87561fec6743cb17adec698eb57491cbcaf13ed",
    },
    "MPIIFaceGaze": {
        "url": "https://github.com/hysts/pytorch_mpiigaze_demo/releases/download/v0.1.0/mpiifacegaze_resnet_simple.pth",
        "sha256": "",
    },
    "ETH-XGaze": {
        "url": "https://github.com/hysts/pytorch_mpiigaze_demo/releases/download/v0.2.2/eth-xgaze_resnet18.pth",
        "sha256": "",
    },
}


def family_modules(model: str):
  """``(drsf_jax.models.<family>, weights_conversion.<family>)`` for a model name."""
  family = checkpoints.MODEL_FAMILIES[checkpoints.check_model_name(model)]
  return (importlib.import_module(f"drsf_jax.models.{family}"),
          importlib.import_module(f"weights_conversion.{family}"))


def identify(sha256: str) -> tuple[str, dict, str] | None:
  if sha256 in KNOWN_CHECKPOINTS:
    return KNOWN_CHECKPOINTS[sha256]
  for prefix, entry in KNOWN_SHA256_PREFIXES.items():
    if sha256.startswith(prefix):
      return entry
  return None


def resolve_config(model: str, sha256: str | None, overrides: Mapping[str, Any] | None = None
                   ) -> tuple[dict, str]:
  """The config for ``model``: family default, then the known-file entry, then flags."""
  model_mod, _ = family_modules(model)
  config = json.loads(json.dumps(model_mod.DEFAULT_CONFIGS[model]))
  known = identify(sha256) if sha256 else None
  if known is not None:
    known_model, known_cfg, desc = known
    if known_model != model:
      raise common.ConversionError(
          f"this file is the known checkpoint '{desc}' of model {known_model!r}, not {model!r}")
    config.update(known_cfg)
    origin = f"known checkpoint: {desc}"
  else:
    origin = "unknown checkpoint: family defaults" + (" + flags" if overrides else "")
  for k, v in (overrides or {}).items():
    if k not in config:
      raise common.ConversionError(f"unknown config key {k!r} for {model}; known: {sorted(config)}")
    config[k] = v
  return config, origin


def _state_dict_for(model: str, src: str | None) -> tuple[dict, str, str]:
  """Reads the source checkpoint(s): ``(state_dict, source description, sha256)``."""
  if model == "mtcnn":
    from weights_conversion import mtcnn as mtcnn_conv
    paths = mtcnn_conv.find_facenet_weights() if src is None else None
    sd = mtcnn_conv.load_mtcnn_state_dict(src)
    if paths is None:
      paths = {n: os.path.join(src, f"{n}.pt") for n in ("pnet", "rnet", "onet")}
    h = hashlib.sha256()
    for n in ("pnet", "rnet", "onet"):
      h.update(checkpoints.sha256_file(paths[n]).encode())
    return sd, os.path.dirname(paths["pnet"]), h.hexdigest()
  if src is None:
    raise common.ConversionError(f"--src is required for model {model!r} (or use --download)")
  if not os.path.isfile(src):
    raise common.ConversionError(f"checkpoint not found: {src}")
  return common.load_state_dict(src), src, checkpoints.sha256_file(src)


def convert(model: str, src: str | None = None, wdir: str | None = None,
            overrides: Mapping[str, Any] | None = None) -> tuple[str, dict]:
  """Converts an upstream checkpoint into ``<weights_dir>/<model>.msgpack``.

  Returns ``(path, meta)``. Raises ``ConversionError`` / ``WeightsError`` with one-line
  messages that name the offending file or key.
  """
  checkpoints.check_model_name(model)
  model_mod, conv_mod = family_modules(model)
  sd, source, sha = _state_dict_for(model, src)
  config, origin = resolve_config(model, sha, overrides)
  variables = conv_mod.convert(common.StateDict(sd, source=os.path.basename(source) or source),
                               model, config)
  expected = model_mod.expected_variables(model, config)
  checkpoints.check_tree(expected, variables, what=f"converted {model} weights")
  meta = {
      "model": model,
      "family": checkpoints.MODEL_FAMILIES[model],
      "config": config,
      "config_origin": origin,
      "source": os.path.abspath(source),
      "source_sha256": sha,
      "converter_version": checkpoints.CONVERTER_VERSION,
      "num_tensors": len(jax.tree_util.tree_leaves(variables)),
  }
  path = checkpoints.weights_path(model, wdir)
  checkpoints.save(path, variables, meta)
  logging.info("%s: converted %s (%s) -> %s", model, source, origin, path)
  return path, meta


def download(model: str, dest_dir: str, sha256: str | None = None, timeout: float = 60.0) -> str:
  """Downloads the upstream checkpoint of ``model`` and verifies its checksum.

  The file is written to ``dest_dir`` under a temporary name and renamed only after the
  sha256 check passes. Raises ``ConversionError`` (offline, HTTP error, checksum).
  """
  checkpoints.check_model_name(model)
  if model not in DOWNLOADS:
    raise common.ConversionError(
        f"{model!r} has no download: "
        + ("its weights ship with `pip install --no-deps facenet-pytorch==2.6.0`; run "
           "convert_weights.py --model mtcnn" if model == "mtcnn" else "no upstream URL known"))
  entry = DOWNLOADS[model]
  expected = sha256 or entry.get("sha256") or ""
  prefix = entry.get("sha256_prefix", "")
  if not expected and not prefix:
    raise common.ConversionError(
        f"no pinned sha256 for {model!r} ({entry['url']}); pass --sha256 with the checksum "
        "you trust, or download it yourself and use --src")
  os.makedirs(dest_dir, exist_ok=True)
  name = os.path.basename(entry["url"])
  final = os.path.join(dest_dir, name)
  tmp = final + ".part"
  h = hashlib.sha256()
  try:
    with urllib.request.urlopen(entry["url"], timeout=timeout) as r, open(tmp, "wb") as f:
      while True:
        b = r.read(1 << 20)
        if not b:
          break
        h.update(b)
        f.write(b)
  except OSError as e:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise common.ConversionError(
        f"download of {entry['url']} failed ({type(e).__name__}: {getattr(e, 'reason', e)}); "
        "without internet, fetch the file elsewhere and pass it with --src") from None
  digest = h.hexdigest()
  if (expected and digest != expected) or (prefix and not digest.startswith(prefix)):
    os.unlink(tmp)
    raise common.ConversionError(
        f"checksum mismatch for {entry['url']}: got {digest}, expected {expected or prefix + '...'}")
  os.replace(tmp, final)
  return final
