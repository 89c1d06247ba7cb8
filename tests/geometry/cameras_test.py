"""Cameras: the dummy camera and calibration files as ptgaze reads them; bad files named."""

import os

import numpy as np
import pytest

from drsf_jax.geometry import cameras


@pytest.mark.parity
def test_dummy_camera_and_files_match_ptgaze(ptgaze_dir, tmp_path):
  from ptgaze.common.camera import Camera as PtCamera
  for w, h in ((256, 256), (641, 479)):
    ours, ref = cameras.Camera.dummy(w, h), PtCamera.create_dummy(w, h)
    np.testing.assert_array_equal(ours.camera_matrix, ref.camera_matrix)
    np.testing.assert_array_equal(ours.dist_coefficients, ref.dist_coefficients.ravel())
  cam = cameras.make_camera(None, 256, 240)
  np.testing.assert_array_equal(cam.camera_matrix, [[256, 0, 128], [0, 256, 120], [0, 0, 1]])
  assert not cam.has_distortion
  sample = os.path.join(ptgaze_dir, "data", "calib", "sample_params.yaml")
  ours, ref = cameras.Camera.from_file(sample), PtCamera.from_file(sample)
  assert (ours.width, ours.height) == (ref.width, ref.height)
  np.testing.assert_array_equal(ours.camera_matrix, ref.camera_matrix)
  np.testing.assert_array_equal(ours.dist_coefficients, ref.dist_coefficients.ravel())
  assert cameras.make_camera(sample, 640, 480).width == 640
  with pytest.raises(ValueError, match="640x480 images but the frames are 256x256"):
    cameras.make_camera(sample, 256, 256)


GOOD_CALIBRATION = """\
image_width: 640
image_height: 480
camera_matrix:
  rows: 3
  cols: 3
  data: [600., 0., 320., 0., 600., 240., 0., 0., 1.]
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.1, -0.05, 0., 0., 0.]
"""


@pytest.mark.parametrize("text,problem", [
    ("image_width: [640\n  :", "not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping"),
    (GOOD_CALIBRATION.replace("image_height: 480\n", ""), "missing field 'image_height'"),
    (GOOD_CALIBRATION.replace("image_width: 640", "image_width: wide"), "'image_width' must be"),
    (GOOD_CALIBRATION.replace("0., 600., 240., 0., 0., 1.]", "0., 600., 240.]"),
     "declares 3x3 but data has 6"),
    (GOOD_CALIBRATION.replace("data: [600.", "data: [-600."), "focal lengths must be positive"),
    (GOOD_CALIBRATION.replace("data: [0.1, -0.05, 0., 0., 0.]", "data: [0.1, x]"),
     "must be a list of numbers"),
    (GOOD_CALIBRATION.replace("  cols: 5\n  data: [0.1, -0.05, 0., 0., 0.]",
                              "  cols: 3\n  data: [0.1, -0.05, 0.]"), "must have one of"),
    (GOOD_CALIBRATION.replace("camera_matrix:\n  rows: 3\n  cols: 3\n  data",
                              "camera_matrix:\n  values"), "mapping with a 'data' list"),
])
def test_bad_calibration_file_names_file_and_problem(tmp_path, text, problem):
  path = tmp_path / "calib.yaml"
  path.write_text(text)
  with pytest.raises(ValueError) as e:
    cameras.Camera.from_file(path)
  assert str(path) in str(e.value)
  assert problem in str(e.value), str(e.value)


def test_good_calibration_file(tmp_path):
  path = tmp_path / "calib.yaml"
  path.write_text(GOOD_CALIBRATION)
  cam = cameras.Camera.from_file(path)
  assert (cam.width, cam.height) == (640, 480)
  np.testing.assert_array_equal(cam.camera_matrix[0], [600, 0, 320])
  np.testing.assert_array_equal(cam.dist_coefficients, [0.1, -0.05, 0, 0, 0])
  assert cam.has_distortion
  img = np.full((480, 640, 3), 100, np.uint8)
  assert cam.undistort(img).shape == img.shape
  with pytest.raises(FileNotFoundError):
    cameras.Camera.from_file(tmp_path / "absent.yaml")
