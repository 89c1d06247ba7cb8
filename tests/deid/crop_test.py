"""Crop-local attack: the victims' outputs for a face on the window equal the full frame's.

Real frames of both shared videos, placed in a larger frame (a 1024x768 "cabin": the
video's blurred, darkened frame as background, the face where a driver would be): the
window around the faces is what the attack's victims run on.
"""

import numpy as np
import pytest

from tests.support import read_frames, shared_file
from drsf_jax.deid import crop
from drsf_jax.deid import pipeline
from drsf_jax.geometry import bbox
from drsf_jax.geometry import cameras
from drsf_jax.geometry import gaze_vectors
from drsf_jax.io import video
from drsf_jax.victims import registry as victims

H, W, OY, OX = 768, 1024, 300, 500
# Measured at DEFAULT_MARGIN (96 px), 4 frames of each video: box <= 0.21 px, landmarks
# <= 0.04 px, score <= 1e-5 (margin 0: 0.24 px / 0.06 px / 1.2e-5).
BOX_TOL, LM_TOL, SCORE_TOL, GAZE_TOL_DEG = 0.5, 0.25, 1e-3, 0.05


def cabin(frames):
  from drsf_jax.io import samples
  return samples.cabin_frames(frames, W, H, OX, OY)


@pytest.fixture(scope="module")
def det(real_weights):
  return victims.load_victim("retinaface", real_weights)


@pytest.mark.parametrize("clip", ["talking_head_a.mp4", "talking_head_b.mp4"])
def test_detector_on_the_window_equals_the_full_frame(det, clip):
  x = cabin(read_frames(shared_file("data", clip), 4)).astype(np.float32) / 255.0
  full = det.predict(det.params, x)
  assert all(len(f["boxes"]) >= 1 for f in full)
  regions = [bbox.face_regions(f["boxes"][:1], x.shape[1:3]) for f in full]
  win = crop.window(regions, [f["boxes"][:1] for f in full], x.shape[1:3])
  assert win is not None and win.w * win.h < 0.3 * W * H, win  # It saves most of the frame.
  assert win.x0 % crop.ALIGN == 0 and win.y0 % crop.ALIGN == 0
  part = crop.shift_predictions(det.predict(det.params, win.crop(x)), win)
  for a, b in zip(full, part):
    i, j = int(np.argmax(a["scores"])), int(np.argmax(b["scores"]))
    assert np.abs(a["boxes"][i] - b["boxes"][j]).max() <= BOX_TOL
    assert np.abs(a["landmarks"][i] - b["landmarks"][j]).max() <= LM_TOL
    assert abs(a["scores"][i] - b["scores"][j]) <= SCORE_TOL
  # Off the anchor grid the same check fails: the alignment is what makes it exact.
  off = crop.Window(win.y0 + 8, win.x0 + 8, win.h - 8, win.w - 8)
  shifted = crop.shift_predictions(det.predict(det.params, off.crop(x)), off)
  errs = [np.abs(a["boxes"][0] - b["boxes"][0]).max() for a, b in zip(full, shifted) if len(b["boxes"])]
  assert max(errs) > BOX_TOL, errs


def test_gaze_on_the_window_with_the_shifted_camera_equals_the_full_frame(det, real_weights):
  gaze = victims.load_victim("MPIIGaze", real_weights)
  x = cabin(read_frames(shared_file("data", "talking_head_a.mp4"), 4)).astype(np.float32) / 255.0
  full_dets = det.predict(det.params, x)
  ctx = victims.context_from_detections(full_dets, 1)
  ctx.camera = cameras.Camera.dummy(W, H)
  regions = [bbox.face_regions(f["boxes"][:1], x.shape[1:3]) for f in full_dets]
  win = crop.window(regions, [f["boxes"][:1] for f in full_dets], x.shape[1:3])
  a = gaze.predict(gaze.params, x, ctx)
  b = gaze.predict(gaze.params, win.crop(x), crop.shift_context(ctx, win))
  for fa, fb in zip(a, b):
    va, vb = np.asarray(fa[0]["vector"]), np.asarray(fb[0]["vector"])
    assert gaze_vectors.angle_between_deg(va, vb) <= GAZE_TOL_DEG
    np.testing.assert_allclose(fa[0]["head_pose"]["rotation_vector"], fb[0]["head_pose"]["rotation_vector"],
                               atol=1e-4)
  # Without moving the camera the geometry is another one: the check can fail.
  wrong = crop.shift_context(ctx, win)
  wrong.camera = cameras.Camera.dummy(win.w, win.h)
  c = gaze.predict(gaze.params, win.crop(x), wrong)
  assert max(gaze_vectors.angle_between_deg(np.asarray(fa[0]["vector"]), np.asarray(fc[0]["vector"]))
             for fa, fc in zip(a, c)) > 1.0


@pytest.mark.slow
def test_crop_local_deid_touches_only_the_window_and_keeps_the_face(tmp_path, real_weights):
  """deid on the cabin clip with the crop-local attack: pixels outside the obfuscated
  squares are the input's exactly; the authorized models still find the face."""
  frames = cabin(read_frames(shared_file("data", "talking_head_a.mp4"), 8))
  src = str(tmp_path / "cabin.mkv")
  with video.VideoWriter(src, 30, (W, H)) as w:
    for f in frames:
      w.write(f)
  cfg = pipeline.DeidConfig(detector="retinaface", gaze="MPIIGaze", max_iter=40, audio=False)
  rep = pipeline.deidentify(src, str(tmp_path / "o.mkv"), cfg, real_weights, progress=False)
  assert all(b["window"] is not None for b in rep["batches"])
  x0, y0, ww, hh = rep["batches"][0]["window"]
  assert ww * hh < 0.3 * W * H
  out = np.stack(list(video.VideoReader(str(tmp_path / "o.mkv"))))
  changed = np.any(out != frames, axis=-1)
  _, ys, xs = np.nonzero(changed)
  assert x0 <= xs.min() and xs.max() < x0 + ww and y0 <= ys.min() and ys.max() < y0 + hh
  v = rep["verification"]
  assert v["frames_face_lost"] == [] and v["summary"]["iou_mean"] > 0.9, v["summary"]
