"""Shared plumbing for the absl-flag scripts: errors, logging, compilation cache."""

import os
import signal
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from drsf_jax.io import outputs

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "drsf_jax", "jax_cache")


class UserError(Exception):
  """An error caused by the user's input: reported as one line, exit status 1."""


def define_cache_flag():
  flags.DEFINE_string(
      "compilation_cache_dir", None,
      "Directory of JAX's persistent compilation cache (default $DRSF_JAX_CACHE or "
      f"{DEFAULT_CACHE_DIR}); 'none' disables it.")


def define_overwrite_flag():
  flags.DEFINE_bool("overwrite", False, "Replace existing output files (never a directory, never an "
                    "input). Without it an existing output is an error.")


def define_model_flags(detector: str = "retinaface", alignment: str = "none", gaze: str = "none",
                       what: str = "authorized"):
  """The model flags every script shares: --detector/-d, --alignment/-a, --gaze/-z, --weights_dir."""
  from drsf_jax.victims import detectors  # pylint: disable=import-outside-toplevel
  from drsf_jax.victims import registry as victims

  def text(s):
    s = f"{what} {s}" if what else s
    return s[0].upper() + s[1:]

  flags.DEFINE_enum("detector", detector, list(detectors.DETECTORS), text("face detector."),
                    short_name="d")
  flags.DEFINE_enum("alignment", alignment, list(victims.ALIGNMENTS), text("68-point landmark model."),
                    short_name="a")
  flags.DEFINE_enum("gaze", gaze, list(victims.GAZE_MODELS), text("gaze model."), short_name="z")
  flags.DEFINE_string("weights_dir", None, "Converted weights directory (default $DRSF_JAX_WEIGHTS "
                      "or ~/.cache/drsf_jax).")


def enable_compilation_cache(path: str | None = None):
  """Turns on JAX's persistent compilation cache so warm starts skip XLA compilation."""
  import jax
  path = path or os.environ.get("DRSF_JAX_CACHE") or DEFAULT_CACHE_DIR
  if path.lower() == "none":
    return None
  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def _user_error_types():
  from drsf_jax.io import checkpoints
  types = [UserError, checkpoints.WeightsError, FileNotFoundError, ValueError, ImportError]
  try:
    from weights_conversion import common
    types.append(common.ConversionError)
  except ImportError:
    pass
  return tuple(types)


def run(main: Callable[[list[str]], None]):
  """``app.run(main)``: rejects stray arguments, enables the compilation cache, and turns
  known errors into one line on stderr and exit code 1."""

  def on_sigint(signum, frame):
    del signum
    outputs.INTERRUPTED = True
    # Inside a garbage-collector callback (JAX registers one) an exception would only be
    # printed as "Exception ignored" and dropped: leave it to the flag, which the batch
    # loop and commit() raise at the next safe point.
    import gc  # pylint: disable=import-outside-toplevel
    if frame is not None and frame.f_code in {getattr(cb, "__code__", None) for cb in gc.callbacks}:
      return
    raise KeyboardInterrupt

  def wrapped(argv):
    signal.signal(signal.SIGINT, on_sigint)
    try:
      if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
      if "compilation_cache_dir" in flags.FLAGS:
        enable_compilation_cache(flags.FLAGS.compilation_cache_dir)
      main(argv)
    except KeyboardInterrupt:
      outputs.discard_pending()
      logging.flush()
      done = list(dict.fromkeys(outputs.COMMITTED))  # A summary rewritten per video: once.
      more = f" and {len(done) - 3} more" if len(done) > 3 else ""
      print("error: interrupted, nothing written" if not done else
            "error: interrupted; no partial file left; complete before the interrupt: "
            f"{', '.join(done[:3])}{more}", file=sys.stderr)
      # Exit without the interpreter's teardown: an interrupted run may leave FFmpeg
      # encoders, decoders and XLA computations in flight, whose finalisers crashed the
      # process at exit (SIGSEGV after the message) in tests/bad_input_test.py. Temporary
      # files are already removed.
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(130)  # pylint: disable=protected-access
    except _user_error_types() as e:
      outputs.discard_pending()
      logging.flush()
      msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      print(f"error: {msg}", file=sys.stderr)
      sys.exit(1)
    except OSError as e:  # Disk full, permission denied, ...: the system's one line.
      outputs.discard_pending()
      logging.flush()
      where = f": {e.filename}" if e.filename else ""
      print(f"error: {e.strerror or e}{where}", file=sys.stderr)
      sys.exit(1)
    except BaseException:
      outputs.discard_pending()
      raise

  # absl logs at INFO by default, which floods the console with JAX's backend probing;
  # WARNING keeps what a user needs. --verbosity=0 (or -v 0) restores INFO.
  flags.FLAGS.set_default("verbosity", -1)
  import logging as py_logging  # pylint: disable=import-outside-toplevel
  py_logging.getLogger("jax._src.xla_bridge").setLevel(py_logging.WARNING)
  app.run(wrapped)
