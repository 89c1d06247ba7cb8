"""Missed detections are filled from neighbouring frames, so no face goes unobfuscated."""

import numpy as np

from drsf_jax import temporal


def _det(boxes):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  n = len(boxes)
  lm = np.stack([boxes[:, :2] + 0.3 * (boxes[:, 2:] - boxes[:, :2])] * 5, axis=1) if n else np.zeros((0, 5, 2))
  return {"boxes": boxes, "landmarks": lm.astype(np.float32), "scores": np.ones(n, np.float32)}


def test_gaps_are_interpolated_between_neighbours_and_reported():
  dets = [_det([[10, 10, 50, 60], [100, 20, 140, 70]]), _det([]), _det([]),
          _det([[16, 13, 56, 63], [100, 20, 140, 70]]), _det([[20, 20, 60, 70]])]
  filled, reused, none = temporal.fill_missing(dets)
  assert reused == [1, 2] and none == []
  np.testing.assert_allclose(filled[1]["boxes"][0], [12, 11, 52, 61])
  np.testing.assert_allclose(filled[2]["boxes"][0], [14, 12, 54, 62])
  assert len(filled[1]["boxes"]) == 2 and filled[1]["reused"]
  assert filled[0] is dets[0] and "reused" not in filled[3]


def test_edges_copy_the_nearest_and_faceless_videos_are_reported():
  dets = [_det([]), _det([[5, 5, 25, 25]]), _det([])]
  filled, reused, none = temporal.fill_missing(dets)
  assert reused == [0, 2] and none == []
  np.testing.assert_array_equal(filled[0]["boxes"], dets[1]["boxes"])
  filled, reused, none = temporal.fill_missing([_det([]), _det([])])
  assert reused == [] and none == [0, 1]


def test_unmatched_faces_come_from_the_nearer_side():
  dets = [_det([[0, 0, 10, 10]]), _det([]), _det([]), _det([]), _det([[0, 0, 10, 10], [50, 50, 70, 70]])]
  filled, _, _ = temporal.fill_missing(dets)
  assert len(filled[1]["boxes"]) == 1  # Nearer to frame 0, which has one face.
  assert len(filled[3]["boxes"]) == 2  # Nearer to frame 4: the passenger appears too.
