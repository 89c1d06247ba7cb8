"""Drawing predictions: boxes, 5/68 landmarks, head-pose axes and the gaze arrow.

Frames are uint8 RGB and are never mirrored. Head-pose axes are the face template's
x (red), y (green) and z (blue) axes, 5 cm long, projected with the camera; the gaze
arrow starts between the eyes (the 5-point eye centres) and follows the 3D gaze vector
for 10 cm, projected the same way.
"""

import os

import numpy as np

BOX = (0, 255, 0)
LM5 = (255, 0, 255)
LM68 = (0, 255, 255)
GAZE = (255, 255, 0)
AXES = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


def draw_faces(frame: np.ndarray, faces: list[dict], camera=None) -> np.ndarray:
  """A copy of ``frame`` (H, W, 3) uint8 RGB with schema-1 ``faces`` drawn on it."""
  import cv2
  from drsf_jax.geometry import cameras
  img = np.ascontiguousarray(frame.copy())
  h, w = img.shape[:2]
  cam = camera or cameras.Camera.dummy(w, h)
  t = max(1, round(min(h, w) / 200))
  for face in faces:
    x1, y1, x2, y2 = [int(round(v)) for v in face["box"]]
    cv2.rectangle(img, (x1, y1), (x2, y2), BOX, t)
    cv2.putText(img, f"{face['score']:.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * t, BOX, t)
    for x, y in face.get("landmarks68") or []:
      cv2.circle(img, (int(round(x)), int(round(y))), t, LM68, -1)
    for x, y in face["landmarks5"]:
      cv2.circle(img, (int(round(x)), int(round(y))), t + 1, LM5, -1)
    pose = face.get("head_pose")
    if pose:
      rvec = np.asarray(pose["rotation_vector"], np.float64)
      tvec = np.asarray(pose["translation"], np.float64)
      pts = np.array([[0, 0, 0], [0.05, 0, 0], [0, 0.05, 0], [0, 0, 0.05]], np.float64)
      proj, _ = cv2.projectPoints(pts, rvec, tvec, cam.camera_matrix, np.zeros(5))
      o = tuple(int(round(v)) for v in proj[0, 0])
      for k in range(3):
        cv2.line(img, o, tuple(int(round(v)) for v in proj[k + 1, 0]), AXES[k], t + 1)
    gaze = face.get("gaze")
    if gaze and pose:
      lm = np.asarray(face["landmarks5"], np.float64)
      start2d = lm[:2].mean(axis=0)
      # The eye midpoint in 3D: back-project at the head's depth.
      z = float(pose["translation"][2])
      k_inv = np.linalg.inv(cam.camera_matrix)
      start3d = k_inv @ np.array([start2d[0], start2d[1], 1.0]) * z
      end3d = start3d + 0.1 * np.asarray(gaze["vector"], np.float64)
      end, _ = cv2.projectPoints(end3d[None], np.zeros(3), np.zeros(3), cam.camera_matrix, np.zeros(5))
      cv2.arrowedLine(img, tuple(int(round(v)) for v in start2d), tuple(int(round(v)) for v in end[0, 0]),
                      GAZE, t + 1, tipLength=0.2)
  return img


def draw_video(input_path: str, output_path: str, doc: dict, codec: str = "ffv1",
               calibration: str | None = None, progress=None, overwrite: bool = False) -> int:
  """Draws a predictions document onto its video; returns the number of frames written."""
  from drsf_jax.geometry import cameras
  from drsf_jax.io import video
  reader = video.VideoReader(input_path)
  cam = cameras.make_camera(calibration, reader.width, reader.height)
  by_id = {f["frame_id"]: f["faces"] for f in doc["frames"]}
  n = 0
  with video.VideoWriter(output_path, reader.rate or reader.fps, (reader.width, reader.height), codec,
                         overwrite=overwrite, time_base=reader.time_base) as w:
    for i, frame in enumerate(reader):
      w.write(draw_faces(frame, by_id.get(i, []), cam), reader.pts[i])
      n += 1
      if progress:
        progress(1)
  return n


PREVIEW_LABELS = ("original", "de-identified", "authorized predictions")


def preview_writer(preview_path: str, width: int, height: int, rate, time_base, overwrite: bool = False):
  """An H.264 (yuv420p, CRF 23) MP4 writer for a three-panel preview of a ``width`` x
  ``height`` video; the panel row is padded to even sides (4:2:0)."""
  from drsf_jax.io import video
  ext = os.path.splitext(preview_path)[1].lower()
  if ext != ".mp4":
    raise ValueError(f"--preview {preview_path}: the preview is an H.264 .mp4 (plays in any browser); "
                     "give a path ending in .mp4")
  pw, ph = 3 * width + (3 * width) % 2, height + height % 2
  return video.VideoWriter(preview_path, rate, (pw, ph), "h264", overwrite=overwrite, crf=23,
                           time_base=time_base)


def preview_frame(original: np.ndarray, deid: np.ndarray, faces: list[dict], camera=None) -> np.ndarray:
  """original | de-identified | predictions drawn on the de-identified frame, one row
  (padded to even sides), each panel captioned."""
  import cv2
  h, w = original.shape[:2]
  panels = [original, deid, draw_faces(deid, faces, camera)]
  row = np.zeros((h + h % 2, 3 * w + (3 * w) % 2, 3), np.uint8)
  scale = max(0.35, min(h, w) / 600)
  t = max(1, round(scale * 2))
  for k, (p, label) in enumerate(zip(panels, PREVIEW_LABELS)):
    p = np.ascontiguousarray(p.copy())
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, t)
    cv2.rectangle(p, (0, 0), (min(w, tw + 8), th + 10), (0, 0, 0), -1)
    cv2.putText(p, label, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), t)
    row[:h, k * w:(k + 1) * w] = p
  return row


def write_preview(input_path: str, deid_path: str, doc: dict, preview_path: str,
                  calibration: str | None = None, max_frames: int | None = None,
                  overwrite: bool = False) -> str:
  """Writes the three-panel preview to a temporary file beside ``preview_path`` and returns
  it (the caller commits it with :func:`drsf_jax.io.outputs.commit`). ``doc``: the
  predictions (schema 1) of the authorized models on ``deid_path``; timestamps are the
  input's."""
  from drsf_jax.geometry import cameras
  from drsf_jax.io import video
  orig = video.VideoReader(input_path, max_frames=max_frames)
  out = video.VideoReader(deid_path, max_frames=max_frames)
  cam = cameras.make_camera(calibration, orig.width, orig.height)
  by_id = {f["frame_id"]: f["faces"] for f in doc["frames"]}
  w = preview_writer(preview_path, orig.width, orig.height, orig.rate or orig.fps, orig.time_base,
                     overwrite)
  try:
    for i, (a, b) in enumerate(zip(orig, out)):
      w.write(preview_frame(a, b, by_id.get(i, []), cam), orig.pts[i])
    return w.finish()
  except BaseException:
    w.abort()
    raise
