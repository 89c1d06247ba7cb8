"""deid verifies what it wrote: the authorized models on the decoded output vs the original,
as inference.py + evaluate.py measure it; head-pose error on known rotations."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support import REPO, shared_file
from drsf_jax.evaluation import metrics


@pytest.mark.parametrize("axis,deg", [((1, 0, 0), 90.0), ((0, 1, 0), 45.0), ((0, 0, 1), 180.0),
                                      ((1, 1, 0), 2.5), ((0.3, -0.2, 0.9), 0.1)])
def test_head_pose_angle_of_known_rotations(axis, deg):
  base = np.array([0.2, -0.4, 0.1])  # Any pose: the relative rotation is what counts.
  rng = np.random.default_rng(0)
  del rng
  a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  r_base = metrics._rotation_matrix(base)  # pylint: disable=protected-access
  r_rel = metrics._rotation_matrix(a * math.radians(deg))  # pylint: disable=protected-access
  import cv2
  rvec_b, _ = cv2.Rodrigues(r_base @ r_rel)
  got = metrics.head_pose_angle_deg(base, rvec_b.ravel())
  assert abs(got - deg) < 1e-6 * max(1.0, deg) + 1e-7, (got, deg)


def test_deid_reports_and_prints_the_verified_utility(real_weights, tmp_path):
  """The report's verification equals evaluate.py run by hand on the same two files."""
  src = shared_file("data", "talking_head_a.mp4")
  out = str(tmp_path / "v.mkv")
  cmd = [sys.executable, os.path.join(REPO, "scripts", "deid.py"), "-i", src, "-o", out, "-d", "retinaface",
         "-z", "MPIIGaze", "--max_frames", "4", "--max_iter", "3", "-bs", "4", "--weights_dir", real_weights,
         "--noprogress"]
  p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "verified on the written file" in p.stdout and "gaze" in p.stdout, p.stdout
  v = json.load(open(str(tmp_path / "v.json")))["verification"]
  s = v["summary"]
  assert s["frames_scored"] == 4 and v["models"] == ["retinaface", "MPIIGaze"]
  for k in ("iou_mean", "landmark_px_mean", "head_pose_deg_mean", "gaze_angle_deg_mean", "gaze_angle_deg_p95"):
    assert s[k] is not None and math.isfinite(s[k]), k
  ev = str(tmp_path / "R.json")
  p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), "--reference", src,
                      "--prediction", out, "--output", ev, "--max_frames", "4", "-d", "retinaface",
                      "-z", "MPIIGaze", "--weights_dir", real_weights, "--noplot"],
                     capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-2000:]
  e = json.load(open(ev))["summary"]
  for k in ("iou_mean", "landmark_px_mean", "head_pose_deg_mean", "gaze_angle_deg_mean"):
    assert abs(e[k] - s[k]) <= 1e-6 * max(1.0, abs(e[k])), (k, e[k], s[k])
  p = subprocess.run(cmd[:-1] + ["--noverify", "--overwrite", "--noprogress"], capture_output=True, text=True,
                     timeout=900)
  assert p.returncode == 0, p.stderr[-2000:]
  assert json.load(open(str(tmp_path / "v.json")))["verification"] is None
  assert "verification: skipped" in p.stdout
