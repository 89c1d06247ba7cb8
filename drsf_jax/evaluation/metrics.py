"""Utility metrics between two prediction records (reference vs prediction).

Frames are matched by ``frame_id``; ids present in only one file are reported, never
silently dropped. In each common frame the reference's largest face is matched to the
prediction face of highest IoU. Per frame:

* ``iou``: box IoU (0 when the prediction has no face);
* ``landmark_px``: mean Euclidean distance of the landmarks both files have (68 points
  when both have them, else the 5 points);
* ``nme``: ``landmark_px`` over the reference's inter-ocular distance (outer eye corners
  36/45 with 68 points, eye centres with 5);
* ``gaze_angle_deg``: angle between the 3D gaze vectors;
* ``head_pose_deg``: angle of the relative rotation between the two head poses
  (``arccos((trace(Ra^T Rb) - 1) / 2)`` of their rotation vectors), in degrees;
* ``diffscore``: the paper's DiffScore terms ``(1 - IoU) + landmark distance + gaze
  angle``; to add dimensionless quantities we use NME for the landmark term and the angle
  in radians for the gaze term (terms a frame lacks count 0 and are listed as missing).
"""

import math

import numpy as np

from drsf_jax.geometry import bbox
from drsf_jax.geometry import gaze_vectors
from drsf_jax.io import records


def gaze_angle_deg(a, b) -> float:
  """Angle in degrees between two 3-D gaze vectors (:func:`gaze_vectors.angle_between_deg`).

  Raises:
    ValueError: when either vector has zero length or a non-finite component (it has no
      direction, so it cannot be scored; never a 0° "perfect" error).
  """
  angle = float(gaze_vectors.angle_between_deg(np.asarray(a, np.float64), np.asarray(b, np.float64)))
  if not math.isfinite(angle):
    raise ValueError(f"gaze vector without a direction (zero length or non-finite): {list(a)} vs {list(b)}")
  return angle


def _rotation_matrix(rvec) -> np.ndarray:
  """Rodrigues: rotation vector (3,) -> (3, 3) matrix."""
  r = np.asarray(rvec, np.float64).reshape(3)
  theta = float(np.linalg.norm(r))
  if theta < 1e-12:
    return np.eye(3)
  k = r / theta
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx


def head_pose_angle_deg(rvec_a, rvec_b) -> float:
  """Angle in degrees of the rotation taking head pose ``a`` to ``b`` (rotation vectors)."""
  ra, rb = _rotation_matrix(rvec_a), _rotation_matrix(rvec_b)
  c = (np.trace(ra.T @ rb) - 1.0) / 2.0
  return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def _landmarks(ref_face, pred_face):
  if ref_face.get("landmarks68") and pred_face.get("landmarks68"):
    r = np.asarray(ref_face["landmarks68"], np.float64)
    p = np.asarray(pred_face["landmarks68"], np.float64)
    iod = np.linalg.norm(r[36] - r[45])
  else:
    r = np.asarray(ref_face["landmarks5"], np.float64)
    p = np.asarray(pred_face["landmarks5"], np.float64)
    iod = np.linalg.norm(r[0] - r[1])
  px = float(np.linalg.norm(r - p, axis=-1).mean())
  return px, px / max(iod, 1e-9)


def frame_metrics(ref_faces: list, pred_faces: list) -> dict | None:
  """Metrics of one frame; None when the reference has no face."""
  if not ref_faces:
    return None
  ref = ref_faces[0]
  out = {"iou": 0.0, "landmark_px": None, "nme": None, "gaze_angle_deg": None,
         "head_pose_deg": None, "missing_in_prediction": not pred_faces}
  if pred_faces:
    ious = bbox.box_iou(np.asarray([ref["box"]]), np.asarray([f["box"] for f in pred_faces]))[0]
    j = int(np.argmax(ious))
    pred = pred_faces[j]
    out["iou"] = float(ious[j])
    out["landmark_px"], out["nme"] = _landmarks(ref, pred)
    if ref.get("gaze") and pred.get("gaze"):
      out["gaze_angle_deg"] = gaze_angle_deg(ref["gaze"]["vector"], pred["gaze"]["vector"])
    if ref.get("head_pose") and pred.get("head_pose"):
      out["head_pose_deg"] = head_pose_angle_deg(ref["head_pose"]["rotation_vector"],
                                                 pred["head_pose"]["rotation_vector"])
  out["diffscore"] = ((1 - out["iou"]) + (out["nme"] or 0.0)
                      + math.radians(out["gaze_angle_deg"] or 0.0))
  return out


def _mean(vals):
  vals = [v for v in vals if v is not None]
  return float(np.mean(vals)) if vals else None


def _p95(vals):
  vals = [v for v in vals if v is not None]
  return float(np.percentile(vals, 95)) if vals else None


def compare(reference: dict, prediction: dict) -> dict:
  """Per-frame metrics and a summary for two validated schema-1 documents.

  Raises:
    ValueError: when both documents name their video's size and the sizes differ (boxes
      and landmarks in pixels of different frames cannot be compared).
  """
  rv, pv = reference.get("video"), prediction.get("video")
  if rv and pv and records.LEGACY_PATH not in (rv.get("path"), pv.get("path")):
    rs, ps = (rv.get("width"), rv.get("height")), (pv.get("width"), pv.get("height"))
    if rs != ps:
      raise ValueError(f"the videos differ in size: reference {rs[0]}x{rs[1]}, prediction "
                       f"{ps[0]}x{ps[1]}; their pixel coordinates cannot be compared")
  ref = {f["frame_id"]: f["faces"] for f in reference["frames"]}
  pred = {f["frame_id"]: f["faces"] for f in prediction["frames"]}
  common = sorted(ref.keys() & pred.keys())
  per_frame = []
  for fid in common:
    m = frame_metrics(ref[fid], pred[fid])
    row = {"frame_id": fid, "reference_faces": len(ref[fid]), "prediction_faces": len(pred[fid])}
    if m is None:
      row.update(iou=None, landmark_px=None, nme=None, gaze_angle_deg=None, head_pose_deg=None,
                 diffscore=None, missing_in_prediction=False)
    else:
      row.update(m)
    per_frame.append(row)
  scored = [r for r in per_frame if r["iou"] is not None]
  summary = {
      "frames": len(common),
      "frames_scored": len(scored),
      "iou_mean": _mean(r["iou"] for r in scored),
      "landmark_px_mean": _mean(r["landmark_px"] for r in scored),
      "nme_mean": _mean(r["nme"] for r in scored),
      "gaze_angle_deg_mean": _mean(r["gaze_angle_deg"] for r in scored),
      "gaze_angle_deg_p95": _p95(r["gaze_angle_deg"] for r in scored),
      "head_pose_deg_mean": _mean(r["head_pose_deg"] for r in scored),
      "diffscore": _mean(r["diffscore"] for r in scored),
      "missing_faces": {
          "in_prediction": sum(1 for r in per_frame if r["missing_in_prediction"]),
          "in_reference": sum(1 for r in per_frame if r["reference_faces"] == 0 and r["prediction_faces"] > 0),
      },
      "frame_ids_only_in_reference": sorted(ref.keys() - pred.keys()),
      "frame_ids_only_in_prediction": sorted(pred.keys() - ref.keys()),
  }
  return {"summary": summary, "per_frame": per_frame}
