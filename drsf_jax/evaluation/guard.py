"""Privacy guard: checks a written output against its input before it is declared done.

The de-identification pipeline trusts nothing it cannot measure on the decoded file. For
every face that was obfuscated (every box of the filled detections, every frame), the
guard compares the decoded output with the original inside the face box:

* **Change statistic** (every face of every frame): ``mean |output - original|`` over the
  box's pixels and channels, divided by the standard deviation of the original box
  (scale-free: a dark, low-contrast face is judged like a bright one). The face fails
  below :data:`MAD_THRESHOLD`. Boxes whose original std is under
  :data:`FEATURELESS_STD` (a flat patch: nothing to identify, nothing to change) are
  counted, not judged.
* **Independent recogniser** (a sample of :data:`DLIB_SAMPLE_FRAMES` frames, up to
  :data:`DLIB_MAX_FACES` faces): dlib's face-recognition ResNet (``drsf_jax.evaluation.privacy``),
  a model the attack never saw, embeds the original and the output at the original box.
  A distance under :data:`DLIB_MIN_DISTANCE` means the recogniser sees the same image
  of the face: the face fails. Distances under dlib's same-person threshold (0.6) are
  recorded as ``reidentifiable_frames`` (a privacy warning, not a failure: the weak
  levels that ``scripts/report.py`` measures, e.g. ``pixelate_30``, are re-identifiable
  by design). Without dlib installed (the ``privacy`` extra) this part is skipped and
  the result says so; the change statistic always runs.

Thresholds, measured on 8 frames of each shared talking-head video (mtcnn boxes,
256 px regions; change statistic min..max over faces, dlib distance):

==============================  ==============  ============
setting                          change          dlib
==============================  ==============  ============
identity                         0               0
gaussian_3 / blur_3              0.021 / 0.027   0.03-0.06
blur_5 / gaussian_9              0.048-0.062     0.10-0.16
pixelate_80                      0.072-0.086     0.11-0.14
pixelate_50                      0.110-0.127     0.29-0.31
pixelate_30                      0.162-0.191     0.46-0.55
pixelate_10 + attack (default)   0.300-0.403     0.63-0.72
==============================  ==============  ============

:data:`MAD_THRESHOLD` = 0.10 lies above every blur up to 9 px and ``pixelate_80``, and
below ``pixelate_30`` (the weakest level the project's report measures) by a factor 1.6
and the defaults by 3; :data:`DLIB_MIN_DISTANCE` = 0.2 lies above all those weak
settings but ``pixelate_50`` and below ``pixelate_30`` by a factor 2.3. The statistic
counts the attack's perturbation (at most ``eps`` per pixel) as change; the recogniser
check does not depend on it.

Host-side NumPy; frames uint8 RGB (H, W, 3).
"""

import os
import time
from typing import Any, Iterable, Iterator

import numpy as np

MAD_THRESHOLD = 0.10
DLIB_MIN_DISTANCE = 0.2
REID_DISTANCE = 0.6
FEATURELESS_STD = 3.0 / 255.0
DLIB_SAMPLE_FRAMES = 3
DLIB_MAX_FACES = 6


class PrivacyGuardError(ValueError):
  """The output failed the guard (one-line message; ``result`` holds the details)."""

  def __init__(self, message: str, result: dict):
    super().__init__(message)
    self.result = result


def _box_slices(box, hw: tuple[int, int]):
  h, w = hw
  b = np.asarray(box, np.float64).reshape(4)
  if not np.all(np.isfinite(b)):
    return None
  x1, y1 = int(np.clip(np.floor(b[0]), 0, w)), int(np.clip(np.floor(b[1]), 0, h))
  x2, y2 = int(np.clip(np.ceil(b[2]), 0, w)), int(np.clip(np.ceil(b[3]), 0, h))
  if x2 <= x1 or y2 <= y1:
    return None
  return slice(y1, y2), slice(x1, x2)


def face_change(original: np.ndarray, output: np.ndarray, box) -> tuple[float, float] | None:
  """``(mean |output - original| / std(original), std(original))`` inside ``box``.

  Both images uint8 RGB of the same shape; values on the [0, 1] scale. None when the box
  has no pixels in the frame. The ratio is NaN when the box is featureless (std below
  :data:`FEATURELESS_STD`).
  """
  sl = _box_slices(box, original.shape[:2])
  if sl is None:
    return None
  o = original[sl].astype(np.float32) / 255.0
  q = output[sl].astype(np.float32) / 255.0
  sd = float(o.std())
  mad = float(np.abs(q - o).mean())
  return (mad / sd if sd >= FEATURELESS_STD else float("nan")), sd


def _sample_frames(dets: list[dict], k: int) -> list[int]:
  with_face = [i for i, d in enumerate(dets) if len(np.asarray(d["boxes"]).reshape(-1, 4))]
  if not with_face or k <= 0:
    return []
  picks = np.unique(np.round(np.linspace(0, len(with_face) - 1, min(k, len(with_face)))).astype(int))
  return [with_face[i] for i in picks]


def _ranges(idx: Iterable[int]) -> str:
  idx = sorted(set(int(i) for i in idx))
  out, start = [], None
  for j, i in enumerate(idx):
    if start is None:
      start = i
    if j + 1 == len(idx) or idx[j + 1] != i + 1:
      out.append(str(start) if start == i else f"{start}-{i}")
      start = None
  return ", ".join(out)


def check_frames(originals: Iterable[np.ndarray], outputs: Iterable[np.ndarray],
                 dets: list[dict], dlib_frames: int = DLIB_SAMPLE_FRAMES) -> dict[str, Any]:
  """Runs the guard over paired frames (streamed: only the sampled frames are kept).

  Args:
    originals: the input's frames, uint8 RGB.
    outputs: the decoded output's frames, uint8 RGB, same count and size.
    dets: per frame, a dict with ``boxes`` (K, 4): every face that was obfuscated.
    dlib_frames: how many frames (evenly spaced among those with faces) the recogniser
      checks; 0 skips it.

  Returns:
    A JSON-safe dict: ``passed``, ``reasons`` (one line each), ``failing_frames``,
    the change statistic's ``threshold``, ``faces_checked``, ``faces_featureless``,
    ``min``/``median``/``max``, and ``dlib`` (``status``, ``frames``, ``distances``,
    ``min_distance``, ``failing_frames``, ``reidentifiable_frames``).
  """
  t0 = time.time()
  sample = set(_sample_frames(dets, dlib_frames))
  kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
  stats, failing, failing_mad, featureless, n = [], set(), set(), 0, 0
  reasons = []
  it_o, it_q = iter(originals), iter(outputs)
  while True:
    o = next(it_o, None)
    q = next(it_q, None)
    if o is None or q is None:
      if (o is None) != (q is None) or n != len(dets):
        reasons.append(f"the output has {'more' if o is None and q is not None else 'fewer'} "
                       f"frames than the input's {len(dets)} checked frames")
      break
    if o.shape != q.shape:
      reasons.append(f"frame {n}: output size {q.shape[1]}x{q.shape[0]} differs from the input's "
                     f"{o.shape[1]}x{o.shape[0]}")
      failing.add(n)
      n += 1
      continue
    if n < len(dets):
      for box in np.asarray(dets[n]["boxes"], np.float64).reshape(-1, 4):
        r = face_change(o, q, box)
        if r is None:
          continue
        if not np.isfinite(r[0]):
          featureless += 1
          continue
        stats.append(r[0])
        if r[0] < MAD_THRESHOLD:
          failing_mad.add(n)
      if n in sample:
        kept[n] = (o, q)
    n += 1
  arr = np.asarray(stats, np.float64)
  bad = sorted(failing_mad)
  if bad:
    reasons.append(f"frames {_ranges(bad)} ({len(bad)} of {n}): a face changed by less than "
                   f"{MAD_THRESHOLD:g} of its own std (min {arr.min():.3f})")
  dlib_res = _dlib_check(kept, dets)
  if dlib_res["failing_frames"]:
    reasons.append(f"dlib's recogniser sees the same face (distance < {DLIB_MIN_DISTANCE:g}) "
                   f"in sampled frames {_ranges(dlib_res['failing_frames'])}")
  fail_frames = sorted(failing | failing_mad | set(dlib_res["failing_frames"]))
  return {
      "passed": not reasons,
      "reasons": reasons,
      "failing_frames": fail_frames,
      "frames_checked": n,
      "statistic": "mean |output - original| / std(original) inside each face box",
      "threshold": MAD_THRESHOLD,
      "faces_checked": int(arr.size),
      "faces_featureless": featureless,
      "min": float(arr.min()) if arr.size else None,
      "median": float(np.median(arr)) if arr.size else None,
      "max": float(arr.max()) if arr.size else None,
      "dlib": dlib_res,
      "time_s": time.time() - t0,
  }


def _dlib_check(kept: dict[int, tuple[np.ndarray, np.ndarray]], dets: list[dict]) -> dict[str, Any]:
  res: dict[str, Any] = {"status": "checked", "min_distance": DLIB_MIN_DISTANCE,
                         "reid_threshold": REID_DISTANCE, "frames": [], "distances": [],
                         "failing_frames": [], "reidentifiable_frames": []}
  if not kept:
    res["status"] = "skipped: no face to check"
    return res
  from drsf_jax.evaluation import privacy  # pylint: disable=import-outside-toplevel
  try:
    privacy.dlib_models()
  except ImportError as e:
    res["status"] = f"skipped: {e}"
    return res
  faces = []
  for i in sorted(kept):
    for box in np.asarray(dets[i]["boxes"], np.float64).reshape(-1, 4):
      r = face_change(kept[i][0], kept[i][1], box)
      if r is not None and np.isfinite(r[0]):
        faces.append(((box[2] - box[0]) * (box[3] - box[1]), i, box))
  faces.sort(key=lambda f: (f[1], -f[0]))
  per_frame = max(1, DLIB_MAX_FACES // max(1, len(kept)))
  chosen, count = [], {}
  for area, i, box in faces:
    if count.get(i, 0) < per_frame:
      chosen.append((i, box))
      count[i] = count.get(i, 0) + 1
  for i, box in chosen:
    e0 = privacy.embed(kept[i][0], box)
    e1 = privacy.embed(kept[i][1], box)
    if e0 is None or e1 is None:
      continue
    d = float(np.linalg.norm(e1 - e0))
    res["frames"].append(i)
    res["distances"].append(d)
    if d < DLIB_MIN_DISTANCE:
      res["failing_frames"].append(i)
    if d < REID_DISTANCE:
      res["reidentifiable_frames"].append(i)
  for k in ("failing_frames", "reidentifiable_frames"):
    res[k] = sorted(set(res[k]))
  return res


def read_frames(path: str, max_frames: int | None = None) -> Iterator[np.ndarray]:
  """uint8 RGB frames of a video file or of a directory of numbered PNGs (``png-seq``)."""
  from drsf_jax.io import video  # pylint: disable=import-outside-toplevel
  yield from video.VideoReader(path, max_frames=max_frames)


def check_video(input_path: str, output_path: str, dets: list[dict],
                max_frames: int | None = None, dlib_frames: int = DLIB_SAMPLE_FRAMES) -> dict[str, Any]:
  """:func:`check_frames` on the first ``len(dets)`` frames of two files (decoded again)."""
  n = len(dets) if max_frames is None else min(len(dets), max_frames)
  return check_frames(read_frames(input_path, n), read_frames(output_path, n + 1), dets[:n],
                      dlib_frames)


def unsafe_path(path: str) -> str:
  """``NAME.UNSAFE.ext`` beside ``path`` (``DIR.UNSAFE`` for a PNG-sequence directory)."""
  base, ext = os.path.splitext(path.rstrip(os.sep))
  return f"{base}.UNSAFE{ext}"


def failure_message(result: dict, output_path: str, kept_at: str | None) -> str:
  """The one-line error for a failed guard."""
  where = (f"the output was left at {kept_at} with its report beside it" if kept_at
           else "nothing was written")
  return (f"privacy guard: {output_path} is not de-identified: {'; '.join(result['reasons'])}; "
          f"{where}")


def quarantine(video_tmp: str, report: dict, output_path: str, report_path: str,
               overwrite: bool = False):
  """Renames a failed run's temporary output to ``NAME.UNSAFE.ext`` and raises.

  The report (with the guard's result under ``privacy_guard`` and the message under
  ``error``) goes to ``REPORT.UNSAFE.json``. Nothing is ever put at ``output_path``. If
  an ``UNSAFE`` file is already there (and not ``overwrite``), the output is deleted
  instead of replacing it.

  Raises:
    PrivacyGuardError: always (a ``ValueError``: ``error: ...`` and exit 1 in the CLI).
  """
  from drsf_jax.io import outputs  # pylint: disable=import-outside-toplevel
  from drsf_jax.io import video  # pylint: disable=import-outside-toplevel
  result = report["privacy_guard"]
  bad_video = unsafe_path(os.path.abspath(output_path))
  bad_report = os.path.splitext(os.path.abspath(report_path))[0] + ".UNSAFE.json"
  if not overwrite and (os.path.lexists(bad_video) or os.path.lexists(bad_report)):
    outputs.discard(video_tmp)
    raise PrivacyGuardError(failure_message(result, output_path, None) +
                            f" ({os.path.basename(bad_video)} already exists)", result)
  msg = failure_message(result, output_path, bad_video)
  report = {**report, "output": bad_video, "error": msg}
  report_tmp = video.stage_json(bad_report, report)
  outputs.commit([(report_tmp, bad_report), (video_tmp, bad_video)], overwrite=overwrite)
  raise PrivacyGuardError(msg, result)
