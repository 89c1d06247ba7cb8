"""The privacy–utility report on a real video, small grid."""

import json
import os

import cv2
import pytest

from conftest import astronaut, shared_file


def test_report_grid_on_real_video(real_weights, tmp_path):
  pytest.importorskip("dlib")
  from drsf_jax import report
  astro = str(tmp_path / "astronaut.png")
  cv2.imwrite(astro, cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
  cfg = report.ReportConfig(detector="retinaface", gaze="MPIIGaze", levels=("pixelate_10", "pixelate_30"),
                            max_frames=4, max_iter=15, batch_size=4, gallery_frames=2)
  out = str(tmp_path / "rep")
  res = report.run(shared_file("data", "talking_head_a.mp4"), out, cfg,
                   [shared_file("data", "talking_head_b.mp4"), astro], real_weights, progress=lambda s: None)
  for name in ("report.json", "report.md", "tradeoff.png", "contact_sheet.png"):
    assert os.path.getsize(os.path.join(out, name)) > 100
  assert json.load(open(os.path.join(out, "report.json")))["rows"] == res["rows"]
  rows = {(r["level"], r["setting"]): r for r in res["rows"]}
  assert len(rows) == 4 and res["gallery"]["talking_head_a.mp4"] >= 1
  # The attack brings back what pixelation took from the authorized models...
  assert rows[("pixelate_10", "attacked")]["iou"] > rows[("pixelate_10", "obfuscated")]["iou"] + 0.3
  # ...and coarser pixelation hides more identity than finer pixelation.
  assert rows[("pixelate_10", "obfuscated")]["reid_same_frame"] <= rows[("pixelate_30", "obfuscated")]["reid_same_frame"]
  assert "lower is better" in open(os.path.join(out, "report.md")).read()
