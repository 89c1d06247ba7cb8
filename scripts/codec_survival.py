"""How much of the adversarial perturbation survives the codec a user writes with.

  python scripts/codec_survival.py -i ../shared/data/talking_head_a.mp4 --max_frames 32 \
      --sets retinaface+MPIIGaze,mtcnn -o outputs/codec_survival.json

For each victim set the video is de-identified once with the default settings and written
losslessly (FFV1); those frames are then encoded with every codec/quality in --codecs
through the project's writer (exactly what ``deid.py --codec C --crf Q`` writes), decoded
back, and the authorized models are run on the decoded file as ``scripts/inference.py``
runs them and compared with the original by ``scripts/evaluate.py``'s metrics. A row
``obfuscation only`` (no attack, lossless) shows what the attack adds. Writes the JSON
(--output), a Markdown table beside it (.md) and a plot (.png).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from drsf_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Input video (default: ../shared/data/talking_head_a.mp4).",
                    short_name="i")
flags.DEFINE_string("output", "outputs/codec_survival.json", "JSON results (.md table and .png plot "
                    "beside it).", short_name="o")
flags.DEFINE_list("sets", ["retinaface+MPIIGaze", "mtcnn"], "Victim sets: detector[+fan][+gaze model].")
flags.DEFINE_list("codecs", ["ffv1", "h264-lossless", "h264:0", "h264:10", "h264:18", "h264:23",
                             "h265:18", "vp9:18"], "codec[:crf] written and decoded back.")
flags.DEFINE_list("codec_aware", ["h264:18"], "codec[:crf] for which the attack is also run "
                  "codec-aware (deid's default with a lossy codec) and its written file measured.")
flags.DEFINE_integer("max_frames", 32, "Frames from the start of the input.")
flags.DEFINE_integer("max_iter", None, "Attack steps (default: deid's default).")
flags.DEFINE_string("deid", "pixelate_10", "Obfuscation.", short_name="m")
flags.DEFINE_string("weights_dir", None, "Converted weights directory (default $DRSF_JAX_WEIGHTS or "
                    "~/.cache/drsf_jax).")
cli.define_overwrite_flag()
cli.define_cache_flag()
flags.adopt_module_key_flags(cli)

_DEFAULT_INPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                              "shared", "data", "talking_head_a.mp4")


def parse_set(spec: str) -> dict:
  from drsf_jax.victims import detectors  # pylint: disable=import-outside-toplevel
  from drsf_jax.victims import registry as victims
  parts = spec.split("+")
  det, rest = parts[0], parts[1:]
  if det not in detectors.DETECTORS:
    raise cli.UserError(f"--sets {spec}: unknown detector {det!r}")
  out = {"detector": det, "alignment": "none", "gaze": "none"}
  for p in rest:
    if p in victims.ALIGNMENTS and p != "none":
      out["alignment"] = p
    elif p in victims.GAZE_MODELS and p != "none":
      out["gaze"] = p
    else:
      raise cli.UserError(f"--sets {spec}: {p!r} is neither an alignment nor a gaze model")
  return out


def parse_codec(spec: str) -> tuple[str, int | None]:
  from drsf_jax.io import video  # pylint: disable=import-outside-toplevel
  name, _, crf = spec.partition(":")
  if name not in video.CODECS or name == "png-seq":
    raise cli.UserError(f"--codecs {spec}: unknown codec {name!r}")
  return name, (int(crf) if crf else None)


def _ext(codec: str) -> str:
  return {"vp9": ".webm", "ffv1": ".mkv"}.get(codec, ".mp4")


def measure(input_path, model_set, codecs, aware, tmp, cfg_kw, weights_dir, log):
  """Rows of utility per codec for one victim set (one attack, many encodings)."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from drsf_jax.deid import pipeline
  from drsf_jax.evaluation import metrics
  from drsf_jax.io import video
  from drsf_jax.victims import inference  # pylint: disable=import-outside-toplevel
  cfg = pipeline.DeidConfig(**model_set, **cfg_kw, verify=False, codec="ffv1", audio=False)
  d = pipeline.Deidentifier(cfg, weights_dir)
  predictor = inference.Predictor(cfg.detector, cfg.alignment, cfg.gaze, weights_dir, cfg.max_faces,
                                  loaded={v.name: v for v in d.victims})
  ref = inference.run(input_path, predictor, max_frames=cfg.max_frames, batch_size=cfg.batch_size)
  rows = []

  def score(label, path, codec, crf, report=None):
    got = inference.run(path, predictor, batch_size=cfg.batch_size)
    s = metrics.compare(ref, got)
    lost = [r["frame_id"] for r in s["per_frame"] if r["missing_in_prediction"]]
    n = video.count_frames(path)
    dur = n / ref["video"]["fps"]
    row = {"setting": label, "codec": codec, "crf": crf, "frames": n,
           "kbit_per_s": os.path.getsize(path) * 8 / 1000 / dur,
           "iou": s["summary"].get("iou_mean"), "landmark_px": s["summary"].get("landmark_px_mean"),
           "head_pose_deg": s["summary"].get("head_pose_deg_mean"),
           "gaze_deg": s["summary"].get("gaze_angle_deg_mean"),
           "gaze_deg_p95": s["summary"].get("gaze_angle_deg_p95"), "faces_lost": len(lost)}
    if report:
      row["iterations_mean"] = report["summary"]["iterations_mean"]
    rows.append(row)
    log(f"{'+'.join(v for v in model_set.values() if v != 'none')} {label}: " +
        ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                  if k not in ("setting",)))

  # Obfuscation alone (no attack), lossless: the floor the attack starts from.
  plain = os.path.join(tmp, "plain.mkv")
  pipeline.deidentify(input_path, plain, dataclasses.replace(cfg, max_iter=0), weights_dir,
                      os.path.join(tmp, "plain.json"), progress=False, deidentifier=None, overwrite=True)
  score("obfuscation only", plain, "ffv1", None)
  attacked = os.path.join(tmp, "attacked.mkv")
  rep = pipeline.deidentify(input_path, attacked, cfg, weights_dir, os.path.join(tmp, "attacked.json"),
                            progress=False, deidentifier=d, overwrite=True)
  src = video.VideoReader(attacked)
  frames = list(src)
  for codec, crf in codecs:
    path = os.path.join(tmp, f"enc_{codec}_{crf}{_ext(codec)}")
    with video.VideoWriter(path, src.rate or src.fps, (src.width, src.height), codec, overwrite=True,
                           crf=crf, time_base=src.time_base) as w:
      for i, f in enumerate(frames):
        w.write(f, src.pts[i])
    shown_crf = crf if crf is not None or codec not in video.LOSSY_CODECS else video.DEFAULT_CRF
    score(f"{codec}" + (f" crf {shown_crf}" if shown_crf is not None else "") + ", plain attack",
          path, codec, shown_crf, rep)
  for codec, crf in aware:  # The attack through the codec: what deid writes with --codec.
    c2 = dataclasses.replace(cfg, codec=codec, crf=crf, codec_aware=True)
    path = os.path.join(tmp, f"aware_{codec}_{crf}{_ext(codec)}")
    rep2 = pipeline.deidentify(input_path, path, c2, weights_dir, os.path.join(tmp, "aware.json"),
                               progress=False, overwrite=True)
    shown_crf = video.DEFAULT_CRF if crf is None else crf
    score(f"{codec} crf {shown_crf}, codec-aware attack", path, codec, shown_crf, rep2)
  return rows


def write_outputs(doc, path):
  import json  # pylint: disable=import-outside-toplevel
  from drsf_jax.io import outputs  # pylint: disable=import-outside-toplevel
  from drsf_jax.io import video
  base = os.path.splitext(path)[0]
  lines = ["| victims | written as | kbit/s | IoU | landmarks px | head pose ° | gaze ° mean / p95 | faces lost |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  f = lambda v, p: "–" if v is None else f"{v:.{p}f}"
  for r in doc["rows"]:
    lines.append(f"| {r['victims']} | {r['setting']} | {r['kbit_per_s']:.0f} | {f(r['iou'], 3)} | "
                 f"{f(r['landmark_px'], 2)} | {f(r['head_pose_deg'], 2)} | {f(r['gaze_deg'], 2)} / "
                 f"{f(r['gaze_deg_p95'], 2)} | {r['faces_lost']} |")
  md = "\n".join(lines) + "\n"
  tmp_md = outputs.temp_path(base + ".md")
  with open(tmp_md, "w") as fh:
    fh.write(md)
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  sets = sorted({r["victims"] for r in doc["rows"]})
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  for s in sets:
    rows = [r for r in doc["rows"] if r["victims"] == s]
    labels = [r["setting"] for r in rows]
    for ax, key, name in zip(axes, ("iou", "landmark_px", "gaze_deg"), ("box IoU", "landmarks (px)", "gaze (°)")):
      vals = [r[key] if r[key] is not None else float("nan") for r in rows]
      ax.plot(range(len(vals)), vals, "o-", label=s)
      ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
      ax.set_title(name)
      ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"utility on the decoded file after each codec ({os.path.basename(doc['input'])}, "
               f"{doc['max_frames']} frames, {doc['deid']})", fontsize=9)
  fig.tight_layout()
  tmp_png = outputs.temp_path(base + ".png")
  fig.savefig(tmp_png, dpi=110, format="png")
  plt.close(fig)
  tmp_json = video.stage_json(path, doc)
  outputs.commit([(tmp_json, path), (tmp_md, base + ".md"), (tmp_png, base + ".png")],
                 overwrite=FLAGS.overwrite)
  return md


def main(argv):
  import tempfile  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel
  from drsf_jax.io import outputs  # pylint: disable=import-outside-toplevel
  input_path = FLAGS.input or _DEFAULT_INPUT
  outputs.check_input(input_path)
  base = os.path.splitext(FLAGS.output)[0]
  outputs.check([("output", FLAGS.output), ("table", base + ".md"), ("plot", base + ".png")],
                [input_path], FLAGS.overwrite)
  sets = [parse_set(s) for s in FLAGS.sets]
  codecs = [parse_codec(c) for c in FLAGS.codecs]
  aware = [parse_codec(c) for c in FLAGS.codec_aware]
  from drsf_jax.io import video  # pylint: disable=import-outside-toplevel
  for c, _ in aware:
    if c not in video.LOSSY_CODECS:
      raise cli.UserError(f"--codec_aware {c}: only the lossy codecs ({', '.join(video.LOSSY_CODECS)})")
  cfg_kw = {"deid": FLAGS.deid, "max_frames": FLAGS.max_frames}
  if FLAGS.max_iter is not None:
    cfg_kw["max_iter"] = FLAGS.max_iter
  t0 = time.time()
  doc = {"input": os.path.abspath(input_path), "max_frames": FLAGS.max_frames, "deid": FLAGS.deid,
         "max_iter": FLAGS.max_iter, "rows": []}
  with tempfile.TemporaryDirectory(prefix="codec_survival.") as tmp:
    for s in sets:
      name = "+".join(v for v in s.values() if v != "none")
      rows = measure(input_path, s, codecs, aware, tmp, cfg_kw, FLAGS.weights_dir, logging.info)
      doc["rows"].extend({"victims": name, **r} for r in rows)
  doc["wall_time_s"] = time.time() - t0
  print(write_outputs(doc, FLAGS.output), end="")
  print(f"wrote {FLAGS.output} (+ .md, .png)")


if __name__ == "__main__":
  cli.run(main)
