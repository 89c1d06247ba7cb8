"""Missed detections are filled from nearby frames, so no face goes unobfuscated."""

import numpy as np
import pytest

from drsf_jax.deid import temporal
from drsf_jax.victims import registry as victims

DRIVER = [10, 10, 50, 60]
PASSENGER = [100, 20, 140, 70]


def _det(boxes, extra=False):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  n = len(boxes)
  lm = np.stack([boxes[:, :2] + 0.3 * (boxes[:, 2:] - boxes[:, :2])] * 5, axis=1) if n else np.zeros((0, 5, 2))
  d = {"boxes": boxes, "landmarks": lm.astype(np.float32), "scores": np.ones(n, np.float32)}
  if extra:  # As MTCNN: the boxes its last stage saw.
    d["onet_boxes"] = boxes - 1
  return d


def _has(d, box):
  return any(np.allclose(b, box) for b in d["boxes"])


def test_gaps_are_interpolated_between_neighbours_and_reported():
  dets = [_det([[10, 10, 50, 60], PASSENGER]), _det([]), _det([]),
          _det([[16, 13, 56, 63], PASSENGER]), _det([[16, 13, 56, 63], PASSENGER])]
  f = temporal.fill(dets)
  assert f.reused == [1, 2] and f.tracked == [] and f.no_face == []
  np.testing.assert_allclose(f.detections[1]["boxes"], [[12, 11, 52, 61], PASSENGER])
  np.testing.assert_allclose(f.detections[2]["boxes"], [[14, 12, 54, 62], PASSENGER])
  np.testing.assert_allclose(f.detections[1]["landmarks"][0], (2 * dets[0]["landmarks"][0] + dets[3]["landmarks"][0]) / 3)
  assert f.detections[1]["tracked"].tolist() == [True, True]
  assert all(f.detections[i] is dets[i] for i in (0, 3, 4))  # Untouched frames: same objects.
  filled, reused, none = temporal.fill_missing(dets)  # The three-value form.
  assert reused == [1, 2] and none == [] and len(filled) == 5
  np.testing.assert_array_equal(filled[2]["boxes"], f.detections[2]["boxes"])


def test_edges_copy_the_nearest_and_faceless_videos_are_reported():
  dets = [_det([]), _det([[5, 5, 25, 25]]), _det([])]
  f = temporal.fill(dets)
  assert f.reused == [0, 2] and f.no_face == []
  np.testing.assert_array_equal(f.detections[0]["boxes"], dets[1]["boxes"])
  np.testing.assert_array_equal(f.detections[2]["boxes"], dets[1]["boxes"])
  f = temporal.fill([_det([]), _det([])])
  assert f.reused == [] and f.tracked == [] and f.no_face == [0, 1]


@pytest.mark.parametrize("appears", [True, False])
def test_a_face_on_either_side_of_a_missed_run_covers_every_frame_of_it(appears):
  """A passenger seen only after (appearing) or only before (lost) a run of missed frames
  is copied into all of it, not only into the frames nearer that side."""
  one, two = _det([DRIVER]), _det([DRIVER, PASSENGER])
  dets = [one, _det([]), _det([]), _det([]), two] if appears else [two, _det([]), _det([]), _det([]), one]
  f = temporal.fill(dets)
  assert f.reused == [1, 2, 3]
  for i in (1, 2, 3):
    assert len(f.detections[i]["boxes"]) == 2
    assert _has(f.detections[i], DRIVER) and _has(f.detections[i], PASSENGER), i


def test_faces_that_do_not_overlap_are_not_blended():
  """Two different faces (IoU below the match threshold) are both copied, never averaged
  into a box between them that covers neither."""
  a, b = [0, 0, 40, 40], [200, 0, 240, 40]
  f = temporal.fill([_det([a]), _det([]), _det([b])])
  assert len(f.detections[1]["boxes"]) == 2
  assert _has(f.detections[1], a) and _has(f.detections[1], b)


def test_a_face_lost_while_another_is_found_is_tracked_and_reported():
  moving = [[100 + 4 * t, 20, 140 + 4 * t, 70] for t in range(8)]
  lost = (3, 4, 5)
  dets = [_det([DRIVER] if t in lost else [DRIVER, moving[t]], extra=True) for t in range(8)]
  f = temporal.fill(dets)
  assert f.reused == [] and f.tracked == [3, 4, 5]
  for t in lost:
    d = f.detections[t]
    assert len(d["boxes"]) == 2 and d["tracked"].tolist() == [False, True]
    np.testing.assert_allclose(d["boxes"][1], moving[t], atol=1e-4)  # Interpolated in time.
    np.testing.assert_allclose(d["onet_boxes"][1], np.asarray(moving[t]) - 1, atol=1e-4)
  assert all(f.detections[t] is dets[t] for t in range(8) if t not in lost)


def test_the_tracking_gap_is_bounded():
  def video(gap):
    return [_det([DRIVER] if 2 <= t < 2 + gap else [DRIVER, PASSENGER]) for t in range(gap + 4)]
  assert temporal.fill(video(3), max_gap=3).tracked == [2, 3, 4]
  f = temporal.fill(video(4), max_gap=3)  # Lost for longer: taken to have left.
  assert f.tracked == [] and all(len(d["boxes"]) == 1 for d in f.detections[2:6])
  assert temporal.fill(video(3), max_gap=0).tracked == []
  assert temporal.MAX_TRACK_GAP == 15 and temporal.fill(video(15)).tracked == list(range(2, 17))
  with pytest.raises(ValueError, match="max_gap"):
    temporal.fill(video(3), max_gap=-1)


def test_faces_near_the_video_edges_are_carried_to_the_edge():
  """Found first within max_gap frames of the start, or last within max_gap of the end:
  the video ends before the face could be seen again, so it is kept to the edge."""
  def video(first, last, n=12):
    return [_det([DRIVER, PASSENGER] if first <= t <= last else [DRIVER]) for t in range(n)]
  assert temporal.fill(video(3, 8), max_gap=3).tracked == [0, 1, 2, 9, 10, 11]
  assert temporal.fill(video(4, 7), max_gap=3).tracked == []
  f = temporal.fill(video(3, 8), max_gap=3)
  np.testing.assert_array_equal(f.detections[0]["boxes"], [DRIVER, PASSENGER])


def test_the_victim_context_prefers_found_faces_and_rejects_non_array_keys():
  big = [0, 0, 200, 200]  # The tracked face is larger than the one the detector found.
  dets = [_det([DRIVER, big], extra=True), _det([DRIVER], extra=True), _det([DRIVER, big], extra=True)]
  f = temporal.fill(dets)
  assert f.tracked == [1]
  ctx = victims.context_from_detections(f.detections, 1)
  np.testing.assert_array_equal(ctx.boxes[:, 0], [big, DRIVER, big])  # Largest first, found before tracked.
  np.testing.assert_array_equal(ctx.extra["onet_boxes"][1, 0], np.asarray(DRIVER) - 1)
  ctx = victims.context_from_detections(f.detections, 2)
  np.testing.assert_array_equal(ctx.boxes[1], [DRIVER, big])
  assert ctx.valid.all()
  bad = dict(dets[1], reused=True)
  with pytest.raises(ValueError, match="frame 0: 'reused' must be a per-face"):
    victims.context_from_detections([bad], 1)
