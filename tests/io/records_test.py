"""Prediction records (schema, validation, legacy import) and inference on real video."""

import json

import numpy as np
import pytest

from tests.support import shared_file
from drsf_jax.io import records


def _doc(frames=None):
  face = {"box": [1.0, 2.0, 30.0, 40.0], "score": 0.9, "landmarks5": [[5.0, 6.0]] * 5,
          "landmarks68": None, "landmarks_source": "5", "head_pose": None,
          "gaze": {"pitch_yaw": [0.1, -0.2], "vector": [0.1, 0.2, -0.97]}}
  return {"schema": records.SCHEMA,
          "video": {"path": "v.mp4", "width": 64, "height": 48, "fps": 30.0, "num_frames": 2},
          "models": {"retinaface": {"weights_sha256": "ab"}},
          "frames": frames if frames is not None else [{"frame_id": 0, "faces": [face]},
                                                       {"frame_id": 1, "faces": []}]}


def test_round_trip_and_schema_file(tmp_path):
  p = str(tmp_path / "p.json")
  records.write(p, _doc())
  assert records.read(p) == _doc()
  assert records.load_schema()["$id"] == records.SCHEMA


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(schema="drsf-jax/predictions/0"), "schema 'drsf-jax/predictions/0'"),
    (lambda d: d["frames"].reverse(), "not strictly increasing"),
    (lambda d: d["frames"][1].update(frame_id=0), "not strictly increasing"),
    (lambda d: d["frames"][0]["faces"][0].update(box=[1, 2, 3]), "invalid at frames/0/faces/0/box"),
    (lambda d: d["frames"][0]["faces"][0].pop("score"), "'score' is a required property"),
    (lambda d: d["video"].update(width=0), "invalid at video/width"),
    (lambda d: d["frames"][0]["faces"][0].update(box=[30.0, 2.0, 1.0, 40.0]), "inverted box at frames/0/faces/0"),
    (lambda d: d["frames"][0]["faces"][0].update(box=[1.0, 40.0, 30.0, 2.0]), "inverted box at frames/0/faces/0"),
    (lambda d: d["frames"][0]["faces"][0]["gaze"].update(vector=[0, 0.0, -0.0]),
     "zero gaze vector at frames/0/faces/0/gaze/vector"),
])
def test_invalid_documents_name_the_problem(tmp_path, mutate, match):
  d = _doc()
  mutate(d)
  p = tmp_path / "bad.json"
  p.write_text(json.dumps(d))
  with pytest.raises(records.RecordError, match=match):
    records.read(str(p))


def test_nan_malformed_and_missing(tmp_path):
  d = _doc()
  d["frames"][0]["faces"][0]["score"] = float("nan")
  p = tmp_path / "nan.json"
  p.write_text(json.dumps(d))  # Python writes the NaN token.
  with pytest.raises(records.RecordError, match="non-finite"):
    records.read(str(p))
  bad = tmp_path / "trunc.json"
  bad.write_text(json.dumps(_doc())[:50])
  with pytest.raises(records.RecordError, match="not valid JSON"):
    records.read(str(bad))
  with pytest.raises(FileNotFoundError):
    records.read(str(tmp_path / "none.json"))
  with pytest.raises(records.RecordError, match="non-finite"):
    records.write(str(tmp_path / "w.json"), d)


def test_legacy_import(tmp_path):
  legacy = [{"frame_id": 1, "bboxes": [[10, 10, 50, 60, 0.99]], "landmarks": [[[20, 30]] * 68],
             "gaze_angle": [[0.1, 0.2]], "gaze_vector": [[0.0, 0.0, -1.0]]},
            {"frame_id": 0, "bboxes": [], "landmarks": [], "gaze_angle": None, "gaze_vector": None}]
  p = tmp_path / "legacy.json"
  p.write_text(json.dumps(legacy))
  doc = records.read(str(p))
  assert [f["frame_id"] for f in doc["frames"]] == [0, 1]
  face = doc["frames"][1]["faces"][0]
  assert face["landmarks_source"] == "68" and len(face["landmarks5"]) == 5
  assert face["gaze"] == {"pitch_yaw": [0.1, 0.2], "vector": [0.0, 0.0, -1.0]}
  p.write_text(json.dumps([{"frame": 0}]))
  with pytest.raises(records.RecordError, match="not a drsf-jax or original-project"):
    records.read(str(p))


@pytest.fixture(scope="module")
def wdir(real_weights):
  return real_weights


def test_inference_on_real_video(wdir, tmp_path):
  from drsf_jax.io import video
  from drsf_jax.victims import inference
  pred = inference.Predictor("retinaface", "none", "MPIIGaze", wdir)
  doc = inference.run(shared_file("data", "talking_head_a.mp4"), pred, max_frames=6, batch_size=4)
  assert doc["video"]["num_frames"] == 6 and [f["frame_id"] for f in doc["frames"]] == list(range(6))
  face = doc["frames"][0]["faces"][0]
  assert face["head_pose"] is not None and face["gaze"] is not None and face["landmarks_source"] == "5"
  assert 0.1 < face["head_pose"]["translation"][2] < 1.0  # A head tens of cm from the camera.
  assert doc["models"]["retinaface"]["weights_sha256"].startswith("ed6fa7d4")
  # Frames with no face: an empty list, no crash.
  blank = str(tmp_path / "blank.mkv")
  with video.VideoWriter(blank, 30, (96, 96)) as w:
    w.write(np.full((96, 96, 3), 128, np.uint8))
  doc = inference.run(blank, pred)
  assert doc["frames"] == [{"frame_id": 0, "faces": []}]
