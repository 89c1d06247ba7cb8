"""Crop-local attack: the victims run on a window around the faces, not on the frame.

With the perturbation confined to the obfuscated squares (``--perturb face``), every pixel
the attack may change lies in a small part of a cabin frame (a 130x180 px face in a
1280x720 frame). The victims' forward and backward passes then run on one window per
batch that holds every face's obfuscated square plus a margin (the part of the networks'
receptive field that measurably changes their output for the face, see
``tests/deid/crop_test.py``); the attacked window is pasted back into the obfuscated frame.

Everything the victims read is translated into the window's coordinates: face boxes,
landmarks, detector-specific boxes, and the camera (its principal point moves by the
window's origin, so head pose, gaze normalisation and eye-patch warps are the same
geometry). The window starts on a multiple of RetinaFace's largest stride (32 px) so its
anchors are the frame's anchors, shifted; its size is rounded up to a multiple of 64 px so
batches of a video share few compiled shapes.

MTCNN is not translation-equivariant (its P-Net pyramid resamples the whole image at
scales whose rounding depends on the image size), so a run with MTCNN attacks full frames.
"""

import dataclasses

import numpy as np

ALIGN = 32     # Window origin: a multiple of RetinaFace's largest anchor stride.
BUCKET = 64    # Window sides: multiples of this (fewer distinct compiled shapes).
# Margin around each face box the victims need (px): measured on real frames, RetinaFace's
# score, box and landmarks for the face on the window equal the full frame's to within the
# tolerances of tests/deid/crop_test.py from 64 px on; 96 leaves room.
DEFAULT_MARGIN = 96
# Above this fraction of the frame's area the window saves too little: full frame.
MAX_FRACTION = 0.6
# Victims whose outputs for a face are translation-equivariant on such windows.
SUPPORTED = ("retinaface", "retinaface_r50", "fan", "MPIIGaze", "MPIIFaceGaze", "ETH-XGaze")


@dataclasses.dataclass(frozen=True)
class Window:
  """A crop ``[y0:y0+h, x0:x0+w]`` of every frame of a batch."""
  y0: int
  x0: int
  h: int
  w: int

  def crop(self, a: np.ndarray) -> np.ndarray:
    """(B, H, W, C) -> (B, h, w, C)."""
    return a[:, self.y0:self.y0 + self.h, self.x0:self.x0 + self.w]

  def paste(self, full: np.ndarray, part: np.ndarray) -> np.ndarray:
    """A copy of ``full`` with the window replaced by ``part``."""
    out = np.array(full, copy=True)
    out[:, self.y0:self.y0 + self.h, self.x0:self.x0 + self.w] = part
    return out


def window(regions: list, boxes: list, frame_hw: tuple[int, int], margin: int = DEFAULT_MARGIN,
           perturb_margin: int = 0, max_fraction: float = MAX_FRACTION) -> Window | None:
  """The window of one batch, or None when it would not be worth it (or no face).

  ``regions``: per frame, the (N, 4) obfuscated squares (x1, y1, x2, y2); ``boxes``: per
  frame, the (N, 4) face boxes the victims are given. The window holds every square
  (grown by ``perturb_margin``) and every box grown by ``margin`` (clipped to the frame).
  """
  hh, ww = frame_hw
  spans = []
  for r in regions:
    for x1, y1, x2, y2 in np.asarray(r, np.float64).reshape(-1, 4):
      spans.append((x1 - perturb_margin, y1 - perturb_margin, x2 + perturb_margin, y2 + perturb_margin))
  for b in boxes:
    for x1, y1, x2, y2 in np.asarray(b, np.float64).reshape(-1, 4):
      spans.append((x1 - margin, y1 - margin, x2 + margin, y2 + margin))
  if not spans:
    return None
  s = np.asarray(spans)
  ux1, uy1 = max(0.0, s[:, 0].min()), max(0.0, s[:, 1].min())
  ux2, uy2 = min(float(ww), s[:, 2].max()), min(float(hh), s[:, 3].max())
  x0 = int(np.floor(ux1 / ALIGN)) * ALIGN
  y0 = int(np.floor(uy1 / ALIGN)) * ALIGN
  w = int(np.ceil((ux2 - x0) / BUCKET)) * BUCKET
  h = int(np.ceil((uy2 - y0) / BUCKET)) * BUCKET
  w, h = min(w, ww - x0), min(h, hh - y0)  # At the right/bottom edge: up to the edge.
  if w * h > max_fraction * ww * hh:
    return None
  return Window(y0, x0, h, w)


def shift_context(ctx, win: Window):
  """A copy of a :class:`drsf_jax.victims.registry.FaceContext` in the window's coordinates."""
  d = np.array([win.x0, win.y0, win.x0, win.y0], np.float32)
  p = d[:2]
  return dataclasses.replace(
      ctx, boxes=ctx.boxes - d, landmarks5=ctx.landmarks5 - p,
      landmarks68=None if ctx.landmarks68 is None else ctx.landmarks68 - p,
      extra={k: v - d for k, v in ctx.extra.items()},
      camera=None if ctx.camera is None else shift_camera(ctx.camera, win))


def shift_camera(camera, win: Window):
  """The same camera seen through the window: principal point moved by its origin."""
  k = np.array(camera.camera_matrix, np.float64, copy=True)
  k[0, 2] -= win.x0
  k[1, 2] -= win.y0
  return dataclasses.replace(camera, width=win.w, height=win.h, camera_matrix=k)


def shift_predictions(frames: list[dict], win: Window) -> list[dict]:
  """Detector predictions made on the window, in frame coordinates."""
  d = np.array([win.x0, win.y0, win.x0, win.y0], np.float32)
  out = []
  for f in frames:
    g = dict(f)
    g["boxes"] = np.asarray(f["boxes"], np.float32).reshape(-1, 4) + d
    g["landmarks"] = np.asarray(f["landmarks"], np.float32).reshape(-1, 5, 2) + d[:2]
    out.append(g)
  return out
