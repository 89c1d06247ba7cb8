"""Every victim on real frames: finite, non-zero gradients, one trace per shape, no-face frames."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support import random_flax_variables, read_frames, shared_file
from drsf_jax.deid import obfuscation
from drsf_jax.geometry import bbox
from drsf_jax.io import checkpoints
from drsf_jax.victims import registry as victims


def _random_weights(model, wdir, seed):
  """Random variables of the right shapes, saved like converted weights (no checkpoint here)."""
  import importlib
  fam = importlib.import_module(f"drsf_jax.models.{checkpoints.MODEL_FAMILIES[model]}")
  cfg = fam.DEFAULT_CONFIGS[model]
  variables = random_flax_variables(fam.expected_variables(model, cfg), seed)
  checkpoints.save(checkpoints.weights_path(model, wdir), variables,
                   {"model": model, "family": checkpoints.MODEL_FAMILIES[model], "config": cfg,
                    "source_sha256": "random-test-weights"})


@pytest.fixture(scope="module")
def wdir(real_weights):
  for i, m in enumerate(("fan", "MPIIFaceGaze", "ETH-XGaze")):
    _random_weights(m, real_weights, i)
  return real_weights


@pytest.fixture(scope="module")
def frames():
  return read_frames(shared_file("data", "talking_head_a.mp4"), 2, start=100).astype(np.float32) / 255


@pytest.fixture(scope="module")
def context(wdir, frames):
  det = victims.load_victim("retinaface", wdir)
  ctx = victims.context_from_detections(det.predict(det.params, frames), 1)
  assert ctx.valid.all()
  return ctx


@pytest.mark.parametrize("name", ["retinaface", "mtcnn", "fan", "MPIIGaze", "MPIIFaceGaze", "ETH-XGaze"])
def test_loss_gradient_is_finite_nonzero_and_traced_once(wdir, frames, context, name):
  v = victims.load_victim(name, wdir)
  ctx = context
  if name == "mtcnn":
    ctx = victims.context_from_detections(v.predict(v.params, frames), 1)
  t = v.targets(v.params, frames, ctx)
  regions = [bbox.face_regions(ctx.boxes[i], frames.shape[1:3]) for i in range(len(frames))]
  x_obf = jnp.asarray(obfuscation.obfuscate(frames, regions, "pixelate_12"))
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def value_and_grad(params, x, t):
    return jax.value_and_grad(lambda y: jnp.sum(v.loss(params, y, t)))(x)

  at_original, _ = value_and_grad(v.params, jnp.asarray(frames), t)
  val, g = value_and_grad(v.params, x_obf, t)
  _ = value_and_grad(v.params, x_obf * 0.99, t)  # Same shapes: no retrace.
  g = np.asarray(g)
  assert np.isfinite(g).all() and np.abs(g).sum() > 0
  assert float(val) > float(at_original) >= 0  # The loss measures the damage of obfuscation.
  if v.kind == "gaze":
    # Under the jittered geometries the original frame itself reads a slightly different
    # gaze (that is what the attack is asked to correct); the nominal geometry alone is
    # exact on the original.
    from drsf_jax.victims import gaze as gaze_victims
    v = gaze_victims.load(name, wdir, geometry_samples=0)
    t = v.targets(v.params, frames, ctx)
    at_original = jnp.sum(jax.jit(v.loss)(v.params, jnp.asarray(frames), t))
    val = jnp.sum(jax.jit(v.loss)(v.params, x_obf, t))
  if name == "mtcnn":
    # Likewise, ONet on crops drawn around the original's reads a box and landmarks a
    # pixel or so off even on the original; on the original's crops alone it is exact.
    from drsf_jax.victims import detectors
    v = victims._mtcnn_victim("mtcnn", detectors.load_detector("mtcnn", wdir), onet_samples=0,
                              rnet_samples=0)
    t = v.targets(v.params, frames, ctx)
    at_original = jnp.sum(jax.jit(v.loss)(v.params, jnp.asarray(frames), t))
    val = jnp.sum(jax.jit(v.loss)(v.params, x_obf, t))
  assert float(at_original) < 1e-6 * max(float(val), 1e-12) + 1e-9


def test_gaze_predictions_carry_pose_and_landmark_source(wdir, frames, context):
  gz = victims.load_victim("MPIIGaze", wdir)
  pred = gz.predict(gz.params, frames, context)
  face = pred[0][0]
  assert face["landmarks_source"] == "5"
  assert np.isclose(np.linalg.norm(face["vector"]), 1.0, atol=1e-5)
  assert abs(face["pitch_yaw"][0]) < 0.6 and abs(face["pitch_yaw"][1]) < 0.6  # Looking near the camera.
  fan = victims.load_victim("fan", wdir)
  fan.annotate(fan.params, frames, context)
  assert context.landmarks68.shape == (2, 1, 68, 2)
  pred68 = gz.predict(gz.params, frames, context)
  assert pred68[0][0]["landmarks_source"] == "68"
  context.landmarks68 = None


def test_frames_without_faces_give_empty_predictions_and_zero_loss(wdir, frames):
  blank = np.full((2,) + frames.shape[1:], 0.5, np.float32)
  det = victims.load_victim("retinaface", wdir)
  dets = det.predict(det.params, blank)
  assert all(len(d["boxes"]) == 0 for d in dets)
  ctx = victims.context_from_detections(dets, 1)
  assert not ctx.valid.any()
  for name in ("retinaface", "MPIIGaze", "fan"):
    v = victims.load_victim(name, wdir)
    t = v.targets(v.params, blank, ctx)
    np.testing.assert_array_equal(np.asarray(v.loss(v.params, jnp.asarray(blank) * 0.9, t)), 0.0)
    if name != "retinaface":
      assert v.predict(v.params, blank, ctx) == [[], []]


def test_bad_names_and_calibration(wdir, tmp_path):
  with pytest.raises(ValueError, match="unknown model 'GazeNet'"):
    victims.load_victim("GazeNet", wdir)
  with pytest.raises(checkpoints.WeightsError, match="convert_weights.py --model fan"):
    victims.load_victim("fan", str(tmp_path))
  from drsf_jax.geometry import cameras
  bad = tmp_path / "calib.yaml"
  bad.write_text("image_width: 640\ncamera_matrix: [1, 2\n")
  with pytest.raises(ValueError, match="calib.yaml"):
    cameras.make_camera(str(bad), 640, 480)
