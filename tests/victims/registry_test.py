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
    v = victims.load_victim(name, wdir, geometry_samples=0)
    t = v.targets(v.params, frames, ctx)
    at_original = jnp.sum(jax.jit(v.loss)(v.params, jnp.asarray(frames), t))
    val = jnp.sum(jax.jit(v.loss)(v.params, x_obf, t))
  if name == "mtcnn":
    # Likewise, ONet on crops drawn around the original's reads a box and landmarks a
    # pixel or so off even on the original; on the original's crops alone it is exact.
    v = victims.load_victim("mtcnn", wdir, onet_samples=0, rnet_samples=0)
    t = v.targets(v.params, frames, ctx)
    at_original = jnp.sum(jax.jit(v.loss)(v.params, jnp.asarray(frames), t))
    val = jnp.sum(jax.jit(v.loss)(v.params, x_obf, t))
  assert float(at_original) < 1e-6 * max(float(val), 1e-12) + 1e-9


def test_mtcnn_loss_runs_pnet_only_where_it_reads_and_equals_the_whole_pyramid(wdir, frames):
  """MTCNN's loss runs PNet on windows around the original's proposals; its value equals
  the loss over the whole pyramid, and so does its gradient on a frame without ties (on a
  pixelated one, equal pooled values may route to another maximum: float order)."""
  from drsf_jax.models import mtcnn
  v = victims.load_victim("mtcnn", wdir)
  ctx = victims.context_from_detections(v.predict(v.params, frames), 1)
  t = v.targets(v.params, frames, ctx)
  assert len(t["pnet_windows"]) == len(t["pnet"])
  regions = [bbox.face_regions(ctx.boxes[i], frames.shape[1:3]) for i in range(len(frames))]
  x = obfuscation.obfuscate(frames, regions, "pixelate_10")
  x = jnp.asarray(np.clip(x + np.random.default_rng(5).uniform(-3, 3, x.shape) / 255, 0, 1).astype(np.float32))
  no_pnet = dict(t, pnet=[dict(tt, pos=tt["pos"] * 0) for tt in t["pnet"]])

  def whole_pyramid(y):
    q = y + jax.lax.stop_gradient(jnp.round(y * 255.0) / 255.0 - y)  # As the loss sees it.
    total = count = 0.0
    for (r, p), tt in zip(mtcnn.pnet_pyramid(v.params, q, v.config), t["pnet"]):
      term = victims._kl_binary(tt["prob"], p) + jnp.mean((r - tt["reg"]) ** 2, axis=-1)  # pylint: disable=protected-access
      total = total + jnp.sum(term * tt["pos"], axis=(1, 2))
      count = count + jnp.sum(tt["pos"], axis=(1, 2))
    return v.loss(v.params, y, no_pnet) + total / jnp.maximum(count, 1.0)

  ours = jax.jit(lambda y: v.loss(v.params, y, t))
  ref = jax.jit(whole_pyramid)
  np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), rtol=1e-6)
  assert float(jnp.min(ref(x) - v.loss(v.params, x, no_pnet))) > 0  # PNet's term is there.
  g = jax.jit(jax.grad(lambda y: jnp.sum(ours(y))))(x)
  g_ref = jax.jit(jax.grad(lambda y: jnp.sum(ref(y))))(x)
  assert float(jnp.linalg.norm(g - g_ref) / jnp.linalg.norm(g_ref)) < 1e-5


def test_mtcnn_loss_in_chunks_of_frames_equals_the_whole_batch(wdir, monkeypatch):
  """On CPU the MTCNN loss runs a few frames at a time (MTCNN_LOSS_CHUNK); on 6 real frames
  (chunks of 4 and 2) its value and gradient equal the loss over the whole batch."""
  if jax.default_backend() != "cpu":
    pytest.skip("the loss is chunked on the CPU backend only")
  frames6 = read_frames(shared_file("data", "talking_head_b.mp4"), 6, start=40).astype(np.float32) / 255
  v = victims.load_victim("mtcnn", wdir)
  ctx = victims.context_from_detections(v.predict(v.params, frames6), 1)
  assert ctx.valid.all()
  t = v.targets(v.params, frames6, ctx)
  regions = [bbox.face_regions(ctx.boxes[i], frames6.shape[1:3]) for i in range(len(frames6))]
  x = obfuscation.obfuscate(frames6, regions, "pixelate_10")
  x = jnp.asarray(np.clip(x + np.random.default_rng(6).uniform(-3, 3, x.shape) / 255, 0, 1).astype(np.float32))

  def run(chunk):
    monkeypatch.setattr(victims, "MTCNN_LOSS_CHUNK", chunk)
    f = lambda y: v.loss(v.params, y, t)  # noqa: E731
    convs = str(jax.make_jaxpr(f)(x)).count("conv_general_dilated")
    return np.asarray(jax.jit(f)(x)), jax.jit(jax.grad(lambda y: jnp.sum(f(y))))(x), convs

  val, g, convs = run(4)
  val_ref, g_ref, convs_ref = run(64)
  assert convs == 2 * convs_ref  # Two chunks, each running the three networks.
  assert val.shape == (6,) and float(val.min()) > 0
  np.testing.assert_allclose(val, val_ref, rtol=1e-6)
  assert float(jnp.linalg.norm(g - g_ref) / jnp.linalg.norm(g_ref)) < 1e-5


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


def test_mtcnn_mined_crops_enter_the_loss_as_onet_terms(wdir):
  """``mine`` puts the ONet crop inference took on a failing frame into the loss: with no
  crop mined the loss is the loss without the ring; with one, the frame's loss grows by
  ONet's error on exactly that crop (its box and landmarks against the original's final
  ones, in MTCNN_PIXEL_SCALE units, plus the score's KL); passing frames, detections
  that miss the face and the window offset are honoured; the ring keeps the last few."""
  from drsf_jax.models import mtcnn
  frames2 = read_frames(shared_file("data", "talking_head_b.mp4"), 2).astype(np.float32) / 255
  v = victims.load_victim("mtcnn", wdir)
  v0 = victims.load_victim("mtcnn", wdir, mined_crops=0)
  ctx = victims.context_from_detections(v.predict(v.params, frames2), 1)
  assert ctx.valid.all()
  t, t0 = v.targets(v.params, frames2, ctx), v0.targets(v0.params, frames2, ctx)
  regions = [bbox.face_regions(ctx.boxes[i], frames2.shape[1:3]) for i in range(2)]
  x = obfuscation.obfuscate(frames2, regions, "pixelate_10")
  x = np.clip(x + np.random.default_rng(7).uniform(-4, 4, x.shape) / 255, 0, 1)
  x = jnp.asarray((np.round(x * 255) / 255).astype(np.float32))  # 8-bit, as the loss sees it.
  loss = jax.jit(v.loss)
  base = np.asarray(loss(v.params, x, t))
  np.testing.assert_allclose(base, np.asarray(jax.jit(v0.loss)(v0.params, x, t0)), rtol=1e-6)

  # A check read frame 1 from a crop 25 px right of the original's (as on talking_head_b's
  # first batch, where inference's crop lay 15-30 px away), within a window at (10, 5).
  seen = victims.context_from_detections(v.predict(v.params, frames2), 1)
  move = np.asarray([25.0, 0.0, 25.0, 0.0], np.float32)
  offset = np.asarray([10.0, 5.0, 10.0, 5.0], np.float32)
  seen.boxes = seen.boxes + move + offset
  seen.extra["onet_boxes"] = seen.extra["onet_boxes"] + move + offset
  assert v.mine(t, seen, np.asarray([False, False]), (10, 5)) is t  # Nothing failing.
  far = victims.context_from_detections(v.predict(v.params, frames2), 1)
  far.boxes = far.boxes + 400.0
  assert v.mine(t, far, np.asarray([True, True])) is t  # The face is not where it was.
  t1 = v.mine(t, seen, np.asarray([False, True]), (10, 5))
  w = np.asarray(t1["mined_w"])
  assert w.shape == (2, 1, victims.MTCNN_MINED_CROPS)
  np.testing.assert_array_equal(w[0], 0)
  np.testing.assert_array_equal(w[1, 0], [1] + [0] * (victims.MTCNN_MINED_CROPS - 1))
  crop = ctx.extra["onet_boxes"][1, 0] + move
  np.testing.assert_allclose(np.asarray(t1["mined_boxes"])[1, 0, 0], crop, rtol=1e-6)

  score, reg, lms = mtcnn.onet_on_boxes(v.params, x[1:], jnp.asarray(crop[None, None]))
  px = victims.MTCNN_PIXEL_SCALE
  box_err = (mtcnn.calibrate(jnp.asarray(crop[None, None]), reg) - t["box"][1:]) / px
  lm_err = (lms - t["lms"][1:]) / px
  term = (victims._kl_binary(t["o_score"][1:], score) + jnp.mean(box_err ** 2, -1)  # pylint: disable=protected-access
          + jnp.mean(lm_err ** 2, (-2, -1)))
  grown = np.asarray(loss(v.params, x, t1)) - base
  assert float(term[0, 0]) > 0.05  # The moved crop reads the frame worse (a real term).
  np.testing.assert_allclose(grown, [0.0, float(term[0, 0])], rtol=1e-4, atol=1e-6)

  # The ring: the last MTCNN_MINED_CROPS crops, the oldest replaced first.
  tn = t1
  for _ in range(victims.MTCNN_MINED_CROPS):
    tn = v.mine(tn, seen, np.asarray([False, True]), (10, 5))
  assert int(tn["mined_next"][1, 0]) == victims.MTCNN_MINED_CROPS + 1
  np.testing.assert_array_equal(np.asarray(tn["mined_w"])[1, 0], 1)


def test_bad_names_and_calibration(wdir, tmp_path):
  with pytest.raises(ValueError, match="unknown model 'GazeNet'"):
    victims.load_victim("GazeNet", wdir)
  with pytest.raises(ValueError, match=r"unknown option\(s\) onet_sample for mtcnn; it takes: onet_samples"):
    victims.load_victim("mtcnn", wdir, onet_sample=0)
  with pytest.raises(ValueError, match=r"unknown option\(s\) geometry_draws for retinaface; it takes: none"):
    victims.load_victim("retinaface", wdir, geometry_draws=2)
  from drsf_jax.deid import pipeline
  with pytest.raises(ValueError, match="victim_options for MPIIGaze, which this run does not attack"):
    pipeline.Deidentifier(pipeline.DeidConfig(detector="retinaface"), wdir,
                          victim_options={"MPIIGaze": {"geometry_draws": 8}})
  with pytest.raises(checkpoints.WeightsError, match="convert_weights.py --model fan"):
    victims.load_victim("fan", str(tmp_path))
  from drsf_jax.geometry import cameras
  bad = tmp_path / "calib.yaml"
  bad.write_text("image_width: 640\ncamera_matrix: [1, 2\n")
  with pytest.raises(ValueError, match="calib.yaml"):
    cameras.make_camera(str(bad), 640, 480)


def test_gaze_geometry_draws_are_a_fresh_subset_of_the_targets(wdir, frames, context):
  """``geometry_draws``: each step's loss is the full loss on the nominal geometry plus
  that many of the jittered ones, drawn from the frame's own pixels (so afresh when the
  attack changes it), never the nominal one dropped; ``draws >= samples`` is the full loss."""
  from drsf_jax.victims import gaze as gaze_victims
  full = gaze_victims.load("MPIIGaze", wdir, geometry_samples=8, geometry_draws=8)  # Every geometry.
  drawn = gaze_victims.load("MPIIGaze", wdir, geometry_samples=8, geometry_draws=2)
  assert gaze_victims.GEOMETRY_DRAWS == 2  # The default draws, as `drawn`.
  t = full.targets(full.params, frames, context)
  x = jnp.asarray(frames)
  sub = gaze_victims._draw_geometries(t, x, 8, 2)  # pylint: disable=protected-access
  assert sub["homography"].shape[1] == 3 and sub["valid"].shape == (2, 3)
  got = np.asarray(jax.jit(drawn.loss)(drawn.params, x, t))
  want = np.asarray(jax.jit(full.loss)(full.params, x, sub))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.all(got > 0)  # Jittered geometries read the original a little off.
  # The nominal geometry is always first; the drawn ones are jittered ones.
  np.testing.assert_array_equal(np.asarray(sub["homography"][:, 0]), np.asarray(t["homography"][:, 0]))
  def ids(y, tt=t):  # Which of the 1 + 8 geometries each frame's loss was given.
    hs = gaze_victims._draw_geometries(tt, y, 8, 2)["homography"]  # pylint: disable=protected-access
    return [[int(np.argmin(np.abs(np.asarray(tt["homography"][i]) - np.asarray(h)).sum(axis=(1, 2, 3))))
             for h in hs[i]] for i in range(len(y))]

  first = ids(x)
  assert all(r[0] == 0 and 0 not in r[1:] and len(set(r)) == 3 for r in first), first
  # One grey level on a few pixels redraws (over a few such changes, some draw differs).
  redrawn = [ids(x.at[:, :4, :4, :].add(k / 255.0)) for k in range(1, 6)]
  assert any(r != first for r in redrawn)
  # A frame's draws do not depend on the rest of its batch.
  assert ids(x[:1], {k: v[:1] for k, v in t.items()})[0] == first[0]
  more = gaze_victims.load("MPIIGaze", wdir, geometry_samples=8, geometry_draws=20)
  np.testing.assert_array_equal(np.asarray(jax.jit(more.loss)(more.params, x, t)),
                                np.asarray(jax.jit(full.loss)(full.params, x, t)))
  # The full loss is the mean over all 9 geometries: not what 2 draws give.
  assert not np.allclose(np.asarray(jax.jit(full.loss)(full.params, x, t)), got, rtol=1e-4)
  with pytest.raises(ValueError, match="geometry_draws must be >= 1"):
    gaze_victims.load("MPIIGaze", wdir, geometry_draws=0)
