"""Prediction records: the versioned JSON schema, validation, reading, legacy import.

Schema ``drsf-jax/predictions/1`` (JSON Schema file: ``drsf_jax/schemas/predictions-1.schema.json``)::

  {"schema": "drsf-jax/predictions/1",
   "video": {"path", "width", "height", "fps", "num_frames"},
   "models": {name: {"weights_sha256"}},
   "frames": [{"frame_id": 0, "faces": [{"box": [x1, y1, x2, y2], "score",
               "landmarks5": [[x, y] x 5], "landmarks68": [[x, y] x 68] | null,
               "landmarks_source": "5" | "68",
               "head_pose": {"rotation_vector": [3], "translation": [3]} | null,
               "gaze": {"pitch_yaw": [2], "vector": [3]} | null}]}]}

``read`` validates every file it reads (schema, version, NaN/inf, strictly increasing
unique frame ids) and raises :class:`RecordError` with a one-line message naming the
problem. It also imports the original project's JSON (a list of ``{frame_id, bboxes,
landmarks, gaze_angle, gaze_vector}``).
"""

import json
import math
import os
from typing import Any

from drsf_jax.io import outputs

SCHEMA = "drsf-jax/predictions/1"
SCHEMA_FILE = os.path.join(os.path.dirname(__file__), "schemas", "predictions-1.schema.json")
LEGACY_PATH = "<legacy>"  # video.path of an imported legacy file (its frame size is unknown).


class RecordError(ValueError):
  """A predictions file is malformed, of another version, or inconsistent."""


def _reject_constant(name):
  raise RecordError(f"non-finite value {name} in JSON (NaN/Infinity are not allowed)")


def load_schema() -> dict:
  with open(SCHEMA_FILE) as f:
    return json.load(f)


def _check_finite(obj):
  bad = outputs.non_finite_path(obj)
  if bad is not None:
    raise RecordError(f"non-finite value at {bad}")


def validate(doc: Any, source: str = "predictions") -> dict:
  """Validates a predictions document (JSON Schema + finiteness + frame ids)."""
  import jsonschema  # pylint: disable=import-outside-toplevel
  if not isinstance(doc, dict):
    raise RecordError(f"{source}: top level is a {type(doc).__name__}, not an object")
  if doc.get("schema") != SCHEMA:
    raise RecordError(f"{source}: schema {doc.get('schema')!r} is not {SCHEMA!r}")
  _check_finite(doc)
  try:
    jsonschema.validate(doc, load_schema())
  except jsonschema.ValidationError as e:
    where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
    raise RecordError(f"{source}: invalid at {where}: {e.message}") from None
  ids = [f["frame_id"] for f in doc["frames"]]
  if any(b <= a for a, b in zip(ids, ids[1:])):
    raise RecordError(f"{source}: frame ids are not strictly increasing")
  _check_faces(doc, source)
  return doc


def _check_faces(doc: dict, source: str):
  """What the JSON Schema cannot say: boxes are not inverted, gaze vectors have a direction."""
  for i, frame in enumerate(doc["frames"]):
    for j, face in enumerate(frame["faces"]):
      where = f"frames/{i}/faces/{j}"
      x1, y1, x2, y2 = face["box"]
      if x2 < x1 or y2 < y1:
        raise RecordError(f"{source}: inverted box at {where}: {face['box']} (x2 < x1 or y2 < y1)")
      gaze = face.get("gaze")
      if gaze and not any(v != 0 for v in gaze["vector"]):
        raise RecordError(f"{source}: zero gaze vector at {where}/gaze/vector (it has no direction)")


def read(path: str) -> dict:
  """Reads and validates a predictions file; imports the original project's format too."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"predictions file not found: {path}")
  try:
    with open(path) as f:
      doc = json.load(f, parse_constant=_reject_constant)
  except json.JSONDecodeError as e:
    raise RecordError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
  if isinstance(doc, list):
    doc = import_legacy(doc, path)
  return validate(doc, path)


def write(path: str, doc: dict) -> str:
  from drsf_jax.io import video  # pylint: disable=import-outside-toplevel
  validate(doc, path)
  return video.write_json_atomic(path, doc)


def _pt_list(a):
  return [[float(x), float(y)] for x, y in a]


def import_legacy(items: list, source: str = "legacy") -> dict:
  """The original project's JSON (list of per-frame dicts) -> schema 1.

  Legacy fields: ``frame_id``, ``bboxes`` (list of [x1, y1, x2, y2(, score)]),
  ``landmarks`` (per face, 5 or 68 points), ``gaze_angle`` ([pitch, yaw] per face or one
  pair), ``gaze_vector``. Missing pieces become null; the video block is unknown (zeros
  are not allowed, so width/height/fps are 1 and flagged by ``"path": "<legacy>"``).
  """
  frames = []
  try:
    for it in sorted(items, key=lambda d: int(d["frame_id"])):
      bboxes = it.get("bboxes") or []
      lms = it.get("landmarks") or []
      gaze_a = it.get("gaze_angle")
      gaze_v = it.get("gaze_vector")
      faces = []
      for j, b in enumerate(bboxes):
        lm = lms[j] if j < len(lms) else None
        l5 = l68 = None
        if lm is not None and len(lm) == 68:
          l68 = _pt_list(lm)
          from drsf_jax.geometry import face_model  # pylint: disable=import-outside-toplevel
          import numpy as np  # pylint: disable=import-outside-toplevel
          l5 = _pt_list(face_model.landmarks68_to_5(np.asarray(lm, float)))
        elif lm is not None and len(lm) == 5:
          l5 = _pt_list(lm)
        if l5 is None:
          x1, y1, x2, y2 = [float(v) for v in b[:4]]
          cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
          l5 = [[cx, cy]] * 5  # Unknown: the box centre.
        ga = gaze_a[j] if isinstance(gaze_a, list) and gaze_a and isinstance(gaze_a[0], list) else gaze_a
        gv = gaze_v[j] if isinstance(gaze_v, list) and gaze_v and isinstance(gaze_v[0], list) else gaze_v
        faces.append({
            "box": [float(v) for v in b[:4]], "score": float(b[4]) if len(b) > 4 else 1.0,
            "landmarks5": l5, "landmarks68": l68, "landmarks_source": "68" if l68 else "5",
            "head_pose": None,
            "gaze": ({"pitch_yaw": [float(v) for v in ga], "vector": [float(v) for v in gv]}
                     if ga is not None and gv is not None else None)})
      frames.append({"frame_id": int(it["frame_id"]), "faces": faces})
  except (KeyError, TypeError, ValueError, IndexError) as e:
    raise RecordError(f"{source}: not a drsf-jax or original-project predictions file ({type(e).__name__}: {e})") from None
  return {"schema": SCHEMA, "video": {"path": LEGACY_PATH, "width": 1, "height": 1, "fps": 1.0,
                                      "num_frames": len(frames)},
          "models": {"legacy": {"weights_sha256": None}}, "frames": frames}
