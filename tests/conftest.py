"""Shared test fixtures: locating ../shared, real images and video frames."""

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


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope="session")
def real_weights(tmp_path_factory):
  """A weights directory with the real converted RetinaFace-mnet, MPIIGaze and MTCNN.

  Converted once per test session from ../shared and facenet-pytorch's package files.
  Skips only when a source is absent (torch or facenet-pytorch not installed, facenet's
  weight files or a shared file missing); any error of the conversion itself fails every
  test that uses the fixture, so a conversion bug cannot hide behind a skip.
  """
  pytest.importorskip("torch")
  from weights_conversion import common
  from weights_conversion import mtcnn as mtcnn_conv
  from weights_conversion import registry
  retinaface = shared_file("weights", "retinaface_mobilenet0.25.pth")
  mpiigaze = shared_file("weights", "mpiigaze_resnet_preact.pth")
  try:
    mtcnn_conv.find_facenet_weights()  # Only locates the package files; converts nothing.
  except common.ConversionError as e:
    pytest.skip(f"facenet-pytorch's MTCNN weights unavailable: {e}")
  d = str(tmp_path_factory.mktemp("real_weights"))
  registry.convert("retinaface", retinaface, d)
  registry.convert("MPIIGaze", mpiigaze, d)
  registry.convert("mtcnn", None, d)
  return d
