"""Privacy metrics with independent models (dlib HOG + ResNet, scikit-image LBP cascade).

Three identities: talking_head_a, talking_head_b and the scikit-image astronaut. Faces
are found on the originals with dlib HOG; the gallery is built from frames 0, 50, 100 of
each video (the astronaut image alone for her) and evaluated on other frames. Run with
``pytest -s`` to see the measured rates per obfuscation level.
"""

import sys

import numpy as np
import pytest

from conftest import astronaut, read_frames, shared_file

dlib = pytest.importorskip("dlib", reason="pip install dlib-bin face_recognition_models")

from drsf_jax import obfuscation  # pylint: disable=g-import-not-at-top
from drsf_jax import privacy  # pylint: disable=g-import-not-at-top

GALLERY_FRAMES = (0, 50, 100)
EVAL_START, EVAL_STEP, EVAL_N = 150, 7, 8
LEVELS = ("pixelate_10", "pixelate_20", "pixelate_30", "blur_15", "blur_31")


def _largest_box(image):
  b = privacy.detect_dlib(image)
  if not len(b):
    return np.full(4, np.nan, np.float32)
  return b[np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))]


def _boxes(frames):
  return np.stack([_largest_box(f) for f in frames])


@pytest.fixture(scope="module")
def data():
  """identity -> (eval frames, eval boxes), and the gallery."""
  try:
    privacy.dlib_models()
  except ImportError as e:
    pytest.skip(str(e))
  evals, gallery = {}, {}
  for name in ("talking_head_a", "talking_head_b"):
    path = shared_file("data", f"{name}.mp4")
    frames = read_frames(path, EVAL_START + EVAL_STEP * EVAL_N)
    gal = frames[list(GALLERY_FRAMES)]
    gallery[name] = privacy.gallery_from_frames(gal, _boxes(gal))
    ev = frames[EVAL_START::EVAL_STEP][:EVAL_N]
    evals[name] = (ev, _boxes(ev))
  ast = astronaut()[None]
  gallery["astronaut"] = privacy.gallery_from_frames(ast, _boxes(ast))
  evals["astronaut"] = (ast, _boxes(ast))
  for name, embs in gallery.items():
    assert len(embs) >= 1, f"no gallery embedding for {name}"
  return evals, gallery


def _deidentify(frames, boxes, spec):
  if spec == "original":
    return frames
  h, w = frames.shape[1:3]
  regions = [obfuscation.face_regions(b[None], (h, w)) if np.all(np.isfinite(b))
             else np.zeros((0, 4), np.int64) for b in boxes]
  out = obfuscation.obfuscate(frames.astype(np.float32) / 255.0, regions, spec)
  return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def _pooled(evals, gallery, spec):
  """Metrics of every identity, pooled (frame-weighted) over identities."""
  per_id = {}
  for name, (frames, boxes) in evals.items():
    per_id[name] = privacy.privacy_metrics(
        frames, _deidentify(frames, boxes, spec), boxes, gallery, name)
  total = sum(m["frames"] for m in per_id.values())
  wmean = lambda f: sum(f(m) * m["frames"] for m in per_id.values()) / total
  pooled = {
      "frames": total,
      "embedding_distance_mean": wmean(lambda m: m["embedding_distance_mean"]),
      "reid_rate_same_frame": wmean(lambda m: m["reid_rate_same_frame"]),
      "rank1_reid_rate": wmean(lambda m: m["rank1_reid_rate"]),
      "rank1_open_set": wmean(lambda m: m["rank1_reid_rate_open_set"]),
  }
  for det in privacy.DETECTORS:
    for kind in ("original", "deidentified"):
      pooled[f"{det}_{kind}"] = wmean(lambda m: m["detection_rate"][det][kind])
  print(f"\n[privacy] {spec:12s} frames={total} dist={pooled['embedding_distance_mean']:.3f} "
        f"reid_same={pooled['reid_rate_same_frame']:.3f} rank1={pooled['rank1_reid_rate']:.3f} "
        f"rank1_open={pooled['rank1_open_set']:.3f} "
        f"hog={pooled['dlib_hog_original']:.2f}->{pooled['dlib_hog_deidentified']:.2f} "
        f"lbp={pooled['skimage_lbp_original']:.2f}->{pooled['skimage_lbp_deidentified']:.2f}")
  return pooled, per_id


def test_helpers(monkeypatch):
  np.testing.assert_allclose(
      privacy.box_iou(np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]),
                      np.array([0, 0, 10, 10])), [1.0, 1 / 3, 0.0])
  img = astronaut()
  assert privacy.embed(img, np.full(4, np.nan)) is None
  assert privacy.embed(img, None) is None
  assert privacy.detect_lbp(img).shape[1] == 4
  monkeypatch.setitem(sys.modules, "dlib", None)
  with pytest.raises(ImportError, match="pip install dlib-bin face_recognition_models"):
    privacy.embed(img, np.array([180, 80, 270, 170]))


def test_privacy_metrics(data):
  evals, gallery = data
  orig, per_id = _pooled(evals, gallery, "original")
  m = per_id["talking_head_a"]
  assert m["lower_is_better"] is True and len(m["per_frame"]) == m["frames"] == EVAL_N
  assert orig["dlib_hog_original"] >= 0.9
  assert orig["dlib_hog_deidentified"] >= 0.9
  assert orig["reid_rate_same_frame"] >= 0.9
  assert orig["rank1_reid_rate"] >= 0.9
  assert orig["rank1_open_set"] >= 0.9

  results = {"original": orig}
  for spec in LEVELS:
    results[spec] = _pooled(evals, gallery, spec)[0]
    # Original-frame detection does not depend on the de-identification.
    assert results[spec]["dlib_hog_original"] == orig["dlib_hog_original"]

  p10 = results["pixelate_10"]
  # Closed-set rank-1 over 3 identities: chance is ~1/3, and faces without identity
  # collapse onto one "sink" gallery identity (talking_head_a here), which alone gives
  # ~0.5; the open-set rate (match within the threshold) is the real re-identification.
  assert p10["rank1_reid_rate"] <= orig["rank1_reid_rate"] - 0.3
  assert p10["rank1_open_set"] <= 0.5
  assert p10["reid_rate_same_frame"] <= 0.5
  assert p10["embedding_distance_mean"] >= orig["embedding_distance_mean"] + 0.3
  assert p10["dlib_hog_deidentified"] < orig["dlib_hog_deidentified"]
