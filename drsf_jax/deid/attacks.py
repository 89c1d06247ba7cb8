r"""Adversarial attacks as Optax optimizers over the input frames.

An attack is an ``optax.GradientTransformation`` whose "parameters" are the frames being
perturbed, initialised at the obfuscated frames :math:`x_{obf}`. Gradients are of the
victims' loss (which the attack *minimises*: predictions on the attacked frames should
match the targets computed on the original frames). The last link of every chain is
:func:`project_linf`, which rewrites the update so that the new frames lie in

.. math:: \{x : \|x - x_{obf}\|_\infty \le \epsilon,\ 0 \le x \le 1\}.

The catalogue (``ATTACKS``) holds everything the original DRSF code exposed plus ``pgd``
and ``ni-fgsm``:

* ``i-fgsm``: :math:`x \leftarrow \Pi(x - \alpha\,\mathrm{sign}(\nabla L))`.
* ``pgd``: ``i-fgsm`` from a uniform random start in the ε-ball (Madry et al.).
* ``mi-fgsm``: :math:`g \leftarrow \mu g + \nabla L / \|\nabla L\|_1` (L1 norm *per
  frame*), :math:`x \leftarrow \Pi(x - \alpha\,\mathrm{sign}(g))` (Dong et al.). The
  original's momentum never accumulated and normalised by the whole batch's L1 norm.
* ``ni-fgsm``: ``mi-fgsm`` whose gradient is taken at the Nesterov look-ahead point
  :math:`x - \alpha\mu g` (Lin et al.); see :attr:`Attack.lookahead`.
* ``rmsprop`` (lr 0.004, the original's default), ``adam``, ``adamw``, ``adamax``,
  ``adagrad``, ``adadelta``, ``rprop``, ``sgd``, ``asgd``: the Optax optimizers with
  PyTorch's default hyper-parameters (``torch.optim`` is what the original used;
  ``rprop`` is :func:`scale_by_rprop`, torch's algorithm, since optax's lags a step).
  ``asgd`` maps to SGD with ASGD's step-size schedule
  :math:`\eta_t = lr / (1 + \lambda\,lr\,t)^{0.75}`; ASGD's iterate averaging does not
  change the iterates it returns, and its weight decay towards zero pixel values is
  dropped.
"""

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_EPS = 8 / 255
DEFAULT_ALPHA = 1 / 255
DEFAULT_MAX_ITER = 150

SIGN_ATTACKS = ("i-fgsm", "pgd", "mi-fgsm", "ni-fgsm")
OPTIMIZER_ATTACKS = ("rmsprop", "adam", "adamw", "adamax", "adagrad", "adadelta", "rprop",
                     "sgd", "asgd")
ATTACKS = SIGN_ATTACKS + OPTIMIZER_ATTACKS

# Learning rates used when --lr is not given. rmsprop's is the original's; the other
# adaptive methods take the same scale (their first steps are ~lr per pixel); adadelta
# is self-scaling (PyTorch's default 1.0); rprop's initial step is one grey level; plain
# gradient steps depend on the loss scale and should be tuned.
DEFAULT_LR = {
    "rmsprop": 0.004, "adam": 0.004, "adamw": 0.004, "adamax": 0.004, "adagrad": 0.004,
    "adadelta": 1.0, "rprop": 1 / 255, "sgd": 1.0, "asgd": 1.0,
}


# ---- transforms ----------------------------------------------------------------------

class ProjectLinfState(NamedTuple):
  center: chex.ArrayTree  # The frames the ε-ball is centred on (the obfuscated frames).


def project_linf(eps: float, lower: float = 0.0, upper: float = 1.0
                 ) -> optax.GradientTransformation:
  r"""Rewrites updates so that ``params + update`` lies in the L∞ ball and the box.

  The ball's centre is the params the chain is initialised with. Must be the last link:

  .. math:: u' = \mathrm{clip}(\mathrm{clip}(x + u, c - \epsilon, c + \epsilon), l, h) - x.
  """

  def init_fn(params):
    return ProjectLinfState(center=jax.tree_util.tree_map(jnp.asarray, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("project_linf needs params")
    def proj(u, x, c):
      y = jnp.clip(x + u, c - eps, c + eps)
      return jnp.clip(y, lower, upper) - x
    return jax.tree_util.tree_map(proj, updates, params, state.center), state

  return optax.GradientTransformation(init_fn, update_fn)


def normalize_by_l1_per_frame(eps: float = 1e-12) -> optax.GradientTransformation:
  r"""Divides each frame's gradient by its own L1 norm: :math:`g_i / \|g_i\|_1`.

  Leading axis = frames. MI-FGSM's normalisation; per frame so that frames in one batch
  do not scale each other's steps.
  """

  def update_fn(updates, state, params=None):
    del params
    def norm(g):
      axes = tuple(range(1, g.ndim))
      return g / (jnp.sum(jnp.abs(g), axis=axes, keepdims=True) + eps)
    return jax.tree_util.tree_map(norm, updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


class RandomStartState(NamedTuple):
  count: chex.Array
  key: chex.PRNGKey


def add_random_start(eps: float, key: chex.PRNGKey) -> optax.GradientTransformation:
  """Adds uniform noise in [-eps, eps] to the first update only (PGD's random start)."""

  def init_fn(params):
    del params
    return RandomStartState(count=jnp.zeros([], jnp.int32), key=key)

  def update_fn(updates, state, params=None):
    del params
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    keys = jax.random.split(state.key, len(leaves) + 1)
    first = (state.count == 0).astype(jnp.float32)
    noisy = [u + first * jax.random.uniform(k, u.shape, u.dtype, -eps, eps)
             for u, k in zip(leaves, keys[1:])]
    return (jax.tree_util.tree_unflatten(treedef, noisy),
            RandomStartState(count=state.count + 1, key=keys[0]))

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_asgd_schedule(lr: float, lambd: float = 1e-4, power: float = 0.75
                           ) -> optax.GradientTransformation:
  """``-lr / (1 + lambd * lr * t) ** power`` times the gradient (ASGD's step size)."""
  return optax.scale_by_schedule(lambda t: -lr / (1.0 + lambd * lr * t) ** power)


class ScaleByRpropState(NamedTuple):
  step_sizes: chex.ArrayTree
  prev_grads: chex.ArrayTree


def scale_by_rprop(lr: float, eta_minus: float = 0.5, eta_plus: float = 1.2,
                   min_step_size: float = 1e-6, max_step_size: float = 50.0
                   ) -> optax.GradientTransformation:
  """Rprop as ``torch.optim.Rprop``: ``-step * sign(g)`` with per-element step sizes.

  Each step size is multiplied by ``eta_plus`` where the gradient kept its sign, by
  ``eta_minus`` where it flipped (and that element does not move this step, its
  remembered gradient becoming 0), then clipped. Written here because ``optax.rprop``
  (0.2.8) applies each step one iteration late (its first update is zero).
  """

  def init_fn(params):
    return ScaleByRpropState(
        step_sizes=jax.tree_util.tree_map(lambda p: jnp.full_like(p, lr), params),
        prev_grads=jax.tree_util.tree_map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params

    tm = jax.tree_util.tree_map
    signs = tm(lambda g, prev: jnp.sign(g * prev), updates, state.prev_grads)
    steps = tm(lambda s, step: jnp.clip(
        step * jnp.where(s > 0, eta_plus, jnp.where(s < 0, eta_minus, 1.0)).astype(step.dtype),
        min_step_size, max_step_size), signs, state.step_sizes)
    grads = tm(lambda s, g: jnp.where(s < 0, jnp.zeros_like(g), g), signs, updates)
    out = tm(lambda step, g: -step * jnp.sign(g), steps, grads)
    return out, ScaleByRpropState(step_sizes=steps, prev_grads=grads)

  return optax.GradientTransformation(init_fn, update_fn)


# ---- the catalogue -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Attack:
  """An attack: the Optax chain plus, for Nesterov methods, where to take the gradient.

  Attributes:
    name: catalogue name.
    tx: the ``GradientTransformation`` (its last link projects onto the ε-ball).
    lookahead: ``None``, or ``f(params, opt_state) -> point`` where the loss gradient
      must be evaluated (ni-fgsm).
    settings: the hyper-parameters, for reports.
  """
  name: str
  tx: optax.GradientTransformation
  lookahead: Callable[[Any, Any], Any] | None
  settings: dict


def _nesterov_lookahead(alpha: float, momentum: float):
  """NI-FGSM's gradient point ``x - alpha * mu * g`` (g: the chain's accumulated trace)."""

  def lookahead(params, opt_state):
    g = opt_state[1].trace  # Link 1 of the mi/ni chain is optax.trace.
    return jax.tree_util.tree_map(lambda x, t: x - alpha * momentum * t, params, g)

  return lookahead


def make_attack(name: str, eps: float = DEFAULT_EPS, alpha: float = DEFAULT_ALPHA,
                lr: float | None = None, momentum: float = 1.0, seed: int = 0) -> Attack:
  """Builds an attack from the catalogue.

  Args:
    name: one of ``ATTACKS``.
    eps: L∞ budget around the obfuscated frames, in (0, 1].
    alpha: step of the sign methods.
    lr: learning rate of the optimizer methods (default ``DEFAULT_LR[name]``).
    momentum: μ of mi-fgsm / ni-fgsm (the original's decay factor 1.0).
    seed: PRNG seed of pgd's random start.
  """
  if name not in ATTACKS:
    raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
  # NaN fails every comparison, so each check is written as "inside the range" and negated.
  if not 0 < eps <= 1:
    raise ValueError(f"eps must be in (0, 1], got {eps}")
  if not 0 < alpha <= 1:
    raise ValueError(f"alpha must be in (0, 1], got {alpha}")
  lr = DEFAULT_LR.get(name) if lr is None else lr
  if lr is not None and not (0 < lr and math.isfinite(lr)):
    raise ValueError(f"lr must be a finite number > 0, got {lr}")
  if not (0 <= momentum and math.isfinite(momentum)):
    raise ValueError(f"momentum must be a finite number >= 0, got {momentum}")
  settings = {"attack": name, "eps": eps}
  lookahead = None
  if name in ("i-fgsm", "pgd"):
    links = [optax.scale_by_sign(), optax.scale(-alpha)]
    if name == "pgd":  # The random start joins the first (already signed and scaled) step.
      links.append(add_random_start(eps, jax.random.PRNGKey(seed)))
      settings["seed"] = seed
    settings["alpha"] = alpha
  elif name in ("mi-fgsm", "ni-fgsm"):
    links = [normalize_by_l1_per_frame(), optax.trace(decay=momentum, nesterov=False),
             optax.scale_by_sign(), optax.scale(-alpha)]
    settings.update(alpha=alpha, momentum=momentum)
    if name == "ni-fgsm":
      lookahead = _nesterov_lookahead(alpha, momentum)
  else:
    settings["lr"] = lr
    opt = {
        "rmsprop": lambda: optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        "adam": lambda: optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8),
        "adamw": lambda: optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2),
        "adamax": lambda: optax.adamax(lr, b1=0.9, b2=0.999, eps=1e-8),
        "adagrad": lambda: optax.adagrad(lr, initial_accumulator_value=0.0, eps=1e-10),
        "adadelta": lambda: optax.adadelta(lr, rho=0.9, eps=1e-6),
        "rprop": lambda: scale_by_rprop(lr, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-6,
                                        max_step_size=50.0),
        "sgd": lambda: optax.sgd(lr),
        "asgd": lambda: scale_by_asgd_schedule(lr),
    }[name]()
    links = [opt]
  tx = optax.chain(*links, project_linf(eps))
  return Attack(name=name, tx=tx, lookahead=lookahead, settings=settings)


# ---- the jitted loop with the stopping cascade -----------------------------------------

class LoopResult(NamedTuple):
  frames: jax.Array      # (B, H, W, C) attacked frames.
  iterations: jax.Array  # (B,) steps each frame took before it stopped.
  losses: jax.Array      # (B, V) per-victim losses at the returned frames.
  stage: jax.Array       # (B,) cascade stage reached (V = every victim under threshold).
  # (B,) bool: the host check (make_host_loop's ``check``) passed and stopped the frame;
  # all False without a check.
  met: jax.Array | None = None


def cascade_stage(losses: jax.Array, thresholds: jax.Array) -> jax.Array:
  """Number of leading victims whose loss is under its threshold, per frame: (B,)."""
  ok = (losses <= thresholds[None, :]).astype(jnp.int32)
  return jnp.sum(jnp.cumprod(ok, axis=1), axis=1)


class _Loop(NamedTuple):
  init: Callable[[jax.Array], tuple]
  cond: Callable[[tuple], jax.Array]
  body: Callable[[tuple], tuple]
  finish: Callable[[tuple], LoopResult]


def _loop_parts(loss_fn, attack: Attack, max_iter: int, thresholds, cascade: bool = True,
                loss_stops: bool = True) -> _Loop:
  """The pieces shared by :func:`optimize` (while_loop) and :func:`optimize_host`.

  ``cascade=False``: every victim's loss is descended from the first step (a frame still
  stops when all are under their thresholds). ``loss_stops=False``: a frame stops only
  when marked done (the carry's ``done``, set by the host check of
  :func:`make_host_loop`); the thresholds still weight the cascade.

  The carry: ``(step, frames, optimizer state, stage, iterations, done, thresholds)``.
  """

  def losses_of(x):
    l = loss_fn(x)
    return l[:, None] if l.ndim == 1 else l

  def thr_for(v):
    return (jnp.full((v,), -jnp.inf) if thresholds is None
            else jnp.broadcast_to(jnp.asarray(thresholds, jnp.float32), (v,)))

  def objective(x, thr, stage=None):
    """Cascade-weighted loss and the per-victim losses (aux). ``stage=None``: from x itself."""
    losses = losses_of(x)
    if stage is None:
      stage = cascade_stage(jax.lax.stop_gradient(losses), thr)
    w = (jnp.arange(losses.shape[1])[None, :] <= stage[:, None]).astype(jnp.float32)
    if not cascade:
      w = jnp.ones_like(w)
    return jnp.sum(losses * w), (losses, stage)

  grad_fn = jax.grad(objective, has_aux=True)

  def init(x_obf, x_start=None):
    # Stage 0 for every frame: the first step computes the true stages (and masks the
    # update of frames already converged) from the same forward pass as its gradient, so
    # no separate forward of every victim is spent here. Results are the same.
    # ``x_start`` (a warm start): where the frames begin; the ε-ball stays centred on
    # ``x_obf`` (the chain's projection takes its centre from what it is initialised with).
    v = jax.eval_shape(losses_of, x_obf).shape[1]
    thr = thr_for(v)
    b = x_obf.shape[0]
    state = attack.tx.init(x_obf)
    x = x_obf if x_start is None else x_start
    return (jnp.zeros([], jnp.int32), x, state, jnp.zeros((b,), jnp.int32),
            jnp.zeros((b,), jnp.int32), jnp.zeros((b,), bool), thr)

  def moving(stage, done, v):
    return ~done & (stage < v) if loss_stops else ~done

  def cond(c):
    i, _, _, stage, _, done, thr = c
    return (i < max_iter) & jnp.any(moving(stage, done, thr.shape[0]))

  def body(c):
    # One forward + backward per step: the losses at x decide the stage (and whether the
    # frame is done) and come out of the same pass as the gradient. Look-ahead attacks
    # evaluate the gradient elsewhere and pay one extra forward for the stage.
    i, x, state, _, iters, done, thr = c
    if attack.lookahead is None:
      g, (_, stage) = grad_fn(x, thr)
    else:
      stage = cascade_stage(losses_of(x), thr)
      g, _ = grad_fn(attack.lookahead(x, state), thr, stage)
    active = moving(stage, done, thr.shape[0])
    updates, state = attack.tx.update(g, state, x)
    mask = active.reshape((x.shape[0],) + (1,) * (x.ndim - 1)).astype(x.dtype)
    return i + 1, x + updates * mask, state, stage, iters + active.astype(jnp.int32), done, thr

  def finish(c):
    _, x, _, _, iters, done, thr = c
    losses = losses_of(x)
    return LoopResult(frames=x, iterations=iters, losses=losses, stage=cascade_stage(losses, thr),
                      met=done)

  return _Loop(init, cond, body, finish)


def optimize(loss_fn: Callable[[jax.Array], jax.Array], x_obf: jax.Array, attack: Attack,
             max_iter: int, thresholds: jax.Array | None = None,
             x_start: jax.Array | None = None) -> LoopResult:
  r"""Minimises per-frame, per-victim losses with the original's stopping cascade.

  ``loss_fn(frames)`` returns ``(B, V)`` losses, victims in cascade order (detector,
  landmarks, gaze). A frame at stage ``s`` (its first ``s`` victims are under their
  thresholds) descends on :math:`\sum_{v \le s} L_v`; when all ``V`` are under their
  thresholds it stops moving (its update is masked to zero). The loop ends when every
  frame has stopped or after ``max_iter`` steps. Thresholds are per frame and do not
  depend on the batch size (the original divided batch means by the batch size).

  This is the ``lax.while_loop`` form: pure, call it under ``jax.jit``; the whole attack
  is one XLA program (best on GPU/TPU). :func:`optimize_host` runs the same steps from
  Python, which XLA's CPU backend executes faster.

  Args:
    loss_fn: ``frames (B, ...) -> (B, V)``, differentiable (a ``(B,)`` output is V = 1).
    x_obf: the obfuscated frames: centre of the ε-ball and starting point.
    attack: from :func:`make_attack`.
    max_iter: step budget.
    thresholds: ``(V,)`` stopping thresholds; ``None`` never stops early.
    x_start: where the frames start (a warm start, inside the ε-ball around ``x_obf``);
      default ``x_obf``. The ball stays centred on ``x_obf``.
  """
  parts = _loop_parts(loss_fn, attack, max_iter, thresholds)
  return parts.finish(jax.lax.while_loop(parts.cond, parts.body, parts.init(x_obf, x_start)))


def make_host_loop(loss_fn: Callable[..., jax.Array], attack: Attack, max_iter: int,
                   host_delta: Callable[..., np.ndarray] | None = None, cascade: bool = True,
                   check: Callable[..., np.ndarray] | None = None, check_every: int = 5,
                   loss_stops: bool = True, steps_per_call: int = 1,
                   on_check: Callable[..., tuple] | None = None):
  """Jitted pieces for :func:`optimize_host`, reusable across batches of one shape.

  ``loss_fn(frames, *args)`` takes the batch's data (e.g. params and targets) as extra
  arguments so that the compiled steps are reused from batch to batch. Returns
  ``run(x_obf, thresholds, *args, x_start=None) -> LoopResult`` (``x_start``: see
  :func:`optimize`).

  ``host_delta(frames_np, *args) -> np.ndarray``: a host computation (e.g. a real video
  codec) evaluated on the current frames before every step; its result is passed to
  ``loss_fn`` as one more trailing argument (zeros for the compiled shapes' first trace).
  Done between steps on the host rather than as a callback inside the step, so the
  compiled step never waits on Python (a ``pure_callback`` there deadlocked XLA:CPU on one
  core). ``cascade=False``: see :func:`_loop_parts`.

  ``check(frames_np, moving) -> (B,) float``: a host score of the current frames (e.g.
  the authorized models run on them as inference runs them, their worst error as a
  fraction of its tolerance), called before the first step and every ``check_every``
  steps while some frame still moves. A frame scoring ``<= 1`` stops there for good
  (``LoopResult.met``). A frame that never does ends at its best-scored checked state
  (the final state is scored too): past its loss thresholds the optimizer wanders, and
  the best state it was seen in is what the check vouches for. ``loss_stops=False``:
  only the check stops a frame (the loss thresholds then only weight the cascade).
  ``on_check(args, failing) -> args``: after each check, the loss's extra arguments for
  the steps that follow, given the frames still moving outside the check (e.g. targets
  that learn from what the check saw); same shapes, so the compiled step is reused.

  ``steps_per_call``: steps per call of the compiled body, as a ``lax.while_loop`` of up
  to that many steps (the accelerator form: the host only steps in between, for the
  check; use ``check_every``). 1: one jitted step per call (fastest on XLA:CPU).
  """
  if check_every < 1:
    raise ValueError(f"check_every must be >= 1, got {check_every}")
  if steps_per_call < 1 or (steps_per_call > 1 and host_delta is not None):
    raise ValueError(f"steps_per_call must be >= 1, and 1 with a host_delta, got {steps_per_call}")

  def parts(thresholds, args):
    return _loop_parts(lambda x: loss_fn(x, *args), attack, max_iter, thresholds, cascade, loss_stops)

  init = jax.jit(lambda x, thr, args, x_start=None: parts(thr, args).init(x, x_start))
  def steps(c, args):
    p = parts(c[-1], args)
    if steps_per_call == 1:
      return p.body(c)
    end = c[0] + steps_per_call
    return jax.lax.while_loop(lambda c: p.cond(c) & (c[0] < end), p.body, c)

  body = jax.jit(steps, donate_argnums=(0,))
  finish = jax.jit(lambda c, args: parts(c[-1], args).finish(c))

  def with_delta(c, args):
    if host_delta is None:
      return args
    x = np.asarray(jax.device_get(c[1]))
    return args + (jnp.asarray(host_delta(x, *args), x.dtype),)

  def moving(c):
    done = np.asarray(c[5])
    return ~done & (np.asarray(c[3]) < c[-1].shape[0]) if loss_stops else ~done

  def like(a, ref):
    """``a`` placed as ``ref`` is (its devices and sharding: frames split across devices)."""
    return jax.device_put(a, ref.sharding) if hasattr(ref, "sharding") else jnp.asarray(a)

  def mark_done(c, passed):
    return c[:5] + (like(np.asarray(c[5]) | passed, c[5]),) + c[6:]

  def scored(c, m, best):
    """Runs the check on the moving frames ``m``, keeps each frame's best-scored state in
    ``best`` ([frames, scores]); returns which frames are within it (score <= 1)."""
    x = np.asarray(jax.device_get(c[1]))
    score = np.where(m, np.asarray(check(x, m), np.float64), np.inf)
    better = score < best[1]
    if better.any():
      best[0] = x.copy() if best[0] is None else np.where(better[:, None, None, None], x, best[0])
      best[1] = np.where(better, score, best[1])
    return score <= 1.0

  def run(x_obf, thresholds, *args, x_start=None):
    c = init(x_obf, thresholds, args + ((jnp.zeros_like(x_obf),) if host_delta else ()), x_start)
    best = [None, np.full((x_obf.shape[0],), np.inf)]  # Best checked frames and their scores.
    step = 0
    while step < max_iter:
      m = moving(c)
      if check is not None and step % check_every == 0 and m.any():
        passed = scored(c, m, best) & m
        if passed.any():
          c = mark_done(c, passed)
          m &= ~passed
        if on_check is not None and m.any():
          args = on_check(args, m)
      if not m.any():
        break
      c = body(c, with_delta(c, args))
      step = int(c[0]) if steps_per_call > 1 else step + 1
    else:  # The budget is spent: frames still moving are scored once more and end at
      # their best-scored checked state.
      m = moving(c)
      if check is not None and m.any():
        passed = scored(c, m, best) & m
        c = mark_done(c, passed)
        back = m & ~passed & np.isfinite(best[1])
        if back.any():
          x = np.where(back[:, None, None, None], best[0], np.asarray(jax.device_get(c[1])))
          c = c[:1] + (like(x.astype(c[1].dtype), c[1]),) + c[2:]
    return finish(c, with_delta(c, args))

  # The jitted pieces, for benchmarks that time one step: ``c = run.init(x, thr, args)``,
  # then ``c = run.body(c, args)`` (donates ``c``), ``run.finish(c, args)``.
  run.init, run.body, run.finish = init, body, finish
  return run


def optimize_host(loss_fn: Callable[[jax.Array], jax.Array], x_obf: jax.Array, attack: Attack,
                  max_iter: int, thresholds: jax.Array | None = None) -> LoopResult:
  """:func:`optimize` with the loop in Python around one jitted step (same results).

  XLA:CPU runs a ``while_loop`` body about 1.6x slower than the same step jitted alone
  (measured on RetinaFace-mnet, 16x256x256: 0.53 s vs 0.32 s per step), so on CPU the
  pipeline drives the steps from the host; the stopping test costs one scalar transfer
  per step.
  """
  thr = None if thresholds is None else jnp.asarray(thresholds, jnp.float32)
  return make_host_loop(lambda x: loss_fn(x), attack, max_iter)(x_obf, thr)
