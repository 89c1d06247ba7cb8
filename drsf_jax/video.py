"""Reading images and video with clear errors, and atomic writes.

Frames are uint8 RGB ``(H, W, 3)``. Errors for bad input are one-line ``ValueError`` /
``FileNotFoundError`` messages that name the file and the problem (missing, not a
video, zero frames).
"""

import json
import math
import os
from typing import Iterator

import numpy as np

from drsf_jax import outputs

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str) -> np.ndarray:
  import cv2
  outputs.check_input(path)
  img = cv2.imread(path, cv2.IMREAD_COLOR)
  if img is None:
    raise ValueError(f"{path}: not a readable image")
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class VideoReader:
  """Streaming video reader (OpenCV): iterate to get uint8 RGB frames."""

  def __init__(self, path: str, max_frames: int | None = None):
    import cv2
    outputs.check_input(path)
    self.path = path
    self._cap = cv2.VideoCapture(path)
    if not self._cap.isOpened():
      raise ValueError(f"{path}: not a video OpenCV can decode")
    self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(self._cap.get(cv2.CAP_PROP_FPS))
    # The container's rate as stored (may be absurd, e.g. 90000); 30 when missing or NaN.
    self.fps = fps if math.isfinite(fps) and fps > 0 else 30.0
    n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
    self.num_frames_hint = n if n > 0 else None
    self.max_frames = max_frames
    ok, first = self._cap.read()
    if not ok or first is None:
      self._cap.release()
      raise ValueError(f"{path}: video has zero decodable frames")
    self._first = first
    if self.width <= 0 or self.height <= 0:
      self.height, self.width = first.shape[:2]

  def __iter__(self) -> Iterator[np.ndarray]:
    import cv2
    count = 0
    frame = self._first
    self._first = None
    if frame is None:
      raise RuntimeError("VideoReader can be iterated once")
    while frame is not None:
      if self.max_frames is not None and count >= self.max_frames:
        break
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
      count += 1
      ok, frame = self._cap.read()
      if not ok:
        frame = None
    self._cap.release()

  def __len__(self):
    n = self.num_frames_hint or 0
    return min(n, self.max_frames) if self.max_frames is not None else n


def read_image_or_video(path: str | None, max_frames: int = 1) -> tuple[str, list[np.ndarray]]:
  """``(name, frames)`` for an image, a video (first ``max_frames``) or None (astronaut)."""
  if path is None:
    from drsf_jax import samples
    return "skimage.data.astronaut()", [samples.astronaut()]
  if path.lower().endswith(IMAGE_EXTS):
    return path, [read_image(path)]
  return path, list(VideoReader(path, max_frames=max_frames))


def atomic_path(final: str) -> str:
  """A temporary path beside ``final`` (same directory, so the rename is atomic).

  Removed by :func:`drsf_jax.outputs.discard` (or on Ctrl-C by ``cli.run``).
  """
  return outputs.temp_path(final)


def dumps_json(obj) -> str:
  """JSON text of ``obj``; a NaN/inf anywhere is a one-line ``ValueError`` naming the key."""
  _check_finite(obj)
  return json.dumps(obj, indent=1, allow_nan=False) + "\n"


def _check_finite(obj):
  bad = outputs.non_finite_path(obj)
  if bad is not None:
    raise ValueError(f"refusing to write a non-finite number at {bad}")


def stage_json(path: str, obj) -> str:
  """Writes ``obj`` (validated: finite numbers only) to a temporary file beside ``path``;
  returns the temporary path, for :func:`drsf_jax.outputs.commit`."""
  text = dumps_json(obj)
  tmp = atomic_path(path)
  try:
    with open(tmp, "w") as f:
      f.write(text)
  except BaseException:
    outputs.discard(tmp)
    raise
  return tmp


def write_json_atomic(path: str, obj, overwrite: bool = True) -> str:
  """Writes ``obj`` to ``path`` through a temporary file; replaces ``path`` only if
  ``overwrite`` (callers check with :func:`drsf_jax.outputs.check` first)."""
  outputs.commit([(stage_json(path, obj), path)], overwrite=overwrite)
  return path


# ---- writing --------------------------------------------------------------------------

# Containers/codecs OpenCV's wheel writes. Lossless ones decode back bit-exactly, which
# an 8/255 adversarial perturbation needs; lossy ones destroy much of it.
LOSSLESS_CODECS = {"ffv1": "FFV1", "hfyu": "HFYU", "png": "png "}
LOSSY_CODECS = {"mjpg": "MJPG", "mp4v": "mp4v"}
CODECS = (*LOSSLESS_CODECS, *LOSSY_CODECS, "png-seq")
# Container extensions per codec where OpenCV's wheel (opencv-python-headless 5.0) opens a
# writer *and* the file decodes back (lossless ones bit-exactly), measured with 16x16
# frames. .webm/.flv open no writer; .ts opens one that writes undecodable files.
CONTAINERS = {
    "ffv1": (".mkv", ".avi", ".mov", ".mp4"),
    "hfyu": (".mkv", ".avi", ".mov"),
    "png": (".mkv", ".avi", ".mov", ".mp4"),
    "mjpg": (".mkv", ".avi", ".mov", ".mp4"),
    "mp4v": (".mkv", ".avi", ".mov", ".mp4", ".m4v"),
}
# FFmpeg's encoders refuse 1-pixel frames (measured: ffv1 at 1x1 opens no writer; 2x2 works).
MIN_FRAME_SIDE = 2


def check_codec(path: str, codec: str, size_wh: tuple[int, int] | None = None) -> None:
  """One-line errors for a codec/container pair or a frame size OpenCV cannot write."""
  if codec not in CODECS:
    raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
  if codec != "png-seq":
    ext = os.path.splitext(path)[1].lower()
    if not ext:
      raise ValueError(f"output {os.path.basename(path)} has no container extension; codec {codec} "
                       f"goes into {', '.join(CONTAINERS[codec])} (png-seq writes a folder)")
    if ext not in CONTAINERS[codec]:
      raise ValueError(f"codec {codec} cannot be written to a {ext} file ({os.path.basename(path)}); "
                       f"{codec} goes into {', '.join(CONTAINERS[codec])}")
  if size_wh is not None and min(size_wh) < MIN_FRAME_SIDE and codec != "png-seq":
    raise ValueError(f"{size_wh[0]}x{size_wh[1]} frames are too small for codec {codec} "
                     f"(at least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}; png-seq writes any size)")


def probe(path: str) -> tuple[int, float | None]:
  """``(decodable frames, fps)`` of a written video file or PNG-sequence directory."""
  import cv2
  if os.path.isdir(path):
    return len([f for f in os.listdir(path) if f.endswith(".png")]), None
  cap = cv2.VideoCapture(path)
  fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else None
  n = 0
  while cap.isOpened() and cap.grab():
    n += 1
  cap.release()
  return n, (fps if fps is not None and math.isfinite(fps) and fps > 0 else None)


class VideoWriter:
  """Writes uint8 RGB frames to a temporary file, renamed onto ``path`` by ``close()``.

  ``codec``: ``ffv1`` (default, .mkv/.avi), ``hfyu``, ``png`` (PNG-in-MKV), lossy
  ``mjpg``/``mp4v``, or ``png-seq`` (a directory of numbered PNG files, written into a new
  or empty directory only). Until ``close()`` succeeds nothing exists at ``path``;
  ``abort()`` (or an exception inside a ``with`` block) removes the partial file. An
  existing file at ``path`` is replaced only with ``overwrite``; an existing directory
  never. ``finish()`` ends writing without renaming (the caller commits the temporary
  file with :func:`drsf_jax.outputs.commit`, e.g. together with a report).
  """

  def __init__(self, path: str, fps: float, size_wh: tuple[int, int], codec: str = "ffv1",
               overwrite: bool = False):
    import cv2
    self.path = os.path.abspath(path)
    self.codec = codec
    self.size_wh = size_wh
    self.overwrite = overwrite
    self.count = 0
    outputs.check([("output", self.path)], overwrite=overwrite,
                  dirs=[self.path] if codec == "png-seq" else (), clean_stale=False)
    check_codec(self.path, codec, size_wh)
    if codec == "png-seq":
      self._tmp = outputs.temp_dir(self.path)
      self._writer = None
      return
    fourcc = {**LOSSLESS_CODECS, **LOSSY_CODECS}[codec]
    self._tmp = atomic_path(self.path)
    self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*fourcc), float(fps),
                                   tuple(int(v) for v in size_wh))
    if not self._writer.isOpened():
      outputs.discard(self._tmp)
      raise ValueError(f"OpenCV cannot open a {codec} writer for {os.path.basename(path)} "
                       f"({size_wh[0]}x{size_wh[1]} at {fps:g} fps)")

  def write(self, frame_rgb_uint8: np.ndarray):
    import cv2
    f = np.asarray(frame_rgb_uint8)
    if f.dtype != np.uint8 or f.shape != (self.size_wh[1], self.size_wh[0], 3):
      raise ValueError(f"frame must be uint8 {(self.size_wh[1], self.size_wh[0], 3)}, got {f.dtype} {f.shape}")
    bgr = cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
    if self._writer is None:
      if not cv2.imwrite(os.path.join(self._tmp, f"{self.count:06d}.png"), bgr):
        raise ValueError(f"cannot write frame {self.count} of {self.path}")
    else:
      self._writer.write(bgr)
    self.count += 1

  def finish(self) -> str:
    """Ends writing; returns the temporary path (not yet renamed onto ``path``)."""
    if self._writer is not None:
      self._writer.release()
    if self.count == 0:
      self.abort()
      raise ValueError(f"no frames written to {self.path}")
    return self._tmp

  def close(self) -> str:
    tmp = self.finish()
    outputs.commit([(tmp, self.path)], overwrite=self.overwrite)
    return self.path

  def abort(self):
    if self._writer is not None:
      self._writer.release()
    outputs.discard(self._tmp)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """Float [0, 1] -> uint8 by rounding (the original truncated, losing up to 1 grey level)."""
  return np.clip(np.rint(np.asarray(frames, np.float32) * 255.0), 0, 255).astype(np.uint8)
