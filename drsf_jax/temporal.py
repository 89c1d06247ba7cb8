"""Temporal safety: frames where the detector missed reuse neighbouring detections.

A face must never slip through unobfuscated because the detector blinked. For a frame
with no detection, the faces of the nearest frames with detections before and after it
are matched (greedy IoU on boxes) and linearly interpolated in time; a face present on
one side only is copied from the nearest side. Every such frame is reported.
"""

import numpy as np

from drsf_jax import geometry

_KEYS = ("boxes", "landmarks", "scores")


def _empty(d) -> bool:
  return len(d["boxes"]) == 0


def fill_missing(dets: list[dict]) -> tuple[list[dict], list[int], list[int]]:
  """Fills frames without detections from their neighbours.

  Args:
    dets: per frame, dicts with ``boxes (N, 4)``, ``landmarks (N, 5, 2)``, ``scores (N,)``
      and optionally other (N, 4) arrays (e.g. MTCNN's ``onet_boxes``).

  Returns:
    ``(filled, reused, no_face)``: the per-frame detections (filled ones carry
    ``'reused': True``), the indices of frames filled from neighbours, and the indices of
    frames left without any face (only when no frame of the video has one).
  """
  n = len(dets)
  have = [i for i, d in enumerate(dets) if not _empty(d)]
  if not have:
    return list(dets), [], list(range(n))
  out = list(dets)
  reused = []
  hv = np.asarray(have)
  for i, d in enumerate(dets):
    if not _empty(d):
      continue
    k = np.searchsorted(hv, i)
    prev = int(hv[k - 1]) if k > 0 else None
    nxt = int(hv[k]) if k < len(hv) else None
    if prev is None or nxt is None:
      src = dets[prev if prev is not None else nxt]
      filled = {key: np.array(v, copy=True) for key, v in src.items() if isinstance(v, np.ndarray)}
    else:
      filled = _interpolate(dets[prev], dets[nxt], (i - prev) / (nxt - prev))
    filled["reused"] = True
    out[i] = filled
    reused.append(i)
  return out, reused, []


def _interpolate(a: dict, b: dict, t: float) -> dict:
  """Faces of ``a`` matched to ``b`` by IoU and blended at ``t``; unmatched ones copied."""
  iou = geometry.box_iou(a["boxes"], b["boxes"])
  pairs = []
  used_a, used_b = set(), set()
  for flat in np.argsort(-iou, axis=None):
    ia, ib = np.unravel_index(flat, iou.shape)
    if iou[ia, ib] <= 0 or ia in used_a or ib in used_b:
      continue
    pairs.append((ia, ib))
    used_a.add(ia)
    used_b.add(ib)
  pairs.sort()  # Keep the earlier frame's face order.
  keys = [k for k, v in a.items() if isinstance(v, np.ndarray) and k in b]
  rows = {k: [] for k in keys}
  for ia, ib in pairs:
    for k in keys:
      rows[k].append((1 - t) * a[k][ia] + t * b[k][ib])
  nearer, other_used = (a, used_a) if t <= 0.5 else (b, used_b)
  for j in range(len(nearer["boxes"])):
    if j not in other_used:
      for k in keys:
        rows[k].append(nearer[k][j])
  return {k: np.asarray(v, np.float32) for k, v in rows.items()}
