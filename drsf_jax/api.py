"""The public Python API: what a notebook or another program calls instead of the scripts.

Re-exported by ``drsf_jax`` (``import drsf_jax; drsf_jax.deidentify(...)``); the scripts
are thin absl mains over the same functions. Conventions:

* **Frames** are RGB, ``(T, H, W, 3)`` (or one ``(H, W, 3)`` frame where a function says
  so), either ``uint8`` 0..255 or floating point in [0, 1]. A float array outside [0, 1]
  (e.g. 0..255 floats), another dtype or another shape raises ``ValueError`` naming it:
  no function guesses a scale.
* **Coordinates** are pixels of the frame as stored, ``x`` right, ``y`` down; boxes are
  ``x1, y1, x2, y2``. Head pose is a camera-frame rotation vector (radians) and a
  translation in metres; gaze is pitch/yaw in radians and a unit vector.
* **Predictions** are the schema-1 document of ``scripts/inference.py`` (README, "JSON
  schema"): ``{"schema", "video", "models", "frames": [{"frame_id", "faces": [...]}]}``.
* **Errors** are one-line ``ValueError`` / ``FileNotFoundError`` messages that name the
  problem (missing weights name the command that converts them).

Nothing here imports JAX until a function that needs it is called.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Sequence

import numpy as np

from drsf_jax.io.frames import as_uint8_frames, as_unit_frames

__all__ = ["DeidConfig", "Deidentifier", "deidentify", "load_victim", "infer", "evaluate",
           "privacy_metrics", "read_video", "sample_video", "draw_predictions", "as_uint8_frames",
           "as_unit_frames"]


def read_video(path: str, max_frames: int | None = None) -> np.ndarray:
  """Decodes a video file (any container FFmpeg reads) or a folder of PNG frames.

  Returns uint8 RGB ``(T, H, W, 3)``, display rotation applied. Raises FileNotFoundError
  for a missing path and ValueError for a file that is not a video, holds no frame, or is
  damaged (the message says at which frame decoding stopped). Memory grows with T: for
  long videos iterate ``drsf_jax.io.video.VideoReader`` instead.
  """
  from drsf_jax.io import video  # pylint: disable=import-outside-toplevel
  frames = list(video.VideoReader(path, max_frames=max_frames))
  if not frames:
    raise ValueError(f"{path}: no frame decoded")
  return np.stack(frames)


def sample_video(path: str, num_frames: int = 60) -> str:
  """Writes the embedded sample (no file needed): ``skimage``'s astronaut photo slowly
  moved, rotated and zoomed like a driver's head, 256x256 at 30 fps, lossless FFV1.

  This is the clip ``scripts/deid.py`` de-identifies when given no input. Returns ``path``.
  """
  from drsf_jax.io import samples  # pylint: disable=import-outside-toplevel
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  return samples.write_astronaut_clip(path, num_frames)


def draw_predictions(frame, faces: list[dict]) -> np.ndarray:
  """A uint8 copy of one ``(H, W, 3)`` frame (uint8 or float [0, 1]) with schema-1
  ``faces`` drawn: box and score, 5 (and 68) landmarks, head-pose axes, gaze arrow
  (with the dummy camera of the frame's size, as inference uses without calibration)."""
  from drsf_jax.evaluation import visualize  # pylint: disable=import-outside-toplevel
  img = as_uint8_frames(frame)
  if img.ndim != 3:
    raise ValueError(f"draw_predictions takes one (H, W, 3) frame, got shape {img.shape}")
  return visualize.draw_faces(img, faces)


def _config_fields() -> list[str]:
  from drsf_jax.deid import pipeline  # pylint: disable=import-outside-toplevel
  return [f.name for f in dataclasses.fields(pipeline.DeidConfig)]


def deidentify(input_path: str, output_path: str, *, weights_dir: str | None = None,
               report_path: str | None = None, preview_path: str | None = None,
               overwrite: bool = False, progress: bool = False, **settings: Any) -> dict:
  """De-identifies one video file, as ``scripts/deid.py`` does; returns its report.

  Args:
    input_path: the input video (any container FFmpeg reads, or a folder of PNGs). Never
      modified; an output path that is the input is an error.
    output_path: the de-identified video (codec from ``codec``; container from the
      extension). Written under a temporary name, checked (privacy guard, decoded
      verification) and renamed only when complete.
    weights_dir: converted weights (default ``$DRSF_JAX_WEIGHTS`` or ``~/.cache/drsf_jax``).
    report_path: the JSON report (default: ``output_path`` with ``.json``).
    preview_path: also write an H.264 side-by-side preview (shows the original face).
    overwrite: replace existing outputs (never an input, never a directory).
    progress: show tqdm progress bars.
    **settings: fields of :class:`DeidConfig` (the deid flags): ``detector`` ('mtcnn'),
      ``alignment`` ('none' | 'fan'), ``gaze`` ('none' | 'MPIIGaze' | 'MPIIFaceGaze' |
      'ETH-XGaze'), ``deid`` ('pixelate_10'), ``attack`` ('adam'), ``max_iter`` (150),
      ``batch_size`` (8), ``max_frames``, ``codec`` ('ffv1'), ``crf``, ...

  Returns:
    The report dict that is also written to ``report_path`` (schema in README,
    "The report"): ``verification.summary`` holds the utility measured on the decoded
    output (``iou_mean``, ``landmark_px_mean``, ``head_pose_deg_mean``,
    ``gaze_angle_deg_mean``), ``privacy_guard`` the guard's result.

  Raises:
    TypeError: a setting that is not a DeidConfig field (the message lists them).
    ValueError / FileNotFoundError: bad input or settings, one line, before any model
      loads where possible; the privacy guard's failure (the output is then kept only
      as ``NAME.UNSAFE.ext``).
  """
  from drsf_jax.deid import pipeline  # pylint: disable=import-outside-toplevel
  fields = _config_fields()
  unknown = sorted(set(settings) - set(fields))
  if unknown:
    raise TypeError(f"unknown setting(s) {', '.join(unknown)}; DeidConfig has: {', '.join(fields)}")
  cfg = pipeline.DeidConfig(**settings)
  cfg.validate()
  return pipeline.deidentify(input_path, output_path, cfg, weights_dir, report_path=report_path,
                             progress=progress, overwrite=overwrite, preview_path=preview_path)


def infer(video_or_frames, detector: str = "retinaface", alignment: str = "none",
          gaze: str = "none", *, weights_dir: str | None = None, max_frames: int | None = None,
          max_faces: int = 1, calibration: str | None = None, batch_size: int = 8,
          fps: float = 30.0, progress: Callable[[int], None] | None = None) -> dict:
  """Runs the authorized models, as ``scripts/inference.py`` does; returns predictions.

  Args:
    video_or_frames: a video path, or frames ``(T, H, W, 3)`` uint8 or float [0, 1].
    detector: 'retinaface' | 'retinaface_r50' | 'mtcnn'.
    alignment: 'none' | 'fan' (68 landmarks; head pose from them).
    gaze: 'none' | 'MPIIGaze' | 'MPIIFaceGaze' | 'ETH-XGaze'.
    max_frames: only the first N frames.
    max_faces: faces per frame (largest first) that get landmarks68 / head pose / gaze.
    calibration: camera YAML (ptgaze format); default a dummy camera from the frame size.
    fps: recorded in the document when frames are given (a path records its own).
    progress: called with the number of frames of each batch done (e.g. a tqdm bar's
      ``update``).

  Returns:
    A validated schema-1 predictions document (boxes, 5 or 68 landmarks, head pose,
    gaze per face, in pixels / radians / metres).
  """
  from drsf_jax.victims import inference  # pylint: disable=import-outside-toplevel
  pred = inference.Predictor(detector, alignment, gaze, weights_dir, max_faces, calibration)
  if isinstance(video_or_frames, (str, os.PathLike)):
    doc = inference.run(os.fspath(video_or_frames), pred, max_frames, batch_size, progress)
  else:
    x = as_unit_frames(video_or_frames)
    if x.ndim != 4:
      raise ValueError(f"frames must be (T, H, W, 3), got shape {x.shape}")
    x = x[:max_frames] if max_frames is not None else x
    doc = inference.run_frames(x, pred, {"path": "<frames>", "width": int(x.shape[2]),
                                         "height": int(x.shape[1]), "fps": float(fps)}, batch_size,
                               progress)
  # Faces too large for the detector to read as one face: said, once, in the log.
  from drsf_jax.victims import detectors  # pylint: disable=import-outside-toplevel
  oversize = detectors.oversize_warning(detector, pred.det.config,
                                        [[f["box"] for f in fr["faces"]] for fr in doc["frames"]])
  if oversize:
    logging.warning("%s", oversize)
  return doc


def evaluate(reference, prediction) -> dict:
  """Utility of ``prediction`` against ``reference``, as ``scripts/evaluate.py`` does.

  Args:
    reference, prediction: predictions documents (dicts from :func:`infer`) or paths to
      predictions JSON files.

  Returns:
    ``{"summary": {...}, "per_frame": [...]}``: per frame IoU, landmark error (px), NME,
    head-pose angle (degrees), gaze angle (degrees), DiffScore; the summary's means
    (``iou_mean``, ``landmark_px_mean``, ``head_pose_deg_mean``, ``gaze_angle_deg_mean``,
    ``gaze_angle_deg_p95``, ``diffscore``) and ``missing_faces``.

  Raises:
    ValueError: an invalid document, or videos of different sizes.
  """
  from drsf_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  from drsf_jax.io import records  # pylint: disable=import-outside-toplevel

  def load(doc, what):
    if isinstance(doc, (str, os.PathLike)):
      return records.read(os.fspath(doc))
    if isinstance(doc, dict):
      return records.validate(doc, what)
    raise ValueError(f"{what} must be a predictions dict or a JSON path, got {type(doc).__name__}")

  return metrics.compare(load(reference, "reference"), load(prediction, "prediction"))


def privacy_metrics(originals, deidentified, boxes, gallery: dict[str, Sequence[np.ndarray]] | None = None,
                    identity: str = "self", threshold: float = 0.6) -> dict:
  """Detection and re-identification of de-identified frames against their originals.

  Independent models the attack never saw: dlib's HOG detector, scikit-image's LBP
  cascade, dlib's face-recognition ResNet (needs the ``privacy`` extra: dlib and
  face_recognition_models).

  Args:
    originals, deidentified: ``(T, H, W, 3)`` frames, uint8 or float [0, 1], same shape.
    boxes: ``(T, 4)`` the original face box per frame (NaN row: no face).
    gallery: identity -> list of (128,) dlib embeddings (``drsf_jax.evaluation.privacy.Gallery``);
      default none (rank-1 rates are then None, with the reason).
    identity: the true identity of the face in these frames.
    threshold: dlib's same-person distance (0.6).

  Returns:
    ``reid_rate_same_frame`` (distance to the same frame's original < threshold),
    ``embedding_distance_mean``, ``detection_rate`` per detector (original and
    de-identified), ``rank1_reid_rate`` (None without a gallery of >= 2 identities),
    ``per_frame``: see ``drsf_jax.evaluation.privacy.privacy_metrics``.
  """
  from drsf_jax.evaluation import privacy  # pylint: disable=import-outside-toplevel
  return privacy.privacy_metrics(as_uint8_frames(originals, "originals"),
                                 as_uint8_frames(deidentified, "deidentified"), boxes,
                                 gallery or {}, identity, threshold)


def __getattr__(name: str):
  # DeidConfig, Deidentifier and load_victim live with the code they describe; importing
  # them here would import JAX with the package.
  if name in ("DeidConfig", "Deidentifier"):
    from drsf_jax.deid import pipeline  # pylint: disable=import-outside-toplevel
    return getattr(pipeline, name)
  if name == "load_victim":
    from drsf_jax.victims import registry as victims  # pylint: disable=import-outside-toplevel
    return victims.load_victim
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
