"""Baseline B: an original-like eager PyTorch de-identification pipeline, end to end.

:func:`run_original_like` decodes a video with OpenCV, detects faces on the original
frames with the PyTorch detector (biubug6's RetinaFace network + prior decoding +
``py_cpu_nms``, or facenet-pytorch's ``MTCNN.detect``), keeps the largest face per frame
(a frame without one borrows the nearest detected frame's face in its batch), computes
the targets on the originals, pixelates the square FAN region
(:func:`drsf_jax.deid.obfuscation.obfuscate`, NumPy), runs exactly ``iters`` Adam iterations
per batch (no early stopping, every victim's loss in the sum), projects onto the 8/255
L-inf ball and [0, 1], rounds to uint8 and writes FFV1 in .mkv with ``cv2.VideoWriter``.

What is recomputed on EVERY attack iteration (as the HCMUS original did), from the
current adversarial frames or from the fixed boxes / landmarks of the originals:

* every network forward and backward, and every input normalisation (RetinaFace's
  BGR * 255 - mean, MTCNN's (x * 255 - 127.5) / 128, the ``repeat`` of frames per face);
* FAN: crop centre and scale from the original boxes (box centre moved up 0.12 h,
  ``(w + h) / 195``), the crop matrix, its inverse and the sampling grid, in torch;
* MPIIGaze, on the host: head pose by ``cv2.solvePnP`` from the original landmarks (FAN's
  68 points when ``fan`` is a victim, else the detector's 5), face/eye centres, the
  normalising rotation and homography of each eye and the normalised head pose
  (``drsf_jax.geometry``'s NumPy/OpenCV functions, ptgaze's formulas), then
  ``cv2.warpPerspective`` of the *current adversarial* uint8 frame and ``cv2.equalizeHist``
  of its grey eye patch, whose table is used (linearly interpolated, differentiable) on the
  torch eye patch (``warp -> luma -> table``; no straight-through uint8 value);
* MTCNN: the integer crop windows of the original R/ONet boxes and the pyramid scales;
  the RNet/ONet crops (``F.interpolate(mode='area')`` per box) and the pyramid levels.

What is NOT recomputed (fixed once per batch from the originals): the face boxes and
landmarks (detection, FAN landmark decoding), the target predictions (RetinaFace outputs
and its positive-anchor weights, FAN heatmaps, MPIIGaze gaze angles, MTCNN stage
outputs and PNet positives), the obfuscated start frames and the RetinaFace priors.

``wall_s`` covers decoding through writing the video; loading the models is excluded
(pass ``models`` to reuse them).
"""

import os
import time

import cv2
import numpy as np
import torch

from benchmarks import torch_baselines as tb
from benchmarks import torch_common as tc

RETINAFACE_POSITIVE_IOU = 0.35  # drsf_jax.victims.registry.RETINAFACE_POSITIVE_IOU
MTCNN_PNET_POS = 0.6 * 0.5  # thresholds[0] * 0.5, as drsf_jax.victims.registry' PNet positives.


def _read_video(path: str, max_frames: int | None):
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise FileNotFoundError(f"cannot open video {path}")
  fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
  frames = []
  while max_frames is None or len(frames) < max_frames:
    ok, f = cap.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
  cap.release()
  if not frames:
    raise ValueError(f"no frames decoded from {path}")
  return np.stack(frames), fps


# ---- detection on the originals ----------------------------------------------------------

@torch.no_grad()
def _detect_retinaface(net, x: torch.Tensor, confidence=0.5, nms=0.4):
  ref = tc.batch_face_alignment()
  loc, conf, landm = net(tc.retinaface_input(x))
  priors = tc.retinaface_pixel_priors(x.shape[2], x.shape[3])
  boxes, lms = tc.retinaface_decode(loc, landm, priors)
  out = []
  for i in range(x.shape[0]):
    s = conf[i, :, 1].numpy()
    idx = np.where(s > confidence)[0]
    idx = idx[np.argsort(-s[idx], kind="stable")][:5000]
    b = boxes[i, idx].numpy()
    keep = ref.py_cpu_nms(np.hstack([b, s[idx, None]]).astype(np.float32), nms)[:750]
    out.append({"boxes": b[keep], "landmarks": lms[i, idx].numpy()[keep], "scores": s[idx][keep]})
  return out


def _detect_mtcnn(nets, u8: np.ndarray):
  from facenet_pytorch import MTCNN
  det = MTCNN(keep_all=True, device="cpu")
  det.pnet, det.rnet, det.onet = nets["pnet"], nets["rnet"], nets["onet"]
  boxes, scores, points = det.detect(list(u8), landmarks=True)
  out = []
  for b, s, p in zip(boxes, scores, points):
    if b is None:
      out.append({"boxes": np.zeros((0, 4), np.float32), "landmarks": np.zeros((0, 5, 2), np.float32),
                  "scores": np.zeros((0,), np.float32)})
    else:
      out.append({"boxes": np.asarray(b, np.float32), "landmarks": np.asarray(p, np.float32),
                  "scores": np.asarray(s, np.float32)})
  return out


def _largest(dets):
  """Per frame (box (4,), landmarks5 (5, 2)) of the largest face; nearest frame's when none."""
  chosen = []
  for d in dets:
    b = np.asarray(d["boxes"]).reshape(-1, 4)
    if len(b) == 0:
      chosen.append(None)
      continue
    j = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
    chosen.append((b[j].astype(np.float32), np.asarray(d["landmarks"]).reshape(-1, 5, 2)[j]))
  have = [i for i, c in enumerate(chosen) if c is not None]
  if not have:
    return None
  return [c if c is not None else chosen[min(have, key=lambda j: abs(j - i))] for i, c in enumerate(chosen)]


# ---- per-victim targets on the originals and per-iteration losses -------------------------

def _gaze_geometry(u8: np.ndarray, landmarks: np.ndarray, camera):
  """Host: per frame, both eyes' homographies, normalised head poses and equalisation tables."""
  from drsf_jax.geometry import headpose
  from drsf_jax.geometry import normalization
  b = u8.shape[0]
  hs = np.tile(np.eye(3, dtype=np.float32), (b, 1, 2, 1, 1))
  py = np.zeros((b, 1, 2, 2), np.float32)
  luts = np.tile(np.arange(256, dtype=np.float32), (b, 1, 2, 1))
  valid = np.zeros((b, 1), np.float32)
  for i in range(b):
    try:
      pose = headpose.estimate_head_pose(landmarks[i], camera)
    except (ValueError, np.linalg.LinAlgError):
      continue
    geo = normalization.normalization_geometry(pose, camera, "MPIIGaze")
    for q, part in enumerate(("reye", "leye")):
      g = geo[part]
      hs[i, 0, q] = g.homography
      py[i, 0, q] = g.head_pitch_yaw
      _, luts[i, 0, q] = normalization.normalize_eye_host(u8[i], g.homography, (36, 60))
    valid[i, 0] = 1.0
  return {"homography": torch.from_numpy(hs), "head_pitch_yaw": torch.from_numpy(py),
          "lut": torch.from_numpy(luts), "valid": torch.from_numpy(valid)}


class _Victims:
  """Targets on the originals; :meth:`losses` recomputes the geometry from scratch."""

  def __init__(self, names, models, x: torch.Tensor, boxes: np.ndarray, lm5: np.ndarray):
    from drsf_jax.geometry import cameras
    self.names = names
    self.models = models
    b, _, h, w = x.shape
    self.boxes = torch.from_numpy(boxes)  # (B, 4)
    self.valid = torch.ones((b, 1))
    self.camera = cameras.Camera.dummy(w, h)
    self.targets = {}
    landmarks = lm5
    with torch.no_grad():
      for n in names:
        if n == "retinaface":
          loc, conf, landm = models[n](tc.retinaface_input(x))
          dec, _ = tc.retinaface_decode(loc, landm, tc.retinaface_pixel_priors(h, w))
          iou = tc.pairwise_iou(dec, self.boxes[:, None])[..., 0]
          pos = (iou >= RETINAFACE_POSITIVE_IOU).float() * conf[..., 1]
          self.targets[n] = {"loc": loc, "score": conf[..., 1], "landm": landm, "pos": pos}
        elif n == "fan":
          center, scale, m = tc.fan_crop_geometry(self.boxes)
          hm = models[n](tc.warp_perspective(x, tc.affine_to_homography(m), (256, 256)))[-1]
          self.targets[n] = hm
          landmarks = tc.fan_decode(hm, center, scale).numpy()
        elif n == "MPIIGaze":
          self.landmarks = landmarks
          geo = _gaze_geometry(_to_u8(x), landmarks, self.camera)
          t = {**geo, "pitch_yaw": torch.zeros((b, 1, 2, 2))}
          self.targets[n] = tb._MPIIGaze(models[n], t, match_opencv=False)._forward(x)  # pylint: disable=protected-access
        elif n == "mtcnn":
          t = {"onet_boxes": self.boxes[:, None], "rnet_boxes": self.boxes[:, None],
               "valid": self.valid, "pnet": []}
          v = tb._MTCNN(models[n], t, h, w)  # pylint: disable=protected-access
          stages = v._stages(x * 255.0)  # pylint: disable=protected-access
          pnet = [{"reg": r.permute(0, 2, 3, 1), "prob": p, "pos": (p >= MTCNN_PNET_POS).float()}
                  for r, p in v._pnet(x * 255.0)]  # pylint: disable=protected-access
          self.targets[n] = {**t, **stages, "pnet": pnet}
        else:
          raise ValueError(f"no original-like baseline for victim {n!r}")

  def losses(self, x: torch.Tensor) -> torch.Tensor:
    out = []
    b, _, h, w = x.shape
    for n in self.names:
      if n == "retinaface":
        out.append(tb._RetinaFace(self.models[n], self.targets[n]).loss(x))  # pylint: disable=protected-access
      elif n == "fan":
        _, _, m = tc.fan_crop_geometry(self.boxes)  # Recomputed every iteration.
        t = {"valid": self.valid, "matrices": m, "heatmaps": self.targets[n].permute(0, 2, 3, 1)}
        out.append(tb._FAN(self.models[n], t).loss(x))  # pylint: disable=protected-access
      elif n == "MPIIGaze":
        geo = _gaze_geometry(_to_u8(x.detach()), self.landmarks, self.camera)  # solvePnP, warps, equalizeHist.
        t = {**geo, "pitch_yaw": self.targets[n]}
        out.append(tb._MPIIGaze(self.models[n], t, match_opencv=False).loss(x))  # pylint: disable=protected-access
      elif n == "mtcnn":
        out.append(tb._MTCNN(self.models[n], self.targets[n], h, w).loss(x))  # pylint: disable=protected-access
    return torch.stack(out, dim=1)


def _to_u8(x: torch.Tensor) -> np.ndarray:
  return np.clip(np.rint(x.permute(0, 2, 3, 1).numpy() * 255.0), 0, 255).astype(np.uint8)


def load_models(names, sources: dict) -> dict:
  return {n: tc.freeze(tc.load_torch_model(n, sources[n])) for n in names}


def run_original_like(video_path: str, out_path: str, names, sources: dict, max_frames: int | None = None,
                      batch_size: int = 4, iters: int = 10, deid: str = "pixelate_10", threads: int = 2,
                      eps: float = 8 / 255, lr: float = 0.004, models: dict | None = None) -> dict:
  """De-identifies ``video_path`` into ``out_path`` (FFV1 .mkv) the original's way; see module doc.

  Returns ``dict(frames=, wall_s=, frames_per_second=, iterations=, batches=)``.
  """
  from drsf_jax.deid import obfuscation
  from drsf_jax.geometry import bbox
  torch.set_num_threads(int(threads))
  names = tuple(names)
  models = dict(models or {})
  for n in names:
    if n not in models:
      models[n] = tc.freeze(tc.load_torch_model(n, sources[n]))
  t0 = time.perf_counter()
  frames, fps = _read_video(video_path, max_frames)
  n_frames, h, w = frames.shape[:3]
  writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"FFV1"), float(fps), (w, h))
  if not writer.isOpened():
    raise ValueError(f"OpenCV cannot write FFV1 to {out_path} (use .mkv)")
  batches = 0
  try:
    for start in range(0, n_frames, batch_size):
      u8 = frames[start:start + batch_size]
      x = torch.from_numpy(np.ascontiguousarray(u8.transpose(0, 3, 1, 2))).float() / 255.0
      if names[0] == "mtcnn":
        dets = _detect_mtcnn(models["mtcnn"], u8)
      else:
        dets = _detect_retinaface(models[names[0]], x)
      chosen = _largest(dets)
      if chosen is None:  # No face in the whole batch: written unchanged.
        out = u8
      else:
        boxes = np.stack([c[0] for c in chosen]).astype(np.float32)
        lm5 = np.stack([c[1] for c in chosen]).astype(np.float32)
        victims = _Victims(names, models, x, boxes, lm5)
        regions = [bbox.face_regions(bx[None], (h, w)) for bx in boxes]
        x_obf = torch.from_numpy(np.ascontiguousarray(
            obfuscation.obfuscate(u8.astype(np.float32) / 255.0, regions, deid).transpose(0, 3, 1, 2)))
        adv = x_obf.clone().requires_grad_(True)
        opt = torch.optim.Adam([adv], lr=lr, betas=(0.9, 0.999), eps=1e-8)
        lo, hi = (x_obf - eps).clamp(min=0.0), (x_obf + eps).clamp(max=1.0)
        for _ in range(iters):
          opt.zero_grad(set_to_none=True)
          victims.losses(adv).sum().backward()
          opt.step()
          with torch.no_grad():
            adv.copy_(torch.minimum(torch.maximum(adv, lo), hi))
        out = _to_u8(adv.detach())
      for f in out:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
      batches += 1
  finally:
    writer.release()
  wall = time.perf_counter() - t0
  return {"frames": int(n_frames), "wall_s": wall, "frames_per_second": n_frames / wall,
          "iterations": int(iters), "batches": batches, "output": os.path.abspath(out_path)}
