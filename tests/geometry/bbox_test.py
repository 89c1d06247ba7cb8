"""Box IoU and the obfuscated square around a face."""

import numpy as np

from drsf_jax.geometry import bbox


def test_box_iou():
  a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], float)
  b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 5, 10]], float)
  iou = bbox.box_iou(a, b)
  np.testing.assert_allclose(iou[0], [1.0, 0.0, 0.5])
  np.testing.assert_allclose(iou[1, 0], 25 / 175)
