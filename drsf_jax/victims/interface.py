"""The Victim interface: what every authorized model provides, and the face context.

See :mod:`drsf_jax.victims.registry` (the registry: ``load_victim``) for the contract of
``predict`` / ``targets`` / ``loss``. This module sits below the registry and below
every victim module (``victims``, ``gaze_victims``), which import it; it imports no other
module of the package.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class FaceContext:
  """Per-batch facts from the original frames (NumPy, static shapes).

  Attributes:
    boxes: (B, K, 4) chosen face boxes (x1, y1, x2, y2); a placeholder where invalid.
    valid: (B, K) bool, False where the frame has fewer than K faces.
    landmarks5: (B, K, 5, 2) detector landmarks (left eye, right eye, nose, mouth left,
      mouth right, in image coordinates).
    scores: (B, K) detector scores.
    extra: detector-specific arrays, e.g. MTCNN's ``onet_boxes`` (B, K, 4).
    landmarks68: (B, K, 68, 2) from FAN, or None.
    camera: ``cameras.Camera`` of the video, or None for the dummy camera.
  """
  boxes: np.ndarray
  valid: np.ndarray
  landmarks5: np.ndarray
  scores: np.ndarray
  extra: dict = dataclasses.field(default_factory=dict)
  landmarks68: np.ndarray | None = None
  camera: Any = None

  @property
  def batch(self) -> int:
    return self.boxes.shape[0]


def frame_keys(frames: jax.Array, seed: int) -> jax.Array:
  """(B,) PRNG keys, frame ``i``'s folded from its own 8-bit pixel sum.

  For losses that draw afresh at every attack step (MTCNN's jittered crops, the gaze
  geometries): the draws change as the attack changes the frame, while the loss stays a
  deterministic function of its inputs and a frame's loss does not depend on the rest of
  its batch. The sum is of integers, exact in any summation order, so the draws do not
  depend on how XLA reduces (batch size, sharding across devices); a float sum's last
  bits did, and changed every draw of a frame between 1 and 4 devices.
  """
  q = jnp.round(jnp.clip(jax.lax.stop_gradient(frames), 0.0, 1.0) * 255.0).astype(jnp.int32)
  bits = jnp.sum(q, axis=tuple(range(1, frames.ndim)))
  return jax.vmap(lambda b: jax.random.fold_in(jax.random.PRNGKey(seed), b))(bits)


_PLACEHOLDER_BOX = np.array([8.0, 8.0, 72.0, 88.0], np.float32)
_PLACEHOLDER_LM5 = np.array([[28, 40], [52, 40], [40, 55], [30, 70], [50, 70]], np.float32)


def context_from_detections(dets: list[dict], k: int = 1) -> FaceContext:
  """The ``k`` largest faces of each frame's detections as a static-shape context.

  Faces the detector found come before faces added by :mod:`drsf_jax.deid.temporal` (per-face
  ``tracked (N,)`` True), largest first within each. Every other key must be a per-face
  ``(N, 4)`` box array present in every frame (e.g. MTCNN's ``onet_boxes``); anything else
  is a ``ValueError`` naming the key.
  """
  b = len(dets)
  # Empty slots hold a harmless placeholder face (finite crop and warp geometry); their
  # losses are masked out by ``valid``. Zeros would give a zero crop scale, hence NaNs
  # that even a mask cannot stop from reaching the gradient.
  boxes = np.tile(_PLACEHOLDER_BOX, (b, k, 1))
  valid = np.zeros((b, k), bool)
  lm5 = np.tile(_PLACEHOLDER_LM5, (b, k, 1, 1))
  scores = np.zeros((b, k), np.float32)
  extra_keys = sorted({key for d in dets for key in d} - {"boxes", "scores", "landmarks", "tracked"})
  extra = {key: np.tile(_PLACEHOLDER_BOX, (b, k, 1)) for key in extra_keys}
  for i, d in enumerate(dets):
    bx = np.asarray(d["boxes"], np.float32).reshape(-1, 4)
    tracked = np.asarray(d.get("tracked", np.zeros(len(bx), bool)), bool).reshape(-1)
    order = np.lexsort((-(bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1]), tracked))[:k]
    n = len(order)
    boxes[i, :n] = bx[order]
    valid[i, :n] = True
    lm5[i, :n] = np.asarray(d["landmarks"], np.float32).reshape(-1, 5, 2)[order]
    scores[i, :n] = np.asarray(d["scores"], np.float32)[order]
    for key in extra_keys:
      v = d.get(key)
      if not isinstance(v, np.ndarray) or v.shape != bx.shape:
        raise ValueError(f"detections of frame {i}: {key!r} must be a per-face ({len(bx)}, 4) box array "
                         f"like 'boxes', got {type(v).__name__} {getattr(v, 'shape', '')}".rstrip())
      extra[key][i, :n] = np.asarray(v, np.float32)[order]
  return FaceContext(boxes=boxes, valid=valid, landmarks5=lm5, scores=scores, extra=extra)


@dataclasses.dataclass
class Victim:
  """An authorized model: weights plus predict / targets / loss (see module docstring)."""
  name: str
  kind: str  # 'detector' | 'landmarks' | 'gaze'
  params: Any
  config: dict
  meta: dict
  predict: Callable[..., list]
  targets: Callable[..., Any]
  loss: Callable[..., jax.Array]
  # Adds this victim's predictions on the originals to the context for later victims
  # (FAN's 68 landmarks feed the gaze victims' head pose). None for most victims.
  # ``annotate(params, frames, ctx, targets=None)``: given this victim's targets on the
  # same frames, it reads the predictions from them instead of running the model again.
  annotate: Callable[..., None] | None = None
  # Updates this victim's targets from what the stop's check saw inference take on the
  # attacked frames (MTCNN: the ONet crops it read them from). None for most victims.
  # ``mine(targets, ctx, failing, offset) -> targets``: ``ctx`` the check's detections as a
  # :class:`FaceContext` (frame coordinates), ``failing`` (B,) bool, ``offset`` (x, y) of
  # the attacked window in the frame. Same shapes, so the compiled step is reused.
  mine: Callable[..., Any] | None = None
