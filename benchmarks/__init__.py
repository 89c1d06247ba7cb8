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
"""
