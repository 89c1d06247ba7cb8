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
