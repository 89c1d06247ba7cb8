"""The privacy–utility report: for a grid of obfuscation levels, with and without the
attack, how much of the authorized predictions survives (utility) and how much identity
leaks to models the attack never saw (privacy).

Utility compares the authorized models' predictions on the processed frames with those on
the originals (:mod:`drsf_jax.metrics`). Privacy uses :mod:`drsf_jax.privacy` (dlib HOG +
face-recognition ResNet, scikit-image LBP cascade): detection rates, same-frame
re-identification, and rank-1 re-identification against a gallery of original faces
(the input's own identity from frames outside the evaluated segment, plus one identity
per ``gallery`` file).
"""

import dataclasses
import os

import numpy as np

from drsf_jax import metrics
from drsf_jax import obfuscation
from drsf_jax import pipeline
from drsf_jax import privacy
from drsf_jax import video


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


def output_paths(output_dir: str, levels) -> list[tuple[str, str]]:
  """Every file :func:`run` writes into ``output_dir``, as ``(what, path)``."""
  files = ["report.json", "report.md", "tradeoff.png", "contact_sheet.png"]
  for level in levels:
    files += [f"deid_{level}.mkv", f"deid_{level}.json"]
  return [(f, os.path.join(output_dir, f)) for f in files]


def identity_gallery(path: str, skip: int, n: int) -> list:
  """dlib embeddings of ``n`` frames of a video (after ``skip``) or of an image."""
  if path.lower().endswith(video.IMAGE_EXTS):
    frames = [video.read_image(path)]
  else:
    allf = list(video.VideoReader(path))
    later = allf[skip:] or allf
    idx = np.linspace(0, len(later) - 1, n).round().astype(int)
    frames = [later[i] for i in sorted(set(idx))]
  embs = []
  for f in frames:
    boxes = privacy.detect_dlib(f)
    if len(boxes):
      e = privacy.embed(f, boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))])
      if e is not None:
        embs.append(e)
  return embs


def _utility(predictor, ref_frames, frames_u8):
  """Utility summary of ``frames_u8`` against the originals' predictions ``ref_frames``."""
  got = {"frames": predictor.predict(frames_u8.astype(np.float32) / 255.0)}
  return metrics.compare({"frames": ref_frames}, got)["summary"]


def run(input_path: str, output_dir: str, cfg: ReportConfig, gallery: list[str],
        weights_dir: str | None = None, progress=print, overwrite: bool = False) -> dict:
  """Runs the grid and writes report.json, report.md, tradeoff.png and contact_sheet.png.

  ``overwrite``: replace existing files of an earlier report (``output_paths`` lists them).
  """
  from drsf_jax import inference
  os.makedirs(output_dir, exist_ok=True)
  originals = np.stack(list(video.VideoReader(input_path, max_frames=cfg.max_frames)))
  predictor = inference.Predictor(cfg.detector, cfg.alignment, cfg.gaze, weights_dir)
  ref_frames = predictor.predict(originals.astype(np.float32) / 255.0)
  boxes = np.full((len(originals), 4), np.nan)
  for i, f in enumerate(ref_frames):
    if f["faces"]:
      boxes[i] = f["faces"][0]["box"]
  identity = os.path.basename(input_path)
  gal = {identity: identity_gallery(input_path, cfg.max_frames, cfg.gallery_frames)}
  for g in gallery:
    gal[os.path.basename(g)] = identity_gallery(g, 0, cfg.gallery_frames)
  rows = []
  attacked_frames = {}
  for level in cfg.levels:
    regions = [obfuscation.face_regions(np.asarray([f["box"] for f in fr["faces"]]).reshape(-1, 4),
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
      u = _utility(predictor, ref_frames, frames)
      p = privacy.privacy_metrics(originals, frames, boxes, gal, identity)
      rows.append({"level": level, "setting": name,
                   "iou": u["iou_mean"], "landmark_px": u["landmark_px_mean"], "nme": u["nme_mean"],
                   "gaze_deg": u["gaze_angle_deg_mean"], "diffscore": u["diffscore"],
                   "missing_faces": u["missing_faces"]["in_prediction"],
                   "dlib_detection": p["detection_rate"]["dlib_hog"]["deidentified"],
                   "lbp_detection": p["detection_rate"]["skimage_lbp"]["deidentified"],
                   "reid_same_frame": p["reid_rate_same_frame"],
                   "rank1_open_set": p["rank1_reid_rate_open_set"],
                   "embedding_distance": p["embedding_distance_mean"]})
  result = {"input": os.path.abspath(input_path), "frames": len(originals),
            "settings": dataclasses.asdict(cfg), "gallery": {k: len(v) for k, v in gal.items()},
            "lower_is_better": ["landmark_px", "nme", "gaze_deg", "diffscore", "dlib_detection",
                                "lbp_detection", "reid_same_frame", "rank1_open_set"],
            "rows": rows}
  video.write_json_atomic(os.path.join(output_dir, "report.json"), result)
  _write_markdown(os.path.join(output_dir, "report.md"), result)
  _plot_tradeoff(os.path.join(output_dir, "tradeoff.png"), rows)
  level = "pixelate_20" if "pixelate_20" in attacked_frames else cfg.levels[0]
  _contact_sheet(os.path.join(output_dir, "contact_sheet.png"), originals, attacked_frames[level],
                 predictor, level)
  return result


def _fmt(v, nd=3):
  return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def _write_markdown(path, result):
  lines = [f"Privacy–utility report for `{os.path.basename(result['input'])}` "
           f"({result['frames']} frames; authorized: {result['settings']['detector']}"
           f"{' + ' + result['settings']['gaze'] if result['settings']['gaze'] != 'none' else ''}; "
           f"attack {result['settings']['attack']}, {result['settings']['max_iter']} steps).",
           "Utility: higher IoU is better, lower errors are better. Privacy: **lower is better** for "
           "detection and re-identification rates; higher embedding distance is better.", "",
           "| level | setting | IoU | landmark px | gaze ° | DiffScore | dlib detects | LBP detects | re-ID same frame | rank-1 (open set) | embedding dist. |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in result["rows"]:
    lines.append(f"| {r['level']} | {r['setting']} | {_fmt(r['iou'])} | {_fmt(r['landmark_px'], 2)} | "
                 f"{_fmt(r['gaze_deg'], 2)} | {_fmt(r['diffscore'])} | {_fmt(r['dlib_detection'], 2)} | "
                 f"{_fmt(r['lbp_detection'], 2)} | {_fmt(r['reid_same_frame'], 2)} | "
                 f"{_fmt(r['rank1_open_set'], 2)} | {_fmt(r['embedding_distance'], 2)} |")
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
    xs = [r["reid_same_frame"] for r in rs]
    ys = [r["diffscore"] if r["diffscore"] is not None else np.nan for r in rs]
    ax.scatter(xs, ys, marker=marker, color=color, label=setting, s=50)
    for x, y, r in zip(xs, ys, rs):
      ax.annotate(r["level"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
  ax.set_xlabel("re-identification rate, same frame (dlib, < 0.6) — lower is more private")
  ax.set_ylabel("DiffScore vs original predictions — lower keeps more utility")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("Privacy–utility trade-off (best: bottom left)", fontsize=9)
  fig.tight_layout()
  tmp = video.atomic_path(path)
  fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)
  os.replace(tmp, path)


def _contact_sheet(path, originals, attacked, predictor, level):
  """Rows of: original / predictions on the original / predictions on the de-identified frame."""
  import cv2
  from drsf_jax import visualize
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
  tmp = video.atomic_path(path)
  cv2.imwrite(tmp, cv2.cvtColor(np.concatenate([header, sheet], axis=0), cv2.COLOR_RGB2BGR))
  os.replace(tmp, path)
