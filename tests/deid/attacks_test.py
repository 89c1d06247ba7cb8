"""The attack catalogue on a real victim (RetinaFace-mnet, shared weights) and real frames."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support import read_frames, shared_file
from drsf_jax.deid import attacks
from drsf_jax.deid import obfuscation
from drsf_jax.geometry import bbox
from drsf_jax.victims import registry as victims

ITERS = 4


@pytest.fixture(scope="module")
def setup(real_weights):
  """RetinaFace victim, 2 real 128x128 frames, their targets and pixelated versions."""
  import cv2
  v = victims.load_victim("retinaface", real_weights)
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), 2)
  frames = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in frames])
  frames = frames.astype(np.float32) / 255
  ctx = victims.context_from_detections(v.predict(v.params, frames), 1)
  assert ctx.valid.all(), "the face must be detected on the original frames"
  t = v.targets(v.params, frames, ctx)
  regions = [bbox.face_regions(ctx.boxes[i], frames.shape[1:3]) for i in range(2)]
  x_obf = jnp.asarray(obfuscation.obfuscate(frames, regions, "pixelate_8"))
  loss_fn = lambda x: v.loss(v.params, x, t)
  return v, x_obf, loss_fn, t


def _run(attack, loss_fn, x_obf, iters=ITERS):
  return jax.jit(lambda x: attacks.optimize(loss_fn, x, attack, iters))(x_obf)


@pytest.fixture(scope="module")
def grad_fn(setup):
  """One compiled gradient of the real loss, shared by the whole catalogue."""
  _, _, loss_fn, _ = setup
  return jax.jit(jax.grad(lambda x: jnp.sum(loss_fn(x))))


@pytest.mark.parametrize("name", attacks.ATTACKS)
def test_each_attack_projects_and_lowers_a_real_loss(setup, grad_fn, name):
  _, x_obf, loss_fn, _ = setup
  attack = attacks.make_attack(name)
  before = np.asarray(loss_fn(x_obf))
  assert (before > 1e-3).all()
  x, state = x_obf, attack.tx.init(x_obf)
  for _ in range(ITERS):
    point = x if attack.lookahead is None else attack.lookahead(x, state)
    updates, state = attack.tx.update(grad_fn(point), state, x)
    x = x + updates
    # The projection holds after every step.
    assert float(jnp.abs(x - x_obf).max()) <= attacks.DEFAULT_EPS + 1e-6
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
  after = np.asarray(loss_fn(x))
  assert (after < before).all(), (name, before, after)


def test_mi_fgsm_momentum_changes_the_trajectory(setup):
  _, x_obf, loss_fn, _ = setup
  plain = _run(attacks.make_attack("i-fgsm"), loss_fn, x_obf, 6).frames
  mi = _run(attacks.make_attack("mi-fgsm", momentum=1.0), loss_fn, x_obf, 6).frames
  mi0 = _run(attacks.make_attack("mi-fgsm", momentum=0.0), loss_fn, x_obf, 6).frames
  assert float(jnp.abs(mi - plain).max()) > 0.5 / 255
  # With momentum 0, MI-FGSM's step is sign(g / |g|_1) = sign(g): exactly I-FGSM.
  np.testing.assert_allclose(np.asarray(mi0), np.asarray(plain), atol=1e-6)


def test_pgd_starts_randomly_and_is_seeded(setup):
  _, x_obf, loss_fn, _ = setup
  a = _run(attacks.make_attack("pgd", seed=1), loss_fn, x_obf, 1).frames
  b = _run(attacks.make_attack("pgd", seed=1), loss_fn, x_obf, 1).frames
  c = _run(attacks.make_attack("pgd", seed=2), loss_fn, x_obf, 1).frames
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(jnp.abs(a - c).max()) > 1 / 255


def test_step_is_traced_once_per_shape_and_frames_stop_independently(setup):
  v, x_obf, loss_fn, _ = setup
  attack = attacks.make_attack("rmsprop")

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(x, thr):
    return attacks.optimize(loss_fn, x, attack, 6, thr)

  before = np.asarray(loss_fn(x_obf))
  lo, hi = int(np.argmin(before)), int(np.argmax(before))
  # The two frames' losses must differ by far more than float noise (~1e-6 relative) for
  # the midpoint threshold below to separate them (measured: 16.19 vs 16.22).
  assert before[hi] - before[lo] > 1e-4 * before[hi]
  # A threshold between the two frames' losses: the lower one is done before any step
  # and must not move, the other keeps going.
  thr = jnp.asarray([(before[lo] + before[hi]) / 2])
  r = run(x_obf, thr)
  r2 = run(x_obf, thr * 0.5)  # Same shapes: no retrace.
  np.testing.assert_array_equal(np.asarray(r.frames[lo]), np.asarray(x_obf[lo]))
  assert int(r.iterations[lo]) == 0 and int(r.iterations[hi]) >= 1
  assert int(r.stage[lo]) == 1
  assert (np.asarray(r2.iterations) >= 1).all()


def test_thresholds_do_not_depend_on_batch_size(setup):
  v, x_obf, loss_fn, t = setup
  t1 = jax.tree_util.tree_map(lambda a: a[:1], t)
  attack = attacks.make_attack("i-fgsm")
  thr = jnp.asarray([0.5 * float(loss_fn(x_obf)[0])])
  one = jax.jit(lambda x: attacks.optimize(lambda y: v.loss(v.params, y, t1), x, attack, 3, thr))(x_obf[:1])
  two = jax.jit(lambda x: attacks.optimize(loss_fn, x, attack, 3, thr))(x_obf)
  np.testing.assert_allclose(np.asarray(one.frames[0]), np.asarray(two.frames[0]), atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "fgsm-x"}, "unknown attack"), ({"name": "i-fgsm", "eps": 0.0}, "eps"),
    ({"name": "i-fgsm", "eps": 1.5}, "eps"), ({"name": "adam", "lr": -1.0}, "lr"),
])
def test_bad_attack_settings(kwargs, match):
  with pytest.raises(ValueError, match=match):
    attacks.make_attack(**kwargs)


@pytest.mark.parametrize("name", ["adam", "ni-fgsm"])
def test_host_loop_matches_while_loop(setup, name):
  _, x_obf, loss_fn, _ = setup
  attack = attacks.make_attack(name)
  thr = jnp.asarray([0.9 * float(jnp.max(loss_fn(x_obf)))])
  a = jax.jit(lambda x: attacks.optimize(loss_fn, x, attack, 5, thr))(x_obf)
  b = attacks.optimize_host(loss_fn, x_obf, attack, 5, thr)
  # Two XLA programs may fuse differently; float noise stays far below one grey level.
  np.testing.assert_allclose(np.asarray(a.frames), np.asarray(b.frames), atol=2e-4)
  np.testing.assert_array_equal(np.asarray(a.iterations), np.asarray(b.iterations))
  np.testing.assert_allclose(np.asarray(a.losses), np.asarray(b.losses), rtol=1e-5)



@pytest.mark.parametrize("loop", ["while", "host"])
def test_warm_start_keeps_the_ball_on_x_obf(setup, loop):
  """A warm start is only where the frames begin: the ε-ball stays centred on x_obf, and a
  start that already meets the threshold takes no step."""
  _, x_obf, loss_fn, _ = setup
  attack = attacks.make_attack("adam")

  def run(x_start, thr, iters):
    if loop == "while":
      return jax.jit(lambda x, s: attacks.optimize(loss_fn, x, attack, iters, thr, x_start=s))(x_obf, x_start)
    return attacks.make_host_loop(lambda y: loss_fn(y), attack, iters)(x_obf, thr, x_start=x_start)

  first = run(x_obf, jnp.asarray([-1.0]), 8)  # x_start = x_obf: the cold attack.
  before, after = np.asarray(loss_fn(x_obf)), np.asarray(first.losses[:, 0])
  assert (after < before).all()
  thr = jnp.asarray([float(after.max()) * 1.01])
  warm = run(first.frames, thr, 8)
  np.testing.assert_array_equal(np.asarray(warm.iterations), 0)
  np.testing.assert_array_equal(np.asarray(warm.frames), np.asarray(first.frames))
  # A start 3ε away (outside the ball): one step brings every pixel back within ε of x_obf,
  # not of the start.
  far = jnp.clip(x_obf + 3 * attacks.DEFAULT_EPS, 0, 1)
  moved = run(far, jnp.asarray([-1.0]), 1)
  assert float(jnp.abs(moved.frames - x_obf).max()) <= attacks.DEFAULT_EPS + 1e-6
  assert float(jnp.abs(moved.frames - far).max()) > attacks.DEFAULT_EPS

def test_host_check_stops_frames_between_steps(setup):
  """``check`` (the stop in user units) runs before the first step and every
  ``check_every`` steps; a frame scoring <= 1 stops for good, one that never does runs
  the whole budget and ends at its best-scored checked state, and with
  ``loss_stops=False`` the loss thresholds stop nothing."""
  _, x_obf, loss_fn, _ = setup
  attack = attacks.make_attack("adam")
  start = np.asarray(loss_fn(x_obf))
  calls = []

  def check(x, moving):
    calls.append(moving.copy())
    now = np.asarray(loss_fn(jnp.asarray(x)))
    # Frame 0 passes once its loss fell by 1%. Frame 1 never passes, and scores best
    # where it began (its score rises as its loss falls).
    return np.asarray([0.5 if now[0] < 0.99 * start[0] else 3.0,
                       2.0 + 100 * (start[1] - now[1]) / start[1]])

  thr = jnp.asarray([float(start.max()) * 10])  # Every loss is under it from the start.
  run = attacks.make_host_loop(lambda y: loss_fn(y), attack, 7, check=check, check_every=3,
                               loss_stops=False)
  r = run(x_obf, thr)
  it = np.asarray(r.iterations)
  assert it[1] == 7 and it[0] in (3, 6), it  # Frame 0 stops at a check, not between.
  assert np.asarray(r.met).tolist() == [True, False]
  # Checks at steps 0, 3 (and 6 while frame 1 moves), then the final one after the budget.
  assert len(calls) == 4 and calls[-1].tolist() == [False, True]
  np.testing.assert_array_equal(np.asarray(r.frames[1]), np.asarray(x_obf[1]))  # Its best state.
  assert not np.array_equal(np.asarray(r.frames[0]), np.asarray(x_obf[0]))
  # The same loop stopping on the losses: every frame is under the threshold, no step.
  plain = attacks.make_host_loop(lambda y: loss_fn(y), attack, 7)(x_obf, thr)
  assert np.asarray(plain.iterations).tolist() == [0, 0]
  assert not np.asarray(plain.met).any()
  with pytest.raises(ValueError, match="check_every"):
    attacks.make_host_loop(lambda y: loss_fn(y), attack, 7, check=check, check_every=0)


def test_check_between_while_loop_chunks_matches_the_host_loop(setup):
  """The accelerator form of the stop in user units: ``check_every`` steps per call as one
  ``lax.while_loop`` program, the check between calls, gives the host loop's result."""
  _, x_obf, loss_fn, _ = setup
  attack = attacks.make_attack("adam")
  start = np.asarray(loss_fn(x_obf))

  def check(x, moving):
    del moving
    now = np.asarray(loss_fn(jnp.asarray(x)))
    return np.where(now < np.asarray([0.97, 0.9]) * start, 0.5, 2.0)

  thr = jnp.asarray([-1.0])
  out = [attacks.make_host_loop(lambda y: loss_fn(y), attack, 9, check=check, check_every=3,
                                loss_stops=False, steps_per_call=k)(x_obf, thr) for k in (1, 3)]
  np.testing.assert_array_equal(np.asarray(out[0].iterations), np.asarray(out[1].iterations))
  np.testing.assert_array_equal(np.asarray(out[0].met), np.asarray(out[1].met))
  np.testing.assert_allclose(np.asarray(out[0].frames), np.asarray(out[1].frames), atol=2e-4)
  assert 0 < int(np.asarray(out[0].iterations).min()) < 9, out[0].iterations  # One stopped early.
  with pytest.raises(ValueError, match="steps_per_call"):
    attacks.make_host_loop(lambda y: loss_fn(y), attack, 9, steps_per_call=3,
                           host_delta=lambda x: np.zeros_like(x))


# ---- the optimizer attacks against torch.optim -----------------------------------------

TORCH_STEPS = 5
_TORCH_OPTIMIZERS = {"rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW", "adamax": "Adamax",
                     "adagrad": "Adagrad", "adadelta": "Adadelta", "rprop": "Rprop", "sgd": "SGD",
                     "asgd": "ASGD"}


def _quadratic():
  """A seeded per-frame quadratic ``0.5 * sum(a (x - c)^2)`` on 2 frames of 4x5x3.

  Start, centre and curvature are chosen so that every optimizer's iterates stay inside
  [0, 1] and within eps = 1 of the start: the projection is the identity and the steps are
  the optimizers' own.
  """
  rng = np.random.default_rng(0)
  shape = (2, 4, 5, 3)
  return rng.uniform(0.3, 0.7, shape), rng.uniform(0.3, 0.7, shape), rng.uniform(0.5, 1.5, shape)


def _jax_steps(name, x0, c, a, steps):
  """``steps`` steps of the attack's real loop, in float64 like the torch side: in float32
  the rounding of x (~0.5) against displacements of ~0.02 alone is ~1.5e-5 relative."""
  with jax.enable_x64(True):
    attack = attacks.make_attack(name, eps=1.0)  # Default lr and hyper-parameters.
    loss_fn = lambda x: 0.5 * jnp.sum(a * (x - c) ** 2, axis=(1, 2, 3))
    # The host loop (the CPU path; tested equal to the while_loop above), whose carry may
    # change integer widths under x64.
    res = attacks.optimize_host(loss_fn, jnp.asarray(x0, jnp.float64), attack, steps)
    assert res.frames.dtype == jnp.float64
    assert np.asarray(res.iterations).tolist() == [steps, steps]
    return np.asarray(res.frames)


@pytest.mark.parity
@pytest.mark.parametrize("name", attacks.OPTIMIZER_ATTACKS)
def test_optimizer_attacks_take_torch_optim_steps(name):
  """5 steps of each optimizer attack = 5 steps of ``torch.optim`` with its defaults and
  the same learning rate (relative error of the displacement <= 1e-5). ``asgd`` is
  SGD with ASGD's step-size schedule by design: its iterates are torch's without the
  decay term ``-lambd * eta_t * x_t`` (asserted step by step with torch's own eta_t)."""
  torch = pytest.importorskip("torch")
  x0, c, a = _quadratic()
  got = _jax_steps(name, x0, c, a, TORCH_STEPS)
  lr = attacks.DEFAULT_LR[name]
  p = torch.tensor(x0, requires_grad=True)
  opt = getattr(torch.optim, _TORCH_OPTIMIZERS[name])([p], lr=lr)
  tc, ta = torch.from_numpy(c), torch.from_numpy(a)
  lambd = opt.defaults.get("lambd")
  for _ in range(TORCH_STEPS):
    x_t = p.detach().clone()
    eta = float(opt.state[p]["eta"]) if name == "asgd" and opt.state[p] else lr
    opt.zero_grad()
    (0.5 * ta * (p - tc) ** 2).sum().backward()
    opt.step()
    if name == "asgd":  # Put back the decay term ASGD applies to the pixel values.
      with torch.no_grad():
        p.add_(lambd * eta * x_t)
  want = p.detach().numpy()
  moved = np.abs(want - x0).max()
  assert moved > 1e-3, "the optimizer must actually move"
  assert (want > 0).all() and (want < 1).all()  # The projection was the identity.
  rel = np.abs(got - want).max() / moved
  print(name, "max displacement", moved, "relative error", rel)
  assert rel <= 1e-5
