"""Inference: authorized predictions for every frame of a video, as schema-1 records."""

import time
from typing import Callable, Iterable

import numpy as np

from drsf_jax.geometry import cameras
from drsf_jax.geometry import headpose
from drsf_jax.io import records
from drsf_jax.io import video
from drsf_jax.io.frames import as_unit_frames
from drsf_jax.victims import detectors
from drsf_jax.victims import registry as victims_lib


class Predictor:
  """Detector (+ FAN) (+ gaze model), run batch by batch on NHWC float [0, 1] frames."""

  def __init__(self, detector: str = "retinaface", alignment: str = "none", gaze: str = "none",
               weights_dir: str | None = None, max_faces: int = 1, calibration: str | None = None,
               loaded: dict | None = None):
    """``loaded``: victims already loaded, by name, reused instead of reading weights again."""
    if detector not in detectors.DETECTORS:
      raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(detectors.DETECTORS)}")
    if alignment not in victims_lib.ALIGNMENTS:
      raise ValueError(f"unknown alignment {alignment!r}; choose one of {', '.join(victims_lib.ALIGNMENTS)}")
    if gaze not in victims_lib.GAZE_MODELS:
      raise ValueError(f"unknown gaze model {gaze!r}; choose one of {', '.join(victims_lib.GAZE_MODELS)}")
    if max_faces < 1:
      raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    loaded = loaded or {}
    load = lambda name: loaded[name] if name in loaded else victims_lib.load_victim(name, weights_dir)
    self.det = load(detector)
    self.fan = load("fan") if alignment == "fan" else None
    self.gaze = load(gaze) if gaze != "none" else None
    self.max_faces = max_faces
    self.calibration = calibration
    self._camera = {}

  @property
  def models(self) -> dict:
    out = {}
    for v in (self.det, self.fan, self.gaze):
      if v is not None:
        out[v.name] = {"weights_sha256": v.meta.get("source_sha256")}
    return out

  def camera(self, width: int, height: int) -> cameras.Camera:
    key = (width, height)
    if key not in self._camera:
      self._camera[key] = cameras.make_camera(self.calibration, width, height)
    return self._camera[key]

  def predict(self, frames: np.ndarray, first_id: int = 0, raw: list | None = None) -> list[dict]:
    """Per-frame schema-1 ``{"frame_id", "faces"}`` for (B, H, W, 3) frames, uint8 or
    float in [0, 1] (anything else: ValueError). ``raw``: a list that receives the
    detector's own per-frame detections (e.g. MTCNN's ``onet_boxes``)."""
    frames = as_unit_frames(frames)
    dets = self.det.predict(self.det.params, frames)
    if raw is not None:
      raw.extend(dets)
    ctx = victims_lib.context_from_detections(dets, self.max_faces)
    ctx.camera = self.camera(frames.shape[2], frames.shape[1])
    if self.fan is not None:
      self.fan.annotate(self.fan.params, frames, ctx)
    gaze = self.gaze.predict(self.gaze.params, frames, ctx) if self.gaze is not None else None
    out = []
    for i, d in enumerate(dets):
      order = np.argsort(-(d["boxes"][:, 2] - d["boxes"][:, 0]) * (d["boxes"][:, 3] - d["boxes"][:, 1]),
                         kind="stable")
      faces = []
      for rank, j in enumerate(order):
        face = {"box": [float(v) for v in d["boxes"][j]], "score": float(d["scores"][j]),
                "landmarks5": [[float(x), float(y)] for x, y in d["landmarks"][j]],
                "landmarks68": None, "landmarks_source": "5", "head_pose": None, "gaze": None}
        if rank < self.max_faces:
          if ctx.landmarks68 is not None:
            face["landmarks68"] = [[float(x), float(y)] for x, y in ctx.landmarks68[i, rank]]
            face["landmarks_source"] = "68"
          lms = ctx.landmarks68[i, rank] if ctx.landmarks68 is not None else ctx.landmarks5[i, rank]
          try:
            pose = headpose.estimate_head_pose(lms, ctx.camera)
            face["head_pose"] = {"rotation_vector": [float(v) for v in np.ravel(pose.rotation_vector)],
                                 "translation": [float(v) for v in np.ravel(pose.translation)]}
          except ValueError:
            pass
          if gaze is not None and rank < len(gaze[i]) and gaze[i][rank] is not None:
            g = gaze[i][rank]
            face["gaze"] = {"pitch_yaw": g["pitch_yaw"], "vector": g["vector"]}
        faces.append(face)
      out.append({"frame_id": first_id + i, "faces": faces})
    return out


def run(input_path: str, predictor: Predictor, max_frames: int | None = None,
        batch_size: int = 8, progress: Callable[[int], None] | None = None) -> dict:
  """Streams a video through ``predictor``; returns a validated schema-1 document."""
  reader = video.VideoReader(input_path, max_frames=max_frames)
  return run_frames(reader, predictor, {"path": input_path, "width": reader.width,
                                        "height": reader.height, "fps": reader.fps},
                    batch_size, progress)


def run_frames(frames: Iterable[np.ndarray], predictor: Predictor, video_info: dict,
               batch_size: int = 8, progress: Callable[[int], None] | None = None) -> dict:
  """``predictor`` over (H, W, 3) frames (uint8 or [0, 1] float), ``batch_size`` at a
  time; returns a validated schema-1 document whose ``video`` is ``video_info`` (path,
  width, height, fps) plus ``num_frames``."""
  frames_out: list[dict] = []
  buf: list[np.ndarray] = []
  t0 = time.time()

  def flush():
    if buf:
      frames_out.extend(predictor.predict(np.stack(buf), len(frames_out)))
      if progress:
        progress(len(buf))
      buf.clear()

  for f in frames:
    buf.append(f)
    if len(buf) == batch_size:
      flush()
  flush()
  doc = {"schema": records.SCHEMA, "video": {**video_info, "num_frames": len(frames_out)},
         "models": predictor.models, "frames": frames_out,
         "wall_time_s": time.time() - t0}
  return records.validate(doc, video_info["path"])
