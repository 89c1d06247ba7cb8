"""Gaze directions: (pitch, yaw) <-> unit vectors, de-normalisation, angles (jnp).

Conventions as ptgaze: camera coordinates X right, Y down, Z forward; a (pitch, yaw) in
radians maps to ``-[cos p sin y, sin p, cos p cos y]``. :func:`denormalize_gaze` rotates a
gaze predicted in the normalised camera back to the real camera; :func:`angle_between_deg`
is the error every gaze figure in README uses. Differentiable; used inside the loss.
"""

import jax
import jax.numpy as jnp
import numpy as np


# ---- gaze vectors ------------------------------------------------------------------------

def pitch_yaw_to_vector(pitch_yaw: jax.Array) -> jax.Array:
  """(..., 2) (pitch, yaw) radians -> (..., 3) unit vector ``-[cos p sin y, sin p, cos p cos y]``.

  ptgaze's ``gaze_angles_to_vector``: (0, 0) looks along -z, i.e. back at the camera.
  """
  py = jnp.asarray(pitch_yaw)
  p, y = py[..., 0], py[..., 1]
  return -jnp.stack([jnp.cos(p) * jnp.sin(y), jnp.sin(p), jnp.cos(p) * jnp.cos(y)], axis=-1)


def vector_to_pitch_yaw(vector: jax.Array) -> jax.Array:
  """(..., 3) gaze vector -> (..., 2) (pitch, yaw): ``(arcsin(-y), arctan2(-x, -z))``.

  The vector is normalised first (ptgaze assumes a unit vector).
  """
  v = jnp.asarray(vector)
  v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
  return jnp.stack([jnp.arcsin(jnp.clip(-v[..., 1], -1.0, 1.0)),
                    jnp.arctan2(-v[..., 0], -v[..., 2])], axis=-1)


def denormalize_gaze(pitch_yaw: jax.Array, normalizing_rotation: jax.Array) -> jax.Array:
  """Normalised-space (pitch, yaw) -> gaze vector in camera coordinates.

  ``R^T @ pitch_yaw_to_vector(pitch_yaw)`` (ptgaze: row vector ``v @ R``).

  Args:
    pitch_yaw: (..., 2) radians.
    normalizing_rotation: (..., 3, 3) R of the patch (broadcasts against ``pitch_yaw``).

  Returns:
    (..., 3) unit gaze vectors in camera coordinates.
  """
  v = pitch_yaw_to_vector(pitch_yaw)
  return jnp.einsum("...i,...ij->...j", v, jnp.asarray(normalizing_rotation, v.dtype))


def angle_between_deg(v1: jax.Array, v2: jax.Array) -> jax.Array:
  """Angle in degrees between (..., 3) vectors (``atan2(|a x b|, a . b)``, stable near 0).

  The one angle function of the project (gaze error in :mod:`drsf_jax.evaluation.metrics` and
  DiffScore's gaze term use it too). A zero-length or non-finite vector has no direction:
  its angle is NaN, never 0 (``atan2(0, 0)`` would score it as a perfect match).
  """
  # NumPy inputs (host-side metrics) are computed in NumPy: XLA may contract a*b - c*d into
  # an FMA, which makes a x a non-zero (~1e-7 deg) where NumPy gives exactly 0.
  xp = np if isinstance(v1, np.ndarray) and isinstance(v2, np.ndarray) else jnp
  a = xp.asarray(v1)
  b = xp.asarray(v2)
  cross = xp.linalg.norm(xp.cross(a, b), axis=-1)
  dot = xp.sum(a * b, axis=-1)
  with np.errstate(invalid="ignore"):
    defined = (xp.linalg.norm(a, axis=-1) > 0) & (xp.linalg.norm(b, axis=-1) > 0)  # False for NaN.
    return xp.where(defined, xp.degrees(xp.arctan2(cross, dot)), xp.nan)
