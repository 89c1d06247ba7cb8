"""The public API (drsf_jax/__init__.py, drsf_jax/api.py): light import, frames of either
dtype read the same, wrong scales refused with one line, on real frames."""

import subprocess
import sys

import numpy as np
import pytest

from tests.support import read_frames, shared_file


def test_import_is_light_and_exports_the_api():
  code = ("import sys, drsf_jax; assert 'jax' not in sys.modules, 'jax imported'; "
          "names = sorted(drsf_jax.__all__); print(names); "
          "[getattr(drsf_jax, n) for n in names]; assert 'jax' in sys.modules")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  import drsf_jax
  for name in ("deidentify", "Deidentifier", "DeidConfig", "load_victim", "infer", "evaluate",
               "privacy_metrics", "read_video", "sample_video", "draw_predictions"):
    assert callable(getattr(drsf_jax, name)), name
    assert getattr(drsf_jax, name).__doc__, f"{name} has no docstring"
  with pytest.raises(AttributeError):
    drsf_jax.no_such_function  # pylint: disable=pointless-statement


def test_frame_conversions_refuse_guessed_scales():
  import drsf_jax
  rng = np.random.default_rng(0)
  u8 = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  f = u8.astype(np.float32) / 255.0
  np.testing.assert_array_equal(drsf_jax.as_uint8_frames(f), u8)
  np.testing.assert_array_equal(drsf_jax.as_unit_frames(u8), f)
  with pytest.raises(ValueError, match=r"must be in \[0, 1\].*divide by 255"):
    drsf_jax.as_unit_frames(u8.astype(np.float32))
  with pytest.raises(ValueError, match="dtype int16"):
    drsf_jax.as_uint8_frames(u8.astype(np.int16))
  with pytest.raises(ValueError, match="RGB"):
    drsf_jax.as_unit_frames(f[..., :2])
  with pytest.raises(ValueError, match="NaN"):
    drsf_jax.as_unit_frames(np.full((1, 4, 4, 3), np.nan, np.float32))


@pytest.mark.slow
def test_uint8_and_float_frames_give_the_same_predictions(real_weights):
  """The trap of the flat API: uint8 frames cast to float32 were read as 0..255 by a [0, 1]
  model. infer(), Predictor and every loaded victim's predict() now take either dtype and
  give identical answers on real frames; 0..255 floats are refused."""
  import drsf_jax
  from drsf_jax.victims import inference
  src = shared_file("data", "talking_head_a.mp4")
  frames = read_frames(src, 4)
  a = drsf_jax.infer(frames, "retinaface", weights_dir=real_weights)
  b = drsf_jax.infer(frames.astype(np.float32) / 255.0, "retinaface", weights_dir=real_weights)
  done = []
  c = drsf_jax.infer(src, "retinaface", weights_dir=real_weights, max_frames=4, batch_size=3,
                     progress=done.append)
  assert done == [3, 1]  # The progress callback sees each batch (scripts/inference.py's bar).
  assert all(len(fr["faces"]) == 1 for fr in a["frames"])
  assert a["frames"] == b["frames"] == c["frames"]
  with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
    drsf_jax.infer(frames.astype(np.float32), "retinaface", weights_dir=real_weights)
  for name in ("retinaface", "mtcnn"):
    v = drsf_jax.load_victim(name, real_weights)
    p8 = v.predict(v.params, frames)
    pf = v.predict(v.params, frames.astype(np.float32) / 255.0)
    for x, y in zip(p8, pf):
      np.testing.assert_array_equal(x["boxes"], y["boxes"])
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
      v.predict(v.params, frames.astype(np.float32))
  pred = inference.Predictor("retinaface", weights_dir=real_weights)
  assert pred.predict(frames) == pred.predict(frames.astype(np.float32) / 255.0)


def test_evaluate_takes_documents_or_paths(tmp_path):
  import drsf_jax
  from drsf_jax.io import records
  face = {"box": [10.0, 12.0, 50.0, 60.0], "score": 0.99,
          "landmarks5": [[20.0, 30.0], [40.0, 30.0], [30.0, 40.0], [22.0, 50.0], [38.0, 50.0]],
          "landmarks_source": "5", "landmarks68": None, "head_pose": None, "gaze": None}
  moved = dict(face, box=[12.0, 12.0, 52.0, 60.0],
               landmarks5=[[x + 2.0, y] for x, y in face["landmarks5"]])
  doc = lambda f: {"schema": records.SCHEMA, "video": {"path": "x.mp4", "width": 64, "height": 64,
                                                       "fps": 30.0, "num_frames": 1},
                   "models": {}, "frames": [{"frame_id": 0, "faces": [f]}]}
  path = str(tmp_path / "ref.json")
  records.write(path, doc(face))
  s = drsf_jax.evaluate(path, doc(moved))["summary"]
  assert s["landmark_px_mean"] == pytest.approx(2.0)
  assert s["iou_mean"] == pytest.approx((38 * 48) / (42 * 48))
  with pytest.raises(ValueError, match="predictions dict or a JSON path"):
    drsf_jax.evaluate([1, 2], doc(face))


def test_deidentify_names_unknown_settings(tmp_path):
  import drsf_jax
  with pytest.raises(TypeError, match="unknown setting.*detecter.*DeidConfig has: detector"):
    drsf_jax.deidentify("in.mp4", str(tmp_path / "out.mkv"), detecter="mtcnn")


@pytest.mark.slow
def test_privacy_metrics_reads_float_frames_as_their_uint8(real_weights):
  pytest.importorskip("dlib")
  import drsf_jax
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), 2)
  v = drsf_jax.load_victim("retinaface", real_weights)
  boxes = np.stack([d["boxes"][0] for d in v.predict(v.params, frames)])
  noisy = np.clip(frames.astype(np.int16) + 9, 0, 255).astype(np.uint8)
  a = drsf_jax.privacy_metrics(frames, noisy, boxes)
  b = drsf_jax.privacy_metrics(frames.astype(np.float64) / 255.0, noisy.astype(np.float32) / 255.0, boxes)
  assert a["embedding_distance_mean"] == b["embedding_distance_mean"] > 0.0
  with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
    drsf_jax.privacy_metrics(frames.astype(np.float32), noisy, boxes)
