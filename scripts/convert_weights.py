"""Converts an upstream PyTorch checkpoint into drsf-jax's weights directory.

Examples:
  python scripts/convert_weights.py --model retinaface --src ../shared/weights/retinaface_mobilenet0.25.pth
  python scripts/convert_weights.py --model mtcnn          # facenet-pytorch's bundled files
  python scripts/convert_weights.py --model MPIIGaze --download
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging

from drsf_jax import cli
from drsf_jax.io import checkpoints

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", None, sorted(checkpoints.MODEL_FAMILIES), "Model to convert.")
flags.DEFINE_string("src", None,
                    "Upstream checkpoint (.pth/.pt/.zip/TorchScript). For mtcnn: a directory with "
                    "pnet.pt, rnet.pt, onet.pt (default: the installed facenet-pytorch package).")
flags.DEFINE_string("weights_dir", None,
                    f"Output directory (default ${checkpoints.ENV_WEIGHTS_DIR} or "
                    f"{checkpoints.DEFAULT_WEIGHTS_DIR}).")
flags.DEFINE_bool("download", False,
                  "Download the upstream checkpoint (checksum-verified) into the weights "
                  "directory's downloads/ folder, then convert it. Needs internet.")
flags.DEFINE_string("sha256", None, "Expected sha256 of a downloaded file without a pinned checksum.")
flags.DEFINE_string("min_sizes", None,
                    "RetinaFace anchor sizes as JSON, e.g. '[[16,32],[64,128],[256,512]]'; only "
                    "for checkpoints not in the known-checkpoint table.")
flags.DEFINE_string("config", None, "Further config overrides as a JSON object (unknown files only).")
flags.DEFINE_bool("overwrite", False, "Replace an existing file at the output path that is not a "
                  "drsf-jax weights file (converted weights are replaced without it).")
flags.mark_flag_as_required("model")


def _is_weights_file(path: str) -> bool:
  """A file this tool wrote: a drsf-jax weights file (any format version)."""
  try:
    with open(path, "rb") as f:
      return b"drsf-jax/weights/" in f.read(256)
  except OSError:
    return False


def _check_outputs(model: str) -> str:
  """The converted file's path, checked before torch is imported or anything is read."""
  from drsf_jax.io import outputs
  wdir = checkpoints.weights_dir(FLAGS.weights_dir)
  if os.path.lexists(wdir) and not os.path.isdir(wdir):
    raise cli.UserError(f"--weights_dir {wdir} is a file, not a directory")
  path = checkpoints.weights_path(model, FLAGS.weights_dir)
  inputs = [FLAGS.src] if FLAGS.src else []
  if FLAGS.src and os.path.isfile(FLAGS.src):
    outputs.check_input(FLAGS.src, "--src")
  outputs.check([("weights file", path)], inputs, FLAGS.overwrite,
                replaceable=[path] if _is_weights_file(path) else ())
  return path


def main(argv):
  _check_outputs(FLAGS.model)
  from weights_conversion import registry  # Imports torch: conversion-time only.
  overrides = {}
  try:
    if FLAGS.config:
      overrides.update(json.loads(FLAGS.config))
    if FLAGS.min_sizes:
      overrides["min_sizes"] = json.loads(FLAGS.min_sizes)
  except json.JSONDecodeError as e:
    raise cli.UserError(f"--config/--min_sizes is not valid JSON: {e}") from None
  src = FLAGS.src
  if FLAGS.download:
    if src:
      raise cli.UserError("--download and --src are exclusive")
    src = registry.download(FLAGS.model, os.path.join(checkpoints.weights_dir(FLAGS.weights_dir),
                                                      "downloads"), sha256=FLAGS.sha256)
  path, meta = registry.convert(FLAGS.model, src, FLAGS.weights_dir, overrides)
  print(f"{FLAGS.model}: wrote {path}")
  print(f"  source {meta['source']} (sha256 {meta['source_sha256'][:16]}...)")
  print(f"  {meta['config_origin']}; {meta['num_tensors']} tensors")
  print(f"  config {json.dumps(meta['config'], sort_keys=True)}")
  if meta["config_origin"].startswith("unknown") and FLAGS.model.startswith("retinaface") and not overrides:
    logging.warning("unknown RetinaFace checkpoint: using the upstream anchors %s; pass --min_sizes if "
                    "it was trained with others", meta["config"].get("min_sizes"))


if __name__ == "__main__":
  cli.run(main)
