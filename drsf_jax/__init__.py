"""drsf-jax: adversarial de-identification of drivers in driver-facing video, in JAX.

The public API (see ``drsf_jax.api`` for units, shapes, dtypes and errors)::

  import drsf_jax
  report = drsf_jax.deidentify("in.mp4", "out.mkv", detector="retinaface", gaze="MPIIGaze")
  before = drsf_jax.infer("in.mp4", "retinaface", gaze="MPIIGaze")
  after = drsf_jax.infer("out.mkv", "retinaface", gaze="MPIIGaze")
  drsf_jax.evaluate(before, after)["summary"]          # IoU, landmark px, gaze degrees

``deidentify``, ``Deidentifier``, ``DeidConfig``, ``load_victim``, ``infer``,
``evaluate``, ``privacy_metrics``, ``read_video``, ``sample_video``,
``draw_predictions``, ``as_uint8_frames``, ``as_unit_frames``. Importing the package is light: JAX loads on first use.
"""

__version__ = "0.1.0"

_API = ("DeidConfig", "Deidentifier", "deidentify", "load_victim", "infer", "evaluate",
        "privacy_metrics", "read_video", "sample_video", "draw_predictions", "as_uint8_frames",
        "as_unit_frames")
__all__ = list(_API) + ["__version__"]


def __getattr__(name: str):
  if name in _API:
    from drsf_jax import api  # pylint: disable=import-outside-toplevel
    return getattr(api, name)
  raise AttributeError(f"module 'drsf_jax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_API))
