"""Shared test fixtures (helpers are in tests/support.py)."""

import numpy as np
import pytest

from tests.support import shared_file


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
