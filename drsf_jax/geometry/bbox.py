"""Face boxes: IoU, the largest face of a frame, and the obfuscated square around a face.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the frame as stored (continuous coordinates).
:func:`face_regions` is the square every stage shares: the obfuscation fills it, the
attack may change only it (plus a margin), the privacy metrics and the guard look inside
it. Host-side NumPy.
"""

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU matrix between boxes ``a`` (N, 4) and ``b`` (M, 4) in (x1, y1, x2, y2), continuous."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
  area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
  area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
  union = area_a[:, None] + area_b[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def largest_face(dets) -> int | None:
  """Index of the largest box (by area) in one frame's detections, None when empty."""
  boxes = np.asarray(dets["boxes"]).reshape(-1, 4)
  if boxes.shape[0] == 0:
    return None
  return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))


def face_regions(boxes: np.ndarray, image_hw: tuple[int, int], mask_scale: float = 1.0
                 ) -> np.ndarray:
  """Square obfuscation regions (K, 4) int ``x1, y1, x2, y2`` (exclusive) for boxes (K, 4)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  h_img, w_img = image_hw
  w = boxes[:, 2] - boxes[:, 0]
  h = boxes[:, 3] - boxes[:, 1]
  cx = (boxes[:, 0] + boxes[:, 2]) / 2
  cy = (boxes[:, 1] + boxes[:, 3]) / 2 - 0.12 * h
  side = 200.0 * (w + h) / 195.0 * mask_scale
  x1 = np.clip(np.floor(cx - side / 2), 0, w_img)
  y1 = np.clip(np.floor(cy - side / 2), 0, h_img)
  x2 = np.clip(np.ceil(cx + side / 2), 0, w_img)
  y2 = np.clip(np.ceil(cy + side / 2), 0, h_img)
  return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)
