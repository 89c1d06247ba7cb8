"""Reading images and video with clear errors, and atomic writes.

Frames are uint8 RGB ``(H, W, 3)``. Errors for bad input are one-line ``ValueError`` /
``FileNotFoundError`` messages that name the file and the problem (missing, not a
video, zero frames).
"""

import json
import os
import tempfile
from typing import Iterator

import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str) -> np.ndarray:
  import cv2
  if not os.path.isfile(path):
    raise FileNotFoundError(f"input not found: {path}")
  img = cv2.imread(path, cv2.IMREAD_COLOR)
  if img is None:
    raise ValueError(f"{path}: not a readable image")
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class VideoReader:
  """Streaming video reader (OpenCV): iterate to get uint8 RGB frames."""

  def __init__(self, path: str, max_frames: int | None = None):
    import cv2
    if not os.path.isfile(path):
      raise FileNotFoundError(f"input not found: {path}")
    self.path = path
    self._cap = cv2.VideoCapture(path)
    if not self._cap.isOpened():
      raise ValueError(f"{path}: not a video OpenCV can decode")
    self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 30.0
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
  """A temporary path beside ``final`` (same directory, so the rename is atomic)."""
  d = os.path.dirname(os.path.abspath(final))
  os.makedirs(d, exist_ok=True)
  base, ext = os.path.splitext(os.path.basename(final))
  fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".part{ext}", dir=d)
  os.close(fd)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private to their writer.
  return tmp


def write_json_atomic(path: str, obj) -> str:
  tmp = atomic_path(path)
  try:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=1, allow_nan=False)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


# ---- writing --------------------------------------------------------------------------

# Containers/codecs OpenCV's wheel writes. Lossless ones decode back bit-exactly, which
# an 8/255 adversarial perturbation needs; lossy ones destroy much of it.
LOSSLESS_CODECS = {"ffv1": "FFV1", "hfyu": "HFYU", "png": "png "}
LOSSY_CODECS = {"mjpg": "MJPG", "mp4v": "mp4v"}


class VideoWriter:
  """Writes uint8 RGB frames to a temporary file, renamed onto ``path`` by ``close()``.

  ``codec``: ``ffv1`` (default, .mkv/.avi), ``hfyu``, ``png`` (PNG-in-MKV), lossy
  ``mjpg``/``mp4v``, or ``png-seq`` (a directory of numbered PNG files). Until
  ``close()`` succeeds nothing exists at ``path``; ``abort()`` (or an exception inside a
  ``with`` block) removes the partial file.
  """

  def __init__(self, path: str, fps: float, size_wh: tuple[int, int], codec: str = "ffv1"):
    import cv2
    self.path = os.path.abspath(path)
    self.codec = codec
    self.size_wh = size_wh
    self.count = 0
    d = os.path.dirname(self.path)
    if not os.path.isdir(d):
      try:
        os.makedirs(d, exist_ok=True)
      except OSError as e:
        raise ValueError(f"cannot create output directory {d}: {e.strerror}") from None
    if not os.access(d, os.W_OK):
      raise ValueError(f"output directory is not writable: {d}")
    if codec == "png-seq":
      self._tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.", suffix=".part", dir=d)
      self._writer = None
      return
    fourcc = {**LOSSLESS_CODECS, **LOSSY_CODECS}.get(codec)
    if fourcc is None:
      raise ValueError(f"unknown codec {codec!r}; choose one of "
                       f"{', '.join(list(LOSSLESS_CODECS) + list(LOSSY_CODECS) + ['png-seq'])}")
    self._tmp = atomic_path(self.path)
    self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*fourcc), float(fps),
                                   tuple(int(v) for v in size_wh))
    if not self._writer.isOpened():
      os.unlink(self._tmp)
      raise ValueError(f"OpenCV cannot write codec {codec!r} to {os.path.basename(path)} "
                       "(use .mkv or .avi for ffv1/hfyu/png)")

  def write(self, frame_rgb_uint8: np.ndarray):
    import cv2
    f = np.asarray(frame_rgb_uint8)
    if f.dtype != np.uint8 or f.shape != (self.size_wh[1], self.size_wh[0], 3):
      raise ValueError(f"frame must be uint8 {(self.size_wh[1], self.size_wh[0], 3)}, got {f.dtype} {f.shape}")
    bgr = cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
    if self._writer is None:
      cv2.imwrite(os.path.join(self._tmp, f"{self.count:06d}.png"), bgr)
    else:
      self._writer.write(bgr)
    self.count += 1

  def close(self) -> str:
    import shutil
    if self._writer is not None:
      self._writer.release()
    if self.count == 0:
      self.abort()
      raise ValueError(f"no frames written to {self.path}")
    if os.path.isdir(self.path) and self._writer is None:
      shutil.rmtree(self.path)
    os.replace(self._tmp, self.path)
    return self.path

  def abort(self):
    import shutil
    if self._writer is not None:
      self._writer.release()
    if os.path.isdir(self._tmp):
      shutil.rmtree(self._tmp, ignore_errors=True)
    elif os.path.exists(self._tmp):
      os.unlink(self._tmp)

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
