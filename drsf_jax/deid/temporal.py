"""Temporal safety: faces the detector missed on a frame are taken from nearby frames.

A face must never slip through unobfuscated because the detector blinked. Two cases:

* **Missed frames** (no detection at all): the faces of the nearest frames with
  detections before and after are matched (greedy IoU on boxes, highest first, IoU at
  least :data:`MATCH_MIN_IOU`); matched faces are linearly interpolated in time and every
  unmatched face of *either* side is copied (the union, so a passenger who appears in the
  later frame is covered in the whole gap). Before the first / after the last frame with
  detections, the nearest frame's faces are copied. These frames have no length bound:
  an absent detection is more likely a detector failure than an empty cabin.
* **Partial misses** (some faces found, one missed, e.g. driver found, passenger lost):
  faces are tracked across frames (greedy IoU association of each frame's faces with
  the tracks' last boxes). A track that is lost for at most ``max_gap`` frames
  (:data:`MAX_TRACK_GAP` by default) and found again is interpolated over the frames in
  between. A track first found within ``max_gap`` frames of the video's start, or last
  found within ``max_gap`` frames of its end, is copied to that edge (the video ends
  before the track could have been seen again, so it is assumed still present). A track
  lost for longer is taken to have left the picture.

Every added face carries ``tracked = True`` in a per-face boolean array ``tracked (N,)``
so that :func:`drsf_jax.victims.registry.context_from_detections` prefers faces the detector
really found when choosing which faces to preserve; every added face is obfuscated like
a detected one. Frames whose dicts are not changed are returned as the same objects.
"""

import dataclasses

import numpy as np

from drsf_jax.geometry import bbox

MAX_TRACK_GAP = 15  # Frames (0.6 s at 25 fps) a tracked face may be lost and still be filled.
MATCH_MIN_IOU = 0.1  # Two boxes in different frames are the same face from this IoU up.
TRACKED = "tracked"  # Per-face bool array (N,): True for faces added by this module.


@dataclasses.dataclass
class Filled:
  """Result of :func:`fill`.

  Attributes:
    detections: per frame, the detections with missed faces added (dicts of per-face
      arrays: ``boxes (N, 4)``, ``landmarks (N, 5, 2)``, ``scores (N,)``, the detector's
      other per-face arrays, and ``tracked (N,)`` where a face was added).
    reused: frames without any detection, filled from their neighbours.
    tracked: frames to which tracking added at least one face (may overlap ``reused``:
      a missed frame filled from neighbours can also receive a face tracked through it).
    no_face: every frame when no frame of the video has a detection (nothing can be
      filled), else empty.
  """
  detections: list[dict]
  reused: list[int]
  tracked: list[int]
  no_face: list[int]


def fill(dets: list[dict], max_gap: int = MAX_TRACK_GAP) -> Filled:
  """Adds the faces the detector missed (see the module docstring).

  Args:
    dets: per frame, dicts with ``boxes (N, 4)``, ``landmarks (N, 5, 2)``, ``scores (N,)``
      and optionally other per-face arrays (e.g. MTCNN's ``onet_boxes (N, 4)``). Values
      that are not per-face arrays are not carried into added or changed frames.
    max_gap: longest run of frames a face found in some frames (while others are found)
      may be lost and still be filled; 0 disables the tracking of partial misses.

  Returns:
    A :class:`Filled`.
  """
  if max_gap < 0:
    raise ValueError(f"max_gap must be >= 0, got {max_gap}")
  n = len(dets)
  have = [i for i, d in enumerate(dets) if _count(d)]
  if not have:
    return Filled(list(dets), [], [], list(range(n)))
  keys = _face_keys([dets[i] for i in have])
  out = list(dets)
  reused = []
  hv = np.asarray(have)
  for i, d in enumerate(dets):
    if _count(d):
      continue
    k = np.searchsorted(hv, i)
    prev = int(hv[k - 1]) if k > 0 else None
    nxt = int(hv[k]) if k < len(hv) else None
    if prev is None or nxt is None:
      src = _faces(dets[prev if prev is not None else nxt], keys)
      filled = {key: v.copy() for key, v in src.items()}
    else:
      filled = _union(_faces(dets[prev], keys), _faces(dets[nxt], keys), (i - prev) / (nxt - prev), keys)
    filled[TRACKED] = np.ones(len(filled["boxes"]), bool)
    out[i] = filled
    reused.append(i)
  out, tracked = _track(out, keys, max_gap) if max_gap > 0 else (out, [])
  return Filled(out, reused, tracked, [])


def fill_missing(dets: list[dict], max_gap: int = MAX_TRACK_GAP) -> tuple[list[dict], list[int], list[int]]:
  """:func:`fill` as ``(detections, reused, no_face)``, for callers that report no tracking."""
  f = fill(dets, max_gap)
  return f.detections, f.reused, f.no_face


# ---- helpers ----------------------------------------------------------------------------

def _count(d: dict) -> int:
  return len(np.asarray(d["boxes"]).reshape(-1, 4))


def _face_keys(dets: list[dict]) -> list[str]:
  """The per-face array keys (first dimension = number of faces) every frame has."""
  keys = None
  for d in dets:
    n = _count(d)
    ks = {k for k, v in d.items()
          if k != TRACKED and isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n}
    keys = ks if keys is None else keys & ks
  missing = {"boxes", "landmarks", "scores"} - keys
  if missing:
    raise ValueError(f"detections lack per-face arrays {sorted(missing)}")
  return sorted(keys)


def _faces(d: dict, keys: list[str]) -> dict:
  """The per-face arrays of one frame (float32, ``tracked`` kept as bool)."""
  out = {k: np.asarray(d[k], np.float32) for k in keys}
  out[TRACKED] = np.asarray(d.get(TRACKED, np.zeros(_count(d), bool)), bool)
  return out


def _match(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
  """Greedy one-to-one matching of boxes ``a`` and ``b``, highest IoU first."""
  if len(a) == 0 or len(b) == 0:
    return []
  iou = bbox.box_iou(a, b)
  pairs, used_a, used_b = [], set(), set()
  for flat in np.argsort(-iou, axis=None, kind="stable"):
    ia, ib = (int(x) for x in np.unravel_index(flat, iou.shape))
    if iou[ia, ib] < MATCH_MIN_IOU:
      break
    if ia in used_a or ib in used_b:
      continue
    pairs.append((ia, ib))
    used_a.add(ia)
    used_b.add(ib)
  return sorted(pairs)


def _union(a: dict, b: dict, t: float, keys: list[str]) -> dict:
  """Faces of ``a`` and ``b``: matched ones blended at ``t``, the others copied."""
  pairs = _match(a["boxes"], b["boxes"])
  rows = {k: [] for k in keys}
  for ia, ib in pairs:
    for k in keys:
      rows[k].append((1 - t) * a[k][ia] + t * b[k][ib])
  for side, used in ((a, {p[0] for p in pairs}), (b, {p[1] for p in pairs})):
    for j in range(len(side["boxes"])):
      if j not in used:
        for k in keys:
          rows[k].append(side[k][j])
  return {k: np.asarray(v, np.float32).reshape((len(v),) + a[k].shape[1:]) for k, v in rows.items()}


def _track(frames: list[dict], keys: list[str], max_gap: int) -> tuple[list[dict], list[int]]:
  """Adds tracked faces lost for at most ``max_gap`` frames; returns frames and the
  indices of those that received a face."""
  n = len(frames)
  faces = [_faces(d, keys) for d in frames]
  tracks: list[list[tuple[int, int]]] = []  # Per track: (frame, face index) in time order.
  for t, f in enumerate(faces):
    active = [j for j, tr in enumerate(tracks) if t - tr[-1][0] - 1 <= max_gap]
    last = np.asarray([faces[tracks[j][-1][0]]["boxes"][tracks[j][-1][1]] for j in active],
                      np.float32).reshape(-1, 4)
    matched = set()
    for ia, ib in _match(last, f["boxes"]):
      tracks[active[ia]].append((t, ib))
      matched.add(ib)
    tracks.extend([[(t, j)] for j in range(len(f["boxes"])) if j not in matched])

  added: dict[int, list[dict]] = {}
  for tr in tracks:
    for (t0, j0), (t1, j1) in zip(tr, tr[1:]):
      for t in range(t0 + 1, t1):
        w = (t - t0) / (t1 - t0)
        added.setdefault(t, []).append(
            {k: (1 - w) * faces[t0][k][j0] + w * faces[t1][k][j1] for k in keys})
    (f0, j0), (f1, j1) = tr[0], tr[-1]
    if 0 < f0 <= max_gap:
      for t in range(f0):
        added.setdefault(t, []).append({k: faces[f0][k][j0] for k in keys})
    if 0 < n - 1 - f1 <= max_gap:
      for t in range(f1 + 1, n):
        added.setdefault(t, []).append({k: faces[f1][k][j1] for k in keys})

  out = list(frames)
  for t, extra in added.items():
    f = faces[t]
    d = {k: np.concatenate([f[k], np.asarray([e[k] for e in extra], np.float32)]) for k in keys}
    d[TRACKED] = np.concatenate([f[TRACKED], np.ones(len(extra), bool)])
    out[t] = d
  return out, sorted(added)
