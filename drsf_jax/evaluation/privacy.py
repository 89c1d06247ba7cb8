"""Privacy metrics for de-identified video, measured with models the attack never saw.

The attack (``drsf_jax.deid.attacks``) is tuned against the project's own detectors and
landmark/gaze victims. To measure privacy honestly we use models it never saw:

* **dlib HOG face detector** (``dlib.get_frontal_face_detector()``).
* **dlib CNN face detector** (MMOD, ``mmod_human_face_detector.dat`` from
  ``face_recognition_models``; slow on a CPU, so :func:`evaluate` runs it on an evenly
  spaced sample of frames, ``CNN_SAMPLE_FRAMES`` by default).
* **scikit-image's LBP frontal-face cascade** (``skimage.feature.Cascade`` with
  ``skimage.data.lbp_frontal_face_cascade_filename()``, the OpenCV LBP cascade file).
  This replaces OpenCV's Haar cascade: the OpenCV 5 wheel used here has no
  ``cv2.CascadeClassifier``.
* **dlib face-recognition ResNet** (``dlib_face_recognition_resnet_model_v1.dat``, 128-d
  embeddings, same-person threshold 0.6 by dlib's convention) on the 68-point landmarks
  of ``shape_predictor_68_face_landmarks.dat``; both files come from the
  ``face_recognition_models`` package.
* The project's own detector that was NOT authorized in the run (MTCNN when RetinaFace
  was authorized and vice versa): passed in as a :class:`FaceDetector` by
  :mod:`drsf_jax.deid.report`.

:func:`evaluate` also plays an **attacker who tries to undo the obfuscation**
(:data:`ATTACKER_PROCESSINGS`: Gaussian blur σ 1 and 2, a 5×5 median filter, downscale
×0.5 and back, JPEG quality 50, and temporal averaging of the face region over N = 8 and
32 frames aligned on the face box) and reports the worst case over them; and measures
identity against a **gallery** of K identities (:class:`Gallery`, :func:`load_gallery`):
closed-set rank-1 beside its chance level 1/K (null with fewer than 2 identities, where it
is 1.0 by construction), mAP, and the anonymity set k of each face.

Identity leakage is measured at the ORIGINAL face location: the de-identified frame is
embedded inside the box found on the original frame, so a face that the detectors no
longer find is still checked for residual identity.

Host-side NumPy code. Images are uint8 RGB (H, W, 3); boxes are float ``x1, y1, x2, y2``
with exclusive right/bottom edges. Install the models with
``pip install dlib-bin face_recognition_models``.
"""

import dataclasses
import functools
import importlib.util
import os
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

from drsf_jax.io.frames import as_uint8_frames

_INSTALL_HINT = "privacy metrics need dlib and its models: pip install dlib-bin face_recognition_models"
IOU_THRESHOLD = 0.3
DETECTORS = ("dlib_hog", "skimage_lbp")
INDEPENDENT_DETECTORS = ("dlib_hog", "dlib_cnn", "skimage_lbp")
CNN_SAMPLE_FRAMES = 4


class DlibModels(NamedTuple):
  detector: Any
  shape_predictor: Any
  face_rec: Any



def _frame_pairs(originals, deidentified, boxes):
  """Validated ``(originals, deidentified, boxes (T, 4) float64)`` of a frame-paired evaluation."""
  originals = as_uint8_frames(originals, "originals")
  deidentified = as_uint8_frames(deidentified, "deidentified")
  if originals.shape != deidentified.shape or originals.ndim != 4:
    raise ValueError(f"originals {originals.shape} and deidentified {deidentified.shape} "
                     "must both be (T, H, W, 3)")
  return originals, deidentified, np.asarray(boxes, np.float64).reshape(originals.shape[0], 4)

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
      both rank-1 rates are None when the gallery has fewer than 2 identities or lacks
        ``identity`` (``rank1_null_reason`` says which; ``rank1_chance`` is 1/K);
      ``frames``, ``frames_with_face``, ``threshold``, ``lower_is_better`` (True: for the
      rates; ``embedding_distance_mean`` is the exception) and ``per_frame`` (list of dicts).
  """
  originals, deidentified, boxes = _frame_pairs(originals, deidentified, boxes)
  t = originals.shape[0]
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
  k = sum(1 for embs in gallery.values() if len(embs))
  reason = rank1_null_reason(gallery, identity)
  return {
      "gallery_identities": k,
      "rank1_chance": 1.0 / k if not reason else None,
      "rank1_null_reason": reason,
      "frames": t,
      "frames_with_face": int(sum(r["has_face"] for r in per_frame)),
      "threshold": threshold,
      "lower_is_better": True,
      "detection_rate": {name: {kind: rate(f"{name}_{kind}") for kind in ("original", "deidentified")}
                         for name in detectors},
      "embedding_distance_mean": float(np.mean(dists)) if dists else float("nan"),
      "reid_rate_same_frame": rate("reid_same_frame"),
      "rank1_reid_rate": None if reason else rate("reid_rank1"),
      "rank1_reid_rate_open_set": None if reason else rate("reid_rank1_open_set"),
      "per_frame": per_frame,
  }


# ---- the identity gallery ---------------------------------------------------------------

GALLERY_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ALIAS_DISTANCE = 0.5  # dlib: same person 0.36-0.43 in shared/data/identities, others >= 0.63.
CROP_PX = 96


def rank1_null_reason(gallery: dict[str, Sequence[np.ndarray]], identity: str) -> Optional[str]:
  """Why closed-set rank-1 over ``gallery`` means nothing for ``identity``, or None."""
  k = sum(1 for embs in gallery.values() if len(embs))
  if k < 2:
    return (f"the gallery has {k} identit{'y' if k == 1 else 'ies'}: closed-set rank-1 is "
            f"{'1.0' if k == 1 else 'undefined'} by construction (give --gallery with other people)")
  if not len(gallery.get(identity, ())):
    return f"the gallery has no photo of the input's own identity {identity!r}"
  return None


def face_crop(image: np.ndarray, box: np.ndarray, size: int = CROP_PX) -> np.ndarray:
  """Square ``size``×``size`` crop around ``box`` (10% margin), black outside the image."""
  import cv2  # pylint: disable=g-import-not-at-top
  x1, y1, x2, y2 = np.asarray(box, np.float64).reshape(4)
  side = 1.2 * max(x2 - x1, y2 - y1)
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  s = size / side
  m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float64)
  return cv2.warpAffine(_rgb_u8(image), m, (size, size), flags=cv2.INTER_AREA,
                        borderMode=cv2.BORDER_CONSTANT)


def largest_face(image: np.ndarray) -> tuple[Optional[np.ndarray], int]:
  """(box of the largest dlib HOG face, number of faces); HOG without upsampling first."""
  boxes = detect_dlib(image, 0)
  if not len(boxes):
    boxes = detect_dlib(image, 1)
  if not len(boxes):
    return None, 0
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return boxes[int(np.argmax(area))], len(boxes)


@dataclasses.dataclass
class Gallery:
  """Identities for re-identification: name -> dlib embeddings (and face crops).

  Attributes:
    embeddings: identity -> list of (128,) embeddings, one per usable photo.
    crops: identity -> list of uint8 face crops (``CROP_PX`` square), same order.
    warnings: one line per photo or identity left out, and per suspected alias.
  """
  embeddings: dict = dataclasses.field(default_factory=dict)
  crops: dict = dataclasses.field(default_factory=dict)
  warnings: list = dataclasses.field(default_factory=list)

  @property
  def identities(self) -> list[str]:
    return [k for k, v in self.embeddings.items() if len(v)]

  def photos(self) -> int:
    return sum(len(v) for v in self.embeddings.values())

  def add_images(self, name: str, images: Sequence[tuple[str, Optional[np.ndarray]]]) -> int:
    """Adds identity ``name`` from ``(label, image or None if unreadable)``; returns photos used.

    Each image contributes the embedding of its largest dlib HOG face. Unreadable images,
    images without a face and identities left with no usable photo are warnings (the
    identity is then absent, never an empty entry that would still count in K).
    """
    if name in self.embeddings:
      raise ValueError(f"gallery identity {name!r} given twice")
    embs, crops = [], []
    for label, img in images:
      if img is None:
        self.warnings.append(f"gallery: cannot read {label}; skipped")
        continue
      box, n = largest_face(img)
      if box is None:
        self.warnings.append(f"gallery: no face found in {label}; skipped")
        continue
      if n > 1:
        self.warnings.append(f"gallery: {n} faces in {label}; the largest is used as {name!r}")
      embs.append(embed(img, box))
      crops.append(face_crop(img, box))
    if not embs:
      self.warnings.append(f"gallery: identity {name!r} has no usable photo ({len(images)} "
                           "image(s)); left out")
      return 0
    self.embeddings[name] = embs
    self.crops[name] = crops
    return len(embs)

  def check_aliases(self, identity: str, distance: float = ALIAS_DISTANCE) -> list[str]:
    """Warns (and returns the names) of other identities that look like ``identity``.

    The same person under two names distorts every gallery metric: a face matched to
    the alias counts as a miss, and K (the chance level 1/K) counts one person twice.
    """
    own = self.embeddings.get(identity) or []
    names = []
    for name, embs in self.embeddings.items():
      if name == identity or not own or not embs:
        continue
      d = float(np.min(np.linalg.norm(np.asarray(own)[:, None] - np.asarray(embs)[None], axis=-1)))
      if d < distance:
        names.append(name)
        self.warnings.append(
            f"gallery: {name!r} looks like the input's own identity {identity!r} (dlib distance "
            f"{d:.2f} < {distance}); the same person under two names makes rank-1, mAP and k "
            "meaningless: remove it from the gallery")
    return names


def read_image_or_none(path: str) -> Optional[np.ndarray]:
  import cv2  # pylint: disable=g-import-not-at-top
  img = cv2.imread(path, cv2.IMREAD_COLOR)
  return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_gallery_dir(path: str, gallery: Optional[Gallery] = None) -> Gallery:
  """Adds every ``path/NAME/*.jpg`` (or .png, ...) identity to ``gallery`` (a new one if None).

  Raises:
    FileNotFoundError: ``path`` is not a directory.
    ValueError: ``path`` has no ``NAME/`` folder with images, or no face in any of them.
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(f"gallery folder {path} not found")
  gallery = gallery if gallery is not None else Gallery()
  names = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
  found = 0
  used = 0
  for name in names:
    files = sorted(f for f in os.listdir(os.path.join(path, name))
                   if f.lower().endswith(GALLERY_IMAGE_EXTS))
    if not files:
      gallery.warnings.append(f"gallery: {os.path.join(path, name)} has no image; left out")
      continue
    found += len(files)
    imgs = [(os.path.join(path, name, f), read_image_or_none(os.path.join(path, name, f))) for f in files]
    used += gallery.add_images(name, imgs)
  if not found:
    raise ValueError(f"gallery folder {path} has no NAME/ subfolder with images "
                     f"({', '.join(GALLERY_IMAGE_EXTS)}); expected {path}/NAME/1.jpg ...")
  if not used:
    raise ValueError(f"gallery folder {path}: no face found in any of its {found} images")
  return gallery


# ---- detectors the attack never saw -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FaceDetector:
  """A face detector measured by :func:`evaluate`.

  Attributes:
    name: report key.
    detect_batch: uint8 RGB frames (T, H, W, 3) -> per frame an (N, 4) box array.
    max_frames: evaluate on at most this many evenly spaced frames (None: every frame).
  """
  name: str
  detect_batch: Callable[[np.ndarray], list]
  max_frames: Optional[int] = None


@functools.lru_cache(maxsize=None)
def _dlib_cnn():
  path = os.path.join(_model_dir(), "mmod_human_face_detector.dat")
  if not os.path.isfile(path):
    raise ImportError(f"{path} missing; {_INSTALL_HINT}")
  return _dlib().cnn_face_detection_model_v1(path)


def detect_dlib_cnn(image: np.ndarray, upsample: int = 0) -> np.ndarray:
  """dlib CNN (MMOD) face boxes (N, 4) float32; finds faces of about 80 px and up at upsample 0."""
  dets = _dlib_cnn()(_rgb_u8(image), upsample)
  return np.array([[d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1]
                   for d in dets], np.float32).reshape(-1, 4)


def _per_frame(fn):
  return lambda frames: [fn(f) for f in frames]


def independent_detectors(cnn_frames: Optional[int] = CNN_SAMPLE_FRAMES) -> list[FaceDetector]:
  """dlib HOG, dlib CNN (on ``cnn_frames`` evenly spaced frames) and the LBP cascade."""
  return [FaceDetector("dlib_hog", _per_frame(detect_dlib)),
          FaceDetector("dlib_cnn", _per_frame(detect_dlib_cnn), cnn_frames),
          FaceDetector("skimage_lbp", _per_frame(detect_lbp))]


def sample_indices(n: int, k: Optional[int]) -> np.ndarray:
  if k is None or k >= n:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, max(k, 1)).round().astype(int))


# ---- an attacker who tries to undo the obfuscation --------------------------------------

ATTACKER_PROCESSINGS = ("gaussian_sigma1", "gaussian_sigma2", "median_5", "downscale_0.5",
                        "jpeg_50", "temporal_8", "temporal_32")


def _temporal_average(frames: np.ndarray, boxes: np.ndarray, n: int) -> np.ndarray:
  """Each face region replaced by the mean of ``n`` frames warped onto its box.

  Frame ``s`` is scaled and translated so that its box lands on frame ``t``'s box, the
  window is the ``n`` frames around ``t`` (clipped to the clip and to frames with a box),
  and only the face's obfuscation-size region of frame ``t`` is replaced.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  from drsf_jax.geometry import bbox  # pylint: disable=g-import-not-at-top
  t_all, h, w = frames.shape[:3]
  out = frames.copy()
  valid = [_valid_box(b) for b in boxes]
  for t in range(t_all):
    if not valid[t]:
      continue
    bt = boxes[t]
    lo = max(0, t - n // 2)
    hi = min(t_all, lo + n)
    lo = max(0, hi - n)
    acc = np.zeros((h, w, 3), np.float64)
    count = 0
    for s in range(lo, hi):
      if not valid[s]:
        continue
      bs = boxes[s]
      sx = (bt[2] - bt[0]) / (bs[2] - bs[0])
      sy = (bt[3] - bt[1]) / (bs[3] - bs[1])
      m = np.array([[sx, 0, bt[0] - sx * bs[0]], [0, sy, bt[1] - sy * bs[1]]], np.float64)
      acc += cv2.warpAffine(frames[s].astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
      count += 1
    x1, y1, x2, y2 = bbox.face_regions(bt[None], (h, w))[0]
    out[t, y1:y2, x1:x2] = np.clip(np.round(acc[y1:y2, x1:x2] / count), 0, 255).astype(np.uint8)
  return out


def attacker_process(frames: np.ndarray, boxes: np.ndarray, name: str) -> np.ndarray:
  """The de-identified ``frames`` (T, H, W, 3) uint8 after attacker processing ``name``.

  Filters (``gaussian_sigma1|2``, ``median_5``, ``downscale_0.5``, ``jpeg_50``) process
  whole frames; ``temporal_N`` averages the face region over N frames aligned on
  ``boxes`` (T, 4) (the attacker's face track; NaN rows: no face).
  """
  import cv2  # pylint: disable=g-import-not-at-top
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.dtype != np.uint8:
    raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
  if name.startswith("temporal_"):
    return _temporal_average(frames, np.asarray(boxes, np.float64).reshape(-1, 4),
                             int(name.split("_")[1]))
  out = []
  for f in frames:
    if name.startswith("gaussian_sigma"):
      sigma = float(name[len("gaussian_sigma"):])
      g = cv2.GaussianBlur(f, (0, 0), sigma)
    elif name == "median_5":
      g = cv2.medianBlur(f, 5)
    elif name == "downscale_0.5":
      h, w = f.shape[:2]
      small = cv2.resize(f, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
      g = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    elif name == "jpeg_50":
      ok, buf = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 50])
      if not ok:
        raise RuntimeError("JPEG encoding failed")
      g = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    else:
      raise ValueError(f"unknown attacker processing {name!r}; choose one of "
                       f"{', '.join(ATTACKER_PROCESSINGS)}")
    out.append(g)
  return np.stack(out)


# ---- the evaluation ----------------------------------------------------------------------

def detection_hits(frames: np.ndarray, boxes: np.ndarray, detector: FaceDetector) -> dict:
  """{frame index: found a face with IoU > 0.3 to the box} on the detector's frame sample."""
  idx = [int(i) for i in sample_indices(len(frames), detector.max_frames) if _valid_box(boxes[i])]
  if not idx:
    return {}
  found = detector.detect_batch(np.ascontiguousarray(frames[idx]))
  return {i: bool(np.any(box_iou(np.asarray(b).reshape(-1, 4), boxes[i]) > IOU_THRESHOLD))
          for i, b in zip(idx, found)}


def _gallery_dists(e: np.ndarray, gallery: dict) -> dict[str, np.ndarray]:
  return {name: np.linalg.norm(np.asarray(embs, np.float32) - e[None], axis=1)
          for name, embs in gallery.items() if len(embs)}


def identity_metrics(embeddings: Sequence[Optional[np.ndarray]],
                     references: Sequence[Optional[np.ndarray]], gallery, identity: str,
                     threshold: float = 0.6) -> dict[str, Any]:
  """Re-identification of faces, each against its own original and against a gallery.

  Args:
    embeddings: per frame, the face's (128,) embedding or None (no face).
    references: per frame, the original face's embedding or None.
    gallery: a :class:`Gallery` or identity -> embeddings.
    identity: the true identity of every face.
    threshold: dlib's same-person distance.

  Returns:
    ``faces`` (frames with an embedding), ``embedding_distance_mean`` (to the same
    frame's original), ``reid_rate_same_frame`` (that distance < threshold);
    ``gallery_identities`` K, ``rank1_chance`` 1/K, ``rank1_reid_rate`` (nearest gallery
    identity, by each identity's nearest photo, is ``identity``),
    ``rank1_reid_rate_open_set`` (and nearer than threshold), ``map`` (mean average
    precision of the gallery photos ranked by distance, own photos relevant),
    ``k_median`` and ``k_ge_5_fraction`` (anonymity set: k = identities whose nearest
    photo is at least as close as the own identity's), ``nearest`` (per frame: the
    nearest identity or None); the gallery figures are None, with
    ``rank1_null_reason``, when :func:`rank1_null_reason` gives one. Rates are fractions
    of ``faces`` (None when there is none).
  """
  gal = gallery.embeddings if isinstance(gallery, Gallery) else gallery
  reason = rank1_null_reason(gal, identity)
  k_ids = sum(1 for v in gal.values() if len(v))
  dists, same, rank1, open1, aps, ks, nearest = [], [], [], [], [], [], []
  for e, r in zip(embeddings, references):
    if e is None:
      nearest.append(None)
      continue
    d = float(np.linalg.norm(e - r)) if r is not None else float("nan")
    dists.append(d)
    same.append(d < threshold)
    if reason:
      nearest.append(None)
      continue
    gd = _gallery_dists(e, gal)
    per_id = {n: float(v.min()) for n, v in gd.items()}
    best = min(per_id, key=per_id.get)
    nearest.append(best)
    rank1.append(best == identity)
    open1.append(best == identity and per_id[best] < threshold)
    ks.append(sum(1 for v in per_id.values() if v <= per_id[identity]))
    all_d = np.concatenate(list(gd.values()))
    rel = np.concatenate([np.full(len(v), n == identity) for n, v in gd.items()])
    order = np.argsort(all_d, kind="stable")
    hits = np.cumsum(rel[order])
    ranks = np.nonzero(rel[order])[0] + 1
    aps.append(float(np.mean(hits[ranks - 1] / ranks)))
  n = len(dists)
  mean = lambda v: float(np.mean(v)) if len(v) else None
  finite = [d for d in dists if np.isfinite(d)]
  return {
      "faces": n,
      "threshold": threshold,
      "embedding_distance_mean": float(np.mean(finite)) if finite else None,
      "reid_rate_same_frame": mean(same),
      "gallery_identities": k_ids,
      "rank1_chance": None if reason else 1.0 / k_ids,
      "rank1_null_reason": reason,
      "rank1_reid_rate": None if reason else mean(rank1),
      "rank1_reid_rate_open_set": None if reason else mean(open1),
      "map": None if reason else mean(aps),
      "k_median": None if reason or not ks else float(np.median(ks)),
      "k_ge_5_fraction": None if reason else mean([k >= 5 for k in ks]),
      "nearest": nearest,
  }


def frame_evidence(frames: np.ndarray, boxes: np.ndarray, detectors: Sequence[FaceDetector]
                   ) -> dict[str, Any]:
  """Detector hits and embeddings of ``frames`` at ``boxes`` (the originals' faces)."""
  return {"hits": {d.name: detection_hits(frames, boxes, d) for d in detectors},
          "embeddings": [embed(f, b) for f, b in zip(frames, boxes)]}


def _rates(hits: dict) -> dict[str, Optional[float]]:
  return {name: (float(np.mean(list(h.values()))) if h else None) for name, h in hits.items()}


PRIVATE_REID = 0.05
PRIVATE_DETECTION = 0.10


def evaluate(originals: np.ndarray, deidentified: np.ndarray, boxes: np.ndarray, gallery,
             identity: str, detectors: Optional[Sequence[FaceDetector]] = None,
             processings: Sequence[str] = ATTACKER_PROCESSINGS, threshold: float = 0.6,
             original_evidence: Optional[dict] = None) -> dict[str, Any]:
  """Privacy of ``deidentified`` frames: detectors, re-identification, attacker, worst case.

  Args:
    originals, deidentified: (T, H, W, 3) uint8 RGB.
    boxes: (T, 4) the face box of each ORIGINAL frame, NaN rows where none. Embeddings
      and detection hits are taken at these boxes; the temporal attacker aligns on them
      (the attacker's best case: the attack keeps the authorized detector's boxes).
    gallery: :class:`Gallery` or identity -> embeddings.
    identity: the faces' identity in ``gallery``.
    detectors: default :func:`independent_detectors`.
    processings: attacker processings (:func:`attacker_process`), besides none.
    threshold: dlib's same-person distance.
    original_evidence: :func:`frame_evidence` of ``originals`` (to reuse across calls).

  Returns:
    Rates are fractions of the frames with a face (of the sampled ones for a detector
    with ``max_frames``), **lower is more private**:
    ``detection_rate`` {detector: {original, deidentified}}, the :func:`identity_metrics`
    keys for the de-identified frames as given (the original frames' under
    ``original``), ``attacker`` {processing: {``detection_rate`` {detector: rate},
    identity metrics}}, ``worst_case`` {``reid_rate_same_frame``, ``rank1_reid_rate``,
    ``detection_rate`` {detector}: {``rate``, ``processing``}} over none and every
    processing, ``private`` (worst same-frame re-ID <= ``PRIVATE_REID`` and every
    detector's worst rate <= ``PRIVATE_DETECTION``), ``sampled_frames`` {detector: n}.
  """
  originals, deidentified, boxes = _frame_pairs(originals, deidentified, boxes)
  t = originals.shape[0]
  detectors = list(detectors) if detectors is not None else independent_detectors()
  for p in processings:
    if p not in ATTACKER_PROCESSINGS:
      raise ValueError(f"unknown attacker processing {p!r}; choose one of {', '.join(ATTACKER_PROCESSINGS)}")
  ev_o = original_evidence or frame_evidence(originals, boxes, detectors)
  refs = ev_o["embeddings"]
  orig_rates = _rates(ev_o["hits"])

  def measure(frames):
    ev = frame_evidence(frames, boxes, detectors)
    m = identity_metrics(ev["embeddings"], refs, gallery, identity, threshold)
    m["detection_rate"] = _rates(ev["hits"])
    return m

  base = measure(deidentified)
  attacker = {p: measure(attacker_process(deidentified, boxes, p)) for p in processings}
  for m in attacker.values():
    m.pop("nearest")
  everything = {"none": base, **attacker}

  def worst(get):
    vals = [(get(m), p) for p, m in everything.items() if get(m) is not None]
    if not vals:
      return {"rate": None, "processing": None}
    v, p = max(vals, key=lambda x: x[0])
    return {"rate": v, "processing": p}

  worst_case = {
      "reid_rate_same_frame": worst(lambda m: m["reid_rate_same_frame"]),
      "rank1_reid_rate": worst(lambda m: m["rank1_reid_rate"]),
      "detection_rate": {d.name: worst(lambda m, n=d.name: m["detection_rate"][n]) for d in detectors},
  }
  w_reid = worst_case["reid_rate_same_frame"]["rate"]
  w_det = [v["rate"] for v in worst_case["detection_rate"].values()]
  private = (w_reid is not None and w_reid <= PRIVATE_REID
             and all(r is not None and r <= PRIVATE_DETECTION for r in w_det))
  original = identity_metrics(refs, refs, gallery, identity, threshold)
  original.pop("nearest")
  out = {
      "frames": t,
      "frames_with_face": int(sum(_valid_box(b) for b in boxes)),
      "lower_is_better": True,
      "detection_rate": {d.name: {"original": orig_rates[d.name],
                                  "deidentified": base["detection_rate"][d.name]}
                         for d in detectors},
      "sampled_frames": {d.name: len(ev_o["hits"][d.name]) for d in detectors},
      "original": original,
      "attacker": attacker,
      "worst_case": worst_case,
      "private": private,
      "private_rule": (f"worst case over no processing and {', '.join(processings)}: same-frame "
                       f"re-ID <= {PRIVATE_REID} and every detector <= {PRIVATE_DETECTION}"),
  }
  out.update({k: v for k, v in base.items() if k != "detection_rate"})
  return out
