"""Loading the face detectors by name: ``retinaface``, ``retinaface_r50``, ``mtcnn``.

A ``Detector`` bundles the converted variables, the config that travelled with them and
the family's functions. ``detect(frames)`` is host-side final selection (NMS, thresholds)
on a batch of NHWC float32 RGB frames in [0, 1]; it returns per-frame dicts of numpy
arrays ``boxes (N, 4)`` (x1, y1, x2, y2), ``scores (N,)``, ``landmarks (N, 5, 2)``,
sorted by score.
"""

import dataclasses
import importlib
from typing import Any

import numpy as np

from drsf_jax.geometry import bbox
from drsf_jax.io import checkpoints
from drsf_jax.io.frames import as_unit_frames

DETECTORS = ("retinaface", "retinaface_r50", "mtcnn")


@dataclasses.dataclass
class Detector:
  name: str
  variables: Any
  config: dict
  meta: dict
  module: Any

  def detect(self, frames) -> list[dict[str, np.ndarray]]:
    """Faces in uint8 frames (0..255) or float frames in [0, 1], (B, H, W, 3) or (H, W, 3).

    uint8 is divided by 255 here; float frames outside [0, 1] (e.g. 0..255 floats) are a
    ``ValueError`` rather than garbage detections.
    """
    frames = as_unit_frames(frames)
    if frames.ndim == 3:
      frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"frames must be (B, H, W, 3) RGB, got shape {frames.shape}")
    return self.module.detect(self.variables, frames, self.config)


# A face box longer than this many times the detector's largest anchor is beyond what the
# checkpoint reads as one face. Measured (BENCHMARKS.md "Large faces"): the shared
# RetinaFace-mnet checkpoint (anchors up to 256 px) reads talking_head_a/b upscaled x1.5
# (boxes of 212-219 x 275-286 px) as one face in every frame, and x2 (about 280 x 380 px)
# as 2-3 overlapping boxes per frame, x2.5 as 3-5, x3.75 as 5-10; MTCNN (an image pyramid)
# reads one face at every one of those sizes.
OVERSIZE_FACTOR = 1.25


def largest_anchor(config: dict) -> int | None:
  """The largest anchor side (px) of an anchor-based detector's config, else None."""
  sizes = config.get("min_sizes")
  return int(max(max(s) for s in sizes)) if sizes else None


def oversize_warning(name: str, config: dict, boxes: list) -> str | None:
  """A one-line warning when faces are too large for the detector to read as one face.

  ``boxes``: per frame, the (N, 4) face boxes it found. None when every box's longer side
  is within ``OVERSIZE_FACTOR`` times the largest anchor (or the detector has none).
  """
  anchor = largest_anchor(config)
  if anchor is None:
    return None
  longest = []  # Per frame: its longest box side (0 without a box).
  for f in boxes:
    b = np.asarray(f, np.float64).reshape(-1, 4)
    longest.append(float(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]).max()) if len(b) else 0.0)
  over = sum(1 for s in longest if s > OVERSIZE_FACTOR * anchor)
  if not over:
    return None
  return (f"{name}: faces up to {max(longest):.0f} px in {over} of {len(boxes)} frames, beyond "
          f"{OVERSIZE_FACTOR:g}x its largest anchor ({anchor} px); it reads such faces as several "
          "part boxes (README 'Large faces'): downscale the video or use --detector mtcnn")


def load_detector(name: str, weights_dir: str | None = None) -> Detector:
  """Loads a detector's converted weights; errors name the command that converts them."""
  if name not in DETECTORS:
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
  variables, meta = checkpoints.load(name, weights_dir)
  family = checkpoints.MODEL_FAMILIES[name]
  module = importlib.import_module(f"drsf_jax.models.{family}")
  config = dict(module.DEFAULT_CONFIGS[name])
  config.update(meta.get("config", {}))
  checkpoints.check_tree(module.expected_variables(name, config), variables,
                         what=f"{checkpoints.weights_path(name, weights_dir)}")
  return Detector(name=name, variables=variables, config=config, meta=meta, module=module)


largest = bbox.largest_face
