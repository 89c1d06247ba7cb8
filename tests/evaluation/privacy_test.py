"""Privacy metrics with models the attack never saw, on real faces.

Gallery: the 10 people of ``shared/data/identities`` plus talking_head_a, talking_head_b
(frames 0, 50, 100) and the scikit-image astronaut: 13 identities. Queries: 8 later
frames of each video and the astronaut. Detectors: dlib HOG, dlib CNN (4 frames a call),
the LBP cascade and the project's MTCNN (unauthorized when RetinaFace is authorized).
Run with ``pytest -s`` to see the measured rates.
"""

import os
import sys

import cv2
import numpy as np
import pytest

from tests.support import astronaut, read_frames, shared_dir, shared_file

dlib = pytest.importorskip("dlib", reason="pip install dlib-bin face_recognition_models")

from drsf_jax.deid import obfuscation  # pylint: disable=g-import-not-at-top
from drsf_jax.evaluation import privacy  # pylint: disable=g-import-not-at-top
from drsf_jax.geometry import bbox

GALLERY_FRAMES = (0, 50, 100)
EVAL_START, EVAL_STEP, EVAL_N = 150, 7, 8


def _largest_box(image):
  b, _ = privacy.largest_face(image)
  return np.full(4, np.nan, np.float32) if b is None else b


def _boxes(frames):
  return np.stack([_largest_box(f) for f in frames])


@pytest.fixture(scope="module")
def data():
  """identity -> (eval frames, eval boxes), and the 13-identity gallery."""
  try:
    privacy.dlib_models()
  except ImportError as e:
    pytest.skip(str(e))
  shared_file("data", "identities", "obama", "1.jpg")
  gallery = privacy.load_gallery_dir(os.path.join(shared_dir(), "data", "identities"))
  evals = {}
  for name in ("talking_head_a", "talking_head_b"):
    frames = read_frames(shared_file("data", f"{name}.mp4"), EVAL_START + EVAL_STEP * EVAL_N)
    gallery.add_images(name, [(f"{name}[{i}]", frames[i]) for i in GALLERY_FRAMES])
    ev = frames[EVAL_START::EVAL_STEP][:EVAL_N]
    evals[name] = (ev, _boxes(ev))
  ast = astronaut()
  gallery.add_images("astronaut", [("astronaut", ast)])
  evals["astronaut"] = (ast[None], _boxes(ast[None]))
  assert len(gallery.identities) == 13 and not gallery.warnings, gallery.warnings
  for name in evals:
    assert gallery.check_aliases(name) == []
  return evals, gallery


def _deidentify(frames, boxes, spec):
  if spec == "original":
    return frames
  h, w = frames.shape[1:3]
  regions = [bbox.face_regions(b[None], (h, w)) if np.all(np.isfinite(b))
             else np.zeros((0, 4), np.int64) for b in boxes]
  out = obfuscation.obfuscate(frames.astype(np.float32) / 255.0, regions, spec)
  return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def test_helpers(monkeypatch):
  np.testing.assert_allclose(
      privacy.box_iou(np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]),
                      np.array([0, 0, 10, 10])), [1.0, 1 / 3, 0.0])
  img = astronaut()
  assert privacy.embed(img, np.full(4, np.nan)) is None
  assert privacy.embed(img, None) is None
  assert privacy.detect_lbp(img).shape[1] == 4
  np.testing.assert_array_equal(privacy.sample_indices(16, 4), [0, 5, 10, 15])
  np.testing.assert_array_equal(privacy.sample_indices(3, 4), [0, 1, 2])
  frames = np.stack([img[:64, :64]] * 3)
  boxes = np.array([[8, 8, 40, 40]] * 3, np.float64)
  for p in privacy.ATTACKER_PROCESSINGS:
    out = privacy.attacker_process(frames, boxes, p)
    assert out.shape == frames.shape and out.dtype == np.uint8
  # Identical frames: aligned averaging changes nothing, a blur does.
  np.testing.assert_array_equal(privacy.attacker_process(frames, boxes, "temporal_8"), frames)
  assert np.abs(privacy.attacker_process(frames, boxes, "gaussian_sigma2").astype(int) - frames).max() > 10
  with pytest.raises(ValueError, match="unknown attacker processing"):
    privacy.attacker_process(frames, boxes, "sharpen")
  monkeypatch.setitem(sys.modules, "dlib", None)
  with pytest.raises(ImportError, match="pip install dlib-bin face_recognition_models"):
    privacy.embed(img, np.array([180, 80, 270, 170]))


def test_identity_metrics_on_a_hand_made_gallery():
  """rank-1, mAP and k by hand; one identity gives null, never 1.0."""
  e = lambda *v: np.array(v, np.float32)
  gal = {"me": [e(0, 0), e(3, 0)], "a": [e(1, 0)], "b": [e(5, 0)], "c": [e(9, 9)]}
  m = privacy.identity_metrics([e(0.9, 0), None], [e(0, 0), None], gal, "me")
  # Distances: me 0.9 (and 2.1), a 0.1, b 4.1, c 12.1: nearest a, k = 2 (a and me).
  assert m["faces"] == 1 and m["rank1_reid_rate"] == 0.0 and m["rank1_chance"] == 0.25
  assert m["k_median"] == 2.0 and m["k_ge_5_fraction"] == 0.0
  # Ranked photos: a, me, me, b, c -> AP = (1/2 + 2/3) / 2.
  assert m["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
  assert m["reid_rate_same_frame"] == 0.0 and m["embedding_distance_mean"] == pytest.approx(0.9)
  one = privacy.identity_metrics([e(0.1, 0)], [e(0, 0)], {"me": gal["me"]}, "me")
  assert one["rank1_reid_rate"] is None and one["map"] is None and one["k_median"] is None
  assert "1 identity" in one["rank1_null_reason"] and "1.0 by construction" in one["rank1_null_reason"]
  assert one["reid_rate_same_frame"] == 1.0
  missing = privacy.identity_metrics([e(0.1, 0)], [e(0, 0)], {"a": gal["a"], "b": gal["b"]}, "me")
  assert missing["rank1_reid_rate"] is None and "no photo of the input's own" in missing["rank1_null_reason"]


def test_original_vs_pixelate_10_over_13_identities(data, real_weights):
  """The metrics can see identity (originals: rank-1 and every detector >= 0.9) and
  pixelate_10 takes it away, without an attack; one identity gives null."""
  from drsf_jax.deid import report
  evals, gallery = data
  dets = privacy.independent_detectors() + [report.project_detector("mtcnn", real_weights)]
  orig, pix = {}, {}
  for name, (frames, boxes) in evals.items():
    ev = privacy.frame_evidence(frames, boxes, dets)
    orig[name] = privacy.evaluate(frames, frames, boxes, gallery, name, dets, (), original_evidence=ev)
    pix[name] = privacy.evaluate(frames, _deidentify(frames, boxes, "pixelate_10"), boxes, gallery, name,
                                 dets, (), original_evidence=ev)

  def pooled(res, get):
    vals = [(get(m), m["faces"]) for m in res.values() if get(m) is not None]
    return sum(v * n for v, n in vals) / sum(n for _, n in vals)

  summary = {}
  for label, res in (("original", orig), ("pixelate_10", pix)):
    summary[label] = {k: pooled(res, lambda m, k=k: m[k])
                      for k in ("rank1_reid_rate", "map", "reid_rate_same_frame", "k_median")}
    for d in dets:
      summary[label][d.name] = pooled(res, lambda m, n=d.name: m["detection_rate"][n]["deidentified"])
    print(f"\n[privacy 13 ids] {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in summary[label].items()))
  assert orig["talking_head_a"]["rank1_chance"] == pytest.approx(1 / 13)
  o, p = summary["original"], summary["pixelate_10"]
  assert o["rank1_reid_rate"] >= 0.9 and o["map"] >= 0.9 and o["reid_rate_same_frame"] == 1.0
  for d in dets:
    assert o[d.name] >= 0.9, d.name
    assert p[d.name] < o[d.name], d.name
  assert orig["talking_head_a"]["sampled_frames"]["dlib_cnn"] == privacy.CNN_SAMPLE_FRAMES
  assert p["rank1_reid_rate"] <= 0.5 and p["reid_rate_same_frame"] <= 0.1
  assert p["map"] < o["map"] - 0.3 and p["k_median"] > o["k_median"]
  assert not pix["talking_head_a"]["private"] or pix["talking_head_a"]["worst_case"]["reid_rate_same_frame"]["rate"] <= 0.05

  # One identity: rank-1 is 1.0 by construction, so it is null (old and new API alike).
  frames, boxes = evals["talking_head_a"]
  solo = {"talking_head_a": gallery.embeddings["talking_head_a"]}
  one = privacy.evaluate(frames[:2], _deidentify(frames[:2], boxes[:2], "pixelate_10"), boxes[:2], solo,
                         "talking_head_a", dets[:1], ())
  assert one["rank1_reid_rate"] is None and one["map"] is None and "1 identity" in one["rank1_null_reason"]
  old = privacy.privacy_metrics(frames[:2], frames[:2], boxes[:2], solo, "talking_head_a")
  assert old["rank1_reid_rate"] is None and old["rank1_null_reason"] and old["reid_rate_same_frame"] == 1.0


def _moving_photo(path, n=32, face_px=110, shift=12.0, seed=0):
  """A 256x256 "video" of a photo translated at random (±shift px) each frame, and boxes."""
  img = privacy.read_image_or_none(path)
  box, _ = privacy.largest_face(img)
  s = face_px / (box[2] - box[0])
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  rng = np.random.default_rng(seed)
  frames, boxes = [], []
  for _ in range(n):
    dx, dy = rng.uniform(-shift, shift, 2)
    m = np.array([[s, 0, 128 + dx - s * cx], [0, s, 128 + dy - s * cy]])
    frames.append(cv2.warpAffine(img, m, (256, 256), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT))
    boxes.append(np.r_[box[:2] * s + m[:, 2], box[2:] * s + m[:, 2]])
  return np.stack(frames), np.array(boxes)


def test_temporal_attacker_undoes_pixelation_under_a_fixed_grid(data):
  """A face moving under a FIXED pixel grid (10 px cells): averaging 32 frames aligned on
  the face box recovers the identity that one frame hides."""
  _, full = data
  # Query: rose_leslie/2.jpg; her gallery keeps only 1.jpg.
  gallery = {k: list(v) for k, v in full.embeddings.items()}
  gallery["rose_leslie"] = gallery["rose_leslie"][:1]
  frames, boxes = _moving_photo(shared_file("data", "identities", "rose_leslie", "2.jpg"))
  region = [np.array([[58, 58, 198, 198]])] * len(frames)  # Fixed: 140 px, 14 cells of 10 px.
  pix = np.clip(np.round(obfuscation.obfuscate(frames.astype(np.float32) / 255, region, "pixelate_14") * 255),
                0, 255).astype(np.uint8)
  hog = privacy.independent_detectors()[:1]
  r = privacy.evaluate(frames, pix, boxes, gallery, "rose_leslie", hog, ("temporal_8", "temporal_32"))
  t8, t32 = r["attacker"]["temporal_8"], r["attacker"]["temporal_32"]
  print(f"\n[temporal] single frame: re-ID {r['reid_rate_same_frame']:.2f} dist {r['embedding_distance_mean']:.3f} "
        f"rank-1 {r['rank1_reid_rate']:.2f} HOG {r['detection_rate']['dlib_hog']['deidentified']:.2f}; "
        + "; ".join(f"{k}: re-ID {m['reid_rate_same_frame']:.2f} dist {m['embedding_distance_mean']:.3f} "
                    f"rank-1 {m['rank1_reid_rate']:.2f} HOG {m['detection_rate']['dlib_hog']:.2f}"
                    for k, m in r["attacker"].items()))
  assert r["reid_rate_same_frame"] <= 0.1 and r["detection_rate"]["dlib_hog"]["deidentified"] <= 0.1
  assert t32["reid_rate_same_frame"] >= r["reid_rate_same_frame"] + 0.5
  assert t32["embedding_distance_mean"] <= r["embedding_distance_mean"] - 0.1
  assert t32["detection_rate"]["dlib_hog"] >= 0.9
  assert t8["embedding_distance_mean"] < r["embedding_distance_mean"]
  assert r["worst_case"]["reid_rate_same_frame"]["processing"] in ("temporal_8", "temporal_32")
  assert not r["private"]


def test_gallery_bad_input(tmp_path, data):
  """Unreadable images, images without a face, an identity with no usable photo and an
  alias of the input's own face are warnings; a folder without any face is an error."""
  ids = os.path.join(shared_dir(), "data", "identities")
  g = tmp_path / "g"
  (g / "obama").mkdir(parents=True)
  (g / "ghost").mkdir()
  (g / "empty").mkdir()
  (g / "also_obama").mkdir()
  (g / "obama" / "1.jpg").write_bytes(open(os.path.join(ids, "obama", "1.jpg"), "rb").read())
  (g / "obama" / "broken.jpg").write_bytes(b"not a jpeg")
  cv2.imwrite(str(g / "ghost" / "wall.png"), np.full((200, 200, 3), 128, np.uint8))
  (g / "also_obama" / "x.jpg").write_bytes(open(os.path.join(ids, "obama", "2.jpg"), "rb").read())
  gal = privacy.load_gallery_dir(str(g))
  assert gal.identities == ["also_obama", "obama"]
  text = "\n".join(gal.warnings)
  assert "cannot read" in text and "broken.jpg" in text
  assert "no face found" in text and "wall.png" in text
  assert "'ghost' has no usable photo" in text
  assert "has no image" in text and "empty" in text
  assert gal.check_aliases("obama") == ["also_obama"]
  assert "looks like the input's own identity 'obama'" in gal.warnings[-1]
  assert all("\n" not in w for w in gal.warnings)

  nobody = tmp_path / "nobody"
  (nobody / "ghost").mkdir(parents=True)
  cv2.imwrite(str(nobody / "ghost" / "wall.png"), np.full((200, 200, 3), 128, np.uint8))
  with pytest.raises(ValueError, match="no face found in any of its 1 images"):
    privacy.load_gallery_dir(str(nobody))
  with pytest.raises(ValueError, match="no NAME/ subfolder with images"):
    privacy.load_gallery_dir(str(tmp_path / "g" / "empty"))
  with pytest.raises(FileNotFoundError, match="not found"):
    privacy.load_gallery_dir(str(tmp_path / "missing"))
