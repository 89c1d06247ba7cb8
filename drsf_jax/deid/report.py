"""The privacy–utility report: for a grid of obfuscation levels, with and without the
attack, how much of the authorized predictions survives (utility) and how much identity
leaks to models the attack never saw (privacy), also after an attacker's processing.

Utility compares the authorized models' predictions on the processed frames with those on
the originals (:mod:`drsf_jax.evaluation.metrics`); the same DiffScore is measured for every model of
the project that was NOT authorized and has converted weights (the other detector; FAN and
the other gaze models where their weights exist): the paper's "higher DiffScore for
unauthorized models". Privacy uses :func:`drsf_jax.evaluation.privacy.evaluate`: detection rates of
dlib HOG, dlib CNN (on a frame sample), the LBP cascade and the project's unauthorized
detector; same-frame re-identification; rank-1 (beside chance 1/K), mAP and the
anonymity set k over a gallery of K identities; each again after every attacker
processing, and the worst case. The gallery is the input's own identity (frames after
the evaluated segment) plus every ``gallery`` entry: a folder of ``NAME/*.jpg``
identities, a video or image (one identity named after the file), or
``skimage:astronaut``.
"""

import dataclasses
import os

import numpy as np

from drsf_jax.deid import obfuscation
from drsf_jax.deid import pipeline
from drsf_jax.evaluation import metrics
from drsf_jax.evaluation import privacy
from drsf_jax.geometry import bbox
from drsf_jax.io import checkpoints
from drsf_jax.io import video

ASTRONAUT = "skimage:astronaut"
PROJECT_DETECTORS = ("retinaface", "retinaface_r50", "mtcnn")


@dataclasses.dataclass
class ReportConfig:
  detector: str = "retinaface"
  alignment: str = "none"
  gaze: str = "MPIIGaze"
  attack: str = "adam"
  levels: tuple = ("pixelate_10", "pixelate_20", "pixelate_30", "blur_31")
  max_frames: int = 16
  max_iter: int = 100
  batch_size: int = 16
  gallery_frames: int = 3
  cnn_frames: int = privacy.CNN_SAMPLE_FRAMES
  processings: tuple = privacy.ATTACKER_PROCESSINGS


def output_paths(output_dir: str, levels) -> list[tuple[str, str]]:
  """Every file :func:`run` writes into ``output_dir``, as ``(what, path)``."""
  files = ["report.json", "report.md", "tradeoff.png", "contact_sheet.png"]
  for level in levels:
    files += [f"deid_{level}.mkv", f"deid_{level}.json"]
  return [(f, os.path.join(output_dir, f)) for f in files]


def identity_gallery(path: str, skip: int, n: int) -> list:
  """dlib embeddings of ``n`` frames of a video (after ``skip``) or of an image."""
  return [e for _, e, _ in _gallery_faces(path, skip, n)]


def _gallery_frames(path: str, skip: int, n: int) -> tuple[list, bool]:
  """(``[(label, frame)]``, whether they come from after ``skip``) of a video or an image."""
  if path.lower().endswith(video.IMAGE_EXTS):
    return [(path, privacy.read_image_or_none(path))], True
  allf = list(video.VideoReader(path))
  later = allf[skip:]
  src, off = (later, skip) if later else (allf, 0)
  idx = sorted(set(np.linspace(0, len(src) - 1, n).round().astype(int)))
  return [(f"{path}[frame {off + i}]", src[i]) for i in idx], bool(later)


def _gallery_faces(path, skip, n):
  out = []
  for label, f in _gallery_frames(path, skip, n)[0]:
    if f is None:
      continue
    box, _ = privacy.largest_face(f)
    if box is not None:
      out.append((label, privacy.embed(f, box), box))
  return out


def build_gallery(input_path: str, identity: str, skip: int, entries: list[str],
                  n_frames: int = 3) -> privacy.Gallery:
  """The input's own identity (``n_frames`` frames after ``skip``) plus every entry.

  Entries: a folder of ``NAME/*.jpg`` identities, a video or image (one identity named
  after its file), or ``skimage:astronaut``. Problems are warnings in the gallery
  (``Gallery.warnings``); a missing entry is a ``FileNotFoundError``.
  """
  gal = privacy.Gallery()
  frames, after = _gallery_frames(input_path, skip, n_frames)
  if not after:
    gal.warnings.append(f"gallery: {identity} has no frame after the {skip} evaluated ones; its "
                        "gallery photos are evaluated frames, which inflates rank-1 and mAP")
  gal.add_images(identity, frames)
  for e in entries:
    if e == ASTRONAUT:
      from skimage import data  # pylint: disable=g-import-not-at-top
      gal.add_images("astronaut", [(ASTRONAUT, data.astronaut())])
    elif os.path.isdir(e):
      privacy.load_gallery_dir(e, gal)
    elif os.path.isfile(e):
      name = os.path.basename(e)
      if name in gal.embeddings:
        raise ValueError(f"gallery identity {name!r} given twice")
      gal.add_images(name, _gallery_frames(e, 0, n_frames)[0])
    else:
      raise FileNotFoundError(f"gallery entry {e} not found (a NAME/*.jpg folder, a video, an "
                              f"image or {ASTRONAUT})")
  gal.check_aliases(identity)
  return gal


def project_detector(name: str, weights_dir: str | None) -> privacy.FaceDetector:
  """One of the project's detectors as a plain forward pass for :func:`privacy.evaluate`."""
  from drsf_jax.victims import detectors  # pylint: disable=g-import-not-at-top
  det = detectors.load_detector(name, weights_dir)

  def detect_batch(frames_u8):
    return [d["boxes"] for d in det.detect(np.asarray(frames_u8, np.float32) / 255.0)]
  return privacy.FaceDetector(name, detect_batch)


def unauthorized_models(cfg, weights_dir: str | None) -> tuple[list[str], list[str]]:
  """(the project's models not authorized in ``cfg`` that have weights, warnings)."""
  from drsf_jax.victims import registry as victims  # pylint: disable=g-import-not-at-top
  names = [d for d in PROJECT_DETECTORS if d != cfg.detector]
  names += ["fan"] if cfg.alignment != "fan" else []
  names += [g for g in victims.GAZE_MODELS[:-1] if g != cfg.gaze]
  have = [n for n in names if os.path.isfile(checkpoints.weights_path(n, weights_dir))]
  missing = [n for n in names if n not in have]
  warn = ([f"unauthorized models without converted weights in {checkpoints.weights_dir(weights_dir)}, "
           f"not measured: {', '.join(missing)}"] if missing else [])
  return have, warn


def _unauthorized_predictor(model, cfg, weights_dir):
  from drsf_jax.victims import inference  # pylint: disable=g-import-not-at-top
  if model in PROJECT_DETECTORS:
    return inference.Predictor(model, "none", "none", weights_dir)
  if model == "fan":  # Landmarks need faces: the authorized detector's boxes, FAN's landmarks.
    return inference.Predictor(cfg.detector, "fan", "none", weights_dir)
  return inference.Predictor(cfg.detector, "none", model, weights_dir)


def _utility(predictor, ref_frames, frames_u8):
  """Utility summary of ``frames_u8`` against the originals' predictions ``ref_frames``."""
  got = {"frames": predictor.predict(frames_u8.astype(np.float32) / 255.0)}
  return metrics.compare({"frames": ref_frames}, got)["summary"]


def _row(level, setting, u, unauth, p, det_names):
  worst = p["worst_case"]
  return {
      "level": level, "setting": setting,
      "iou": u["iou_mean"], "landmark_px": u["landmark_px_mean"], "nme": u["nme_mean"],
      "gaze_deg": u["gaze_angle_deg_mean"], "diffscore": u["diffscore"],
      "missing_faces": u["missing_faces"]["in_prediction"],
      "unauthorized_diffscore": unauth,
      "detection": {d: p["detection_rate"][d]["deidentified"] for d in det_names},
      "dlib_detection": p["detection_rate"]["dlib_hog"]["deidentified"],
      "lbp_detection": p["detection_rate"]["skimage_lbp"]["deidentified"],
      "reid_same_frame": p["reid_rate_same_frame"],
      "rank1": p["rank1_reid_rate"], "rank1_chance": p["rank1_chance"],
      "rank1_open_set": p["rank1_reid_rate_open_set"],
      "map": p["map"], "k_median": p["k_median"], "k_ge_5": p["k_ge_5_fraction"],
      "embedding_distance": p["embedding_distance_mean"],
      "attacker": {proc: {"reid_same_frame": m["reid_rate_same_frame"], "rank1": m["rank1_reid_rate"],
                          "embedding_distance": m["embedding_distance_mean"],
                          "detection": m["detection_rate"]}
                   for proc, m in p["attacker"].items()},
      "worst_reid_same_frame": worst["reid_rate_same_frame"]["rate"],
      "worst_reid_processing": worst["reid_rate_same_frame"]["processing"],
      "worst_rank1": worst["rank1_reid_rate"]["rate"],
      "worst_detection": worst["detection_rate"],
      "private": p["private"],
  }


def recommend(rows: list[dict]) -> dict:
  """The least destructive private level of the attacked rows, else the safest.

  Private: :func:`privacy.evaluate`'s rule (worst case over the attacker's processings).
  Least destructive: the lowest authorized DiffScore after the attack. Safest: the lowest
  worst-case max(same-frame re-ID, every detector's rate).
  """
  attacked = [r for r in rows if r["setting"] == "attacked"]
  if not attacked:
    return {"level": None, "private": False, "why": "no attacked row"}
  ds = lambda r: r["diffscore"] if r["diffscore"] is not None else float("inf")
  private = [r for r in attacked if r["private"]]
  if private:
    best = min(private, key=ds)
    return {"level": best["level"], "private": True,
            "why": f"least destructive (DiffScore {ds(best):.3f}) of the private levels "
                   f"{', '.join(r['level'] for r in private)}"}

  def risk(r):
    vals = [r["worst_reid_same_frame"]] + [w["rate"] for w in r["worst_detection"].values()]
    vals = [1.0 if v is None else v for v in vals]
    return (max(vals), vals[0], ds(r))
  best = min(attacked, key=risk)
  worst_det = max(best["worst_detection"].items(), key=lambda kv: -1 if kv[1]["rate"] is None else kv[1]["rate"])
  return {"level": best["level"], "private": False,
          "why": (f"no level keeps same-frame re-ID <= {privacy.PRIVATE_REID} and every detector <= "
                  f"{privacy.PRIVATE_DETECTION} under every attacker processing; the safest is "
                  f"{best['level']} (worst re-ID {_fmt(best['worst_reid_same_frame'], 2)} under "
                  f"{best['worst_reid_processing']}, worst detection {_fmt(worst_det[1]['rate'], 2)} by "
                  f"{worst_det[0]} under {worst_det[1]['processing']})")}


def run(input_path: str, output_dir: str, cfg: ReportConfig, gallery: list[str],
        weights_dir: str | None = None, progress=print, overwrite: bool = False) -> dict:
  """Runs the grid and writes report.json, report.md, tradeoff.png and contact_sheet.png.

  ``overwrite``: replace existing files of an earlier report (``output_paths`` lists them).
  """
  from drsf_jax.victims import inference
  for level in cfg.levels:
    obfuscation.parse_spec(level)
  if not cfg.levels:
    raise ValueError("no obfuscation level to report")
  for proc in cfg.processings:
    if proc not in privacy.ATTACKER_PROCESSINGS:
      raise ValueError(f"unknown attacker processing {proc!r}; choose from {', '.join(privacy.ATTACKER_PROCESSINGS)}")
  originals = np.stack(list(video.VideoReader(input_path, max_frames=cfg.max_frames)))
  predictor = inference.Predictor(cfg.detector, cfg.alignment, cfg.gaze, weights_dir)
  ref_frames = predictor.predict(originals.astype(np.float32) / 255.0)
  boxes = np.full((len(originals), 4), np.nan)
  for i, f in enumerate(ref_frames):
    if f["faces"]:
      boxes[i] = f["faces"][0]["box"]
  identity = os.path.basename(input_path)
  progress(f"gallery: {identity} + {', '.join(gallery) or 'nothing else'}")
  gal = build_gallery(input_path, identity, len(originals), gallery, cfg.gallery_frames)
  if identity not in gal.embeddings:
    raise ValueError(f"no dlib face in the gallery frames of the input {input_path}; "
                     "its re-identification cannot be measured")
  unauth, warnings = unauthorized_models(cfg, weights_dir)
  warnings = gal.warnings + warnings
  unauth_pred = {m: _unauthorized_predictor(m, cfg, weights_dir) for m in unauth}
  unauth_ref = {m: p.predict(originals.astype(np.float32) / 255.0) for m, p in unauth_pred.items()}
  dets = privacy.independent_detectors(cfg.cnn_frames)
  dets += [project_detector(m, weights_dir) for m in unauth if m in PROJECT_DETECTORS]
  det_names = [d.name for d in dets]
  ev_orig = privacy.frame_evidence(originals, boxes, dets)
  os.makedirs(output_dir, exist_ok=True)
  rows = []
  attacked_frames = {}
  original_summary = None
  for level in cfg.levels:
    regions = [bbox.face_regions(np.asarray([f["box"] for f in fr["faces"]]).reshape(-1, 4),
                                        originals.shape[1:3]) for fr in ref_frames]
    plain = video.to_uint8(obfuscation.obfuscate(originals.astype(np.float32) / 255.0, regions, level))
    out = os.path.join(output_dir, f"deid_{level}.mkv")
    dcfg = pipeline.DeidConfig(detector=cfg.detector, alignment=cfg.alignment, gaze=cfg.gaze,
                               attack=cfg.attack, deid=level, max_iter=cfg.max_iter,
                               batch_size=cfg.batch_size, max_frames=cfg.max_frames)
    progress(f"{level}: attacking {len(originals)} frames")
    pipeline.deidentify(input_path, out, dcfg, weights_dir, progress=False, overwrite=overwrite)
    attacked = np.stack(list(video.VideoReader(out)))
    attacked_frames[level] = attacked
    for name, frames in (("obfuscated", plain), ("attacked", attacked)):
      progress(f"{level} {name}: privacy under {len(cfg.processings)} attacker processings")
      u = _utility(predictor, ref_frames, frames)
      ud = {m: _utility(p, unauth_ref[m], frames)["diffscore"] for m, p in unauth_pred.items()}
      p = privacy.evaluate(originals, frames, boxes, gal, identity, dets, cfg.processings,
                           original_evidence=ev_orig)
      if original_summary is None:
        original_summary = {"detection": {d: p["detection_rate"][d]["original"] for d in det_names},
                            **{k: p["original"][k] for k in ("rank1_reid_rate", "rank1_chance", "map",
                                                             "k_median", "k_ge_5_fraction")}}
      rows.append(_row(level, name, u, ud, p, det_names))
  rec = recommend(rows)
  result = {"input": os.path.abspath(input_path), "frames": len(originals),
            "settings": dataclasses.asdict(cfg), "identity": identity,
            "gallery": {k: len(v) for k, v in gal.embeddings.items()},
            "gallery_identities": len(gal.identities),
            "detectors": det_names, "sampled_frames": p["sampled_frames"],
            "unauthorized_models": unauth, "original": original_summary,
            "rank1_null_reason": p["rank1_null_reason"],
            "private_rule": p["private_rule"], "recommendation": rec, "warnings": warnings,
            "lower_is_better": ["landmark_px", "nme", "gaze_deg", "diffscore", "detection",
                                "dlib_detection", "lbp_detection", "reid_same_frame", "rank1",
                                "rank1_open_set", "map", "worst_reid_same_frame", "worst_rank1",
                                "worst_detection"],
            "higher_is_better": ["iou", "unauthorized_diffscore", "embedding_distance", "k_median", "k_ge_5"],
            "rows": rows}
  video.write_json_atomic(os.path.join(output_dir, "report.json"), result)
  _write_markdown(os.path.join(output_dir, "report.md"), result)
  _plot_tradeoff(os.path.join(output_dir, "tradeoff.png"), rows)
  level = "pixelate_20" if "pixelate_20" in attacked_frames else cfg.levels[0]
  _contact_sheet(os.path.join(output_dir, "contact_sheet.png"), originals, attacked_frames[level],
                 predictor, level, boxes, gal, identity)
  return result


def _fmt(v, nd=3):
  return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def _short(det):
  return {"dlib_hog": "HOG", "dlib_cnn": "CNN", "skimage_lbp": "LBP"}.get(det, det)


def markdown_table(result) -> list[str]:
  """The main table: one line for the originals, then per level obfuscated and attacked."""
  dets = result["detectors"]
  unauth = result["unauthorized_models"]
  k = result["gallery_identities"]
  head = (["level", "setting", "IoU", "landmark px", "gaze °", "DiffScore"]
          + [f"DiffScore {m} (unauth.)" for m in unauth]
          + [f"{_short(d)} detects" for d in dets]
          + ["re-ID same frame", f"rank-1 ({k} ids; chance)", "mAP", "k median / k≥5",
             "worst re-ID (processing)", "worst detection (detector, processing)", "private"])
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  o = result["original"]
  if o:
    lines.append("| original | – | 1.000 | 0.00 | 0.00 | 0.000 | " + "0.000 | " * len(unauth)
                 + "".join(f"{_fmt(o['detection'][d], 2)} | " for d in dets)
                 + f"1.00 | {_fmt(o['rank1_reid_rate'], 2)} ({_fmt(o['rank1_chance'], 2)}) | "
                 f"{_fmt(o['map'], 2)} | {_fmt(o['k_median'], 0)} / {_fmt(o['k_ge_5_fraction'], 2)} | – | – | no |")
  for r in result["rows"]:
    wd = max(r["worst_detection"].items(), key=lambda kv: -1 if kv[1]["rate"] is None else kv[1]["rate"])
    lines.append(
        f"| {r['level']} | {r['setting']} | {_fmt(r['iou'])} | {_fmt(r['landmark_px'], 2)} | "
        f"{_fmt(r['gaze_deg'], 2)} | {_fmt(r['diffscore'])} | "
        + "".join(f"{_fmt(r['unauthorized_diffscore'][m])} | " for m in unauth)
        + "".join(f"{_fmt(r['detection'][d], 2)} | " for d in dets)
        + f"{_fmt(r['reid_same_frame'], 2)} | {_fmt(r['rank1'], 2)} ({_fmt(r['rank1_chance'], 2)}) | "
        f"{_fmt(r['map'], 2)} | {_fmt(r['k_median'], 0)} / {_fmt(r['k_ge_5'], 2)} | "
        f"{_fmt(r['worst_reid_same_frame'], 2)} ({r['worst_reid_processing']}) | "
        f"{_fmt(wd[1]['rate'], 2)} ({_short(wd[0])}, {wd[1]['processing']}) | "
        f"{'**yes**' if r['private'] else 'no'} |")
  return lines


def _write_markdown(path, result):
  s = result["settings"]
  dets = result["detectors"]
  lines = [f"Privacy–utility report for `{os.path.basename(result['input'])}` "
           f"({result['frames']} frames; authorized: {s['detector']}"
           f"{' + ' + s['gaze'] if s['gaze'] != 'none' else ''}"
           f"{' + fan' if s['alignment'] == 'fan' else ''}; attack {s['attack']}, {s['max_iter']} steps; "
           f"gallery of {result['gallery_identities']} identities).",
           "Utility: higher IoU is better, lower errors and authorized DiffScore are better; an "
           "unauthorized model's DiffScore should be high. Privacy: **lower is better** for "
           "detection, re-identification, rank-1 and mAP; higher k is better. Detection rates "
           f"are fractions of the frames with a face (dlib CNN on {result['sampled_frames'].get('dlib_cnn', '–')} "
           "evenly spaced frames); re-identification is dlib's ResNet at the original face box "
           "(same frame: distance to the original < 0.6).", ""]
  if result["rank1_null_reason"]:
    lines += [f"rank-1, mAP and k: null, because {result['rank1_null_reason']}.", ""]
  lines += markdown_table(result)
  rec = result["recommendation"]
  lines += ["", f"Private: {result['private_rule']}.",
            f"**Recommended level: {rec['level']}** — {rec['why']}.", ""]
  procs = result["settings"]["processings"]
  if procs:
    head = ["level", "setting", "attacker processing", "re-ID same frame", "rank-1", "embedding dist."] + \
           [f"{_short(d)} detects" for d in dets]
    lines += ["Under the attacker's processing (each applied to the de-identified frames):", "",
              "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in result["rows"]:
      for proc, m in r["attacker"].items():
        lines.append(f"| {r['level']} | {r['setting']} | {proc} | {_fmt(m['reid_same_frame'], 2)} | "
                     f"{_fmt(m['rank1'], 2)} | {_fmt(m['embedding_distance'], 2)} | "
                     + " | ".join(_fmt(m["detection"][d], 2) for d in dets) + " |")
  if result["warnings"]:
    lines += ["", "Warnings:", ""] + [f"- {w}" for w in result["warnings"]]
  tmp = video.atomic_path(path)
  with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp, path)


def _plot_tradeoff(path, rows):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for setting, marker, color in (("obfuscated", "o", "tab:gray"), ("attacked", "s", "tab:blue")):
    rs = [r for r in rows if r["setting"] == setting]
    xs = [r["worst_reid_same_frame"] if r["worst_reid_same_frame"] is not None else np.nan for r in rs]
    ys = [r["diffscore"] if r["diffscore"] is not None else np.nan for r in rs]
    ax.scatter(xs, ys, marker=marker, color=color, label=setting, s=50)
    for x, y, r in zip(xs, ys, rs):
      ax.annotate(r["level"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
  ax.axvline(privacy.PRIVATE_REID, color="tab:red", lw=0.8, ls="--")
  ax.set_xlabel("worst-case re-identification rate over the attacker's processings\n"
                "(dlib, same frame, < 0.6) — lower is more private", fontsize=8)
  ax.set_ylabel("DiffScore vs original predictions — lower keeps more utility", fontsize=8)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("Privacy–utility trade-off (best: bottom left; red: 5% re-ID)", fontsize=9)
  fig.tight_layout()
  tmp = video.atomic_path(path)
  fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)
  os.replace(tmp, path)


def _label(tile, text, color=(0, 0, 0)):
  import cv2
  strip = np.full((16, tile.shape[1], 3), 255, np.uint8)
  cv2.putText(strip, text[:22], (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.3, color, 1)
  return np.concatenate([tile, strip], axis=0)


def identity_grid(frames, boxes, gal, identity, n_rows=3, n_nearest=3):
  """Rows of: de-identified face crop | its nearest gallery faces | the true identity's nearest.

  What a person would compare: each tile is labelled with the dlib distance to the
  de-identified face; the true identity is marked green.
  """
  valid = [i for i, b in enumerate(boxes) if privacy._valid_box(b)]  # pylint: disable=protected-access
  if not valid:
    return None
  idx = sorted(set(valid[j] for j in np.linspace(0, len(valid) - 1, min(n_rows, len(valid))).round().astype(int)))
  rows = []
  for i in idx:
    e = privacy.embed(frames[i], boxes[i])
    tiles = [_label(privacy.face_crop(frames[i], boxes[i]), f"de-identified #{i}")]
    per_id = []
    for name, embs in gal.embeddings.items():
      if len(embs):
        d = np.linalg.norm(np.asarray(embs) - e[None], axis=1)
        per_id.append((float(d.min()), name, gal.crops[name][int(np.argmin(d))]))
    per_id.sort(key=lambda x: x[0])
    shown = per_id[:n_nearest] + [x for x in per_id[n_nearest:] if x[1] == identity]
    for d, name, crop in shown:
      color = (0, 140, 0) if name == identity else (0, 0, 0)
      tiles.append(_label(crop, f"{os.path.splitext(name)[0][:14]} {d:.2f}", color))
    while len(tiles) < n_nearest + 2:
      tiles.append(np.full_like(tiles[0], 255))
    rows.append(np.concatenate(tiles, axis=1))
  return np.concatenate(rows, axis=0)


def _contact_sheet(path, originals, attacked, predictor, level, boxes=None, gal=None, identity=None):
  """Rows of: original / predictions on the original / predictions on the de-identified
  frame; below, :func:`identity_grid` of the de-identified faces against the gallery."""
  import cv2
  from drsf_jax.evaluation import visualize
  idx = sorted(set(np.linspace(0, len(originals) - 1, min(3, len(originals))).round().astype(int)))
  rows = []
  for i in idx:
    before = predictor.predict(originals[i:i + 1].astype(np.float32) / 255.0)[0]["faces"]
    after = predictor.predict(attacked[i:i + 1].astype(np.float32) / 255.0)[0]["faces"]
    rows.append(np.concatenate([originals[i], visualize.draw_faces(originals[i], before),
                                visualize.draw_faces(attacked[i], after)], axis=1))
  sheet = np.concatenate(rows, axis=0)
  header = np.full((28, sheet.shape[1], 3), 255, np.uint8)
  w = originals.shape[2]
  for k, t in enumerate(("original", "predictions before de-id", f"predictions after {level} + attack")):
    cv2.putText(header, t, (k * w + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
  parts = [header, sheet]
  grid = identity_grid(attacked, boxes, gal, identity) if gal is not None else None
  if grid is not None:
    width = max(sheet.shape[1], grid.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255)
    title = np.full((24, width, 3), 255, np.uint8)
    cv2.putText(title, f"{level} + attack: de-identified face | nearest gallery faces (dlib distance; "
                "green: true identity)", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    parts = [pad(header), pad(sheet), title, pad(grid)]
  tmp = video.atomic_path(path)
  cv2.imwrite(tmp, cv2.cvtColor(np.concatenate(parts, axis=0), cv2.COLOR_RGB2BGR))
  os.replace(tmp, path)
