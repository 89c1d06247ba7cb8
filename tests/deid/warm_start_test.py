"""Warm start: each batch's attack begins from the previous batch's perturbation, carried in
face-aligned coordinates. Real weights (RetinaFace + MPIIGaze), real talking_head_a frames:
later batches take fewer steps than from scratch, the output stays in the ε-ball of its
own obfuscated frames, and ``reset`` forgets what was carried."""

import dataclasses

import numpy as np
import pytest

from tests.support import read_frames, shared_file
from drsf_jax.deid import obfuscation
from drsf_jax.deid import pipeline
from drsf_jax.deid import temporal
from drsf_jax.geometry import bbox

N, B = 12, 4


@pytest.fixture(scope="module")
def runs(real_weights):
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), N)
  # No revisit (tests/deid/revisit_test.py): the first batches of both runs must be alike.
  cfg = pipeline.DeidConfig(detector="retinaface", gaze="MPIIGaze", max_iter=80, batch_size=B,
                            revisit="none")
  d = pipeline.Deidentifier(cfg, real_weights)
  dets = temporal.fill(d.detector.predict(d.detector.params, frames.astype(np.float32) / 255)).detections
  out = {}
  for warm in (True, False):
    d.cfg = dataclasses.replace(cfg, warm_start=warm)
    d.reset()
    res = [d.attack_batch(frames[i:i + B], dets[i:i + B]) for i in range(0, N, B)]
    out[warm] = (np.concatenate([r[0] for r in res]), [r[1]["iterations"] for r in res])
  d.cfg = dataclasses.replace(cfg, warm_start=True)
  d.reset()
  again = d.attack_batch(frames[:B], dets[:B])[0]
  return frames, dets, cfg, out, again


def test_warm_start_on_real_frames(runs):
  """One test (the runs are shared: under pytest-xdist a module fixture runs once per
  worker that draws one of its tests)."""
  frames, dets, cfg, out, again = runs
  (warm_out, warm_it), (cold_out, cold_it) = out[True], out[False]
  # Fewer steps on later batches. The first batch has nothing to carry: the same steps.
  assert warm_it[0] == cold_it[0]
  later_warm = np.mean(warm_it[1:])
  later_cold = np.mean(cold_it[1:])
  # Measured: 32.0 vs 65.3 mean steps per frame on batches 2-3 (the first: 59.3 both).
  assert later_warm < 0.85 * later_cold, (warm_it, cold_it)

  # The output stays in the ε-ball of its own obfuscated frames (not of the start).
  x = frames.astype(np.float32) / 255
  regions = [bbox.face_regions(d["boxes"], x.shape[1:3], cfg.mask_scale) for d in dets]
  x_obf = obfuscation.obfuscate(x, regions, cfg.deid)
  warm = warm_out.astype(np.float32) / 255
  # The attack's bound plus half a grey level of the final rounding.
  assert float(np.abs(warm - x_obf).max()) <= cfg.eps + 0.5 / 255 + 1e-6
  assert float(np.abs(warm - x_obf).max()) > 1 / 255  # It did perturb.

  # reset() forgets the carried perturbation: the cold first batch again, bit for bit.
  np.testing.assert_array_equal(again, cold_out[:B])
  np.testing.assert_array_equal(again, warm_out[:B])
