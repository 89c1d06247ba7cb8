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
