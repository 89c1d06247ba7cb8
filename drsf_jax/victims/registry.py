"""The Victim interface and registry: authorized models the attack must keep working.

A :class:`Victim` bundles converted weights with three functions (DESIGN.md, "The
victim interface"):

* ``predict(params, frames, ctx) -> list`` (host): decoded predictions per frame;
* ``targets(params, frames, ctx) -> pytree``: computed once on the *original* frames:
  what the attack must preserve plus the fixed geometry its loss needs (crop matrices,
  normalisation warps, masks); static shapes;
* ``loss(params, frames, targets) -> (B,)``: per-frame, differentiable in ``frames``,
  pure ``jnp`` (crops and warps are bilinear sampling with the fixed matrices), so a
  whole attack step compiles into one ``jax.jit``.

Frames are float32 NHWC RGB in [0, 1]. ``ctx`` is a :class:`FaceContext`: the faces
chosen on the original frames (``K = max_faces`` per frame, largest first), which the
landmark and gaze victims need, as the original fixed boxes and landmarks during the attack.
"""

import dataclasses
import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from drsf_jax.geometry import bbox
from drsf_jax.io import checkpoints
from drsf_jax.io.frames import as_unit_frames
from drsf_jax.victims import detectors
# The interface lives below the registry so that victim modules (gaze_victims) import it
# without importing the registry that imports them.
from drsf_jax.victims.interface import FaceContext, Victim, context_from_detections, frame_keys  # pylint: disable=unused-import


def _kl_binary(p_t, p, eps=1e-6):
  """KL(p_t || p) for Bernoulli probabilities; 0 when p == p_t."""
  p = jnp.clip(p, eps, 1 - eps)
  p_t = jnp.clip(p_t, eps, 1 - eps)
  return p_t * jnp.log(p_t / p) + (1 - p_t) * jnp.log((1 - p_t) / (1 - p))


def _pairwise_iou(a, b):
  """IoU between (..., A, 4) and (..., K, 4) -> (..., A, K)."""
  lt = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])
  rb = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
  inter = jnp.prod(jnp.clip(rb - lt, 0), axis=-1)
  area_a = jnp.prod(jnp.clip(a[..., 2:] - a[..., :2], 0), axis=-1)
  area_b = jnp.prod(jnp.clip(b[..., 2:] - b[..., :2], 0), axis=-1)
  return inter / jnp.maximum(area_a[..., :, None] + area_b[..., None, :] - inter, 1e-9)


# ---- RetinaFace -------------------------------------------------------------------------

RETINAFACE_POSITIVE_IOU = 0.35  # Anchors whose original decoded box overlaps a chosen face.


def _retinaface_victim(name: str, det: detectors.Detector) -> Victim:
  from drsf_jax.models import retinaface as rf
  config = det.config

  @jax.jit
  def _targets(params, frames, boxes, valid):
    loc, conf, landm = rf.apply(params, frames, config)
    priors = rf.pixel_priors(config, frames.shape[1], frames.shape[2])
    dec, _ = rf.decode(loc, landm, priors, config["variance"])
    iou = _pairwise_iou(dec, boxes) * valid[:, None, :]
    pos = (jnp.max(iou, axis=-1) >= RETINAFACE_POSITIVE_IOU).astype(jnp.float32)
    # Anchors count by their original face score: the confident ones make the detection.
    return {"loc": loc, "score": conf[..., 1], "landm": landm, "pos": pos * conf[..., 1]}

  def targets(params, frames, ctx: FaceContext):
    return _targets(params, jnp.asarray(frames), jnp.asarray(ctx.boxes), jnp.asarray(ctx.valid))

  def loss(params, frames, t):
    loc, conf, landm = rf.apply(params, frames, config)
    per_anchor = (_kl_binary(t["score"], conf[..., 1])
                  + jnp.mean((loc - t["loc"]) ** 2, axis=-1)
                  + jnp.mean((landm - t["landm"]) ** 2, axis=-1))
    return jnp.sum(per_anchor * t["pos"], axis=1) / jnp.maximum(jnp.sum(t["pos"], axis=1), 1.0)

  def predict(params, frames, ctx=None):
    del ctx
    return rf.detect(params, np.asarray(frames, np.float32), config)

  return Victim(name, "detector", det.variables, config, det.meta, predict, targets, loss)


# ---- MTCNN ------------------------------------------------------------------------------

MTCNN_PIXEL_SCALE = 2.0  # Pixel errors are measured in units of 2 px (a 2 px error costs 1).
# Crops drawn afresh at every step around the original's ONet and RNet crops (per face),
# and their jitter: centre shift (x, y) and log-scale of the side, Gaussian, as fractions
# of the box side. Measured on talking_head_a: the ONet crop inference takes on an
# attacked frame lies 4-7 px (3-4 % of a 170 px face) from the original's; RNet's
# proposals 15-25 px (about 12 %).
MTCNN_ONET_SAMPLES = 8
MTCNN_RNET_SAMPLES = 0
MTCNN_ONET_JITTER = 0.04
MTCNN_RNET_JITTER = 0.12
# ONet crops mined by the stop's check, per face: where a frame still reads outside the
# tolerances, the crop inference took it from joins the loss (the last MTCNN_MINED_CROPS
# of them, weighted together as much as the original's crop and its draws). Measured on
# talking_head_b's first batch: inference's crop lay 15-30 px (up to 5 sigma of the
# draws) from the original's; ONet read the attacked frame 1.3 px off on the original's
# crop and 3.2 px off on that one.
MTCNN_MINED_CROPS = 4
# The loss of the earlier releases' kind: the original's crops only (tests, comparisons).
MTCNN_NOMINAL_ONLY = {"onet_samples": 0, "rnet_samples": 0, "mined_crops": 0, "quantize": False}
# Frames per piece of the MTCNN loss on CPU (the loss is per frame; see _mtcnn_victim).
# 8, deid's batch: chunks of 4 were no faster at batch 8 (158 against 160 ms a step) and
# change its float order, so deid's batches run whole; larger batches (16, 64) gain.
MTCNN_LOSS_CHUNK = 8


def _random_crops(frames, boxes, n: int, sigma: float, seed: int):
  """(B, K, 4) boxes -> (B, K, n, 4) boxes moved and scaled by N(0, sigma) of their side.

  Frame ``i``'s draws come from :func:`interface.frame_keys` (its own 8-bit pixel sum), so
  they change as the attack changes the frame (fresh crops at every step: a stochastic
  expectation that a fixed set of crops cannot give, as the attack overfits any fixed
  set), while the loss stays a deterministic function of its inputs.
  """
  keys = frame_keys(frames, seed)
  off = jax.vmap(lambda k: jax.random.normal(k, (boxes.shape[1], n, 3)))(keys) * sigma
  boxes = jax.lax.stop_gradient(boxes)
  cx = (boxes[..., 0] + boxes[..., 2]) / 2
  cy = (boxes[..., 1] + boxes[..., 3]) / 2
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  s = jnp.maximum(w, h)[..., None]
  ncx = cx[..., None] + off[..., 0] * s
  ncy = cy[..., None] + off[..., 1] * s
  nw = w[..., None] * jnp.exp(off[..., 2])
  nh = h[..., None] * jnp.exp(off[..., 2])
  return jnp.stack([ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2], axis=-1)


def _rerec(b):
  """facenet-pytorch's ``rerec`` in jnp: boxes squared around their centres."""
  w = b[..., 2] - b[..., 0]
  h = b[..., 3] - b[..., 1]
  l = jnp.maximum(w, h)
  x1 = b[..., 0] + w * 0.5 - l * 0.5
  y1 = b[..., 1] + h * 0.5 - l * 0.5
  return jnp.stack([x1, y1, x1 + l, y1 + l], axis=-1)


def _mtcnn_victim(name: str, det: detectors.Detector, onet_samples: int = MTCNN_ONET_SAMPLES,
                  rnet_samples: int = MTCNN_RNET_SAMPLES, onet_jitter: float = MTCNN_ONET_JITTER,
                  rnet_jitter: float = MTCNN_RNET_JITTER, quantize: bool = True,
                  mined_crops: int = MTCNN_MINED_CROPS, seed: int = 0) -> Victim:
  """MTCNN: the original's final box and landmarks, in pixels, from the crops inference may take.

  Inference re-runs the cascade on the attacked frame: PNet proposes other windows, RNet
  calibrates them into other ONet crops, and among the ONet candidates (scores tie near
  1.0) one wins NMS. So the loss asks, per face:

  * ONet, on the original's crop and on ``onet_samples`` crops drawn around it at every
    step, for the original's *final* box (calibrated) and landmarks, in pixels;
  * RNet, on the original's proposal and ``rnet_samples`` drawn around it, for the
    original's ONet crop (its calibrated, squared box), in pixels, and its score;
  * PNet, on every pyramid level, for its maps where the original had proposals (without
    it a pixelated face may never be proposed again).

  * ONet, on up to ``mined_crops`` crops that inference actually took on the attacked
    frames while they read outside the stop's tolerances (``mine``, called by the
    pipeline after each check; none before the first), for the same.

  Pixel errors are in units of ``MTCNN_PIXEL_SCALE``. ``quantize``: the networks see the
  frame rounded to 8 bits as it will be written (straight-through gradient).
  """
  from drsf_jax.models import mtcnn
  config = det.config
  if min(onet_samples, rnet_samples, mined_crops) < 0 or not (np.isfinite(onet_jitter) and np.isfinite(rnet_jitter)
                                                 and onet_jitter >= 0 and rnet_jitter >= 0):
    raise ValueError("sample counts must be >= 0 and jitters finite and >= 0, got "
                     f"{onet_samples}, {rnet_samples}, {mined_crops}, {onet_jitter}, {rnet_jitter}")

  window_sizes: dict = {}  # Frame size -> the PNet window sizes of the batches so far.

  def _pnet_maps(params, frames):
    return mtcnn.pnet_pyramid(params, frames, config)

  @jax.jit
  def _targets(params, frames, onet_boxes, rnet_boxes, valid):
    o_score, o_reg, o_lms = mtcnn.onet_on_boxes(params, frames, onet_boxes)
    r_score, r_reg = mtcnn.rnet_on_boxes(params, frames, rnet_boxes)
    thr = config["thresholds"][0]
    # o_reg, r_reg, o_lms: unused by this loss; the PyTorch benchmark baselines
    # (benchmarks/torch_baselines.py) compute the earlier fixed-crop loss from them.
    return {"box": mtcnn.calibrate(onet_boxes, o_reg), "lms": o_lms, "o_score": o_score,
            "r_score": r_score, "onet_boxes": onet_boxes, "rnet_boxes": rnet_boxes,
            "o_reg": o_reg, "r_reg": r_reg, "o_lms": o_lms,
            "valid": valid.astype(jnp.float32),
            "pnet": [{"reg": r, "prob": p, "pos": (p >= thr * 0.5).astype(jnp.float32)}
                     for r, p in _pnet_maps(params, frames)]}

  def targets(params, frames, ctx: FaceContext):
    onet = ctx.extra.get("onet_boxes", ctx.boxes)
    rnet = ctx.extra.get("rnet_boxes", onet)
    t = _targets(params, jnp.asarray(frames), jnp.asarray(onet), jnp.asarray(rnet),
                 jnp.asarray(ctx.valid))
    # The loss runs PNet only where the original had proposals (on every frame of the
    # batch), not on the whole pyramid: exact, and the step's cost follows the face. The
    # windows only grow within a frame size, so a video compiles the step a few times,
    # not once per batch (8 shapes in 12 batches of talking_head_a otherwise).
    hw = tuple(np.shape(frames)[1:3])
    windows, window_sizes[hw] = mtcnn.pnet_windows(
        [np.asarray(tt["pos"]) for tt in t["pnet"]], hw, config, at_least=window_sizes.get(hw))
    t["pnet_windows"] = jax.tree_util.tree_map(jnp.asarray, windows)
    b, k = np.shape(onet)[:2]
    t["mined_boxes"] = jnp.broadcast_to(jnp.asarray(onet, jnp.float32)[:, :, None], (b, k, mined_crops, 4))
    t["mined_w"] = jnp.zeros((b, k, mined_crops), jnp.float32)
    t["mined_next"] = jnp.zeros((b, k), jnp.int32)  # The ring's next slot, per face.
    return t

  def mine(t, ctx: FaceContext, failing, offset=(0, 0)):
    """``t`` with each failing frame's ONet crops, as inference took them (``ctx``: its
    detections on the written frames, ``onet_boxes`` in ``extra``), in the ring of mined
    crops: per target face, the crop of the detection that overlaps it most (IoU >= 0.3)."""
    if not mined_crops or "onet_boxes" not in ctx.extra:
      return t
    shift = np.asarray([offset[0], offset[1], offset[0], offset[1]], np.float32)
    boxes, w = np.array(t["mined_boxes"]), np.array(t["mined_w"])
    nxt, target = np.array(t["mined_next"]), np.asarray(t["box"])
    valid = np.asarray(t["valid"]) > 0
    got, crops = ctx.boxes - shift, ctx.extra["onet_boxes"] - shift
    changed = False
    for i in np.flatnonzero(np.asarray(failing, bool)):
      seen = np.flatnonzero(ctx.valid[i])
      if not len(seen):
        continue
      for k in np.flatnonzero(valid[i]):
        iou = bbox.box_iou(target[i, k], got[i, seen])[0]
        j = int(np.argmax(iou))
        if iou[j] < 0.3:
          continue
        slot = int(nxt[i, k]) % mined_crops
        boxes[i, k, slot], w[i, k, slot] = crops[i, seen[j]], 1.0
        nxt[i, k] += 1
        changed = True
    if not changed:
      return t
    return {**t, "mined_boxes": jnp.asarray(boxes), "mined_w": jnp.asarray(w),
            "mined_next": jnp.asarray(nxt)}

  def _crops(x, boxes, n, sigma, seed_):
    """(B, K, 1 + n, 4): the original's crop, then ``n`` drawn around it."""
    if not n:
      return boxes[:, :, None]
    return jnp.concatenate([boxes[:, :, None], _random_crops(x, boxes, n, sigma, seed_)], axis=2)

  def loss(params, frames, t):
    x = frames
    if quantize:
      x = frames + jax.lax.stop_gradient(jnp.round(frames * 255.0) / 255.0 - frames)
    b = x.shape[0]
    step = MTCNN_LOSS_CHUNK if jax.default_backend() == "cpu" else b
    if b <= step:
      return _frames_loss(params, x, t)
    # On CPU, a few frames at a time: the loss is per frame, and PNet's first pyramid
    # levels for a whole batch of 16 overflow the caches (its forward + backward on
    # 16 x 138 x 138 took 146 ms at once, 108 ms in chunks of 8, 80-107 in smaller
    # ones). The PNet windows are the batch's, shared by every chunk; every other
    # target is per frame.
    per_frame = {k: v for k, v in t.items() if k != "pnet_windows"}
    for leaf in jax.tree_util.tree_leaves(per_frame):
      if leaf.shape[:1] != (b,):
        raise ValueError(f"MTCNN target of shape {leaf.shape} is not per frame of a batch of {b}")
    out = []
    for i in range(0, b, step):
      chunk = jax.tree_util.tree_map(lambda a, i=i: a[i:i + step], per_frame)
      chunk["pnet_windows"] = t["pnet_windows"]
      out.append(_frames_loss(params, x[i:i + step], chunk))
    return jnp.concatenate(out)

  def _frames_loss(params, x, t):
    # RNet: each proposal must lead to the original's ONet crop.
    r_boxes = _crops(x, t["rnet_boxes"], rnet_samples, rnet_jitter, seed + 1)
    b, k, s = r_boxes.shape[:3]
    r_score, r_reg = mtcnn.rnet_on_boxes(params, x, r_boxes.reshape(b, k * s, 4))
    r_score, r_reg = r_score.reshape(b, k, s), r_reg.reshape(b, k, s, 4)
    r_px = (_rerec(mtcnn.calibrate(r_boxes, r_reg)) - t["onet_boxes"][:, :, None]) / MTCNN_PIXEL_SCALE
    r_per = _kl_binary(t["r_score"][..., None], r_score) + jnp.mean(r_px ** 2, -1)
    # ONet: each crop must give the original's final box and landmarks.
    o_boxes = _crops(x, t["onet_boxes"], onet_samples, onet_jitter, seed)
    drawn = o_boxes.shape[2]
    if mined_crops:
      o_boxes = jnp.concatenate([o_boxes, jax.lax.stop_gradient(t["mined_boxes"])], axis=2)
    s = o_boxes.shape[2]
    o_score, o_reg, o_lms = mtcnn.onet_on_boxes(params, x, o_boxes.reshape(b, k * s, 4))
    o_score, o_reg, o_lms = o_score.reshape(b, k, s), o_reg.reshape(b, k, s, 4), o_lms.reshape(b, k, s, 5, 2)
    box_px = (mtcnn.calibrate(o_boxes, o_reg) - t["box"][:, :, None]) / MTCNN_PIXEL_SCALE
    lm_px = (o_lms - t["lms"][:, :, None]) / MTCNN_PIXEL_SCALE
    o_per = (_kl_binary(t["o_score"][..., None], o_score) + jnp.mean(box_px ** 2, -1)
             + jnp.mean(lm_px ** 2, (-2, -1)))
    per_face = jnp.mean(o_per[..., :drawn], -1) + jnp.mean(r_per, -1)
    if mined_crops:  # The mined crops together weigh as much as the drawn ones.
      w = t["mined_w"]
      per_face = per_face + jnp.sum(o_per[..., drawn:] * w, -1) / jnp.maximum(jnp.sum(w, -1), 1.0)
    staged = jnp.sum(per_face * t["valid"], axis=1) / jnp.maximum(jnp.sum(t["valid"], axis=1), 1.0)
    pn_sum = 0.0
    pn_cnt = 0.0
    for (r, p), tt, wnd in zip(mtcnn.pnet_pyramid_windows(params, x, t["pnet_windows"]), t["pnet"],
                               t["pnet_windows"]):
      cut = lambda a, n=p.shape: jax.lax.dynamic_slice(  # noqa: E731 - the window of a target map
          a, (0, wnd["p0"], wnd["q0"]) + (0,) * (a.ndim - 3), n + a.shape[3:])
      pos = cut(tt["pos"])
      term = _kl_binary(cut(tt["prob"]), p) + jnp.mean((r - cut(tt["reg"])) ** 2, axis=-1)
      pn_sum = pn_sum + jnp.sum(term * pos, axis=(1, 2))
      pn_cnt = pn_cnt + jnp.sum(pos, axis=(1, 2))
    return staged + pn_sum / jnp.maximum(pn_cnt, 1.0)

  def predict(params, frames, ctx=None):
    del ctx
    return mtcnn.detect(params, np.asarray(frames, np.float32), config)

  return Victim(name, "detector", det.variables, config, det.meta, predict, targets, loss, mine=mine)


# ---- FAN --------------------------------------------------------------------------------

def _fan_victim(variables, meta) -> Victim:
  from drsf_jax.models import fan
  config = dict(fan.DEFAULT_CONFIGS["fan"])
  config.update(meta.get("config", {}))
  res = int(config["resolution"])

  def _geometry(boxes):
    b, k = boxes.shape[:2]
    center, scale = fan.crop_transform(boxes.reshape(b * k, 4), config["reference_scale"],
                                       config["center_y_offset"])
    m = fan.crop_matrix(center, scale, res, config["scale_factor"])
    return center, scale, m

  def _crops(frames, m, k):
    reps = jnp.repeat(frames, k, axis=0)
    return fan.crop(reps, m, res)

  def _forward(params, frames, boxes):
    """Heatmaps, crop geometry and decoded landmarks (B, K, 68, 2) of the faces ``boxes``."""
    b, k = boxes.shape[:2]
    center, scale, m = _geometry(boxes)
    hm = fan.apply(params, _crops(frames, m, k), config)
    lms = fan.decode_heatmaps(hm, center, scale, config["scale_factor"]).reshape(b, k, 68, 2)
    return hm, center, scale, m, lms

  @jax.jit
  def _targets(params, frames, boxes, valid):
    hm, center, scale, m, lms = _forward(params, frames, boxes)
    return {"heatmaps": hm, "matrices": m, "center": center, "scale": scale,
            "valid": valid.astype(jnp.float32), "landmarks68": lms}

  def targets(params, frames, ctx: FaceContext):
    """The targets, with the decoded 68 landmarks (``landmarks68``, unused by the loss) so
    that ``annotate`` need not run FAN a second time on the same frames."""
    return _targets(params, jnp.asarray(frames), jnp.asarray(ctx.boxes), jnp.asarray(ctx.valid))

  def loss(params, frames, t):
    b, k = t["valid"].shape
    hm = fan.apply(params, _crops(frames, t["matrices"], k), config)
    per_face = jnp.mean((hm - t["heatmaps"]) ** 2, axis=(1, 2, 3)).reshape(b, k)
    return jnp.sum(per_face * t["valid"], axis=1) / jnp.maximum(jnp.sum(t["valid"], axis=1), 1.0)

  @jax.jit
  def _predict(params, frames, boxes):
    return _forward(params, frames, boxes)[-1]

  def predict(params, frames, ctx: FaceContext):
    lms = np.asarray(_predict(params, jnp.asarray(frames), jnp.asarray(ctx.boxes)))
    return [[lms[i, j] for j in range(lms.shape[1]) if ctx.valid[i, j]] for i in range(lms.shape[0])]

  def annotate(params, frames, ctx: FaceContext, targets=None):
    lms = (targets["landmarks68"] if targets is not None
           else _predict(params, jnp.asarray(frames), jnp.asarray(ctx.boxes)))
    ctx.landmarks68 = np.asarray(lms)

  return Victim("fan", "landmarks", variables, config, meta, predict, targets, loss, annotate)


# ---- registry ---------------------------------------------------------------------------

ALIGNMENTS = ("fan", "none")
GAZE_MODELS = ("MPIIGaze", "MPIIFaceGaze", "ETH-XGaze", "none")


def _unit_input(predict: Callable[..., list]) -> Callable[..., list]:
  """``predict`` that takes uint8 or [0, 1] float frames (anything else: ValueError)."""

  @functools.wraps(predict)
  def wrapped(params, frames, *args, **kwargs):
    return predict(params, as_unit_frames(frames), *args, **kwargs)

  return wrapped


def load_victim(name: str, weights_dir: str | None = None, **options) -> Victim:
  """Loads an authorized model by its CLI name; errors are one line and name the fix.

  The victim's ``predict(params, frames, ...)`` takes (B, H, W, 3) frames, uint8 or float
  in [0, 1]; ``targets`` and ``loss`` run inside the attack on float [0, 1] arrays.

  ``options``: keyword arguments of the victim's loss, for comparisons and experiments
  (the defaults are deid's): mtcnn takes ``onet_samples``, ``rnet_samples``,
  ``onet_jitter``, ``rnet_jitter``, ``quantize`` and ``seed`` (``MTCNN_NOMINAL_ONLY`` is
  the loss on the original's crops only); the gaze models take ``equalization``,
  ``geometry_samples``, ``geometry_jitter_px`` and ``geometry_draws``; retinaface and fan
  take none.
  """
  v = _load_victim(name, weights_dir, options)
  return dataclasses.replace(v, predict=_unit_input(v.predict))


def _check_options(name: str, options: dict, factory: Callable) -> None:
  """A one-line error for an option ``factory`` does not take (a typo must not be ignored)."""
  known = [p for p in inspect.signature(factory).parameters if p not in _POSITIONAL]
  unknown = sorted(set(options) - set(known))
  if unknown:
    raise ValueError(f"unknown option(s) {', '.join(unknown)} for {name}; it takes: "
                     f"{', '.join(known) or 'none'}")


# The factories' positional arguments, which load_victim supplies itself.
_POSITIONAL = ("name", "det", "variables", "meta", "weights_dir")


def _load_victim(name: str, weights_dir: str | None, options: dict | None = None) -> Victim:
  options = dict(options or {})
  if name in detectors.DETECTORS:
    factory = _mtcnn_victim if name == "mtcnn" else _retinaface_victim
    _check_options(name, options, factory)
    det = detectors.load_detector(name, weights_dir)
    return factory(name, det, **options)
  if name == "fan":
    from drsf_jax.models import fan
    _check_options(name, options, _fan_victim)
    variables, meta = checkpoints.load("fan", weights_dir)
    checkpoints.check_tree(fan.expected_variables("fan", meta.get("config")), variables,
                           what=checkpoints.weights_path("fan", weights_dir))
    return _fan_victim(variables, meta)
  if name in GAZE_MODELS[:-1]:
    from drsf_jax.victims import gaze as gaze_victims  # pylint: disable=import-outside-toplevel
    _check_options(name, options, gaze_victims.load)
    return gaze_victims.load(name, weights_dir, **options)
  raise ValueError(f"unknown model {name!r}; detectors: {', '.join(detectors.DETECTORS)}; "
                   f"alignment: fan; gaze: {', '.join(GAZE_MODELS[:-1])}")
