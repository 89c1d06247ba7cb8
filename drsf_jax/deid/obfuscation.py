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

Specs that cannot obfuscate at the size of a video's faces are refused before any work
(:func:`check_effective`): pixelation whose cells at the face's region size would be
under 2 px (``pixelate_N`` with N > side / 2; with N >= side it is the identity), blur
kernels under 2 px (``blur_1``; ``parse_spec`` refuses N < 2, and the smallest
``gaussian_N`` has σ = 0.8, an equivalent box of 3 px), and a ``mask_scale`` that shrinks
the region below the face box. :mod:`drsf_jax.evaluation.guard` then checks the written output.

Frames are float32 RGB in [0, 1], (B, H, W, 3) or (H, W, 3). Host-side NumPy/OpenCV:
regions differ in number and size per frame, and obfuscation runs once per frame, outside
the attack loop.
"""

import re

import numpy as np

from drsf_jax.geometry import bbox

METHODS = ("pixelate", "blur", "gaussian", "solid")
_SPEC = re.compile(r"^(pixelate|blur|gaussian)_([0-9]+)$|^(solid)$")
# OpenCV's box filter overflows (values far outside [0, 1]) somewhere between 32000 and
# 100000 px; any kernel wider than the face already averages it to about its mean colour.
MAX_KERNEL = 4096
MIN_CELL_PX = 2.0  # Smallest pixelation cell / blur width that counts as obfuscation.


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
  if m.group(1) != "pixelate" and n > MAX_KERNEL:
    raise ValueError(f"de-identification spec {spec!r}: kernel wider than {MAX_KERNEL} px "
                     "(use solid to fill faces with their mean colour)")
  return m.group(1), n


def gaussian_sigma(n: int) -> float:
  """σ of ``gaussian_N``: OpenCV's rule for an odd kernel k (N made odd)."""
  k = n if n % 2 else n + 1
  return 0.3 * ((k - 1) * 0.5 - 1) + 0.8


def cell_px(method: str, n: int, side: float) -> float:
  """Scale in pixels below which ``method`` leaves a face of region ``side`` px intact.

  Pixelation: the cell side (side / N; cells of 1 px copy the pixels). Box blur: the
  kernel width. Gaussian: the width of the box filter with the same variance,
  sqrt(12σ² + 1). Solid: the whole region.
  """
  if method == "pixelate":
    return side / n
  if method == "blur":
    return float(n)
  if method == "gaussian":
    return float(np.sqrt(12.0 * gaussian_sigma(n) ** 2 + 1.0))
  return float(side)


def _fmt_box(b) -> str:
  return f"{b[2] - b[0]:.0f}x{b[3] - b[1]:.0f} px face"


def check_effective(spec: str, boxes: list[np.ndarray], image_hw: tuple[int, int],
                    mask_scale: float = 1.0):
  """Raises a one-line ``ValueError`` when ``spec`` cannot obfuscate some face.

  Checked per face, before any work:

  * the square region of :func:`drsf_jax.geometry.bbox.face_regions` (side scaled by ``mask_scale``) must
    contain the face box, else part of the face is left as it was (the message gives
    the smallest ``mask_scale`` that works for every face);
  * :func:`cell_px` at the region's size as obfuscated (clipped by the frame; its
    smaller side) must be >= ``MIN_CELL_PX``: ``pixelate_N`` with N > side / 2 leaves
    cells of 1 px (with N >= side it is the identity); the message gives the largest N
    that works for the smallest such face. Faces entirely outside the frame are skipped.

  Args:
    spec: ``pixelate_N`` | ``blur_N`` | ``gaussian_N`` | ``solid``.
    boxes: per frame, the (K, 4) face boxes ``x1, y1, x2, y2`` that will be obfuscated.
    image_hw: the frame size.
    mask_scale: as in :func:`drsf_jax.geometry.bbox.face_regions`.
  """
  method, n = parse_spec(spec)
  worst_mask, worst_cell, bad_mask, bad_cell = None, None, 0, 0
  for i, bx in enumerate(boxes):
    bx = np.asarray(bx, np.float64).reshape(-1, 4)
    regions = bbox.face_regions(bx, image_hw, mask_scale) if np.isfinite(mask_scale) else None
    for j, b in enumerate(bx):
      w, h = b[2] - b[0], b[3] - b[1]
      side1 = 200.0 * (w + h) / 195.0  # Region side at mask_scale 1 (face_regions).
      side = side1 * mask_scale
      cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2 - 0.12 * h
      need = 2.0 * max(cx - b[0], b[2] - cx, cy - b[1], b[3] - cy)  # Side covering the box.
      if not side + 1.0 >= need:  # 1 px: face_regions rounds outwards. NaN fails too.
        bad_mask += 1
        if worst_mask is None or need / side1 > worst_mask[0]:
          worst_mask = (need / side1, i, b, side)
        continue
      x1, y1, x2, y2 = regions[j]
      side = float(min(x2 - x1, y2 - y1))  # As obfuscated: clipped by the frame.
      if side <= 0:
        continue  # Nothing of this face is in the frame.
      cell = side / min(n, side) if method == "pixelate" else cell_px(method, n, side)
      if not cell >= MIN_CELL_PX:
        bad_cell += 1
        if worst_cell is None or side < worst_cell[3]:
          worst_cell = (cell, i, b, side)
  if worst_mask is not None:
    need_scale, i, b, side = worst_mask
    more = f" (and {bad_mask - 1} other faces)" if bad_mask > 1 else ""
    raise ValueError(
        f"mask_scale {mask_scale:g} shrinks the obfuscated region of the {_fmt_box(b)} at frame {i} "
        f"to {side:.0f} px, smaller than the face box{more}; use mask_scale >= {np.ceil(need_scale * 100) / 100:.2f}")
  if worst_cell is not None:
    cell, i, b, side = worst_cell
    more = f" (and {bad_cell - 1} other faces)" if bad_cell > 1 else ""
    hint = (f"use pixelate_N with N <= {int(side // MIN_CELL_PX)}" if method == "pixelate"
            else "use a wider kernel")
    raise ValueError(
        f"{spec} cannot obfuscate the {_fmt_box(b)} at frame {i}: its {side:.0f} px region would "
        f"get cells of {cell:.2f} px (< {MIN_CELL_PX:g}){more}; {hint}")


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
    regions: per frame, an int array (K, 4) from :func:`drsf_jax.geometry.bbox.face_regions` (K may be 0).
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
