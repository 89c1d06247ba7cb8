"""Detector.detect takes uint8 or [0, 1] float frames, and refuses 0..255 floats."""

import numpy as np
import pytest

from tests.support import astronaut
from drsf_jax.victims import detectors


@pytest.mark.parametrize("name", ["retinaface", "mtcnn"])
def test_uint8_and_float_frames_give_the_same_faces_and_0_255_floats_are_refused(real_weights, name):
  det = detectors.load_detector(name, real_weights)
  img = astronaut()
  a = det.detect(img)  # uint8, one frame
  b = det.detect(img[None].astype(np.float32) / 255.0)
  assert len(a[0]["boxes"]) >= 1
  np.testing.assert_allclose(a[0]["boxes"], b[0]["boxes"], rtol=1e-6)
  # The trap: 0..255 values as float32 were read as a [0, 1] image (garbage, no error).
  with pytest.raises(ValueError, match=r"float frames must be in \[0, 1\]"):
    det.detect(img.astype(np.float32))
  with pytest.raises(ValueError, match="frames must be uint8"):
    det.detect(img.astype(np.int32))


def _upscaled(side: int, n: int = 4):
  from tests.support import read_frames, shared_file
  from drsf_jax.io import samples
  return samples.upscaled_frames(read_frames(shared_file("data", "talking_head_a.mp4"), n), side)


def test_faces_beyond_the_largest_anchor_are_read_as_parts_and_warned(real_weights):
  """The shared RetinaFace-mnet checkpoint (anchors up to 256 px) reads talking_head_a
  upscaled to 384 px (boxes about 220 x 285) as one face, and to 640 px (about 350 x 475)
  as several part boxes in every frame; the warning fires on the second only. MTCNN's
  pyramid reads one face at 640 and has no anchors to warn about."""
  rf = detectors.load_detector("retinaface", real_weights)
  assert detectors.largest_anchor(rf.config) == 256
  small = rf.detect(_upscaled(384))
  assert [len(f["boxes"]) for f in small] == [1] * 4
  assert detectors.oversize_warning("retinaface", rf.config, [f["boxes"] for f in small]) is None
  big = rf.detect(_upscaled(640))
  assert all(len(f["boxes"]) >= 2 for f in big), [len(f["boxes"]) for f in big]  # The misreading.
  msg = detectors.oversize_warning("retinaface", rf.config, [f["boxes"] for f in big])
  assert msg is not None and "in 4 of 4 frames" in msg and "--detector mtcnn" in msg, msg
  mt = detectors.load_detector("mtcnn", real_weights)
  got = mt.detect(_upscaled(640))
  assert [len(f["boxes"]) for f in got] == [1] * 4
  assert detectors.oversize_warning("mtcnn", mt.config, [f["boxes"] for f in got]) is None


def test_oversize_warning_counts_frames_with_a_box_over_the_limit():
  config = {"min_sizes": [[10, 20], [32, 64], [128, 256]]}  # Limit: 1.25 x 256 = 320 px.
  boxes = [np.array([[0, 0, 300, 320]]), np.array([[10, 10, 50, 60], [0, 0, 100, 330]]),
           np.zeros((0, 4))]
  msg = detectors.oversize_warning("retinaface", config, boxes)
  assert msg.startswith("retinaface: faces up to 330 px in 1 of 3 frames"), msg
  assert detectors.oversize_warning("retinaface", config, boxes[:1] + boxes[2:]) is None


def test_infer_logs_the_oversize_warning(real_weights, caplog):
  """What inference.py runs (drsf_jax.infer) says so in its log for 640 px frames only."""
  import logging
  import drsf_jax
  with caplog.at_level(logging.WARNING):
    doc = drsf_jax.infer(_upscaled(640, 2), "retinaface", weights_dir=real_weights)
  assert all(len(f["faces"]) >= 2 for f in doc["frames"])
  assert any("beyond 1.25x its largest anchor (256 px)" in r.getMessage() for r in caplog.records)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    drsf_jax.infer(_upscaled(384, 2), "retinaface", weights_dir=real_weights)
  assert not any("largest anchor" in r.getMessage() for r in caplog.records)
