"""Real sample data shipped inside packages (no file in this repository)."""

import numpy as np


def astronaut() -> np.ndarray:
  """``skimage.data.astronaut()``: 512x512 uint8 RGB photo with one frontal face."""
  from skimage import data
  return data.astronaut()


def astronaut_clip(num_frames: int = 60, size: int = 256, seed: int = 0) -> np.ndarray:
  """An embedded driver-like clip: the astronaut photo slowly moved, rotated and zoomed.

  Built on the fly from ``skimage.data.astronaut()`` (about 2 s at 30 fps) so that the
  main command runs without any video file. Returns uint8 RGB ``(T, size, size, 3)``.
  """
  import cv2
  img = astronaut()
  rng = np.random.default_rng(seed)
  phase = rng.uniform(0, 2 * np.pi)
  frames = []
  for t in range(num_frames):
    s = t / max(num_frames - 1, 1)
    angle = 8.0 * np.sin(2 * np.pi * s + phase)           # head roll, degrees
    zoom = 1.0 + 0.08 * np.sin(np.pi * s)
    dx, dy = 18.0 * np.sin(2 * np.pi * s), 10.0 * np.cos(2 * np.pi * s)
    m = cv2.getRotationMatrix2D((256.0, 200.0), angle, zoom)
    m[:, 2] += (dx, dy)
    frame = cv2.warpAffine(img, m, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    frames.append(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA))
  return np.stack(frames)


def write_astronaut_clip(path: str, num_frames: int = 60, size: int = 256, fps: float = 30.0) -> str:
  """Writes :func:`astronaut_clip` losslessly to ``path`` (FFV1) and returns the path."""
  from drsf_jax.io import video
  frames = astronaut_clip(num_frames, size)
  with video.VideoWriter(path, fps, (size, size), "ffv1") as w:
    for f in frames:
      w.write(f)
  return path


def upscaled_frames(frames: np.ndarray, side: int) -> np.ndarray:
  """Real frames (T, h, w, 3) uint8 resized (bicubic) to ``side`` x ``side``: the face grows
  with the frame, as with a close camera. Used by the large-face tests and the frame-size
  benchmarks (README "Large faces"). Returns (T, side, side, 3) uint8."""
  import cv2
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.dtype != np.uint8:
    raise ValueError(f"upscaled_frames: frames must be (T, h, w, 3) uint8, got {frames.shape} {frames.dtype}")
  return np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in frames])


def cabin_frames(frames: np.ndarray, width: int, height: int, x: int, y: int) -> np.ndarray:
  """Places real frames inside a larger "cabin" frame, as in-cabin footage frames a driver.

  Each frame of ``frames`` (T, h, w, 3) uint8 is pasted unscaled at column ``x``, row ``y``
  of a ``width`` x ``height`` frame (the face keeps its size in pixels); the rest is that
  frame's own Gaussian-blurred (sigma 9), darkened (x0.7) copy stretched to the full size,
  so the background moves with the video and holds no second sharp face. Used by the
  frame-size and memory benchmarks and the crop-local tests. Returns (T, height, width, 3).
  """
  import cv2
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.dtype != np.uint8:
    raise ValueError(f"cabin_frames: frames must be (T, h, w, 3) uint8, got {frames.shape} {frames.dtype}")
  h, w = frames.shape[1:3]
  if not (0 <= x and x + w <= width and 0 <= y and y + h <= height):
    raise ValueError(f"cabin_frames: a {w}x{h} frame at ({x}, {y}) does not fit in {width}x{height}")
  out = np.empty((frames.shape[0], height, width, 3), np.uint8)
  for i, f in enumerate(frames):
    bg = (cv2.resize(cv2.GaussianBlur(f, (0, 0), 9), (width, height)) * 0.7).astype(np.uint8)
    bg[y:y + h, x:x + w] = f
    out[i] = bg
  return out
