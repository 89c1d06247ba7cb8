"""Baseline A: the JAX attack step's computation, in PyTorch eager, with the same weights.

:class:`TorchVictimSet` takes the targets pytree the JAX victims'
``targets(params, frames, ctx)`` produced on the original frames (converted to torch
tensors) and computes, per frame and per victim, exactly the losses of
``drsf_jax/victims/registry.py`` (``_retinaface_victim``, ``_fan_victim``, ``_mtcnn_victim``) and
``drsf_jax/victims/gaze.py`` (``_make``) with the upstream PyTorch models: the fixed crop
matrices, homographies and equalisation tables come from the targets, and the torch side
does the bilinear sampling itself (``F.grid_sample`` with OpenCV's pixel-centre rule and a
zero border, see :mod:`benchmarks.torch_common`).

One attack iteration (:meth:`TorchVictimSet.step`) = forward of every victim, backward of
the sum over frames and victims of the losses w.r.t. the frames, ``torch.optim.Adam`` on
the frames, projection onto ``|x - x_obf| <= eps`` and ``[0, 1]``. The JAX counterpart is
the body of ``drsf_jax.deid.attacks.make_host_loop`` (cascade-weighted sum, optax adam,
projection) with thresholds that keep every victim in the sum.

Frames are held as (B, 3, H, W) float32 RGB in [0, 1] (torch's layout); the constructor
and :meth:`TorchVictimSet.infer` take NumPy (B, H, W, 3) like the JAX side.
"""

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import torch_common as tc

RETINAFACE_VARIANCE = (0.1, 0.2)
FAN_RES = 256
MTCNN_PIXEL_SCALE = 2.0  # drsf_jax.victims.registry.MTCNN_PIXEL_SCALE
EYE_HW = (36, 60)


def _nchw(frames_np: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.asarray(frames_np, np.float32).transpose(0, 3, 1, 2)))


def _masked_mean(per_face: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
  return (per_face * valid).sum(1) / valid.sum(1).clamp(min=1.0)


class _RetinaFace:
  def __init__(self, model, t):
    self.model = model
    self.t = t  # loc (B, A, 4), score (B, A), landm (B, A, 10), pos (B, A)
    self._priors = None

  def loss(self, x):
    loc, conf, landm = self.model(tc.retinaface_input(x))
    t = self.t
    per_anchor = (tc.kl_binary(t["score"], conf[..., 1]) + ((loc - t["loc"]) ** 2).mean(-1)
                  + ((landm - t["landm"]) ** 2).mean(-1))
    return (per_anchor * t["pos"]).sum(1) / t["pos"].sum(1).clamp(min=1.0)

  def infer(self, x):
    loc, conf, landm = self.model(tc.retinaface_input(x))
    if self._priors is None or self._priors[0] != x.shape[2:]:
      self._priors = (x.shape[2:], tc.retinaface_pixel_priors(x.shape[2], x.shape[3]))
    boxes, lms = tc.retinaface_decode(loc, landm, self._priors[1], RETINAFACE_VARIANCE)
    return boxes, conf[..., 1], lms


class _FAN:
  def __init__(self, model, t):
    self.model = model
    b, k = t["valid"].shape
    self.k = k
    self.valid = t["valid"]
    self.h = tc.affine_to_homography(t["matrices"])  # (B*K, 3, 3)
    self.heatmaps = t["heatmaps"].permute(0, 3, 1, 2).contiguous()  # (B*K, 68, 64, 64)

  def _heatmaps(self, x):
    crops = tc.warp_perspective(torch.repeat_interleave(x, self.k, dim=0), self.h, (FAN_RES, FAN_RES))
    return self.model(crops)[-1]

  def loss(self, x):
    b, k = self.valid.shape
    per_face = ((self._heatmaps(x) - self.heatmaps) ** 2).mean((1, 2, 3)).reshape(b, k)
    return _masked_mean(per_face, self.valid)

  def infer(self, x):
    return self._heatmaps(x)


class _MPIIGaze:
  def __init__(self, model, t, match_opencv: bool = True):
    self.model = model
    self.match_opencv = match_opencv
    self.valid = t["valid"]
    b, k, n = t["homography"].shape[:3]
    self.shape = (b, k, n)
    self.h = t["homography"].reshape(b * k * n, 3, 3)
    self.lut = t["lut"].reshape(b * k * n, 256)
    self.head_py = t["head_pitch_yaw"].reshape(b * k, n, 2)
    self.pitch_yaw = t["pitch_yaw"]  # (B, K, 2, 2)

  def _forward(self, x):
    b, k, n = self.shape
    reps = torch.repeat_interleave(x, k * n, dim=0)
    luts = None if self.match_opencv else self.lut  # The JAX loss re-fits the table.
    patches = tc.eye_patches(reps, self.h, luts, EYE_HW, self.match_opencv).reshape(b * k, n, 1, *EYE_HW)
    right, left = tc.mpiigaze_two_eyes(self.model, patches[:, 0], patches[:, 1],
                                       self.head_py[:, 0], self.head_py[:, 1])
    return torch.stack([right, left], dim=1).reshape(b, k, n, 2)

  def loss(self, x):
    per_face = ((self._forward(x) - self.pitch_yaw) ** 2).mean((2, 3))
    return _masked_mean(per_face, self.valid)

  def infer(self, x):
    return self._forward(x)


class _MTCNN:
  def __init__(self, nets, t, height, width):
    self.nets = nets
    self.t = t
    self.hw = (height, width)
    self.onet_win = tc.mtcnn_windows(t["onet_boxes"].numpy(), height, width)
    self.rnet_win = tc.mtcnn_windows(t["rnet_boxes"].numpy(), height, width)
    self.scales = tc.mtcnn_pyramid_scales(height, width)
    self.pnet_t = [{"reg": p["reg"].permute(0, 3, 1, 2).contiguous(), "prob": p["prob"],
                    "pos": p["pos"]} for p in t["pnet"]]

  def _net_in(self, crops255):
    return (crops255 - tc.MTCNN_PIXEL_MEAN) * tc.MTCNN_PIXEL_SCALE

  def _stages(self, x255):
    b, k = self.t["valid"].shape
    o_reg, o_pts, o_prob = self.nets["onet"](self._net_in(tc.mtcnn_box_crops(x255, self.onet_win, 48)))
    r_reg, r_prob = self.nets["rnet"](self._net_in(tc.mtcnn_box_crops(x255, self.rnet_win, 24)))
    boxes = self.t["onet_boxes"]
    w = (boxes[..., 2] - boxes[..., 0] + 1)[..., None]
    h = (boxes[..., 3] - boxes[..., 1] + 1)[..., None]
    pts = o_pts.reshape(b, k, 10)
    lms = torch.stack([w * pts[..., :5] + boxes[..., 0:1] - 1, h * pts[..., 5:] + boxes[..., 1:2] - 1], -1)
    return {"o_score": o_prob[:, 1].reshape(b, k), "o_reg": o_reg.reshape(b, k, 4), "o_lms": lms,
            "r_score": r_prob[:, 1].reshape(b, k), "r_reg": r_reg.reshape(b, k, 4)}

  def _pnet(self, x255):
    h, w = self.hw
    out = []
    for s in self.scales:
      level = F.interpolate(x255, size=(int(h * s + 1), int(w * s + 1)), mode="area")
      reg, prob = self.nets["pnet"](self._net_in(level))
      out.append((reg, prob[:, 1]))
    return out

  def loss(self, x):
    t = self.t
    x255 = x * 255.0
    s = self._stages(x255)
    side = lambda bx: (bx[..., 2] - bx[..., 0] + 1)[..., None]
    o_px = (s["o_reg"] - t["o_reg"]) * side(t["onet_boxes"]) / MTCNN_PIXEL_SCALE
    # RNet: its calibrated, squared box must be the original's ONet crop (in pixels).
    rb = t["rnet_boxes"]
    rw, rh = rb[..., 2] - rb[..., 0] + 1, rb[..., 3] - rb[..., 1] + 1
    cal = rb + s["r_reg"] * torch.stack([rw, rh, rw, rh], -1)
    cw, ch = cal[..., 2] - cal[..., 0], cal[..., 3] - cal[..., 1]
    side_l = torch.maximum(cw, ch)
    x1, y1 = cal[..., 0] + cw * 0.5 - side_l * 0.5, cal[..., 1] + ch * 0.5 - side_l * 0.5
    squared = torch.stack([x1, y1, x1 + side_l, y1 + side_l], -1)
    r_px = (squared - t["onet_boxes"]) / MTCNN_PIXEL_SCALE
    l_px = (s["o_lms"] - t["o_lms"]) / MTCNN_PIXEL_SCALE
    per_face = (tc.kl_binary(t["o_score"], s["o_score"]) + tc.kl_binary(t["r_score"], s["r_score"])
                + (o_px ** 2).mean(-1) + (r_px ** 2).mean(-1) + (l_px ** 2).mean((-2, -1)))
    staged = _masked_mean(per_face, t["valid"])
    pn_sum, pn_cnt = 0.0, 0.0
    for (reg, prob), tt in zip(self._pnet(x255), self.pnet_t):
      term = tc.kl_binary(tt["prob"], prob) + ((reg - tt["reg"]) ** 2).mean(1)
      pn_sum = pn_sum + (term * tt["pos"]).sum((1, 2))
      pn_cnt = pn_cnt + tt["pos"].sum((1, 2))
    return staged + pn_sum / pn_cnt.clamp(min=1.0)

  def infer(self, x):
    x255 = x * 255.0
    return self._stages(x255), self._pnet(x255)


class TorchVictimSet:
  """The victims ``names`` (cascade order) in PyTorch eager, on fixed JAX targets.

  Args:
    names: victim names as ``DeidConfig.victim_names``: ``retinaface``, ``fan``,
      ``MPIIGaze``, ``mtcnn``.
    sources: ``{name: source path}`` from :func:`benchmarks.torch_common.prepare_weights`.
    targets_np: per victim, the targets pytree from the JAX victim's ``targets`` (jax or
      numpy arrays), same order as ``names``.
    x_obf_np: (B, H, W, 3) float32 obfuscated frames in [0, 1]: the attack's start and
      the centre of its L-inf ball.
    eps: L-inf budget.
    lr: Adam learning rate (``drsf_jax.deid.attacks.DEFAULT_LR['adam']``).
    threads: ``torch.set_num_threads`` (None leaves it).
    models: optional preloaded ``{name: model}`` (reused across batch sizes).
  """

  def __init__(self, names, sources: dict, targets_np: list, x_obf_np: np.ndarray,
               eps: float = 8 / 255, lr: float = 0.004, threads: int | None = None,
               models: dict | None = None):
    if threads is not None:
      torch.set_num_threads(int(threads))
    self.names = tuple(names)
    if len(targets_np) != len(self.names):
      raise ValueError(f"{len(targets_np)} targets for {len(self.names)} victims")
    self.models = dict(models or {})
    for n in self.names:
      if n not in self.models:
        self.models[n] = tc.freeze(tc.load_torch_model(n, sources[n]))
    x_obf = _nchw(x_obf_np)
    _, _, height, width = x_obf.shape
    self.victims = []
    for n, t in zip(self.names, targets_np):
      tt = tc.to_torch(_to_numpy(t))
      if n in ("retinaface",):
        self.victims.append(_RetinaFace(self.models[n], tt))
      elif n == "fan":
        self.victims.append(_FAN(self.models[n], tt))
      elif n == "MPIIGaze":
        self.victims.append(_MPIIGaze(self.models[n], tt))
      elif n == "mtcnn":
        self.victims.append(_MTCNN(self.models[n], tt, height, width))
      else:
        raise ValueError(f"no torch baseline for victim {n!r}")
    self.eps = float(eps)
    self.x_obf = x_obf
    self.x = x_obf.clone().requires_grad_(True)
    self.opt = torch.optim.Adam([self.x], lr=lr, betas=(0.9, 0.999), eps=1e-8)

  def losses(self, x: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) per-frame, per-victim losses of ``x`` ((B, 3, H, W); default: the current frames)."""
    x = self.x if x is None else x
    return torch.stack([v.loss(x) for v in self.victims], dim=1)

  def step(self) -> torch.Tensor:
    """One attack iteration; returns the (B, V) losses before the update (detached)."""
    self.opt.zero_grad(set_to_none=True)
    losses = self.losses(self.x)
    losses.sum().backward()
    self.opt.step()
    with torch.no_grad():
      lo = (self.x_obf - self.eps).clamp(min=0.0)
      hi = (self.x_obf + self.eps).clamp(max=1.0)
      self.x.copy_(torch.minimum(torch.maximum(self.x, lo), hi))
    return losses.detach()

  @torch.no_grad()
  def infer(self, frames_np: np.ndarray | torch.Tensor):
    """Every victim's inference on a batch (the targets' geometry); what inference frames/s times.

    Detector: network + prior decoding; FAN: crop + network; MPIIGaze: eye warps +
    equalisation + network; MTCNN: PNet pyramid + RNet/ONet on the targets' boxes.
    """
    x = frames_np if isinstance(frames_np, torch.Tensor) else _nchw(frames_np)
    return [v.infer(x) for v in self.victims]

  def frames_np(self) -> np.ndarray:
    """The current adversarial frames as (B, H, W, 3) float32."""
    return self.x.detach().permute(0, 2, 3, 1).numpy().copy()


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(_to_numpy(v) for v in tree)
  return np.asarray(tree)


def to_nchw(frames_np: np.ndarray) -> torch.Tensor:
  """(B, H, W, 3) NumPy -> (B, 3, H, W) float32 torch (the layout :meth:`TorchVictimSet.losses` takes)."""
  return _nchw(frames_np)
