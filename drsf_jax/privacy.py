"""Privacy metrics for de-identified video, measured with independent face models.

The attack (``drsf_jax.attacks``) is tuned against the project's own detectors and
landmark/gaze victims. To measure privacy honestly we use models it never saw and that
the pipeline does not ship:

* **dlib HOG face detector** (``dlib.get_frontal_face_detector()``).
* **scikit-image's LBP frontal-face cascade** (``skimage.feature.Cascade`` with
  ``skimage.data.lbp_frontal_face_cascade_filename()``, the OpenCV LBP cascade file).
  This replaces OpenCV's Haar cascade: the OpenCV 5 wheel used here has no
  ``cv2.CascadeClassifier``.
* **dlib face-recognition ResNet** (``dlib_face_recognition_resnet_model_v1.dat``, 128-d
  embeddings, same-person threshold 0.6 by dlib's convention) on the 68-point landmarks
  of ``shape_predictor_68_face_landmarks.dat``; both files come from the
  ``face_recognition_models`` package.

Identity leakage is measured at the ORIGINAL face location: the de-identified frame is
embedded inside the box found on the original frame, so a face that the detectors no
longer find is still checked for residual identity.

Host-side NumPy code. Images are uint8 RGB (H, W, 3); boxes are float ``x1, y1, x2, y2``
with exclusive right/bottom edges. Install the models with
``pip install dlib-bin face_recognition_models``.
"""

import functools
import importlib.util
import os
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

_INSTALL_HINT = "privacy metrics need dlib and its models: pip install dlib-bin face_recognition_models"
IOU_THRESHOLD = 0.3
DETECTORS = ("dlib_hog", "skimage_lbp")


class DlibModels(NamedTuple):
  detector: Any
  shape_predictor: Any
  face_rec: Any


def _dlib():
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_INSTALL_HINT) from e
  return dlib


def _model_dir() -> str:
  # The package's __init__ imports pkg_resources, which may be absent: locate its files
  # without importing it.
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(_INSTALL_HINT)
  return os.path.join(list(spec.submodule_search_locations)[0], "models")


@functools.lru_cache(maxsize=None)
def dlib_models() -> DlibModels:
  """Loads (once) dlib's HOG detector, 68-point shape predictor and recognition ResNet."""
  dlib = _dlib()
  d = _model_dir()
  paths = [os.path.join(d, f) for f in ("shape_predictor_68_face_landmarks.dat",
                                        "dlib_face_recognition_resnet_model_v1.dat")]
  for p in paths:
    if not os.path.isfile(p):
      raise ImportError(f"{p} missing; {_INSTALL_HINT}")
  return DlibModels(dlib.get_frontal_face_detector(), dlib.shape_predictor(paths[0]),
                    dlib.face_recognition_model_v1(paths[1]))


@functools.lru_cache(maxsize=None)
def _lbp_cascade():
  from skimage import data  # pylint: disable=g-import-not-at-top
  from skimage.feature import Cascade  # pylint: disable=g-import-not-at-top
  return Cascade(data.lbp_frontal_face_cascade_filename())


def _rgb_u8(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
  return np.ascontiguousarray(image)


def detect_dlib(image: np.ndarray, upsample: int = 1) -> np.ndarray:
  """dlib HOG face boxes (N, 4) float32 ``x1, y1, x2, y2`` on a uint8 RGB image."""
  rects = dlib_models().detector(_rgb_u8(image), upsample)
  return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                  np.float32).reshape(-1, 4)


def detect_lbp(image: np.ndarray, scale_factor: float = 1.2, step_ratio: float = 1.0,
               min_size: tuple[int, int] = (32, 32), min_neighbor_number: int = 4
               ) -> np.ndarray:
  """scikit-image LBP-cascade face boxes (N, 4) float32 ``x1, y1, x2, y2``.

  Uses ``skimage.feature.Cascade`` with the OpenCV LBP frontal-face cascade bundled in
  scikit-image (the stand-in for OpenCV's Haar cascade, missing from OpenCV 5).
  """
  image = _rgb_u8(image)
  h, w = image.shape[:2]
  dets = _lbp_cascade().detect_multi_scale(
      img=image, scale_factor=scale_factor, step_ratio=step_ratio, min_size=min_size,
      max_size=(h, w), min_neighbor_number=min_neighbor_number)
  return np.array([[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in dets],
                  np.float32).reshape(-1, 4)


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
  """IoU (N,) of boxes (N, 4) with one box (4,)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  box = np.asarray(box, np.float64)
  ix = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
  iy = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
  inter = ix * iy
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  union = area(boxes) + area(box) - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _valid_box(box) -> bool:
  if box is None:
    return False
  box = np.asarray(box, np.float64).reshape(-1)
  return box.size == 4 and bool(np.all(np.isfinite(box))) and box[2] > box[0] and box[3] > box[1]


def embed(image: np.ndarray, box: Optional[np.ndarray]) -> Optional[np.ndarray]:
  """128-d dlib face descriptor of ``image`` inside ``box``, or None.

  The 68-point shape predictor runs on the given box (no detection), then the
  recognition ResNet on the aligned chip. None when the box is missing/NaN/degenerate.
  """
  if not _valid_box(box):
    return None
  dlib = _dlib()
  image = _rgb_u8(image)
  m = dlib_models()
  x1, y1, x2, y2 = (int(round(v)) for v in np.asarray(box, np.float64).reshape(4))
  rect = dlib.rectangle(x1, y1, x2 - 1, y2 - 1)
  shape = m.shape_predictor(image, rect)
  return np.asarray(m.face_rec.compute_face_descriptor(image, shape), np.float32)


def gallery_from_frames(frames: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
  """Embeddings of ``frames`` (T, H, W, 3) uint8 at ``boxes`` (T, 4); frames without one skipped."""
  out = []
  for frame, box in zip(frames, np.asarray(boxes, np.float64).reshape(-1, 4)):
    e = embed(frame, box)
    if e is not None:
      out.append(e)
  return out


def nearest_identity(embedding: np.ndarray, gallery: dict[str, Sequence[np.ndarray]]
                     ) -> tuple[Optional[str], float]:
  """(identity, distance) of the gallery identity with the smallest min Euclidean distance."""
  best, best_d = None, float("inf")
  for name, embs in gallery.items():
    if len(embs) == 0:
      continue
    d = float(np.min(np.linalg.norm(np.asarray(embs, np.float32) - embedding[None], axis=1)))
    if d < best_d:
      best, best_d = name, d
  return best, best_d


def _detected(detect, image: np.ndarray, box: np.ndarray) -> bool:
  return bool(np.any(box_iou(detect(image), box) > IOU_THRESHOLD))


def privacy_metrics(originals: np.ndarray, deidentified: np.ndarray, boxes: np.ndarray,
                    gallery: dict[str, Sequence[np.ndarray]], identity: str,
                    threshold: float = 0.6) -> dict[str, Any]:
  """Detection and re-identification rates of de-identified frames vs. their originals.

  Args:
    originals: (T, H, W, 3) uint8 RGB original frames.
    deidentified: (T, H, W, 3) uint8 RGB de-identified frames.
    boxes: (T, 4) the face box of each ORIGINAL frame (``x1, y1, x2, y2``), or a NaN row
      when the frame has no face.
    gallery: identity -> list of (128,) dlib embeddings (see :func:`gallery_from_frames`);
      should include ``identity`` and distractor identities, from frames other than these.
    identity: the true identity of the face in these frames.
    threshold: dlib same-person distance threshold (0.6 by dlib's convention).

  Returns:
    A dict. All rates are fractions of ``frames`` (every frame counts; a frame without an
    original box or without an embedding counts as not detected / not re-identified):
      ``detection_rate``: {``dlib_hog``|``skimage_lbp``: {``original``, ``deidentified``}},
        frames where the detector finds a face with IoU > 0.3 to the original box;
      ``embedding_distance_mean``: mean distance between the de-identified and original
        embedding of the same frame (NaN if none; higher is more private);
      ``reid_rate_same_frame``: frames with that distance < ``threshold``;
      ``rank1_reid_rate``: frames whose de-identified embedding's nearest gallery identity
        is ``identity`` (closed set: some identity is always the nearest, so with K
        gallery identities chance is about 1/K, and a de-identified face that carries no
        identity still lands on whichever identity is the "sink" for such faces);
      ``rank1_reid_rate_open_set``: rank-1 correct AND that nearest distance <
        ``threshold`` (the face would actually be matched, not merely ranked first);
      ``frames``, ``frames_with_face``, ``threshold``, ``lower_is_better`` (True: for the
      rates; ``embedding_distance_mean`` is the exception) and ``per_frame`` (list of dicts).
  """
  originals = np.asarray(originals)
  deidentified = np.asarray(deidentified)
  if originals.shape != deidentified.shape or originals.ndim != 4:
    raise ValueError(f"originals {originals.shape} and deidentified {deidentified.shape} "
                     "must both be (T, H, W, 3)")
  t = originals.shape[0]
  boxes = np.asarray(boxes, np.float64).reshape(t, 4)
  detectors = {"dlib_hog": detect_dlib, "skimage_lbp": detect_lbp}
  per_frame = []
  for i in range(t):
    box = boxes[i]
    rec: dict[str, Any] = {"frame": i, "has_face": _valid_box(box)}
    for name, det in detectors.items():
      for kind, img in (("original", originals[i]), ("deidentified", deidentified[i])):
        rec[f"{name}_{kind}"] = rec["has_face"] and _detected(det, img, box)
    e_orig, e_deid = embed(originals[i], box), embed(deidentified[i], box)
    dist = (float(np.linalg.norm(e_deid - e_orig))
            if e_orig is not None and e_deid is not None else float("nan"))
    rec["distance"] = dist
    rec["reid_same_frame"] = bool(dist < threshold)  # NaN compares False.
    nearest, nearest_d = nearest_identity(e_deid, gallery) if e_deid is not None else (None, float("nan"))
    rec["nearest_identity"], rec["nearest_distance"] = nearest, nearest_d
    rec["reid_rank1"] = nearest == identity
    rec["reid_rank1_open_set"] = rec["reid_rank1"] and bool(nearest_d < threshold)
    per_frame.append(rec)

  def rate(key):
    return float(np.mean([r[key] for r in per_frame])) if t else float("nan")

  dists = [r["distance"] for r in per_frame if np.isfinite(r["distance"])]
  return {
      "frames": t,
      "frames_with_face": int(sum(r["has_face"] for r in per_frame)),
      "threshold": threshold,
      "lower_is_better": True,
      "detection_rate": {name: {kind: rate(f"{name}_{kind}") for kind in ("original", "deidentified")}
                         for name in detectors},
      "embedding_distance_mean": float(np.mean(dists)) if dists else float("nan"),
      "reid_rate_same_frame": rate("reid_same_frame"),
      "rank1_reid_rate": rate("reid_rank1"),
      "rank1_reid_rate_open_set": rate("reid_rank1_open_set"),
      "per_frame": per_frame,
  }
