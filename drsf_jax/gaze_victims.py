"""Gaze victims: MPIIGaze (eyes), MPIIFaceGaze and ETH-XGaze (face), with ptgaze geometry.

Per face, on the original frame (host side, once): head pose by ``solvePnP`` from FAN's
68 landmarks when the run has them, else from the detector's 5 landmarks (the fallback
template; each prediction says which was used); then ptgaze's normalising homography
(face, or one per eye for MPIIGaze) and, for MPIIGaze, the histogram-equalisation table
of each eye patch. Inside the loss (jnp): the fixed warps, the model, and the squared
error of (pitch, yaw) against the original's. The eye patches' equalisation is re-fitted
on the attacked frame inside the loss by default (``equalization='refit'``), as inference
does on the written output; ``'fixed'`` keeps the original frame's table (the earlier
behaviour, kept for the measurement in README, "Fidelity").
"""

import numpy as np
import jax
import jax.numpy as jnp

from drsf_jax import checkpoints
from drsf_jax import headpose
from drsf_jax.models import gaze as gaze_models
from drsf_jax.victims import FaceContext, Victim

_EYE_HW = headpose.PRESETS["MPIIGaze"].size_hw


def _camera(ctx: FaceContext, frames) -> headpose.Camera:
  if ctx.camera is not None:
    return ctx.camera
  return headpose.Camera.dummy(frames.shape[2], frames.shape[1])


def face_geometry(frames_u8: np.ndarray, ctx: FaceContext, preset: str) -> dict:
  """Fixed per-face geometry (B, K, ...) for one gaze model, computed on the originals.

  Returns numpy arrays: ``homography`` (B, K, P, 3, 3) with P = 1 (face) or 2 (reye,
  leye), ``rotation`` (B, K, P, 3, 3), ``head_pitch_yaw`` (B, K, P, 2), ``lut``
  (B, K, P, 256) (eyes only, identity otherwise), ``valid`` (B, K), ``template``
  (B, K) '68' / '5' / '', ``rvec`` / ``tvec`` (B, K, 3).
  """
  p = headpose.get_preset(preset)
  parts = ("reye", "leye") if p.per_eye else ("face",)
  b, k = ctx.valid.shape
  n = len(parts)
  cam = _camera(ctx, frames_u8)
  out = {"homography": np.tile(np.eye(3, dtype=np.float32), (b, k, n, 1, 1)),
         "rotation": np.tile(np.eye(3, dtype=np.float32), (b, k, n, 1, 1)),
         "head_pitch_yaw": np.zeros((b, k, n, 2), np.float32),
         "lut": np.tile(np.arange(256, dtype=np.float32), (b, k, n, 1)),
         "valid": np.zeros((b, k), bool), "template": np.full((b, k), "", object),
         "rvec": np.zeros((b, k, 3), np.float32), "tvec": np.zeros((b, k, 3), np.float32)}
  for i in range(b):
    for j in range(k):
      if not ctx.valid[i, j]:
        continue
      lms = ctx.landmarks68[i, j] if ctx.landmarks68 is not None else ctx.landmarks5[i, j]
      try:
        pose = headpose.estimate_head_pose(lms, cam)
      except (ValueError, np.linalg.LinAlgError):
        continue  # Degenerate landmarks: this face gets no gaze (reported as null).
      geo = headpose.normalization_geometry(pose, cam, p)
      for q, part in enumerate(parts):
        g = geo[part]
        out["homography"][i, j, q] = g.homography
        out["rotation"][i, j, q] = g.rotation
        out["head_pitch_yaw"][i, j, q] = g.head_pitch_yaw
        if p.per_eye:
          _, lut = headpose.normalize_eye_host(frames_u8[i], g.homography, p.size_hw)
          out["lut"][i, j, q] = lut
      out["valid"][i, j] = True
      out["template"][i, j] = pose.template
      out["rvec"][i, j] = np.ravel(pose.rotation_vector)
      out["tvec"][i, j] = np.ravel(pose.translation)
  return out


EQUALIZATIONS = ("refit", "fixed")


def _make(name: str, variables, meta, equalization: str = "refit") -> Victim:
  if equalization not in EQUALIZATIONS:
    raise ValueError(f"equalization must be one of {EQUALIZATIONS}, got {equalization!r}")
  config = dict(gaze_models.DEFAULT_CONFIGS[name])
  config.update(meta.get("config", {}))
  preset = headpose.get_preset(name)
  per_eye = preset.per_eye

  def _forward(params, frames, homography, head_py, lut, refit=False):
    """(B, K, P, 2) normalised (pitch, yaw) for every face/eye patch.

    ``refit``: eye patches equalised with a table fitted on ``frames`` (not ``lut``).
    """
    b, k, n = homography.shape[:3]
    reps = jnp.repeat(frames, k * n, axis=0)
    hs = homography.reshape(b * k * n, 3, 3)
    if per_eye:
      luts = None if refit else lut.reshape(b * k * n, 256)
      patches = headpose.normalize_gray_equalized(reps, hs, luts, _EYE_HW)
      patches = patches.reshape(b * k, n, *_EYE_HW, 1)
      py = head_py.reshape(b * k, n, 2)
      left, right = gaze_models.mpiigaze_two_eyes(params, patches[:, 1], patches[:, 0],
                                                  py[:, 1], py[:, 0], config)
      return jnp.stack([right, left], axis=1).reshape(b, k, n, 2)
    patches = headpose.normalize(reps, hs, preset.size_hw)
    out = gaze_models.apply(params, gaze_models.preprocess(name, patches), config)
    return out.reshape(b, k, n, 2)

  _forward_jit = jax.jit(_forward)

  def _geometry(frames, ctx):
    u8 = np.clip(np.rint(np.asarray(frames) * 255), 0, 255).astype(np.uint8)
    return face_geometry(u8, ctx, name)

  def targets(params, frames, ctx: FaceContext):
    g = _geometry(frames, ctx)
    arrays = {k: jnp.asarray(g[k]) for k in ("homography", "head_pitch_yaw", "lut")}
    py = _forward_jit(params, jnp.asarray(frames), arrays["homography"], arrays["head_pitch_yaw"],
                      arrays["lut"])
    return {**arrays, "pitch_yaw": py, "valid": jnp.asarray(g["valid"], jnp.float32)}

  def loss(params, frames, t):
    py = _forward(params, frames, t["homography"], t["head_pitch_yaw"], t["lut"],
                  refit=equalization == "refit")
    per_face = jnp.mean((py - t["pitch_yaw"]) ** 2, axis=(2, 3))
    return jnp.sum(per_face * t["valid"], axis=1) / jnp.maximum(jnp.sum(t["valid"], axis=1), 1.0)

  def predict(params, frames, ctx: FaceContext):
    """Per frame, per valid face: gaze and head pose (None where the pose failed)."""
    g = _geometry(frames, ctx)
    py = np.asarray(_forward_jit(params, jnp.asarray(frames), jnp.asarray(g["homography"]),
                                 jnp.asarray(g["head_pitch_yaw"]), jnp.asarray(g["lut"])))
    vec = np.asarray(headpose.denormalize_gaze(jnp.asarray(py), jnp.asarray(g["rotation"])))
    out = []
    for i in range(ctx.batch):
      faces = []
      for j in range(ctx.valid.shape[1]):
        if not ctx.valid[i, j]:
          continue
        if not g["valid"][i, j]:
          faces.append(None)
          continue
        v = vec[i, j].mean(axis=0)  # MPIIGaze: mean of the two eyes' camera-space vectors.
        v = v / np.linalg.norm(v)
        faces.append({
            "pitch_yaw": np.asarray(headpose.vector_to_pitch_yaw(jnp.asarray(v))).tolist(),
            "vector": v.tolist(),
            "normalized_pitch_yaw": py[i, j].tolist(),
            "head_pose": {"rotation_vector": g["rvec"][i, j].tolist(),
                          "translation": g["tvec"][i, j].tolist()},
            "landmarks_source": "68" if g["template"][i, j] == "68" else "5",
        })
      out.append(faces)
    return out

  return Victim(name, "gaze", variables, config, meta, predict, targets, loss)


def load(name: str, weights_dir: str | None = None, equalization: str = "refit") -> Victim:
  variables, meta = checkpoints.load(name, weights_dir)
  cfg = dict(gaze_models.DEFAULT_CONFIGS[name])
  cfg.update(meta.get("config", {}))
  checkpoints.check_tree(gaze_models.expected_variables(name, cfg), variables,
                         what=checkpoints.weights_path(name, weights_dir))
  return _make(name, variables, meta, equalization)
