"""Compares two prediction files (or two videos) frame by frame: utility metrics.

  python scripts/evaluate.py --reference A.json --prediction B.json --output R.json
  python scripts/evaluate.py --reference original.mp4 --prediction deid.mkv --output R.json -d retinaface -z MPIIGaze

Writes R.json ({"summary", "per_frame"}), R.csv (one row per frame) and R.png (per-frame
plot) next to it. Frames are matched by frame_id; ids present in one file only are listed.
"""

import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from drsf_jax import cli
from drsf_jax.evaluation import metrics
from drsf_jax.io import records
from drsf_jax.io import video

FLAGS = flags.FLAGS
flags.DEFINE_string("reference", None, "Reference predictions JSON, or a video (runs inference).")
flags.DEFINE_string("prediction", None, "Predictions JSON to score, or a video (runs inference).")
flags.DEFINE_string("output", None, "Report JSON; .csv and .png are written beside it.")
cli.define_model_flags(what="for video inputs: the")
flags.DEFINE_integer("max_frames", None, "Only the first N frames of video inputs.")
flags.DEFINE_bool("plot", True, "Write the PNG plot.")
flags.DEFINE_bool("privacy", False, "Also measure privacy (needs two videos: reference = original, "
                  "prediction = de-identified) with dlib HOG/CNN/ResNet, the LBP cascade and the "
                  "project's unauthorized detector, also after an attacker's processing; lower is better.")
flags.DEFINE_list("gallery", [], "--privacy: other identities for rank-1/mAP/k: folders of NAME/*.jpg, "
                  "videos or images (one identity each), or skimage:astronaut.")
flags.DEFINE_list("attacker", None, "--privacy: attacker processings (default: all of "
                  "privacy.ATTACKER_PROCESSINGS).")
flags.DEFINE_integer("cnn_frames", 4, "--privacy: dlib's CNN detector runs on this many evenly spaced frames.")
cli.define_overwrite_flag()
flags.mark_flags_as_required(["reference", "prediction", "output"])
cli.define_cache_flag()
flags.adopt_module_key_flags(cli)


def _load(path, predictor):
  if path.lower().endswith(".json"):
    return records.read(path)
  from drsf_jax.victims import inference
  return inference.run(path, predictor(), FLAGS.max_frames)


def _privacy(ref_doc):
  """Privacy of the prediction video against the reference video (both must be videos)."""
  import numpy as np
  from drsf_jax.deid import report
  from drsf_jax.evaluation import privacy
  if FLAGS.reference.lower().endswith(".json") or FLAGS.prediction.lower().endswith(".json"):
    raise cli.UserError("--privacy needs the two videos (original and de-identified), not JSON files")
  n = len(ref_doc["frames"])
  originals = np.stack(list(video.VideoReader(FLAGS.reference, max_frames=n)))
  deid = np.stack(list(video.VideoReader(FLAGS.prediction, max_frames=n)))
  if originals.shape != deid.shape:
    raise cli.UserError(f"videos differ: {originals.shape} vs {deid.shape}")
  boxes = np.full((n, 4), np.nan)
  for i, f in enumerate(ref_doc["frames"]):
    if f["faces"]:
      boxes[i] = f["faces"][0]["box"]
  identity = os.path.basename(FLAGS.reference)
  gallery = report.build_gallery(FLAGS.reference, identity, n, FLAGS.gallery)
  dets = privacy.independent_detectors(FLAGS.cnn_frames)
  cfg = report.ReportConfig(detector=FLAGS.detector, alignment=FLAGS.alignment, gaze=FLAGS.gaze)
  unauth, warnings = report.unauthorized_models(cfg, FLAGS.weights_dir)
  dets += [report.project_detector(m, FLAGS.weights_dir) for m in unauth if m in report.PROJECT_DETECTORS]
  procs = privacy.ATTACKER_PROCESSINGS if FLAGS.attacker is None else tuple(FLAGS.attacker)
  p = privacy.evaluate(originals, deid, boxes, gallery, identity, dets, procs)
  p.pop("nearest", None)
  p["warnings"] = gallery.warnings + warnings
  for w in p["warnings"]:
    print(f"warning: {w}")
  return p


def write_csv(path, rows) -> str:
  """Writes the per-frame rows to a temporary file beside ``path``; returns it."""
  cols = ["frame_id", "reference_faces", "prediction_faces", "iou", "landmark_px", "nme",
          "gaze_angle_deg", "head_pose_deg", "diffscore", "missing_in_prediction"]
  tmp = video.atomic_path(path)
  with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    for r in rows:
      w.writerow({c: r.get(c) for c in cols})
  return tmp


def plot(path, result, title) -> str:
  """Draws the per-frame plot to a temporary file beside ``path``; returns it."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = result["per_frame"]
  ids = [r["frame_id"] for r in rows]
  panels = [("iou", "box IoU (higher is better)"), ("landmark_px", "landmark error (px)"),
            ("gaze_angle_deg", "gaze angle error (deg)"), ("head_pose_deg", "head pose error (deg)")]
  fig, axes = plt.subplots(len(panels), 1, figsize=(9, 8.5), sharex=True)
  for ax, (key, label) in zip(axes, panels):
    vals = [r[key] if r[key] is not None else float("nan") for r in rows]
    ax.plot(ids, vals, lw=1.2)
    ax.set_ylabel(label, fontsize=8)
    ax.grid(alpha=0.3)
    missing = [i for i, r in zip(ids, rows) if r["missing_in_prediction"]]
    for m in missing:
      ax.axvline(m, color="red", alpha=0.3, lw=0.8)
  axes[-1].set_xlabel("frame id (red: face missing in prediction)")
  s = result["summary"]
  fig.suptitle(f"{title}\nIoU {s['iou_mean'] if s['iou_mean'] is not None else float('nan'):.3f}  "
               f"DiffScore {s['diffscore'] if s['diffscore'] is not None else float('nan'):.3f}", fontsize=9)
  fig.tight_layout()
  tmp = video.atomic_path(path)
  fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)
  return tmp


def output_paths():
  """The report, its CSV and (with --plot) its PNG: ``(what, path)`` pairs."""
  base = os.path.splitext(FLAGS.output)[0]
  return ([("output", FLAGS.output), ("CSV", base + ".csv")]
          + ([("plot", base + ".png")] if FLAGS.plot else []))


def main(argv):
  from drsf_jax.io import outputs
  inputs = [FLAGS.reference, FLAGS.prediction,
            *(g for g in FLAGS.gallery if g != "skimage:astronaut" and not os.path.isdir(g))]
  for p in inputs:
    outputs.check_input(p)
  outs = output_paths()
  outputs.check(outs, inputs, FLAGS.overwrite)
  cache = {}

  def predictor():
    if "p" not in cache:
      from drsf_jax.victims import inference
      cache["p"] = inference.Predictor(FLAGS.detector, FLAGS.alignment, FLAGS.gaze, FLAGS.weights_dir)
    return cache["p"]

  ref = _load(FLAGS.reference, predictor)
  pred = _load(FLAGS.prediction, predictor)
  result = metrics.compare(ref, pred)
  result["reference"] = FLAGS.reference
  result["prediction"] = FLAGS.prediction
  if FLAGS.privacy:
    result["privacy"] = _privacy(ref)
  # All three are written to temporary files first, then renamed together.
  base = os.path.splitext(FLAGS.output)[0]
  staged = [video.stage_json(FLAGS.output, result), write_csv(base + ".csv", result["per_frame"])]
  if FLAGS.plot:
    staged.append(plot(base + ".png", result,
                       f"{os.path.basename(FLAGS.prediction)} vs {os.path.basename(FLAGS.reference)}"))
  outputs.commit(list(zip(staged, [p for _, p in outs])), overwrite=FLAGS.overwrite)
  s = result["summary"]
  print(f"{s['frames']} common frames ({s['frames_scored']} with a reference face)")
  for k in ("iou_mean", "landmark_px_mean", "nme_mean", "head_pose_deg_mean", "gaze_angle_deg_mean",
            "gaze_angle_deg_p95", "diffscore"):
    print(f"  {k:20s} {s[k]:.4f}" if s[k] is not None else f"  {k:20s} n/a")
  print(f"  missing faces: {s['missing_faces']}")
  if s["frame_ids_only_in_reference"] or s["frame_ids_only_in_prediction"]:
    print(f"  frame ids only in reference: {len(s['frame_ids_only_in_reference'])}, "
          f"only in prediction: {len(s['frame_ids_only_in_prediction'])}")
  if FLAGS.privacy:
    p = result["privacy"]
    f = lambda v: "n/a" if v is None else f"{v:.2f}"
    rank1 = (f"rank-1 {f(p['rank1_reid_rate'])} over {p['gallery_identities']} identities "
             f"(chance {f(p['rank1_chance'])}), mAP {f(p['map'])}, median k {f(p['k_median'])}"
             if p["rank1_null_reason"] is None else f"rank-1 null: {p['rank1_null_reason']}")
    print(f"  privacy (lower is better): re-ID same frame {f(p['reid_rate_same_frame'])}, {rank1}, "
          "detects " + ", ".join(f"{d} {f(r['deidentified'])}" for d, r in p["detection_rate"].items())
          + f", embedding distance {f(p['embedding_distance_mean'])}")
    wc = p["worst_case"]
    print(f"  attacker's worst case: re-ID same frame {f(wc['reid_rate_same_frame']['rate'])} "
          f"({wc['reid_rate_same_frame']['processing']}), detects "
          + ", ".join(f"{d} {f(r['rate'])} ({r['processing']})" for d, r in wc["detection_rate"].items())
          + f"; private: {'yes' if p['private'] else 'no'}")
  print(f"wrote {FLAGS.output}, {base}.csv" + (f", {base}.png" if FLAGS.plot else ""))


if __name__ == "__main__":
  cli.run(main)
