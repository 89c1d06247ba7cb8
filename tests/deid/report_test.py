"""The privacy–utility report on a real video, small grid."""

import json
import os

import cv2
import pytest

from tests.support import astronaut, shared_file


def test_report_grid_on_real_video(real_weights, tmp_path):
  pytest.importorskip("dlib")
  from drsf_jax.deid import report
  astro = str(tmp_path / "astronaut.png")
  cv2.imwrite(astro, cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
  cfg = report.ReportConfig(detector="retinaface", gaze="MPIIGaze", levels=("pixelate_10", "pixelate_30"),
                            max_frames=4, max_iter=15, batch_size=4, gallery_frames=2, cnn_frames=2,
                            processings=("gaussian_sigma2", "temporal_8"))
  out = str(tmp_path / "rep")
  ids = os.path.dirname(os.path.dirname(shared_file("data", "identities", "obama", "1.jpg")))
  res = report.run(shared_file("data", "talking_head_a.mp4"), out, cfg,
                   [ids, shared_file("data", "talking_head_b.mp4"), astro], real_weights, progress=lambda s: None)
  for name in ("report.json", "report.md", "tradeoff.png", "contact_sheet.png"):
    assert os.path.getsize(os.path.join(out, name)) > 100
  assert json.load(open(os.path.join(out, "report.json")))["rows"] == res["rows"]
  rows = {(r["level"], r["setting"]): r for r in res["rows"]}
  assert len(rows) == 4 and res["gallery"]["talking_head_a.mp4"] >= 1
  # The attack brings back what pixelation took from the authorized models...
  assert rows[("pixelate_10", "attacked")]["iou"] > rows[("pixelate_10", "obfuscated")]["iou"] + 0.3
  # ...and coarser pixelation hides more identity than finer pixelation.
  assert rows[("pixelate_10", "obfuscated")]["reid_same_frame"] <= rows[("pixelate_30", "obfuscated")]["reid_same_frame"]
  md = open(os.path.join(out, "report.md")).read()
  assert "lower is better" in md
  # 13 identities; rank-1 beside its chance level; the unauthorized MTCNN measured.
  assert res["gallery_identities"] == 13 and res["rank1_null_reason"] is None
  assert [w for w in res["warnings"] if w.startswith("gallery")] == []
  assert any("not measured: retinaface_r50, fan" in w for w in res["warnings"])  # No weights here.
  assert res["detectors"] == ["dlib_hog", "dlib_cnn", "skimage_lbp", "mtcnn"]
  assert res["unauthorized_models"] == ["mtcnn"] and res["sampled_frames"]["dlib_cnn"] == 2
  assert res["original"]["rank1_reid_rate"] == 1.0 and min(res["original"]["detection"].values()) == 1.0
  for r in res["rows"]:
    assert r["rank1_chance"] == pytest.approx(1 / 13)
    assert set(r["attacker"]) == {"gaussian_sigma2", "temporal_8"}
    assert r["worst_reid_same_frame"] >= r["reid_same_frame"]
    assert all(r["worst_detection"][d]["rate"] >= r["detection"][d] for d in res["detectors"])
    assert r["private"] == (r["worst_reid_same_frame"] <= 0.05
                            and all(w["rate"] <= 0.10 for w in r["worst_detection"].values()))
  # The unauthorized detector was not protected: its DiffScore after the attack stays
  # well above the authorized one.
  att = rows[("pixelate_10", "attacked")]
  assert att["unauthorized_diffscore"]["mtcnn"] > att["diffscore"] + 0.3
  assert res["recommendation"]["level"] in cfg.levels and "Recommended level" in md
  assert "rank-1 (13 ids; chance)" in md and "temporal_8" in md
  # The contact sheet gained the identity grid below the three frame rows.
  assert cv2.imread(os.path.join(out, "contact_sheet.png")).shape[0] > 28 + 3 * 256 + 100


def _reid_same_frame(originals, frames, boxes):
  """dlib same-frame re-identification: (rate of distance < 0.6 to the original's
  embedding, mean distance)."""
  from drsf_jax.evaluation import privacy
  gallery = {"self": [], "other": []}  # Not used by the same-frame rate.
  m = privacy.privacy_metrics(originals, frames, boxes, gallery, "self")
  return m["reid_rate_same_frame"], m["embedding_distance_mean"]


@pytest.mark.slow
def test_privacy_after_the_attack_on_real_frames(real_weights, tmp_path):
  """Re-identification (dlib, same frame) after obfuscation alone and after the full
  de-identification (MTCNN authorized, the default detector; adam), on 8 real frames.

  README's table ("Choosing the obfuscation level") was measured with RetinaFace +
  MPIIGaze on 16 frames and 100 steps, too slow for the suite; this is a shortened run
  (8 frames, 40 steps). The attacked pixelate_10 faces lie at dlib distances 0.55-0.70
  from their originals, straddling dlib's same-person threshold 0.6, so the count of
  frames under it is not stable to one frame between machines (measured 1, 2 and 3 of 8
  in four runs, 3 on the CI machine: XLA's CPU partitioning changes the last bits and a
  face at 0.596 flips): the bounds are on the mean distance (measured 0.621-0.639; 0.621
  on both cores unpinned, as CI runs) and on the rate with one frame of margin over the
  worst run. pixelate_20 attacked: 0.50-0.875, mean distance 0.557; pixelate_30
  obfuscated 1.00 (mean 0.489).
  """
  pytest.importorskip("dlib")
  import numpy as np
  from tests.support import read_frames
  from drsf_jax.deid import obfuscation
  from drsf_jax.deid import pipeline
  from drsf_jax.geometry import bbox
  from drsf_jax.io import video
  from drsf_jax.victims import registry as victims
  src = shared_file("data", "talking_head_a.mp4")
  n = 8
  originals = read_frames(src, n)
  det = victims.load_victim("mtcnn", real_weights)
  dets = det.predict(det.params, originals.astype(np.float32) / 255.0)
  assert all(len(d["boxes"]) for d in dets)
  boxes = np.stack([d["boxes"][0] for d in dets])
  reid = {}
  for level in ("pixelate_10", "pixelate_20", "pixelate_30"):
    regions = [bbox.face_regions(d["boxes"], originals.shape[1:3]) for d in dets]
    plain = video.to_uint8(obfuscation.obfuscate(originals.astype(np.float32) / 255.0, regions, level))
    reid[(level, "obfuscated")] = _reid_same_frame(originals, plain, boxes)
    if level == "pixelate_30":
      continue  # Not private even without the attack: nothing to attack.
    out = str(tmp_path / f"{level}.mkv")
    cfg = pipeline.DeidConfig(detector="mtcnn", attack="adam", deid=level, max_iter=40, batch_size=n,
                              max_frames=n)
    pipeline.deidentify(src, out, cfg, real_weights, progress=False)
    attacked = np.stack(list(video.VideoReader(out)))
    reid[(level, "attacked")] = _reid_same_frame(originals, attacked, boxes)
  print("re-identified, same frame (rate, mean distance):", reid)
  rate = {k: v[0] for k, v in reid.items()}
  dist = {k: v[1] for k, v in reid.items()}
  # The default level stays mostly private after the attack: on average the faces stay
  # beyond dlib's same-person distance (a regression that restores identity moves the
  # mean under it) and at most half the frames are under it...
  assert dist[("pixelate_10", "attacked")] > 0.6
  assert rate[("pixelate_10", "attacked")] <= 0.5
  # ...pixelate_20 is re-identified more after the attack than before (0.50 vs 0.00): the
  # perturbation that restores the detector's view restores what dlib uses too, and it
  # ends nearer its original than the default level does...
  assert rate[("pixelate_20", "attacked")] > rate[("pixelate_20", "obfuscated")]
  assert dist[("pixelate_20", "attacked")] < dist[("pixelate_10", "attacked")]
  # ...and pixelate_30 does not hide the driver even without the attack (1.00).
  assert rate[("pixelate_30", "obfuscated")] >= 0.8


def test_report_gallery_bad_input_and_recommendation(tmp_path):
  """The input's own face under another name is a warning; no other identity gives a
  null rank-1 with its reason; a missing entry is an error; the recommendation is the
  least destructive private level, else the safest, said so."""
  pytest.importorskip("dlib")
  import shutil
  from drsf_jax.deid import report
  from drsf_jax.evaluation import privacy
  src = shared_file("data", "talking_head_a.mp4")
  alias = str(tmp_path / "driver_42.mp4")
  shutil.copy(src, alias)
  gal = report.build_gallery(src, "talking_head_a.mp4", 150, [alias], n_frames=2)
  assert gal.identities == ["talking_head_a.mp4", "driver_42.mp4"]
  assert any("'driver_42.mp4' looks like the input's own identity" in w for w in gal.warnings)
  solo = report.build_gallery(src, "talking_head_a.mp4", 150, [], n_frames=2)
  assert "1 identity" in privacy.rank1_null_reason(solo.embeddings, "talking_head_a.mp4")
  with pytest.raises(FileNotFoundError, match="gallery entry .* not found"):
    report.build_gallery(src, "talking_head_a.mp4", 150, [str(tmp_path / "nobody")], n_frames=1)

  def row(level, diffscore, reid, det, private):
    return {"level": level, "setting": "attacked", "diffscore": diffscore, "private": private,
            "worst_reid_same_frame": reid, "worst_reid_processing": "temporal_32",
            "worst_detection": {"dlib_hog": {"rate": det, "processing": "none"}}}
  rows = [row("pixelate_10", 0.09, 0.0, 0.0, True), row("pixelate_14", 0.08, 0.05, 0.1, True),
          row("pixelate_20", 0.07, 0.5, 1.0, False)]
  assert report.recommend(rows)["level"] == "pixelate_14" and report.recommend(rows)["private"]
  rows = [row("pixelate_10", 0.09, 0.44, 1.0, False), row("pixelate_20", 0.07, 0.88, 1.0, False)]
  rec = report.recommend(rows)
  assert rec["level"] == "pixelate_10" and not rec["private"] and rec["why"].startswith("no level keeps")
