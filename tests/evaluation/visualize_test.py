"""Drawing predictions on real frames, from saved predictions and from models."""

import os
import subprocess
import sys

import numpy as np

from tests.support import REPO, read_frames, shared_file
from drsf_jax.evaluation import visualize
from drsf_jax.io import records
from drsf_jax.io import video


def test_draws_boxes_landmarks_pose_and_gaze_from_saved_predictions(real_weights, tmp_path):
  from drsf_jax.victims import inference
  src = shared_file("data", "talking_head_a.mp4")
  pred = inference.Predictor("retinaface", "none", "MPIIGaze", real_weights)
  doc = inference.run(src, pred, max_frames=4)
  p = str(tmp_path / "p.json")
  records.write(p, doc)
  out = str(tmp_path / "drawn.mkv")
  r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "visualize.py"), "-i", src, "-o", out,
                      "--predictions", p], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  drawn = np.stack(list(video.VideoReader(out)))
  orig = read_frames(src, len(drawn))
  assert len(drawn) == 211  # Every frame of the video; frames without predictions unchanged.
  face = doc["frames"][0]["faces"][0]
  x1, y1, x2, y2 = [int(round(v)) for v in face["box"]]
  assert (drawn[0, y1, x1 + 5:x2 - 5] == visualize.BOX).all(axis=-1).mean() > 0.8  # Top edge of the box.
  assert np.abs(drawn[0].astype(int) - orig[0]).sum(-1).astype(bool).mean() > 0.005
  np.testing.assert_array_equal(drawn[10], orig[10])  # No predictions for frame 10: untouched.
  gaze_px = (drawn[0] == visualize.GAZE).all(-1).sum()
  axes_px = sum((drawn[0] == c).all(-1).sum() for c in visualize.AXES)
  assert gaze_px > 10 and axes_px > 10


def test_image_mode_runs_the_models(real_weights, tmp_path):
  import cv2
  from tests.support import astronaut
  img_path = str(tmp_path / "astro.png")
  cv2.imwrite(img_path, cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
  out = str(tmp_path / "astro_drawn.png")
  r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "visualize.py"), "-i", img_path, "-o", out,
                      "-d", "mtcnn", "--weights_dir", real_weights], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert "1 face(s)" in r.stdout
  drawn = video.read_image(out)
  assert (drawn == visualize.BOX).all(-1).sum() > 100
  r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "visualize.py"), "-i", img_path, "-o", img_path,
                      "-d", "mtcnn", "--weights_dir", real_weights], capture_output=True, text=True, timeout=300)
  assert r.returncode == 1 and "overwrite the input" in r.stderr
