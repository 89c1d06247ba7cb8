"""Helpers the tests share (plain functions; the fixtures live in conftest.py).

Locating ../shared (or $DRSF_SHARED_DIR) and skipping with the reason when a file is
absent, reading real frames and images, and random weights for the parity tests: torch
modules randomised in place, Flax variables drawn from a model's expected shapes.
"""

import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # benchmarks/ (the PyTorch baselines and their helpers) is not installed.
  sys.path.insert(0, REPO)


def shared_dir() -> str:
  return os.path.abspath(os.environ.get("DRSF_SHARED_DIR") or os.path.join(REPO, "..", "shared"))


def shared_file(*parts: str) -> str:
  """Path of a file under shared/, skipping the test (with the reason) when absent."""
  p = os.path.join(shared_dir(), *parts)
  if not os.path.isfile(p):
    pytest.skip(f"shared file {os.path.join(*parts)} not found under {shared_dir()} "
                "(set DRSF_SHARED_DIR to the shared/ folder)")
  return p


def read_frames(path: str, n: int, start: int = 0) -> np.ndarray:
  """First ``n`` frames (from ``start``) of a video as uint8 RGB, (n, H, W, 3)."""
  import cv2
  cap = cv2.VideoCapture(path)
  frames = []
  i = 0
  while len(frames) < n:
    ok, f = cap.read()
    if not ok:
      break
    if i >= start:
      frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    i += 1
  cap.release()
  assert frames, f"no frames read from {path}"
  return np.stack(frames)


def read_image(path: str) -> np.ndarray:
  """An image file as uint8 RGB (H, W, 3)."""
  import cv2
  img = cv2.imread(path, cv2.IMREAD_COLOR)
  assert img is not None, path
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def astronaut() -> np.ndarray:
  """``skimage.data.astronaut()``: 512x512 uint8 RGB, one frontal face (ships with scikit-image)."""
  from skimage import data
  return data.astronaut()


def randomize_torch(module, seed: int, gain: float):
  """Seeded random weights for a torch module's Conv2d / Linear layers (std ``gain /
  sqrt(fan_in)``, biases 0.1 N(0, 1)) and random BatchNorm running statistics; any other
  module with parameters fails the test. Returns the module in ``eval()`` mode."""
  import torch
  from benchmarks.torch_common import randomize_batchnorm
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, m in module.named_modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        randomize_batchnorm(m, g)
      elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (gain / np.sqrt(fan_in)))
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
      elif list(m.parameters(recurse=False)):
        raise AssertionError(f"parameters of {name} ({type(m).__name__}) not randomised")
  return module.eval()


def random_flax_variables(shapes, seed: int):
  """Seeded random Flax variables (float32) of the shapes ``expected_variables`` gives,
  scaled to keep activations O(1): kernels N(0, 1/fan_in), BatchNorm ``var`` U(0.5, 1.5),
  ``scale`` U(0.8, 1.2), everything else (biases, means) N(0, 0.05). Much cheaper than
  ``jit(init)``."""
  import jax
  rng = np.random.default_rng(seed)

  def leaf(path, sds):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      v = rng.uniform(0.5, 1.5, sds.shape)
    elif "scale" in name:
      v = rng.uniform(0.8, 1.2, sds.shape)
    elif "kernel" in name:
      v = rng.normal(0, 1 / np.sqrt(np.prod(sds.shape[:-1])), sds.shape)
    else:
      v = rng.normal(0, 0.05, sds.shape)
    return v.astype(np.float32)

  return jax.tree_util.tree_map_with_path(leaf, shapes)
