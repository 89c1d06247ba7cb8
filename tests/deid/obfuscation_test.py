"""Obfuscation on real images: region geometry, each method's semantics, bad specs."""

import numpy as np
import pytest

from tests.support import astronaut
from drsf_jax.deid import obfuscation
from drsf_jax.geometry import bbox

ASTRONAUT_FACE = np.array([[170.0, 60.0, 260.0, 175.0]])  # Around the astronaut's face.


def _img():
  return astronaut().astype(np.float32) / 255


def test_region_is_the_fan_square_clipped():
  r = bbox.face_regions(ASTRONAUT_FACE, (512, 512))[0]
  w, h = 90.0, 115.0
  side = 200 * (w + h) / 195
  cx, cy = 215.0, 117.5 - 0.12 * h
  assert abs((r[2] - r[0]) - side) <= 2 and abs((r[3] - r[1]) - side) <= 2
  assert abs((r[0] + r[2]) / 2 - cx) <= 1 and abs((r[1] + r[3]) / 2 - cy) <= 1
  edge = bbox.face_regions(np.array([[0.0, 0.0, 60.0, 60.0]]), (100, 100))[0]
  assert edge[0] == 0 and edge[1] == 0 and edge[2] <= 100
  big = bbox.face_regions(ASTRONAUT_FACE, (512, 512), mask_scale=1.5)[0]
  assert (big[2] - big[0]) > (r[2] - r[0]) * 1.4


@pytest.mark.parametrize("n", [5, 10, 30])
def test_pixelate_fills_n_by_n_cells_with_their_mean(n):
  img = _img()
  r = bbox.face_regions(ASTRONAUT_FACE, img.shape[:2])
  out = obfuscation.obfuscate(img, [r], f"pixelate_{n}")
  x1, y1, x2, y2 = r[0]
  reg = out[y1:y2, x1:x2]
  assert len(np.unique(reg.reshape(-1, 3), axis=0)) <= n * n
  ey = np.round(np.linspace(0, y2 - y1, n + 1)).astype(int)
  ex = np.round(np.linspace(0, x2 - x1, n + 1)).astype(int)
  cell = img[y1 + ey[1]:y1 + ey[2], x1 + ex[2]:x1 + ex[3]]
  np.testing.assert_allclose(reg[ey[1], ex[2]], cell.reshape(-1, 3).mean(0), rtol=1e-5)
  outside = np.ones(img.shape[:2], bool)
  outside[y1:y2, x1:x2] = False
  np.testing.assert_array_equal(out[outside], img[outside])


def test_blur_is_a_box_filter_and_gaussian_and_solid():
  import cv2
  img = _img()
  r = bbox.face_regions(ASTRONAUT_FACE, img.shape[:2])
  x1, y1, x2, y2 = r[0]
  out = obfuscation.obfuscate(img, [r], "blur_15")
  ref = cv2.blur(img[y1:y2, x1:x2], (15, 15), borderType=cv2.BORDER_REFLECT_101)
  np.testing.assert_allclose(out[y1:y2, x1:x2], ref, atol=1e-6)
  g = obfuscation.obfuscate(img, [r], "gaussian_14")[y1:y2, x1:x2]
  assert np.abs(g - img[y1:y2, x1:x2]).mean() > 0.01
  s = obfuscation.obfuscate(img, [r], "solid")[y1:y2, x1:x2]
  np.testing.assert_allclose(s, np.broadcast_to(img[y1:y2, x1:x2].reshape(-1, 3).mean(0), s.shape), atol=1e-6)


def test_every_face_of_a_frame_is_obfuscated_and_input_untouched():
  img = _img()
  batch = np.stack([img, img])
  before = batch.copy()
  regs = [bbox.face_regions(np.array([[170.0, 60.0, 260.0, 175.0], [20.0, 300.0, 80.0, 370.0]]), (512, 512)),
          np.zeros((0, 4), np.int64)]
  out = obfuscation.obfuscate(batch, regs, "pixelate_10")
  np.testing.assert_array_equal(batch, before)
  for x1, y1, x2, y2 in regs[0]:
    assert np.abs(out[0, y1:y2, x1:x2] - img[y1:y2, x1:x2]).mean() > 0.005
  np.testing.assert_array_equal(out[1], img)
  masks = obfuscation.region_masks(regs, (512, 512))
  assert masks[0].sum() > 0 and masks[1].sum() == 0


@pytest.mark.parametrize("spec", ["pixelate_x", "pixelate_1", "blur", "mosaic_10", "", "solid_3"])
def test_bad_specs_are_one_line_errors(spec):
  with pytest.raises(ValueError, match="spec"):
    obfuscation.parse_spec(spec)


def test_huge_blur_kernels_are_refused_and_the_largest_allowed_stays_in_range():
  img = _img()
  r = bbox.face_regions(ASTRONAUT_FACE, img.shape[:2])
  for spec in ("blur_100000", "gaussian_4097"):
    with pytest.raises(ValueError, match="kernel wider than 4096"):
      obfuscation.parse_spec(spec)
  for spec in ("blur_4096", "gaussian_4096"):
    x1, y1, x2, y2 = r[0]
    out = obfuscation.obfuscate(img, [r], spec)[y1:y2, x1:x2]
    mean = img[y1:y2, x1:x2].reshape(-1, 3).mean(0)
    assert np.abs(out - mean).max() < 0.05  # About the region's mean colour, not garbage.


def test_check_effective_on_the_astronaut():
  hw = (512, 512)
  side = bbox.face_regions(ASTRONAUT_FACE, hw)[0]
  side = int(min(side[2] - side[0], side[3] - side[1]))
  obfuscation.check_effective(f"pixelate_{side // 2}", [ASTRONAUT_FACE], hw)
  with pytest.raises(ValueError, match=rf"90x115 px face at frame 0: its {side} px region"):
    obfuscation.check_effective(f"pixelate_{side // 2 + 1}", [ASTRONAUT_FACE], hw)
  with pytest.raises(ValueError, match=r"mask_scale 0\.6 .* 90x115 px face at frame 1"):
    obfuscation.check_effective("blur_9", [np.zeros((0, 4)), ASTRONAUT_FACE], hw, 0.6)
  # gaussian_2 is the weakest Gaussian: sigma 0.8, the variance of a 3 px box.
  assert abs(obfuscation.gaussian_sigma(2) - 0.8) < 1e-9
  assert obfuscation.cell_px("gaussian", 2, 200) > obfuscation.MIN_CELL_PX
