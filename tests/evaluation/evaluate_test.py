"""Evaluation on real video: self-comparison is exact, a 2-pixel shift moves the metrics as expected."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from tests.support import REPO, read_frames, shared_file
from drsf_jax.evaluation import metrics
from drsf_jax.geometry import bbox
from drsf_jax.io import records
from drsf_jax.io import video

N = 64
SHIFT = 2


@pytest.fixture(scope="module")
def docs(real_weights, tmp_path_factory):
  from drsf_jax.victims import inference
  d = tmp_path_factory.mktemp("eval")
  src = shared_file("data", "talking_head_a.mp4")
  shifted = str(d / "shifted.mkv")
  frames = read_frames(src, N)
  with video.VideoWriter(shifted, 30, (256, 256)) as w:
    for f in frames:  # Content moves SHIFT px right; the left edge repeats.
      w.write(np.concatenate([np.repeat(f[:, :1], SHIFT, axis=1), f[:, :-SHIFT]], axis=1))
  pred = inference.Predictor("retinaface", "none", "MPIIGaze", real_weights)
  a = inference.run(src, pred, max_frames=N, batch_size=16)
  b = inference.run(shifted, pred, batch_size=16)
  pa, pb = str(d / "a.json"), str(d / "b.json")
  records.write(pa, a)
  records.write(pb, b)
  mt = inference.Predictor("mtcnn", "none", "none", real_weights)
  mtcnn = (inference.run(src, mt, max_frames=N, batch_size=16), inference.run(shifted, mt, batch_size=16))
  return types.SimpleNamespace(a=a, b=b, pa=pa, pb=pb, dir=str(d), mtcnn=mtcnn)


def test_self_comparison_is_exact(docs):
  a = docs.a
  s = metrics.compare(a, a)["summary"]
  assert s["frames"] == N and s["iou_mean"] == 1.0 and s["landmark_px_mean"] == 0.0
  assert s["gaze_angle_deg_mean"] == 0.0 and s["diffscore"] == 0.0
  assert s["missing_faces"] == {"in_prediction": 0, "in_reference": 0}


def _shift_predictions(doc, dx):
  out = json.loads(json.dumps(doc))
  for f in out["frames"]:
    for face in f["faces"]:
      face["box"] = [face["box"][0] + dx, face["box"][1], face["box"][2] + dx, face["box"][3]]
      face["landmarks5"] = [[x + dx, y] for x, y in face["landmarks5"]]
  return out


def test_shifted_predictions_move_metrics_exactly(docs):
  a = docs.a
  s = metrics.compare(a, _shift_predictions(a, SHIFT))["summary"]
  boxes = np.asarray([f["faces"][0]["box"] for f in a["frames"]])
  expected_iou = np.mean([bbox.box_iou(x[None], (x + [SHIFT, 0, SHIFT, 0])[None])[0, 0] for x in boxes])
  lm = [np.asarray(f["faces"][0]["landmarks5"]) for f in a["frames"]]
  expected_nme = np.mean([SHIFT / np.linalg.norm(l[0] - l[1]) for l in lm])
  assert abs(s["iou_mean"] - expected_iou) < 1e-9
  assert abs(s["landmark_px_mean"] - SHIFT) < 1e-9
  assert abs(s["nme_mean"] - expected_nme) < 1e-9
  assert s["gaze_angle_deg_mean"] == 0.0
  assert abs(s["diffscore"] - ((1 - expected_iou) + expected_nme)) < 1e-9


def test_shifted_video_moves_predictions_by_the_shift(docs):
  """Detectors are not shift-equivariant to the pixel, so on the real shifted video the
  test checks the median displacement of MTCNN's landmarks over 64 frames, and that the
  metrics register it. (RetinaFace-mnet's shift test, with the network its weights were
  trained as, is in retinaface_test.py.)"""
  a, b = docs.mtcnn
  dx = [np.mean(np.asarray(fb["faces"][0]["landmarks5"])[:, 0] - np.asarray(fa["faces"][0]["landmarks5"])[:, 0])
        for fa, fb in zip(a["frames"], b["frames"]) if fa["faces"] and fb["faces"]]
  s = metrics.compare(a, b)["summary"]
  print("mean landmark x-displacement", np.mean(dx), "summary", s["iou_mean"], s["landmark_px_mean"])
  assert abs(np.median(dx) - SHIFT) < 0.75
  assert s["iou_mean"] < 1.0 and s["landmark_px_mean"] > 0.5


def test_mismatched_ids_are_reported_not_skipped(docs):
  a, b = docs.a, docs.b
  b2 = json.loads(json.dumps(b))
  b2["frames"] = b2["frames"][5:]
  s = metrics.compare(a, b2)["summary"]
  assert s["frames"] == N - 5 and s["frame_ids_only_in_reference"] == [0, 1, 2, 3, 4]
  b2["frames"][0]["faces"] = []
  assert metrics.compare(a, b2)["summary"]["missing_faces"]["in_prediction"] == 1


def test_evaluate_script_writes_json_csv_png(docs):
  pa, pb, d = docs.pa, docs.pb, docs.dir
  out = os.path.join(d, "R.json")
  p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), "--reference", pa,
                      "--prediction", pb, "--output", out], capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr
  rep = json.load(open(out))
  for k in ("iou_mean", "landmark_px_mean", "nme_mean", "gaze_angle_deg_mean", "diffscore", "frames",
            "missing_faces"):
    assert k in rep["summary"]
  assert open(os.path.join(d, "R.csv")).read().count("\n") == N + 1
  assert open(os.path.join(d, "R.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  bad = os.path.join(d, "bad.json")
  open(bad, "w").write('{"schema": "drsf-jax/predictions/9"}')
  out2 = os.path.join(d, "R2.json")  # R.json exists: it would need --overwrite.
  p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), "--reference", bad,
                      "--prediction", pb, "--output", out2], capture_output=True, text=True, timeout=300)
  assert p.returncode == 1 and "error:" in p.stderr and "predictions/9" in p.stderr
  assert not os.path.exists(out2)


def test_evaluate_privacy_on_two_videos(real_weights, tmp_path):
  """Original vs a pixelate_10 copy: utility collapses and identity does not leak."""
  pytest.importorskip("dlib")
  from drsf_jax.deid import obfuscation
  from drsf_jax.geometry import bbox
  src = shared_file("data", "talking_head_a.mp4")
  frames = read_frames(src, 6)
  from drsf_jax.evaluation import privacy
  regions = [bbox.face_regions(privacy.detect_dlib(f), f.shape[:2]) for f in frames]
  pix = video.to_uint8(obfuscation.obfuscate(frames.astype(np.float32) / 255, regions, "pixelate_10"))
  deid = str(tmp_path / "pix.mkv")
  with video.VideoWriter(deid, 30, (256, 256)) as w:
    for f in pix:
      w.write(f)
  out = str(tmp_path / "R.json")
  p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), "--reference", src,
                      "--prediction", deid, "--output", out, "--max_frames", "6", "-d", "mtcnn",
                      "--weights_dir", real_weights, "--privacy", "--noplot"],
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr
  rep = json.load(open(out))
  assert rep["privacy"]["lower_is_better"] and rep["privacy"]["frames"] == 6
  assert rep["privacy"]["reid_rate_same_frame"] <= 0.2
  assert rep["privacy"]["detection_rate"]["dlib_hog"]["original"] >= 0.9


def _small_doc(width, height, vector=(0.0, 0.0, -1.0), box=(1.0, 2.0, 30.0, 40.0)):
  face = {"box": list(box), "score": 0.9, "landmarks5": [[5.0, 6.0], [20.0, 6.0], [12.0, 15.0], [6.0, 25.0],
                                                        [19.0, 25.0]],
          "landmarks68": None, "landmarks_source": "5", "head_pose": None,
          "gaze": {"pitch_yaw": [0.0, 0.0], "vector": list(vector)}}
  return {"schema": records.SCHEMA,
          "video": {"path": "v.mp4", "width": width, "height": height, "fps": 30.0, "num_frames": 1},
          "models": {"retinaface": {"weights_sha256": None}}, "frames": [{"frame_id": 0, "faces": [face]}]}


@pytest.mark.parametrize("ref,pred,match", [
    (_small_doc(64, 48), _small_doc(128, 96), "differ in size: reference 64x48, prediction 128x96"),
    (_small_doc(64, 48), _small_doc(64, 48, vector=(0, 0, 0)), "zero gaze vector"),
    (_small_doc(64, 48), _small_doc(64, 48, box=(30.0, 2.0, 1.0, 40.0)), "inverted box"),
])
def test_evaluate_script_refuses_what_it_cannot_score(tmp_path, ref, pred, match):
  """Different frame sizes, a direction-less gaze vector, an inverted box: a one-line
  error, exit 1, and no report (a [0, 0, 0] gaze used to score a perfect 0 degrees)."""
  pa, pb = str(tmp_path / "a.json"), str(tmp_path / "b.json")
  with open(pa, "w") as f:
    json.dump(ref, f)
  with open(pb, "w") as f:
    json.dump(pred, f)
  out = str(tmp_path / "R.json")
  p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), "--reference", pa,
                      "--prediction", pb, "--output", out], capture_output=True, text=True, timeout=300)
  assert p.returncode == 1, p.stderr
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], p.stderr
  assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json"]
