"""De-identification pipeline: targets -> obfuscate -> attack, one jitted step per batch.

Two streaming passes over the video keep memory bounded (it does not grow with the video
length): pass 1 runs the detector on the original frames and keeps only the small
per-frame detections; missed frames are filled from their neighbours
(:mod:`drsf_jax.deid.temporal`). Pass 2 decodes the frames again in batches, computes every
authorized victim's targets on the originals, obfuscates every face, runs the attack
(one ``jax.jit`` of :func:`drsf_jax.deid.attacks.optimize` per frame size; the last partial
batch is padded so it does not recompile) and encodes the rounded result.
"""

import dataclasses
import logging
import math
import os
import platform
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from drsf_jax.deid import attacks
from drsf_jax.deid import crop
from drsf_jax.deid import obfuscation
from drsf_jax.deid import temporal
from drsf_jax.evaluation import guard
from drsf_jax.geometry import bbox
from drsf_jax.io import outputs
from drsf_jax.io import video
from drsf_jax.victims import detectors
from drsf_jax.victims import registry as victims_lib

REPORT_SCHEMA = "drsf-jax/deid-report/1"
MAX_MASK_SCALE = 10.0  # --mask_scale bound: 10x the face box already covers a driver camera frame.

# Per-frame stopping thresholds of the cascade, per victim kind (the loss scales differ).
DEFAULT_THRESHOLDS = {"retinaface": 0.02, "retinaface_r50": 0.02, "mtcnn": 0.1,
                      "fan": 1e-5, "MPIIGaze": 1e-4, "MPIIFaceGaze": 1e-4, "ETH-XGaze": 1e-4}


PERTURB_MODES = ("face", "frame")
# What stops a frame's attack: 'metrics' = the authorized models, run on the frame as
# it will be written (rounded to 8 bits, through the codec) exactly as inference.py runs
# them, agree with their reading of the original within the stop_* tolerances (checked
# every check_every steps); 'loss' = every victim's loss under its raw threshold
# (DEFAULT_THRESHOLDS, the original's rule).
# 'either': whichever comes first.
STOP_MODES = ("metrics", "loss", "either")
# Which batches are attacked a second time, from the perturbation of one of their own frames,
# when some frame ended outside the stop (DeidConfig.revisit).
REVISIT_MODES = ("none", "first", "all")


def perturbation_mask(regions: list, shape_hw: tuple[int, int], margin: int = 0) -> np.ndarray:
  """(B, H, W, 1) float32: 1 inside every face's obfuscated square grown by ``margin`` px.

  ``regions``: per frame, the (N, 4) integer squares of :func:`bbox.face_regions`
  (x1, y1, x2, y2, exclusive ends).
  """
  h, w = shape_hw
  mask = np.zeros((len(regions), h, w, 1), np.float32)
  for i, r in enumerate(regions):
    for x1, y1, x2, y2 in np.asarray(r, np.int64).reshape(-1, 4):
      mask[i, max(0, y1 - margin):min(h, y2 + margin), max(0, x1 - margin):min(w, x2 + margin)] = 1.0
  return mask


@dataclasses.dataclass
class DeidConfig:
  """Settings of one de-identification run (the CLI flags of ``scripts/deid.py``)."""
  detector: str = "mtcnn"
  alignment: str = "none"
  gaze: str = "none"
  attack: str = "adam"
  deid: str = "pixelate_10"
  eps: float = attacks.DEFAULT_EPS
  alpha: float = attacks.DEFAULT_ALPHA
  lr: float | None = None
  max_iter: int = attacks.DEFAULT_MAX_ITER
  batch_size: int = 8
  max_faces: int = 1
  mask_scale: float = 1.0
  max_frames: int | None = None
  codec: str = "ffv1"
  # Quality of the lossy codecs (h264, h265, vp9): their CRF; None = video.DEFAULT_CRF.
  crf: int | None = None
  # Copy the input's audio into the output (stream copy where the container allows).
  audio: bool = True
  # With a lossy codec (h264, h265, vp9): the victims see every attack step through the
  # real encoder (in memory, same settings as the output) and its gradient is taken as
  # the identity (straight-through), so the loss is what survives the codec.
  codec_aware: bool = True
  # With --perturb face: the victims run on a window around the faces of each batch
  # (drsf_jax/deid/crop.py) instead of the whole frame, when every victim allows it.
  crop_local: bool = True
  calibration: str | None = None
  allow_no_face: bool = False
  seed: int = 0
  # Where the attack may change pixels: 'face' = inside the obfuscated squares (grown by
  # perturb_margin pixels), every other pixel of the output equals the input exactly;
  # 'frame' = anywhere (the original's behaviour).
  perturb: str = "face"
  perturb_margin: int = 0
  # Decode the written output, run the authorized models on it as inference.py does and
  # put the utility against the original into the report (the number users measure).
  verify: bool = True
  # Start each batch's attack from the previous batch's perturbation of its last frame,
  # carried in face-aligned coordinates (each face's obfuscated square, resized to the
  # new square) and clipped to the ε-ball around the new obfuscated frame.
  warm_start: bool = True
  # When a frame is done (STOP_MODES), and the per-frame tolerances of 'metrics', in the
  # units evaluate.py reports: box IoU at least, mean landmark error, head-pose and gaze
  # angles at most (a tolerance whose model is not authorized is not tested).
  stop: str = "either"
  stop_iou: float = 0.95
  stop_landmarks_px: float = 1.5
  stop_head_pose_deg: float = 2.0
  stop_gaze_deg: float = 2.0
  check_every: int = 5
  # --stop metrics/either with warm_start: a batch whose frames did not all end within the
  # stop is attacked again, warm-started from the perturbation of its last frame within the
  # stop (its last frame if none; in face-aligned coordinates), and each such frame keeps
  # whichever of its two results the check scores better (Deidentifier.revisit_batch).
  # 'first': only the first batch, which has no warm start; 'all': every batch; 'none':
  # never. A revisited frame's iterations count both attacks.
  revisit: str = "all"

  def validate(self):
    if self.stop not in STOP_MODES:
      raise ValueError(f"unknown stop rule {self.stop!r}; choose one of {', '.join(STOP_MODES)}")
    if not (isinstance(self.stop_iou, (int, float)) and 0 <= self.stop_iou <= 1):
      raise ValueError(f"stop_iou must be in [0, 1], got {self.stop_iou!r}")
    for name in ("stop_landmarks_px", "stop_head_pose_deg", "stop_gaze_deg"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 1:
      raise ValueError(f"check_every must be an integer >= 1 (steps), got {self.check_every!r}")
    if self.revisit not in REVISIT_MODES:
      raise ValueError(f"unknown revisit mode {self.revisit!r}; choose one of {', '.join(REVISIT_MODES)}")
    if self.perturb not in PERTURB_MODES:
      raise ValueError(f"unknown perturb mode {self.perturb!r}; choose one of {', '.join(PERTURB_MODES)}")
    if isinstance(self.perturb_margin, bool) or not isinstance(self.perturb_margin, int) or self.perturb_margin < 0:
      raise ValueError(f"perturb_margin must be an integer >= 0 (pixels), got {self.perturb_margin!r}")
    if self.detector not in detectors.DETECTORS:
      raise ValueError(f"unknown detector {self.detector!r}; choose one of {', '.join(detectors.DETECTORS)}")
    if self.alignment not in victims_lib.ALIGNMENTS:
      raise ValueError(f"unknown alignment {self.alignment!r}; choose one of {', '.join(victims_lib.ALIGNMENTS)}")
    if self.gaze not in victims_lib.GAZE_MODELS:
      raise ValueError(f"unknown gaze model {self.gaze!r}; choose one of {', '.join(victims_lib.GAZE_MODELS)}")
    for name in ("eps", "alpha", "lr", "mask_scale"):
      v = getattr(self, name)
      if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                            or not math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number, got {v}")
    attacks.make_attack(self.attack, eps=self.eps, alpha=self.alpha, lr=self.lr)  # Raises.
    obfuscation.parse_spec(self.deid)
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.max_iter < 0:
      raise ValueError(f"max_iter must be >= 0, got {self.max_iter}")
    if self.max_faces < 1:
      raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")
    # Below 1 the obfuscated square is smaller than the face box: face pixels stay as they
    # were. Above MAX_MASK_SCALE it is no longer about the face (the frame is covered).
    if not (math.isfinite(self.mask_scale) and 1.0 <= self.mask_scale <= MAX_MASK_SCALE):
      raise ValueError(f"mask_scale must be in [1, {MAX_MASK_SCALE:g}] (below 1 the obfuscated square "
                       f"is smaller than the face), got {self.mask_scale}")
    if self.max_frames is not None and self.max_frames < 1:
      raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")

  @property
  def victim_names(self) -> list[str]:
    names = [self.detector]
    if self.alignment != "none":
      names.append(self.alignment)
    if self.gaze != "none":
      names.append(self.gaze)
    return names


class Deidentifier:
  """Loaded victims plus the compiled attack for one configuration.

  Reusable across videos of the same frame size (the attack compiles once per size).
  """

  def __init__(self, cfg: DeidConfig, weights_dir: str | None = None,
               thresholds: dict[str, float] | None = None, loop: str | None = None,
               victim_options: dict[str, dict] | None = None):
    """``victim_options``: per victim name, keyword arguments of its loss (see
    :func:`drsf_jax.victims.load_victim`); for comparisons, e.g. the benchmark's
    like-with-like rows. deid.py never sets them."""
    cfg.validate()
    self.cfg = cfg
    victim_options = dict(victim_options or {})
    stray = sorted(set(victim_options) - set(cfg.victim_names))
    if stray:
      raise ValueError(f"victim_options for {', '.join(stray)}, which this run does not attack "
                       f"({', '.join(cfg.victim_names)})")
    self.victims = [victims_lib.load_victim(n, weights_dir, **victim_options.get(n, {}))
                    for n in cfg.victim_names]
    th = dict(DEFAULT_THRESHOLDS)
    th.update(thresholds or {})
    self.thresholds = np.asarray([th[v.name] for v in self.victims], np.float32)
    self.attack = attacks.make_attack(cfg.attack, eps=cfg.eps, alpha=cfg.alpha, lr=cfg.lr,
                                      seed=cfg.seed)
    vs = self.victims

    codec_aware = cfg.codec_aware and cfg.codec in video.LOSSY_CODECS
    self.codec_aware = codec_aware

    def seen(x, batch):
      _, mask, center = batch
      return center + mask * (x - center)

    def codec_delta(x, params, batch):
      """On the host, between steps: what the run's codec does to the frames the victims
      see (rounded to uint8, encoded and decoded in memory with the output's settings)."""
      del params
      _, mask, center = batch
      mask, center = np.asarray(jax.device_get(mask)), np.asarray(jax.device_get(center))
      a = center + mask * (x - center)
      y = video.roundtrip(video.to_uint8(a), cfg.codec, cfg.crf).astype(np.float32) / 255.0
      return y - a

    def loss_fn(x, params, batch, delta=None):
      # batch = (targets per victim, mask, obfuscated frames): the victims see the
      # obfuscated frames changed only where the mask is 1, so the gradient outside the
      # face is zero and so is every optimizer's update there. ``delta`` (codec-aware
      # runs): the codec's change to these frames, added with an identity gradient
      # (straight-through), so the losses are those of the decoded output.
      x = seen(x, batch)
      if delta is not None:
        x = x + jax.lax.stop_gradient(delta)
      return jnp.stack([v.loss(p, x, t) for v, p, t in zip(vs, params, batch[0])], axis=1)

    self.loss_fn = loss_fn  # (x, params, batch) -> (B, V): what the attack minimises.

    # XLA:CPU runs while_loop bodies ~1.6x slower than the same step jitted alone, so on
    # CPU the steps are driven from Python; elsewhere the attack is one while_loop program.
    # A codec-aware attack encodes on the host between steps: host loop on every backend.
    self.loop = loop or ("host" if jax.default_backend() == "cpu" or codec_aware else "while")
    if codec_aware and self.loop != "host":
      raise ValueError("a codec-aware attack runs the host loop (the codec runs between steps)")
    if self.loop not in ("host", "while"):
      raise ValueError(f"loop must be 'host' or 'while', got {loop!r}")
    self.stop = cfg.stop
    checks = self.stop in ("metrics", "either")
    self._check_batch = None  # Set per batch by attack_batch: what the check compares.
    self._check_dets = None  # The detector's own detections at the last check.
    self._predictor = None
    if self.loop == "host" or checks:
      # The stop in user units runs the authorized models on the host between steps: the
      # while_loop form then runs check_every steps per call (one program per chunk).
      # Through a codec the detector's loss stays above its lossless threshold, so the
      # cascade would never reach landmarks and gaze: all victims are descended at once.
      host = attacks.make_host_loop(loss_fn, self.attack, cfg.max_iter,
                                    host_delta=codec_delta if codec_aware else None,
                                    cascade=not codec_aware,
                                    check=self.check if checks else None,
                                    check_every=cfg.check_every, loss_stops=self.stop != "metrics",
                                    steps_per_call=1 if self.loop == "host" else cfg.check_every,
                                    on_check=self.mine if checks else None)
      # x: where the frames start; the ε-ball is centred on the obfuscated frames, batch[2].
      self._run = lambda params, x, targets, thr: host(targets[2], thr, params, targets, x_start=x)
    else:  # --stop loss off the CPU: the whole attack is one while_loop program.
      self._run = jax.jit(lambda params, x, targets, thr: attacks.optimize(
          lambda y: loss_fn(y, params, targets), targets[2], self.attack, cfg.max_iter, thr,
          x_start=x))
    self.camera = None  # Set per video (frame size, optional calibration).
    self.reset()

  @property
  def predictor(self):
    """The authorized models as inference runs them, sharing this run's loaded victims."""
    if self._predictor is None:
      from drsf_jax.victims import inference  # pylint: disable=import-outside-toplevel
      cfg = self.cfg
      self._predictor = inference.Predictor(cfg.detector, cfg.alignment, cfg.gaze, None, cfg.max_faces,
                                            cfg.calibration, loaded={v.name: v for v in self.victims})
    return self._predictor

  def stop_score(self, m: dict | None) -> float:
    """One frame's :func:`metrics.frame_metrics` against the stop tolerances: its worst
    error as a fraction of its tolerance (<= 1: within every one; inf: the face is lost).

    A frame whose original has no face for the authorized detector has nothing to keep (0).
    """
    cfg = self.cfg
    if m is None:
      return 0.0
    if m["missing_in_prediction"]:
      return math.inf

    def frac(value, tol):
      if value is None:
        return math.inf
      return value / tol if tol > 0 else (0.0 if value <= 0 else math.inf)

    parts = [frac(1.0 - m["iou"], 1.0 - cfg.stop_iou), frac(m["landmark_px"], cfg.stop_landmarks_px)]
    # Head pose is tested where a model that uses it is authorized (FAN's 68 points or a
    # gaze model); from a detector's 5 points alone it is not among what it promises.
    if cfg.gaze != "none" or cfg.alignment != "none":
      parts.append(frac(m["head_pose_deg"], cfg.stop_head_pose_deg))
    if cfg.gaze != "none":
      parts.append(frac(m["gaze_angle_deg"], cfg.stop_gaze_deg))
    return float(max(parts))

  def check(self, x: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """The stop in user units (``--stop metrics`` or ``either``), between steps: (B,) scores.

    The batch's frames as they will be written (the mask applied, rounded to 8 bits,
    pasted into the full frame, through the codec when it is lossy) go through the
    authorized models exactly as ``inference.py`` runs them, and each frame is compared
    with the same models' reading of its original (:func:`metrics.frame_metrics`, what
    ``evaluate.py`` reports): :meth:`stop_score`, <= 1 within the ``stop_*`` tolerances.
    """
    from drsf_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
    frames_u8, win, mask, center, ref = self._check_batch
    out = _written(frames_u8, win, mask, center, x)
    if self.cfg.codec in video.LOSSY_CODECS:
      out = video.roundtrip(out, self.cfg.codec, self.cfg.crf)
    raw: list = []
    got = self.predictor.predict(out, raw=raw)
    self._check_dets = raw
    return np.asarray([self.stop_score(metrics.frame_metrics(r["faces"], g["faces"])) if mv else math.inf
                       for r, g, mv in zip(ref, got, moving)], np.float64)

  def mine(self, args: tuple, failing: np.ndarray) -> tuple:
    """After a check: each victim with a ``mine`` (MTCNN) learns, for the frames still
    ``failing`` it, from the detections the check made on them (``args``: the loop's
    ``(params, (targets, mask, x_obf))``; returned with those targets updated)."""
    if self._check_dets is None or not any(v.mine for v in self.victims):
      return args
    params, (targets, mask, center) = args
    win = self._check_batch[1]
    offset = (0, 0) if win is None else (win.x0, win.y0)
    ctx = victims_lib.context_from_detections(self._check_dets, self.cfg.max_faces)
    new = [v.mine(t, ctx, failing, offset) if v.mine else t for v, t in zip(self.victims, targets)]
    if all(a is b for a, b in zip(new, targets)):
      return args
    new = [self.shard(n) if n is not t else t for n, t in zip(new, targets)]
    return params, (new, mask, center)

  def reset(self):
    """Forgets the warm start: call before each new video (``deidentify`` does)."""
    # Per face of the previous batch's last frame: its perturbation inside its obfuscated
    # square (h, w, 3) float32, in the frame's coordinates. None: start from x_obf.
    self._warm: list[np.ndarray] | None = None
    self._regions = None  # The obfuscated squares of each frame of the batch being attacked.
    self._batches = 0  # Batches attacked since the reset (revisit 'first': the first one).

  def warm_start_frames(self, x_obf: np.ndarray, regions: list) -> np.ndarray | None:
    """Where the attack of a batch starts: ``x_obf`` plus the carried perturbation.

    Face ``k`` of every frame gets the previous batch's face-``k`` perturbation resized
    to its own obfuscated square (the pixelation cells are laid out relative to the
    square, so they line up), then clipped to the ε-ball and [0, 1]. None without one.
    """
    if not (self.cfg.warm_start and self._warm):
      return None
    import cv2  # pylint: disable=import-outside-toplevel
    delta = np.zeros_like(x_obf)
    for i, r in enumerate(regions):
      for k, (x1, y1, x2, y2) in enumerate(np.asarray(r, np.int64).reshape(-1, 4)[:len(self._warm)]):
        if x2 > x1 and y2 > y1:
          delta[i, y1:y2, x1:x2] = cv2.resize(self._warm[k], (int(x2 - x1), int(y2 - y1)),
                                              interpolation=cv2.INTER_LINEAR)
    eps = self.cfg.eps
    return np.clip(x_obf + np.clip(delta, -eps, eps), 0.0, 1.0).astype(np.float32)

  def perturbation(self, frame_u8: np.ndarray, out_u8: np.ndarray, regions) -> list[np.ndarray] | None:
    """Per face: the written frame's perturbation inside its obfuscated square (what a warm
    start carries), against the obfuscation of the input frame ``frame_u8``."""
    x = frame_u8[None].astype(np.float32) / 255.0
    x_obf = obfuscation.obfuscate(x, [regions], self.cfg.deid)[0]
    d = out_u8.astype(np.float32) / 255.0 - x_obf
    patches = [np.ascontiguousarray(d[y1:y2, x1:x2])
               for x1, y1, x2, y2 in np.asarray(regions, np.int64).reshape(-1, 4) if x2 > x1 and y2 > y1]
    return patches or None

  def remember(self, frame_u8: np.ndarray, out_u8: np.ndarray, index: int = -1):
    """Keeps the perturbation of frame ``index`` of the batch just attacked (the written,
    rounded one; ``frame_u8`` its input frame) for the next batch's warm start."""
    if not self.cfg.warm_start or self._regions is None:
      return
    self._warm = self.perturbation(frame_u8, out_u8, self._regions[index])

  def shard(self, tree):
    """Places batch-leading arrays across local devices (a 1-D mesh over frames).

    With one device this is the identity. With several, every leaf whose leading
    dimension divides evenly is split across the ``frames`` mesh axis and the rest is
    replicated; ``jit`` then runs each device's frames there (params are replicated).
    """
    devices = jax.local_devices()
    if len(devices) == 1:
      return tree
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
    mesh = Mesh(np.asarray(devices), ("frames",))
    split, whole = NamedSharding(mesh, P("frames")), NamedSharding(mesh, P())

    def place(a):
      a = jnp.asarray(a)
      ok = a.ndim >= 1 and a.shape[0] % len(devices) == 0
      return jax.device_put(a, split if ok else whole)

    return jax.tree_util.tree_map(place, tree)

  @property
  def detector(self) -> victims_lib.Victim:
    return self.victims[0]

  # ---- pass 1 -------------------------------------------------------------------------
  def detect_video(self, reader: video.VideoReader,
                   progress: Callable[[int], None] | None = None) -> list[dict]:
    """Pass 1: host-side detections of every frame of ``reader`` (consumes it)."""
    dets: list[dict] = []
    batch: list[np.ndarray] = []
    det = self.detector

    def flush():
      if batch:
        x = np.stack(batch).astype(np.float32) / 255.0
        dets.extend(det.predict(det.params, x))
        if progress:
          progress(len(batch))
        batch.clear()

    for frame in reader:
      batch.append(frame)
      if len(batch) == self.cfg.batch_size:
        flush()
    flush()
    return dets

  # ---- pass 2 -------------------------------------------------------------------------
  def crop_window(self, dets: list[dict], frame_hw: tuple[int, int]):
    """The batch's :class:`crop.Window`, or None for a full-frame attack."""
    cfg = self.cfg
    if not (cfg.crop_local and cfg.perturb == "face") or any(v.name not in crop.SUPPORTED
                                                             for v in self.victims):
      return None
    regions = [bbox.face_regions(d["boxes"], frame_hw, cfg.mask_scale) for d in dets]
    return crop.window(regions, [d["boxes"] for d in dets], frame_hw, perturb_margin=cfg.perturb_margin)

  def prepare_batch(self, frames_u8: np.ndarray, dets: list[dict], win=None):
    """Where the attack starts, and every victim's targets, the mask and the obfuscated
    frames (sharded): ``(x_start, (targets, mask, x_obf))``. ``x_start`` is ``x_obf`` or,
    with a warm start carried from the previous batch, inside its ε-ball.

    ``win``: a :class:`crop.Window`: the victims' targets, the obfuscated frames and the
    mask are those of the window (obfuscation is computed on the whole frame first, so its
    cells are the frame's), the faces and camera in the window's coordinates.
    """
    cfg = self.cfg
    x = frames_u8.astype(np.float32) / 255.0
    regions = [bbox.face_regions(d["boxes"], x.shape[1:3], cfg.mask_scale) for d in dets]
    x_obf = obfuscation.obfuscate(x, regions, cfg.deid)
    if cfg.perturb == "face":
      mask = perturbation_mask(regions, x.shape[1:3], cfg.perturb_margin)
    else:
      mask = np.ones(x.shape[:3] + (1,), np.float32)
    x_start = self.warm_start_frames(x_obf, regions)
    self._regions = regions
    ctx = victims_lib.context_from_detections(dets, cfg.max_faces)
    ctx.camera = self.camera
    if win is not None:
      if ctx.camera is None:  # The full frame's dummy camera, seen through the window.
        from drsf_jax.geometry import cameras  # pylint: disable=import-outside-toplevel
        ctx.camera = cameras.Camera.dummy(x.shape[2], x.shape[1])
      ctx = crop.shift_context(ctx, win)
      x, x_obf, mask = win.crop(x), win.crop(x_obf), win.crop(mask)
      x_start = None if x_start is None else win.crop(x_start)
    targets = []
    for v in self.victims:  # Cascade order: detector, landmarks, gaze.
      targets.append(v.targets(v.params, x, ctx))
      if v.annotate is not None:
        v.annotate(v.params, x, ctx, targets[-1])
    x_obf = jnp.asarray(np.ascontiguousarray(x_obf))
    x_in = x_obf if x_start is None else jnp.asarray(np.ascontiguousarray(x_start))
    return self.shard((x_in, (targets, jnp.asarray(np.ascontiguousarray(mask)), x_obf)))

  def attack_batch(self, frames_u8: np.ndarray, dets: list[dict]) -> tuple[np.ndarray, dict]:
    """Obfuscates and attacks one batch; returns uint8 frames and per-batch statistics.

    ``frames_u8`` has exactly ``batch_size`` frames (pad before calling); ``dets`` the
    (filled) detections of each. With a crop window the attack runs on it and the result
    is pasted into the obfuscated frames (outside the window nothing may change anyway).
    Where ``cfg.revisit`` applies and a frame ended outside the stop, the batch is attacked
    again (:meth:`revisit_batch`).
    """
    first = self._batches == 0
    self._batches += 1
    win = self.crop_window(dets, frames_u8.shape[1:3])
    ref = self.predictor.predict(frames_u8) if self.stop in ("metrics", "either") else None
    out, stats = self._attack(frames_u8, dets, win, ref)
    within = self._within(stats)
    if (self.cfg.revisit == "all" or (self.cfg.revisit == "first" and first)) \
        and ref is not None and self.cfg.warm_start and not within.all():
      out, stats = self.revisit_batch(frames_u8, dets, win, ref, out, stats)
    self.remember(frames_u8[-1], out[-1])
    return out, stats

  def _within(self, stats: dict) -> np.ndarray:
    """(B,) bool: the batch's frames that ended within the run's stop rule."""
    return _within_stop(stats["met_stop"], stats["stage"], len(self.victims), self.stop)

  def _attack(self, frames_u8, dets, win, ref):
    x_in, batch = self.prepare_batch(frames_u8, dets, win)
    params = [v.params for v in self.victims]
    _, mask, center = batch
    mask, center = np.asarray(mask), np.asarray(center)  # Not the targets: only these two.
    if ref is not None:  # The stop in user units: the authorized models' reading of the originals.
      self._check_batch = (frames_u8, win, mask, center, ref)
    try:
      res = jax.device_get(self._run(params, x_in, batch, jnp.asarray(self.thresholds)))
    finally:
      self._check_batch = None
      self._check_dets = None
    out = _written(frames_u8, win, mask, center, res.frames)
    return out, {"iterations": np.asarray(res.iterations).tolist(),
                 "losses": np.asarray(res.losses).tolist(),
                 "stage": np.asarray(res.stage).tolist(),
                 "met_stop": np.asarray(res.met).tolist(),
                 "window": None if win is None else [win.x0, win.y0, win.w, win.h]}

  def scores(self, out_u8: np.ndarray, ref: list[dict]) -> np.ndarray:
    """(B,) :meth:`stop_score` of written frames (through the codec when it is lossy)."""
    from drsf_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
    if self.cfg.codec in video.LOSSY_CODECS:
      out_u8 = video.roundtrip(out_u8, self.cfg.codec, self.cfg.crf)
    got = self.predictor.predict(out_u8)
    return np.asarray([self.stop_score(metrics.frame_metrics(r["faces"], g["faces"]))
                       for r, g in zip(ref, got)], np.float64)

  def revisit_batch(self, frames_u8, dets, win, ref, out, stats) -> tuple[np.ndarray, dict]:
    """Attacks a finished batch again, warm-started from one of its own frames.

    The start is the perturbation of the batch's last frame that ended within the stop (its
    last frame if none did), carried to every frame in face-aligned coordinates as between
    batches; Adam starts afresh. A frame that ended within the stop the first time keeps
    that result; any other keeps whichever of its two results :meth:`scores` rates better
    (the first on a tie). Its iterations count both attacks; ``revisited`` marks it.

    Measured on the cold first batch of MTCNN runs (README "When a frame stops"), this
    puts more frames within the stop than the same steps spent in one longer attack: the
    warm start, not the step count, is what the first batch lacks.
    """
    within = self._within(stats)
    src = int(np.flatnonzero(within)[-1]) if within.any() else len(out) - 1
    keep = self._warm
    self._warm = self.perturbation(frames_u8[src], out[src], self._regions[src])
    try:
      out2, stats2 = self._attack(frames_u8, dets, win, ref)
    finally:
      self._warm = keep
    within2 = self._within(stats2)
    redo = ~within
    take = redo & within2
    rest = redo & ~within2
    if rest.any():  # Neither within: the better score (the first on a tie). Whole batches:
      # through a lossy codec a frame's pixels depend on its neighbours.
      take |= rest & (self.scores(out2, ref) < self.scores(out, ref))
    merged = np.where(take[:, None, None, None], out2, out)
    new = {k: [b if t else a for a, b, t in zip(stats[k], stats2[k], take)]
           for k in ("losses", "stage", "met_stop")}
    new["iterations"] = [a + b if r else a for a, b, r in zip(stats["iterations"], stats2["iterations"], redo)]
    new["revisited"] = redo.tolist()
    new["window"] = stats["window"]
    return merged, new


def _within_stop(met, stage, n_victims: int, stop: str) -> np.ndarray:
  """(N,) bool: the frames that ended within the stop rule ``stop``: the check passed
  ('metrics'), every loss under its threshold, i.e. the cascade's last stage reached
  ('loss'), either ('either')."""
  met = np.asarray(met, bool)
  conv = np.asarray(stage) == n_victims
  return {"metrics": met, "loss": conv, "either": met | conv}[stop]


def _written(frames_u8: np.ndarray, win, mask: np.ndarray, center: np.ndarray, x) -> np.ndarray:
  """The uint8 frames a batch's attacked frames ``x`` become in the output.

  Outside the mask the result is the obfuscated frame, which there equals the input
  frame, so the rounded output is bit-identical to the decoded input; with a crop window
  the result is pasted into the input frames.
  """
  out = video.to_uint8(np.where(mask > 0, x, center))
  return out if win is None else win.paste(frames_u8, out)


def _pad_batch(frames: list[np.ndarray], dets: list[dict], size: int):
  n = len(frames)
  if n == size:
    return np.stack(frames), list(dets), n
  frames = frames + [frames[-1]] * (size - n)
  dets = list(dets) + [dets[-1]] * (size - n)
  return np.stack(frames), dets, n


def default_report_path(output_path: str) -> str:
  """The report beside the output: ``NAME.json`` (``NAME.json`` too for a PNG folder)."""
  return os.path.splitext(os.path.abspath(output_path))[0] + ".json"


def check_run(input_path: str, output_path: str, cfg: DeidConfig, report_path: str | None = None,
              overwrite: bool = False, replaceable=(), preview_path: str | None = None) -> video.VideoReader:
  """Everything about a run that can be checked before loading a model: the settings, the
  input (opened: its frame size), the codec/container pair and the output-safety rule
  (:mod:`drsf_jax.io.outputs`). Returns the opened reader."""
  cfg.validate()
  report_path = report_path or default_report_path(output_path)
  outputs.check_input(input_path)
  if cfg.calibration:
    outputs.check_input(cfg.calibration, "calibration")
  if preview_path and not preview_path.lower().endswith(".mp4"):
    raise ValueError(f"--preview {preview_path}: the preview is an H.264 .mp4 (plays in any browser); "
                     "give a path ending in .mp4")
  outputs.check([("output", output_path), ("report", report_path)]
                + ([("preview", preview_path)] if preview_path else []),
                [input_path, cfg.calibration], overwrite=overwrite,
                dirs=[output_path] if cfg.codec == "png-seq" else (), replaceable=replaceable)
  video.check_codec(output_path, cfg.codec, crf=cfg.crf)
  reader = video.VideoReader(input_path, max_frames=cfg.max_frames)
  video.check_codec(output_path, cfg.codec, (reader.width, reader.height), cfg.crf)
  return reader


def deidentify(input_path: str, output_path: str, cfg: DeidConfig,
               weights_dir: str | None = None, report_path: str | None = None,
               progress: bool = True, deidentifier: Deidentifier | None = None,
               overwrite: bool = False, replaceable=(), preview_path: str | None = None) -> dict:
  """De-identifies one video; writes the output and its JSON report together.

  ``preview_path``: also write an H.264 MP4 with original | de-identified | the
  authorized models' predictions on the de-identified frames, side by side.

  Both are written to temporary names beside their final paths, checked
  (:func:`verify_staged`), and only then renamed into place, report first; on any error
  (or Ctrl-C) neither appears and the temporary files are removed. Raises
  ``ValueError``/``FileNotFoundError`` with one-line messages on bad input, before any model
  is loaded where the input allows. Existing files at ``output_path``/``report_path`` are
  replaced only with ``overwrite`` (or when listed in ``replaceable``: corpus mode's own
  outputs); an existing directory never.
  """
  t_start = time.time()
  report_path = report_path or default_report_path(output_path)
  reader = check_run(input_path, output_path, cfg, report_path, overwrite, replaceable, preview_path)
  d = deidentifier or Deidentifier(cfg, weights_dir)
  d.reset()  # No warm start carried over from another video.
  bar = _progress_bar(progress)

  width, height, fps = reader.width, reader.height, reader.fps
  with bar(total=len(reader) or None, desc="detect", unit="frame") as pbar:
    dets = d.detect_video(reader, pbar.update)
  if any(v.kind == "gaze" for v in d.victims):
    from drsf_jax.geometry import cameras  # pylint: disable=import-outside-toplevel
    d.camera = cameras.make_camera(cfg.calibration, width, height)
  n_frames = len(dets)
  oversize = detectors.oversize_warning(cfg.detector, d.detector.config, [f["boxes"] for f in dets])
  if oversize:
    logging.warning("%s", oversize)
  fill = temporal.fill(dets)  # Missed frames and faces lost for a few frames are filled.
  filled, reused, no_face = fill.detections, fill.reused, fill.no_face
  if no_face:
    if not cfg.allow_no_face:
      raise ValueError(f"{input_path}: no face detected by {cfg.detector} in any of {n_frames} frames; "
                       "nothing written (pass --allow_no_face to copy such a video unchanged)")
    logging.warning("%s: no face in any frame; writing it unchanged (--allow_no_face)", input_path)
  # Refuse, before any attack or write, a spec that cannot obfuscate some face at its size.
  obfuscation.check_effective(cfg.deid, [f["boxes"] for f in filled], (height, width), cfg.mask_scale)

  batches = []
  t_attack = 0.0
  writer = video.VideoWriter(output_path, reader.rate or fps, (width, height), cfg.codec,
                             overwrite=overwrite or bool(replaceable), crf=cfg.crf,
                             time_base=reader.time_base, audio_from=input_path if cfg.audio else None,
                             sample_aspect_ratio=reader.sample_aspect_ratio)
  report_tmp = preview_tmp = None
  try:
    reader = video.VideoReader(input_path, max_frames=cfg.max_frames)
    buf: list[np.ndarray] = []
    start = 0
    with bar(total=n_frames, desc="deid", unit="frame") as pbar:
      def flush(buf, start):
        nonlocal t_attack
        outputs.raise_if_interrupted()
        if not buf:
          return
        frames, bd, n = _pad_batch(buf, filled[start:start + len(buf)], cfg.batch_size)
        if no_face:
          out, stats = frames, {"iterations": [0] * n, "losses": [], "stage": []}
        else:
          t0 = time.time()
          out, stats = d.attack_batch(frames, bd)
          t_attack += time.time() - t0
        for f in out[:n]:  # The input's own timestamps, frame by frame.
          writer.write(f, reader.pts[writer.count])
        stats = {k: (v if k == "window" else v[:n]) for k, v in stats.items()}
        batches.append({"first_frame": start, "frames": n, **stats})
        pbar.update(n)
      for frame in reader:
        buf.append(frame)
        if len(buf) == cfg.batch_size:
          flush(buf, start)
          start += len(buf)
          buf = []
      flush(buf, start)
    if writer.count != n_frames:
      raise ValueError(f"{input_path}: decoded {writer.count} frames on the second pass, {n_frames} on the first")
    video_tmp = writer.finish()
    written = verify_staged(video_tmp, output_path, cfg, n_frames)
    # Privacy guard on the decoded temporary output: every obfuscated face must differ.
    guard_result = guard.check_video(input_path, video_tmp, filled)
    verification = predictions = None
    loaded = {v.name: v for v in d.victims}
    if cfg.verify and not no_face:
      verification, predictions = verify_output(input_path, video_tmp, cfg, weights_dir, progress,
                                                loaded=loaded, return_predictions=True)
    if preview_path:
      from drsf_jax.evaluation import visualize  # pylint: disable=import-outside-toplevel
      if predictions is None:
        from drsf_jax.victims import inference  # pylint: disable=import-outside-toplevel
        predictor = inference.Predictor(cfg.detector, cfg.alignment, cfg.gaze, weights_dir,
                                        cfg.max_faces, cfg.calibration, loaded=loaded)
        predictions = inference.run(video_tmp, predictor, batch_size=cfg.batch_size)
      preview_tmp = visualize.write_preview(input_path, video_tmp, predictions, preview_path,
                                            cfg.calibration, cfg.max_frames, overwrite)

    wall = time.time() - t_start
    report = {
        "schema": REPORT_SCHEMA,
        "input": os.path.abspath(input_path),
        "output": os.path.abspath(output_path),
        # fps: what the output holds (the writer clamps absurd rates, e.g. 90000 -> 30000);
        # input_fps: what the input's container declares.
        "video": {"width": width, "height": height,
                  "fps": written["fps"] if written["fps"] is not None else fps, "input_fps": fps,
                  "num_frames": n_frames, "rotation_applied": reader.rotation,
                  "input_file": video.describe(input_path), "output_file": written["file"],
                  "audio": writer.audio},
        "settings": {**dataclasses.asdict(cfg), "victims": cfg.victim_names,
                     "thresholds": dict(zip(cfg.victim_names, d.thresholds.tolist())),
                     "attack_settings": d.attack.settings,
                     "stop_applied": d.stop, "loop": d.loop},
        "models": {v.name: {"weights_sha256": v.meta.get("source_sha256"),
                            "config": v.meta.get("config")} for v in d.victims},
        "frames_reused_detection": reused,
        "frames_tracked_faces": fill.tracked,
        "frames_without_face": no_face,
        "faces_per_frame": [int(len(x["boxes"])) for x in dets],
        "privacy_guard": guard_result,
        "verification": verification,
        "batches": batches,
        "summary": _summary(batches, cfg.victim_names, cfg.max_iter, d.stop),
        "wall_time_s": wall,
        "attack_time_s": t_attack,
        "frames_per_second": n_frames / wall if wall > 0 else None,
        "environment": {"jax": jax.__version__, "backend": jax.default_backend(),
                        "devices": [str(x) for x in jax.devices()],
                        "local_devices": jax.local_device_count(),
                        "process_index": jax.process_index(), "process_count": jax.process_count(),
                        "python": platform.python_version()},
    }
    if no_face:
      report["warning"] = "no face detected in any frame: the video was copied without obfuscation"
    if oversize:
      report["detector_warning"] = oversize
    if not guard_result["passed"]:  # Leaves NAME.UNSAFE.ext + NAME.UNSAFE.json, raises.
      guard.quarantine(video_tmp, report, output_path, report_path, overwrite)
    report_tmp = video.stage_json(report_path, report)  # Raises on NaN/inf anywhere.
    pairs = [(report_tmp, report_path), (video_tmp, os.path.abspath(output_path))]
    if preview_tmp:
      pairs.append((preview_tmp, os.path.abspath(preview_path)))
    outputs.commit(pairs, overwrite=overwrite, replaceable=replaceable)
  except BaseException:
    writer.abort()
    outputs.discard(report_tmp)
    outputs.discard(preview_tmp)
    raise
  return report


def verify_output(input_path: str, written: str, cfg: DeidConfig, weights_dir: str | None = None,
                  progress: bool = False, loaded: dict | None = None,
                  return_predictions: bool = False):
  """What a user measures: the authorized models on the written file vs on the input.

  Decodes ``written`` (the temporary output) and the input's first frames, runs the
  authorized models on both exactly as ``scripts/inference.py`` does (their own
  detections, head pose and gaze), and compares them with :func:`metrics.compare` (as
  ``scripts/evaluate.py`` does). Returns the summary (IoU, landmark px, NME, head-pose
  and gaze error in degrees, DiffScore), the frames where the authorized detector lost
  the face, and the settings it ran with. A PNG-sequence output is read like a video.
  ``loaded``: the run's victims by name (the same weights, not read again).
  ``return_predictions``: also return the predictions document on ``written``.
  """
  from drsf_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  from drsf_jax.victims import inference  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  predictor = inference.Predictor(cfg.detector, cfg.alignment, cfg.gaze, weights_dir,
                                  cfg.max_faces, cfg.calibration, loaded=loaded)
  bar = _progress_bar(progress)
  with bar(total=None, desc="verify", unit="frame") as pbar:
    ref = inference.run(input_path, predictor, max_frames=cfg.max_frames, batch_size=cfg.batch_size,
                        progress=pbar.update)
    got = inference.run(written, predictor, batch_size=cfg.batch_size, progress=pbar.update)
  res = metrics.compare(ref, got)
  out = {"summary": res["summary"],
         "frames_face_lost": [r["frame_id"] for r in res["per_frame"] if r["missing_in_prediction"]],
         "models": cfg.victim_names, "wall_time_s": time.time() - t0}
  return (out, got) if return_predictions else out


def verify_staged(video_tmp: str, output_path: str, cfg: DeidConfig, n_frames: int) -> dict:
  """Checks the written (still temporary) output before anything is renamed into place.

  Runs between "video written to its temporary name" and "report written, both renamed":
  raising here aborts the run and neither file appears. Checked: the output decodes back
  to every frame written (a container can accept frames it cannot store). Returns what
  the report records about the written file (``fps``: the rate the container holds,
  which the writer clamps, e.g. 90000 -> 30000; ``None`` for a PNG sequence).
  """
  frames, fps = video.probe(video_tmp)
  if frames != n_frames:
    raise ValueError(f"{output_path}: {cfg.codec} was given {n_frames} frames but {frames} "
                     "decode back; nothing written")
  info = video.describe(video_tmp)
  info.pop("size_bytes", None)
  if cfg.codec in video.LOSSY_CODECS:
    info["crf"] = video.DEFAULT_CRF if cfg.crf is None else cfg.crf
  return {"frames": frames, "fps": fps, "file": info}


def _summary(batches: list[dict], names: list[str], max_iter: int, stop: str) -> dict:
  """``frames_within_stop``: frames the run's stop rule ended before or at the budget
  (``stop``: the rule applied): the check passed ('metrics'), every loss under its
  threshold ('loss'), either ('either'), in the first attack or a revisit;
  ``frames_revisited``: frames attacked a second time (``DeidConfig.revisit``), whose
  iterations count both attacks; ``frames_at_max_iter``: frames that spent a whole budget
  (every revisited frame did, in its first attack)."""
  iters = [i for b in batches for i in b["iterations"]]
  losses = [l for b in batches for l in b["losses"]]
  stages = [s for b in batches for s in b["stage"]]
  met = [bool(m) for b in batches for m in b.get("met_stop", [])]
  revisited = [bool(r) for b in batches for r in b.get("revisited", [])]
  conv = [s == len(names) for s in stages]
  within = _within_stop(met, stages, len(names), stop)
  out = {"iterations_mean": float(np.mean(iters)) if iters else 0.0,
         "frames_at_max_iter": int(sum(i >= max_iter for i in iters)),
         "frames_converged": int(sum(conv)),
         "frames_met_stop": int(sum(met)),
         "frames_within_stop": int(sum(within)),
         "frames_revisited": int(sum(revisited))}
  if losses:
    arr = np.asarray(losses)
    out["final_loss_mean"] = {n: float(arr[:, j].mean()) for j, n in enumerate(names)}
  return out


def _progress_bar(enabled: bool):
  if enabled:
    try:
      from tqdm import tqdm
      return tqdm
    except ImportError:
      pass

  class _Null:
    def __init__(self, **_):
      pass

    def update(self, _):
      pass

    def __enter__(self):
      return self

    def __exit__(self, *a):
      return False

  return _Null
