"""Face obfuscation: pixelate, box blur, Gaussian blur and solid fill inside face regions.

The obfuscated region is the original's square FAN crop around each face, not the bare
detector box: centre = box centre shifted up by 0.12·h, side = 200·scale with
scale = (w + h) / 195, optionally multiplied by ``mask_scale``, clipped to the image.
Every face of a frame is obfuscated (passengers too), not only the one whose predictions
the attack preserves.

Methods (``--deid``):

* ``pixelate_N``: N×N cells across the region, each filled with its exact mean colour.
* ``blur_N``: N×N box filter (the original's docstring said Gaussian; it was a box).
* ``gaussian_N``: Gaussian blur with an N×N kernel (N made odd), σ from OpenCV's rule.
* ``solid``: the region filled with its mean colour.

Frames are float32 RGB in [0, 1], (B, H, W, 3) or (H, W, 3). Host-side NumPy/OpenCV:
regions differ in number and size per frame, and obfuscation runs once per frame, outside
the attack loop.
"""

import re

import numpy as np

METHODS = ("pixelate", "blur", "gaussian", "solid")
_SPEC = re.compile(r"^(pixelate|blur|gaussian)_([0-9]+)$|^(solid)$")


def parse_spec(spec: str) -> tuple[str, int]:
  """``'pixelate_30' -> ('pixelate', 30)``; ``'solid' -> ('solid', 0)``. Bad specs raise."""
  m = _SPEC.match(spec or "")
  if not m:
    raise ValueError(
        f"unknown de-identification spec {spec!r}; use pixelate_N, blur_N, gaussian_N (N >= 2) or solid")
  if m.group(3):
    return "solid", 0
  n = int(m.group(2))
  if n < 2:
    raise ValueError(f"de-identification spec {spec!r}: N must be >= 2")
  return m.group(1), n


def face_regions(boxes: np.ndarray, image_hw: tuple[int, int], mask_scale: float = 1.0
                 ) -> np.ndarray:
  """Square obfuscation regions (K, 4) int ``x1, y1, x2, y2`` (exclusive) for boxes (K, 4)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  h_img, w_img = image_hw
  w = boxes[:, 2] - boxes[:, 0]
  h = boxes[:, 3] - boxes[:, 1]
  cx = (boxes[:, 0] + boxes[:, 2]) / 2
  cy = (boxes[:, 1] + boxes[:, 3]) / 2 - 0.12 * h
  side = 200.0 * (w + h) / 195.0 * mask_scale
  x1 = np.clip(np.floor(cx - side / 2), 0, w_img)
  y1 = np.clip(np.floor(cy - side / 2), 0, h_img)
  x2 = np.clip(np.ceil(cx + side / 2), 0, w_img)
  y2 = np.clip(np.ceil(cy + side / 2), 0, h_img)
  return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)


def _cell_means(region: np.ndarray, n: int) -> np.ndarray:
  h, w = region.shape[:2]
  ny, nx = min(n, h), min(n, w)
  ey = np.round(np.linspace(0, h, ny + 1)).astype(int)
  ex = np.round(np.linspace(0, w, nx + 1)).astype(int)
  sums = np.add.reduceat(np.add.reduceat(region.astype(np.float64), ey[:-1], axis=0), ex[:-1], axis=1)
  counts = np.diff(ey)[:, None, None] * np.diff(ex)[None, :, None]
  means = sums / counts
  return np.repeat(np.repeat(means, np.diff(ey), axis=0), np.diff(ex), axis=1)


def obfuscate_region(region: np.ndarray, method: str, n: int) -> np.ndarray:
  """Obfuscates one (h, w, 3) float region."""
  import cv2
  if region.size == 0:
    return region
  if method == "pixelate":
    out = _cell_means(region, n)
  elif method == "blur":
    out = cv2.blur(region, (n, n), borderType=cv2.BORDER_REFLECT_101)
  elif method == "gaussian":
    k = n if n % 2 else n + 1
    out = cv2.GaussianBlur(region, (k, k), 0, borderType=cv2.BORDER_REFLECT_101)
  elif method == "solid":
    out = np.broadcast_to(region.reshape(-1, region.shape[-1]).mean(0), region.shape)
  else:
    raise ValueError(f"unknown method {method!r}")
  return np.asarray(out, region.dtype)


def obfuscate(frames: np.ndarray, regions: list[np.ndarray], spec: str) -> np.ndarray:
  """Returns a copy of ``frames`` with every region of every frame obfuscated.

  Args:
    frames: (B, H, W, 3) float32 in [0, 1] (or one (H, W, 3) frame).
    regions: per frame, an int array (K, 4) from :func:`face_regions` (K may be 0).
    spec: ``pixelate_N`` | ``blur_N`` | ``gaussian_N`` | ``solid``.
  """
  method, n = parse_spec(spec)
  single = frames.ndim == 3
  out = np.array(frames[None] if single else frames, dtype=np.float32, copy=True)
  if len(regions) != out.shape[0]:
    raise ValueError(f"{len(regions)} region lists for {out.shape[0]} frames")
  for i, regs in enumerate(regions):
    # Obfuscate from the original pixels so overlapping faces do not compound.
    src = out[i].copy()
    for x1, y1, x2, y2 in np.asarray(regs, np.int64).reshape(-1, 4):
      if x2 > x1 and y2 > y1:
        out[i, y1:y2, x1:x2] = obfuscate_region(src[y1:y2, x1:x2], method, n)
  return out[0] if single else out


def region_masks(regions: list[np.ndarray], image_hw: tuple[int, int]) -> np.ndarray:
  """(B, H, W, 1) float32 masks, 1 inside any obfuscated region."""
  h, w = image_hw
  m = np.zeros((len(regions), h, w, 1), np.float32)
  for i, regs in enumerate(regions):
    for x1, y1, x2, y2 in np.asarray(regs, np.int64).reshape(-1, 4):
      m[i, y1:y2, x1:x2] = 1.0
  return m
