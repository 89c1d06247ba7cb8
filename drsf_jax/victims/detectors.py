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
