"""The one angle function (gaze error, DiffScore's gaze term) on known angles, and the
metrics' refusal of inputs they cannot score."""

import math

import numpy as np
import pytest

from drsf_jax.evaluation import metrics
from drsf_jax.geometry import gaze_vectors


def _face(box, vector):
  return {"box": box, "score": 1.0, "landmarks5": [[10.0, 10.0], [20.0, 10.0], [15.0, 15.0], [11.0, 20.0],
                                                    [19.0, 20.0]],
          "landmarks68": None, "landmarks_source": "5", "head_pose": None,
          "gaze": {"pitch_yaw": [0.0, 0.0], "vector": vector}}


@pytest.mark.parametrize("a,b,deg", [
    ([1, 0, 0], [0, 3, 0], 90.0),
    ([1, 0, 0], [2, 2, 0], 45.0),
    ([0, 0, -1], [0, 0, 5], 180.0),
    ([0.3, -0.2, -0.93], [0.3, -0.2, -0.93], 0.0),
    ([0, 0, -1], [0, math.sin(math.radians(30)), -math.cos(math.radians(30))], 30.0),
    ([1, 1, 1], [-1, -1, 1], math.degrees(math.acos(-1 / 3))),
])
def test_known_angles(a, b, deg):
  assert abs(metrics.gaze_angle_deg(a, b) - deg) < 1e-4
  assert abs(float(gaze_vectors.angle_between_deg(np.float32(a), np.float32(b))) - deg) < 1e-4


@pytest.mark.parametrize("rad", [1e-5, 1e-4, 1e-3, 1e-2])
def test_small_angles_keep_float32_precision(rad):
  """atan2 keeps small angles to float32 precision (acos of a dot product near 1 would
  lose them entirely below ~3e-4 rad)."""
  a = np.array([0.2, -0.1, -0.97], np.float32)
  a /= np.linalg.norm(a)
  axis = np.cross(a, [1.0, 0.0, 0.0]).astype(np.float32)
  axis /= np.linalg.norm(axis)
  b = (a * np.cos(rad) + np.cross(axis, a) * np.sin(rad)).astype(np.float32)  # a rotated by rad.
  got = metrics.gaze_angle_deg(a, b)
  assert abs(got - math.degrees(rad)) <= 1e-3 * math.degrees(rad) + 1e-5


def test_batched_angles():
  a = np.array([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 2]], np.float32)
  b = np.array([[0.0, 2, 0], [0, 1, 0], [1, 0, 0], [0, 0, -1]], np.float32)
  np.testing.assert_allclose(np.asarray(gaze_vectors.angle_between_deg(a, b)), [90, 0, 45, 180], atol=1e-4)


def test_zero_or_nonfinite_vector_has_no_angle():
  """A predicted [0, 0, 0] used to score 0 degrees (atan2(0, 0)): a perfect error."""
  got = np.asarray(gaze_vectors.angle_between_deg(np.float32([[0, 0, 0], [0, 0, -1], [np.nan, 0, 1]]),
                                              np.float32([[0, 0, -1], [0, 0, 0], [0, 0, 1]])))
  assert np.isnan(got).all()
  with pytest.raises(ValueError, match="without a direction"):
    metrics.gaze_angle_deg([0, 0, 0], [0, 0, -1])
  ref = [_face([0.0, 0.0, 30.0, 30.0], [0.0, 0.0, -1.0])]
  with pytest.raises(ValueError, match="without a direction"):
    metrics.frame_metrics(ref, [_face([0.0, 0.0, 30.0, 30.0], [0.0, 0.0, 0.0])])


def test_gaze_term_of_diffscore_is_the_angle_in_radians():
  ref = [_face([0.0, 0.0, 30.0, 30.0], [0.0, 0.0, -1.0])]
  pred = [_face([0.0, 0.0, 30.0, 30.0], [0.0, 1.0, -1.0])]
  m = metrics.frame_metrics(ref, pred)
  assert abs(m["gaze_angle_deg"] - 45.0) < 1e-4
  assert abs(m["diffscore"] - math.radians(45.0)) < 1e-6  # IoU 1, same landmarks.


def _doc(width, height, path="v.mp4"):
  return {"video": {"path": path, "width": width, "height": height, "fps": 30.0, "num_frames": 1},
          "frames": [{"frame_id": 0, "faces": [_face([0.0, 0.0, 30.0, 30.0], [0.0, 0.0, -1.0])]}]}


def test_videos_of_different_sizes_are_refused():
  with pytest.raises(ValueError, match="differ in size: reference 64x48, prediction 128x96"):
    metrics.compare(_doc(64, 48), _doc(128, 96))
  assert metrics.compare(_doc(64, 48), _doc(64, 48))["summary"]["iou_mean"] == 1.0
  # A legacy import does not know its video's size: compared as before.
  assert metrics.compare(_doc(1, 1, "<legacy>"), _doc(64, 48))["summary"]["frames"] == 1
