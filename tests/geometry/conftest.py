"""Fixtures of the geometry tests: real faces with dlib's 68 landmarks, ptgaze's files.

The reference is hysts' ptgaze itself (FaceModel68, HeadPoseNormalizer, gaze helpers),
run on dlib 68-point landmarks of real frames from shared/data/talking_head_{a,b}.mp4.
"""

import importlib.util
import os

import numpy as np
import pytest

from tests.support import read_frames, shared_file


@pytest.fixture(scope="session")
def faces():
  """[(video name, RGB frame, dlib 68 landmarks)]: 3 frames from each talking-head video."""
  dlib = pytest.importorskip("dlib")
  spec = importlib.util.find_spec("face_recognition_models")  # not imported: needs pkg_resources
  if spec is None:
    pytest.skip("face_recognition_models (dlib's 68-point shape predictor) is not installed")
  predictor_path = os.path.join(os.path.dirname(spec.origin), "models",
                                "shape_predictor_68_face_landmarks.dat")
  predictor = dlib.shape_predictor(predictor_path)
  detector = dlib.get_frontal_face_detector()
  out = []
  for name in ("talking_head_a.mp4", "talking_head_b.mp4"):
    frames = read_frames(shared_file("data", name), 81)[::40]
    for frame in frames:
      boxes = detector(frame, 0)
      assert len(boxes) == 1, f"{name}: expected one face, got {len(boxes)}"
      shape = predictor(frame, boxes[0])
      landmarks = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
      out.append((name, frame, landmarks))
  return out


@pytest.fixture(scope="session")
def ptgaze_dir():
  pytest.importorskip("ptgaze")
  pytest.importorskip("scipy")
  return os.path.dirname(importlib.util.find_spec("ptgaze").origin)

