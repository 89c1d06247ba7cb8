"""The stop in user units (``--stop metrics``), on real frames with real weights.

What the check vouches for must be what a user measures: every frame the attack reports
as within the stop tolerances reads within them when the written file is decoded and run
through the authorized models as ``inference.py`` runs them, compared as ``evaluate.py``
compares (``metrics.compare``). A check that scored another image than the one written
(the window not pasted back, the mask or the 8-bit rounding forgotten, the original's
reading taken on other frames) fails this test.
"""

import dataclasses

import pytest

import drsf_jax
from tests.support import shared_file
from drsf_jax.deid import pipeline
from drsf_jax.evaluation import metrics

N, B = 8, 4


@pytest.fixture(scope="module")
def run(real_weights, tmp_path_factory):
  tmp = tmp_path_factory.mktemp("stop")
  src = shared_file("data", "talking_head_a.mp4")
  cfg = pipeline.DeidConfig(detector="retinaface", gaze="MPIIGaze", batch_size=B, max_frames=N,
                            max_iter=40, check_every=4, verify=False)
  d = pipeline.Deidentifier(cfg, real_weights)
  out = str(tmp / "m.mkv")
  report = pipeline.deidentify(src, out, cfg, real_weights, progress=False, deidentifier=d)
  ref = drsf_jax.infer(src, detector="retinaface", gaze="MPIIGaze", weights_dir=real_weights, max_frames=N)
  got = drsf_jax.infer(out, detector="retinaface", gaze="MPIIGaze", weights_dir=real_weights)
  return cfg, d, report, metrics.compare(ref, got)["per_frame"]


def test_frames_reported_within_the_stop_read_within_it_from_the_file(run):
  cfg, d, report, per_frame = run
  met = [m for b in report["batches"] for m in b["met_stop"]]
  iters = [i for b in report["batches"] for i in b["iterations"]]
  stage = [s for b in report["batches"] for s in b["stage"]]
  revisited = [r for b in report["batches"] for r in b.get("revisited", [False] * b["frames"])]
  assert report["settings"]["stop_applied"] == cfg.stop == "either"  # The default.
  assert len(met) == N and sum(met) >= 1, (met, iters)  # Measured: 4 of 8 (and 2 by the losses).
  for row, m, it, st, rv in zip(per_frame, met, iters, stage, revisited):
    score = d.stop_score(row)
    if m:
      assert score <= 1.0, (row, it)
      assert row["iou"] >= cfg.stop_iou and row["landmark_px"] <= cfg.stop_landmarks_px
      assert row["head_pose_deg"] <= cfg.stop_head_pose_deg and row["gaze_angle_deg"] <= cfg.stop_gaze_deg
      assert it % cfg.check_every == 0  # Frames stop at a check (a revisit's too).
    else:  # Only the losses (every victim under its threshold) or the budget end it; a
      # frame revisited (cfg.revisit, the first batch) spent one budget and part of another.
      assert st == 2 or it == cfg.max_iter or (rv and it > cfg.max_iter), (row, it, st)
  assert report["summary"]["frames_met_stop"] == sum(met)
  assert report["summary"]["frames_within_stop"] == sum(m or st == 2 for m, st in zip(met, stage))


def test_the_stop_score_is_the_worst_error_over_its_tolerance(run):
  cfg, d, _, _ = run
  row = {"iou": 0.975, "landmark_px": 0.75, "head_pose_deg": 1.0, "gaze_angle_deg": 3.0,
         "missing_in_prediction": False}
  assert d.stop_score(row) == pytest.approx(3.0 / cfg.stop_gaze_deg)
  assert d.stop_score(dict(row, gaze_angle_deg=0.5)) == pytest.approx(0.5)  # IoU, landmarks, pose: half.
  assert d.stop_score(dict(row, missing_in_prediction=True)) == float("inf")
  assert d.stop_score(dict(row, gaze_angle_deg=None)) == float("inf")  # The gaze was lost.
  assert d.stop_score(None) == 0.0  # No face on the original: nothing to keep.
  # Without a gaze model (or FAN) head pose and gaze are not what the detector promises.
  det_only = pipeline.Deidentifier.__new__(pipeline.Deidentifier)
  det_only.cfg = dataclasses.replace(cfg, gaze="none")
  assert det_only.stop_score(row) == pytest.approx(0.5)


def test_the_while_loop_form_stops_in_user_units_too(real_weights):
  """Off the CPU the attack is a ``lax.while_loop`` program: with the stop in user units it
  runs ``check_every`` steps per call and checks between calls (tests/deid/attacks_test.py
  compares the two forms on one loss; between two XLA programs a frame at its tolerance
  may flip, so here the while form is held to what the stop promises)."""
  import numpy as np
  from drsf_jax.deid import temporal
  from tests.support import read_frames
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), B)
  cfg = pipeline.DeidConfig(detector="retinaface", gaze="MPIIGaze", batch_size=B, max_iter=20,
                            check_every=5, stop="metrics", stop_iou=0.9, stop_landmarks_px=3.0,
                            stop_head_pose_deg=4.0, stop_gaze_deg=4.0)  # Loose: frames stop in 20 steps.
  d = pipeline.Deidentifier(cfg, real_weights, loop="while")
  dets = temporal.fill(d.detector.predict(d.detector.params, frames.astype(np.float32) / 255)).detections
  out, stats = d.attack_batch(frames, dets)
  ref, got = d.predictor.predict(frames), d.predictor.predict(out)
  assert any(stats["met_stop"]), stats  # Measured: 2 of 4 at 10 steps, 1 at 15.
  revisited = stats.get("revisited", [False] * B)  # The first batch: cfg.revisit 'first'.
  for r, g, m, it, rv in zip(ref, got, stats["met_stop"], stats["iterations"], revisited):
    score = d.stop_score(metrics.frame_metrics(r["faces"], g["faces"]))
    if m:
      assert score <= 1.0 and it % cfg.check_every == 0, (score, it)
    else:
      assert it == cfg.max_iter * (2 if rv else 1), (score, it)


@pytest.mark.parametrize("field,value", [("stop", "never"), ("stop_iou", 1.5), ("stop_landmarks_px", -1.0),
                                         ("stop_gaze_deg", float("nan")), ("check_every", 0)])
def test_bad_stop_settings(field, value):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(pipeline.DeidConfig(), **{field: value}).validate()
