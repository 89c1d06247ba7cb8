"""PyTorch eager baselines for ``scripts/benchmark.py`` (test/benchmark code; never imported by the library).

* :mod:`benchmarks.torch_common`: the upstream PyTorch victim classes loaded from the same
  source files the JAX weights are converted from (:func:`prepare_weights`), and torch
  versions of the project's sampling conventions (bilinear warps, MPIIGaze eye patches).
* :mod:`benchmarks.torch_baselines`: baseline A, :class:`TorchVictimSet`: the same
  per-frame losses as the JAX victims, on the targets (fixed geometry) the JAX victims
  produced, plus one Adam attack step and inference.
* :mod:`benchmarks.original_like`: baseline B, :func:`run_original_like`: an end-to-end eager
  de-identification that recomputes the geometry on every attack iteration, as the
  HCMUS original did.
* :func:`jax_loss_options`: the JAX victims' options under which they compute what the
  baselines compute (no torch needed).
"""


def jax_loss_options(names) -> dict:
  """``load_victim`` options per victim name: the JAX losses that compute what the PyTorch
  baselines compute.

  deid's defaults ask more of some victims per step than the baselines do: MTCNN's ONet on
  8 crops drawn around the original's (and the frame rounded to 8 bits), the gaze models
  2 jittered landmark geometries drawn from 8. The baselines compute MTCNN on the
  original's crops only and the gaze models on every geometry; so do the JAX losses under
  these options (``scripts/benchmark.py``'s step rows, ``tests/benchmarks_test.py``).
  """
  from drsf_jax.victims import gaze as gaze_victims  # pylint: disable=import-outside-toplevel
  from drsf_jax.victims import registry  # pylint: disable=import-outside-toplevel
  out = {}
  for n in names:
    if n == "mtcnn":
      out[n] = dict(registry.MTCNN_NOMINAL_ONLY)
    elif n in registry.GAZE_MODELS[:-1]:
      out[n] = {"geometry_draws": gaze_victims.GEOMETRY_SAMPLES}
  return out
