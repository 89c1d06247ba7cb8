"""The 3D face templates and the 5-point order, against ptgaze and real landmarks."""


import numpy as np
import pytest

from drsf_jax.geometry import face_model


def test_templates_and_five_point_order():
  assert face_model.FACE_MODEL_68.shape == (68, 3)
  assert face_model.FACE_MODEL_5.shape == (5, 3)
  np.testing.assert_allclose(face_model.FACE_MODEL_5[0], face_model.FACE_MODEL_68[36:42].mean(0))
  np.testing.assert_allclose(face_model.FACE_MODEL_5[1], face_model.FACE_MODEL_68[42:48].mean(0))
  np.testing.assert_array_equal(face_model.FACE_MODEL_5[2:], face_model.FACE_MODEL_68[[30, 48, 54]])
  # Image-left first (x grows to the image right), as RetinaFace/MTCNN order their points.
  assert face_model.FACE_MODEL_5[0, 0] < 0 < face_model.FACE_MODEL_5[1, 0]
  assert face_model.FACE_MODEL_5[3, 0] < 0 < face_model.FACE_MODEL_5[4, 0]
  # 90 mm between the outer eye corners, nose tip at the origin.
  assert abs(np.linalg.norm(face_model.FACE_MODEL_68[45] - face_model.FACE_MODEL_68[36]) - 0.09) < 1e-9
  np.testing.assert_array_equal(face_model.FACE_MODEL_68[30], 0.0)


@pytest.mark.parity
def test_template_is_ptgaze_table(ptgaze_dir):
  from ptgaze.common.face_model_68 import FaceModel68
  np.testing.assert_array_equal(face_model.FACE_MODEL_68, FaceModel68().LANDMARKS)


def test_five_points_from_real_landmarks_are_image_ordered(faces):
  for name, _, lm in faces:
    p5 = face_model.landmarks68_to_5(lm)
    assert p5[0, 0] < p5[2, 0] < p5[1, 0], name
    assert p5[3, 0] < p5[4, 0], name
    assert p5[0, 1] < p5[2, 1] < p5[3, 1], name
