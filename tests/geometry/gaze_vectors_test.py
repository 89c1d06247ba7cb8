"""Gaze vectors: pitch/yaw round trip, de-normalisation against ptgaze, angles."""


import numpy as np
import pytest

from drsf_jax.geometry import cameras
from drsf_jax.geometry import gaze_vectors
from drsf_jax.geometry import headpose
from drsf_jax.geometry import normalization
from tests.geometry.common import MODES


def test_pitch_yaw_round_trip(rng):
  py = np.stack([rng.uniform(-1.2, 1.2, 200), rng.uniform(-2.5, 2.5, 200)], -1)
  v = gaze_vectors.pitch_yaw_to_vector(py)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(v), axis=-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gaze_vectors.vector_to_pitch_yaw(v)), py, atol=1e-6)
  # (0, 0) looks back at the camera, along -z.
  np.testing.assert_allclose(np.asarray(gaze_vectors.pitch_yaw_to_vector(np.zeros(2))), [0, 0, -1],
                             atol=1e-7)


@pytest.mark.parity
def test_denormalize_gaze_matches_ptgaze(faces, ptgaze_dir, rng):
  from ptgaze.common import gaze as ptgaze_gaze
  from scipy.spatial.transform import Rotation
  _, frame, lm = faces[3]
  cam = cameras.Camera.dummy(frame.shape[1], frame.shape[0])
  rots = [g.rotation for mode in MODES
          for g in normalization.normalization_geometry(headpose.estimate_head_pose(lm, cam), cam, mode).values()]
  py = np.stack([rng.uniform(-0.8, 0.8, len(rots)), rng.uniform(-0.8, 0.8, len(rots))], -1)
  ours = np.asarray(gaze_vectors.denormalize_gaze(py, np.stack(rots)))
  for i, r in enumerate(rots):
    vec = ptgaze_gaze.gaze_angles_to_vector(py[i])
    np.testing.assert_allclose(np.asarray(gaze_vectors.pitch_yaw_to_vector(py[i])), vec, atol=1e-6)
    ref = ptgaze_gaze.denormalize_gaze_vector(vec, Rotation.from_matrix(r))
    np.testing.assert_allclose(ours[i], ref, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gaze_vectors.vector_to_pitch_yaw(ref)),
                               ptgaze_gaze.gaze_vector_to_angles(ref), atol=1e-6)


def test_angle_between_deg():
  a = np.array([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 2]])
  b = np.array([[0.0, 2, 0], [0, 1, 0], [1, 0, 0], [0, 0, -1]])
  np.testing.assert_allclose(np.asarray(gaze_vectors.angle_between_deg(a, b)), [90, 0, 45, 180], atol=1e-4)
  tiny = gaze_vectors.angle_between_deg(np.array([1.0, 0, 0]), np.array([1.0, 1e-4, 0]))
  np.testing.assert_allclose(float(tiny), np.degrees(1e-4), rtol=1e-3)
