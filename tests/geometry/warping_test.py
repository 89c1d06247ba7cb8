"""JAX warps against OpenCV on real frames; box IoU."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.support import astronaut, read_frames, shared_file
from drsf_jax.geometry import warping


def _rot(center, angle, zoom, shift):
  import cv2
  m = cv2.getRotationMatrix2D(center, angle, zoom)
  m[:, 2] += shift
  return m


def test_warp_affine_and_perspective_match_opencv_on_real_frames():
  import cv2
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), 3).astype(np.float32) / 255
  frames = np.concatenate([frames, cv2.resize(astronaut(), (256, 256))[None].astype(np.float32) / 255])
  rng = np.random.default_rng(0)
  for f in frames:
    m = _rot((128.0, 110.0), rng.uniform(-30, 30), rng.uniform(0.7, 1.6), rng.uniform(-20, 20, 2))
    h = np.vstack([m, [rng.uniform(-3e-4, 3e-4), rng.uniform(-3e-4, 3e-4), 1.0]])
    for mat, fn, ref_fn in ((m, warping.warp_affine, cv2.warpAffine),
                            (h, warping.warp_perspective, cv2.warpPerspective)):
      ref = ref_fn(f, mat, (224, 200))
      out = np.asarray(fn(jnp.asarray(f), jnp.asarray(mat), (200, 224)))
      assert out.shape == ref.shape
      assert np.abs(out - ref).mean() <= 1 / 255 * 0.05  # far below one grey level


def test_warp_is_differentiable_and_batched():
  img = jnp.asarray(astronaut()[::4, ::4].astype(np.float32) / 255)
  mats = jnp.stack([jnp.asarray(_rot((64.0, 64.0), a, 1.2, (0, 0))) for a in (0.0, 15.0)])
  out = warping.warp_affine_batch(jnp.stack([img, img]), mats, (64, 64))
  assert out.shape == (2, 64, 64, 3)
  g = jax.grad(lambda x: jnp.sum(warping.warp_affine_batch(x, mats, (64, 64)) ** 2))(
      jnp.stack([img, img]))
  assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0
