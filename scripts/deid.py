"""De-identifies a driver-facing video: obfuscate every face, then attack the obfuscated
frames so that the authorized models still predict what they saw on the original.

Corpus mode (--input_list, a directory or a list file, with --output_dir) processes many
videos, resumably, optionally across several processes/hosts via jax.distributed.

With no --input it runs on an embedded sample built from scikit-image's astronaut photo
(moved and rotated over 2 s of frames) with MTCNN, writing into outputs/demo/.

  python scripts/deid.py -i driver.mp4 -o driver_deid.mkv -d retinaface -z MPIIGaze
  python scripts/deid.py --input_list videos/ --output_dir deid/            # a corpus
  python scripts/deid.py --input_list list.txt --output_dir deid/ \
      --coordinator_address host0:1234 --num_processes 2 --process_id 0     # on host 0
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging

import drsf_jax
from drsf_jax import cli
from drsf_jax.deid import attacks
from drsf_jax.deid import pipeline

FLAGS = flags.FLAGS
_D = pipeline.DeidConfig()
flags.DEFINE_string("input", None, "Input video (default: the embedded astronaut sample).", short_name="i")
flags.DEFINE_string("output", None, "Output video (default outputs/demo/sample_deid.mkv for the "
                    "sample, else <input>_deid.mkv). The JSON report is written beside it.", short_name="o")
flags.DEFINE_string("input_list", None, "Corpus mode: a directory of videos (searched recursively) or a "
                    "text file with one video path per line. Needs --output_dir; finished videos "
                    "are skipped on a re-run.")
flags.DEFINE_string("output_dir", None, "Corpus mode: where outputs, reports and corpus_summary.json go "
                    "(input paths mirrored, NAME_deid.mkv + NAME_deid.json).")
flags.DEFINE_string("coordinator_address", None, "Corpus mode across processes: host:port of process 0 "
                    "(jax.distributed). Each process takes every N-th video.")
flags.DEFINE_integer("num_processes", None, "Corpus mode across processes: how many.")
flags.DEFINE_integer("process_id", None, "Corpus mode across processes: this one's index.")
flags.DEFINE_bool("distributed_auto", False, "Corpus mode: jax.distributed.initialize() with JAX's "
                  "cluster auto-detection (Cloud TPU, SLURM, ...) instead of the three flags above.")
flags.DEFINE_string("report", None, "Report path (default: the output path with .json).")
cli.define_overwrite_flag()
cli.define_model_flags(_D.detector, _D.alignment, _D.gaze)
flags.DEFINE_enum("attack", _D.attack, list(attacks.ATTACKS), "Attack (an Optax optimizer over the frames).",
                  short_name="g")
flags.DEFINE_string("deid", _D.deid, "Obfuscation: pixelate_N, blur_N, gaussian_N or solid.", short_name="m")
flags.DEFINE_integer("batch_size", _D.batch_size, "Frames per attack batch.", short_name="bs")
flags.DEFINE_integer("max_iter", _D.max_iter, "Attack steps per batch at most.")
flags.DEFINE_float("eps", _D.eps, "L-inf budget around the obfuscated frame, in (0, 1].")
flags.DEFINE_float("alpha", _D.alpha, "Step of the sign attacks (i-fgsm, pgd, mi-fgsm, ni-fgsm).")
flags.DEFINE_float("lr", None, "Learning rate of the optimizer attacks (default per attack).")
flags.DEFINE_integer("max_frames", None, "Process only the first N frames.")
flags.DEFINE_integer("max_faces", _D.max_faces, "Faces per frame whose predictions are preserved "
                     "(largest first); every face is obfuscated regardless.")
flags.DEFINE_float("mask_scale", _D.mask_scale, "Scale of the obfuscated square around each face.")
flags.DEFINE_string("codec", _D.codec, "ffv1 (lossless, default; .mkv/.mp4), h264-lossless (libx264 RGB "
                    "qp 0; .mkv/.mp4/.mov), lossy h264 / h265 (.mp4/.mkv/.mov) and vp9 (.webm/.mkv/.mp4) "
                    "at --crf, or png-seq (a new or empty folder of PNGs). The container comes from the "
                    "output's extension. See README 'Codecs' for how much of the attack each keeps.")
flags.DEFINE_integer("crf", None, "Quality of h264/h265 (0-51) and vp9 (0-63); lower is better. "
                     "Default 18.")
flags.DEFINE_bool("codec_aware", _D.codec_aware, "With a lossy --codec, run every attack step "
                  "through the real encoder and decoder (in memory, same settings), so the attack keeps "
                  "what survives the codec (README 'Codecs and the perturbation').")
flags.DEFINE_bool("crop_local", _D.crop_local, "With --perturb face, run the victims on a window "
                  "around each batch's faces instead of the whole frame (same result within the "
                  "tolerance of tests/deid/crop_test.py; cost grows with the face, not the frame). MTCNN "
                  "always attacks whole frames.")
flags.DEFINE_bool("audio", _D.audio, "Copy the input's audio into the output (stream copy where the "
                  "container takes the codec, else AAC; Opus in .webm); --noaudio drops it.")
flags.DEFINE_string("preview", None, "Also write this H.264 .mp4: original | de-identified | the "
                    "authorized models' predictions on the de-identified frames, side by side. It shows "
                    "the original face: for your own inspection, not for release.")
flags.DEFINE_string("calibration", None, "Camera calibration YAML (ptgaze format) for head pose/gaze.")
flags.DEFINE_bool("allow_no_face", False, "Copy a video in which no face is found, instead of failing.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.DEFINE_integer("seed", 0, "Seed of random starts (pgd).")
flags.DEFINE_enum("perturb", _D.perturb, list(pipeline.PERTURB_MODES),
                  "Where the attack may change pixels: 'face' (the obfuscated squares, plus "
                  "--perturb_margin; every other output pixel equals the input) or 'frame' (anywhere, "
                  "as the original).")
flags.DEFINE_bool("warm_start", _D.warm_start, "Start each batch's attack from the previous "
                  "batch's perturbation (its last frame, carried in face-aligned coordinates) "
                  "instead of the obfuscated frames (--nowarm_start: every batch from scratch).")
flags.DEFINE_bool("verify", _D.verify, "Decode the written output, run the authorized models on it "
                  "as inference.py does, and report the utility against the original (--noverify "
                  "skips it).")
flags.DEFINE_integer("perturb_margin", _D.perturb_margin, "Pixels around each obfuscated square the "
                     "attack may also change (--perturb face).")
flags.DEFINE_enum("stop", _D.stop, list(pipeline.STOP_MODES),
                  "When a frame's attack stops: 'metrics' = every --check_every steps the authorized "
                  "models run on the frame as it will be written (8 bits, through the codec), as "
                  "inference.py runs them, and the frame stops once they agree with their reading of "
                  "the original within --stop_iou / --stop_landmarks_px / --stop_head_pose_deg / "
                  "--stop_gaze_deg; 'loss' = every victim's loss under its raw threshold (the "
                  "original's rule; off the CPU the whole attack is then one while_loop program); "
                  "'either' = whichever comes first. A frame the check never passes ends at the "
                  "best state a check saw.")
flags.DEFINE_float("stop_iou", _D.stop_iou, "--stop metrics/either: box IoU against the original's box, "
                   "at least.")
flags.DEFINE_float("stop_landmarks_px", _D.stop_landmarks_px, "--stop metrics/either: mean landmark error in "
                   "pixels, at most (68 points with --alignment fan, else the detector's 5).")
flags.DEFINE_float("stop_head_pose_deg", _D.stop_head_pose_deg, "--stop metrics/either: head-pose angle in "
                   "degrees, at most (tested when a gaze model or FAN is authorized).")
flags.DEFINE_float("stop_gaze_deg", _D.stop_gaze_deg, "--stop metrics/either: gaze angle in degrees, at most "
                   "(tested when a gaze model is authorized).")
flags.DEFINE_integer("check_every", _D.check_every, "--stop metrics/either: attack steps between two checks.")
flags.DEFINE_enum("revisit", _D.revisit, list(pipeline.REVISIT_MODES),
                  "--stop metrics/either with --warm_start: attack a batch again, warm-started from its "
                  "own last frame within the stop, when some frame ended outside the stop; each such "
                  "frame keeps the better of its two results and its iterations count both. 'first' = "
                  "only the first batch (it has no warm start), 'all' = every batch, 'none' = never.")
cli.define_cache_flag()
flags.adopt_module_key_flags(cli)


def main(argv):
  cfg = pipeline.DeidConfig(
      detector=FLAGS.detector, alignment=FLAGS.alignment, gaze=FLAGS.gaze, attack=FLAGS.attack,
      deid=FLAGS.deid, eps=FLAGS.eps, alpha=FLAGS.alpha, lr=FLAGS.lr, max_iter=FLAGS.max_iter,
      batch_size=FLAGS.batch_size, max_faces=FLAGS.max_faces, mask_scale=FLAGS.mask_scale,
      max_frames=FLAGS.max_frames, codec=FLAGS.codec, crf=FLAGS.crf, audio=FLAGS.audio,
      codec_aware=FLAGS.codec_aware, crop_local=FLAGS.crop_local, calibration=FLAGS.calibration,
      allow_no_face=FLAGS.allow_no_face, seed=FLAGS.seed, perturb=FLAGS.perturb,
      perturb_margin=FLAGS.perturb_margin, verify=FLAGS.verify,
      warm_start=FLAGS.warm_start, stop=FLAGS.stop, stop_iou=FLAGS.stop_iou,
      stop_landmarks_px=FLAGS.stop_landmarks_px, stop_head_pose_deg=FLAGS.stop_head_pose_deg,
      stop_gaze_deg=FLAGS.stop_gaze_deg, check_every=FLAGS.check_every, revisit=FLAGS.revisit)
  cfg.validate()
  if FLAGS.input_list is not None:
    return _corpus(cfg)
  if FLAGS.output_dir is not None or FLAGS.coordinator_address is not None:
    raise cli.UserError("--output_dir and --coordinator_address belong to corpus mode (--input_list)")
  src = FLAGS.input
  out = FLAGS.output
  if src is None:
    out = out or os.path.join("outputs", "demo", "sample_deid.mkv")
    src = _sample_input(os.path.join(os.path.dirname(out) or ".", "sample_input.mkv"))
    print(f"embedded sample (skimage astronaut, moved and rotated): {src}")
  elif out is None:
    out = os.path.splitext(src)[0] + "_deid.mkv"
  if FLAGS.codec in ("h264", "h265", "vp9"):
    logging.warning("lossy codec %s: part of the adversarial perturbation is lost in encoding "
                    "(README 'Codecs' has the measured utility per codec and CRF)", FLAGS.codec)
  report_path = FLAGS.report or pipeline.default_report_path(out)
  report = drsf_jax.deidentify(src, out, weights_dir=FLAGS.weights_dir, report_path=report_path,
                               preview_path=FLAGS.preview, overwrite=FLAGS.overwrite,
                               progress=FLAGS.progress, **dataclasses.asdict(cfg))
  s = report["summary"]
  print(f"wrote {report['output']} ({report['video']['num_frames']} frames, "
        f"{report['frames_per_second']:.2f} frames/s)")
  print(f"report {os.path.abspath(report_path)}")
  if FLAGS.preview:
    print(f"preview {os.path.abspath(FLAGS.preview)}")
  print(f"victims {', '.join(cfg.victim_names)}; attack {cfg.attack}; deid {cfg.deid}; "
        f"mean iterations {s['iterations_mean']:.1f}, frames within the stop ({report['settings']['stop_applied']}) "
        f"{s['frames_within_stop']}/{report['video']['num_frames']} (the models' check "
        f"{s['frames_met_stop']}, the losses {s['frames_converged']})")
  if report.get("detector_warning"):
    print(f"warning: {report['detector_warning']}")
  if report["frames_reused_detection"]:
    print(f"frames where the detector missed and neighbouring detections were reused: "
          f"{report['frames_reused_detection']}")
  if report.get("frames_tracked_faces"):
    print(f"frames where a face lost by the detector was tracked and obfuscated: "
          f"{report['frames_tracked_faces']}")
  print_verification(report.get("verification"))


def print_verification(v):
  """One screen: what the authorized models read from the written file vs the original."""
  if not v:
    print("verification: skipped (--noverify)")
    return
  s = v["summary"]
  f = lambda k, fmt: "n/a" if s.get(k) is None else fmt.format(s[k])
  print(f"verified on the written file ({', '.join(v['models'])}, {s['frames_scored']} frames with a face "
        f"in the original):")
  print(f"  box IoU {f('iou_mean', '{:.3f}')} | landmarks {f('landmark_px_mean', '{:.2f}')} px "
        f"(NME {f('nme_mean', '{:.3f}')}) | head pose {f('head_pose_deg_mean', '{:.2f}')} deg | "
        f"gaze {f('gaze_angle_deg_mean', '{:.2f}')} deg (p95 {f('gaze_angle_deg_p95', '{:.2f}')})")
  lost = v["frames_face_lost"]
  print(f"  face lost by the authorized detector in {len(lost)} frame(s)" + (f": {lost[:20]}" + (" ..." if len(lost) > 20 else "") if lost else ""))


def _sample_input(path):
  """The embedded sample clip at ``path``: written if absent, reused if it is the sample.

  A different file there is replaced only with --overwrite (it may be the user's).
  """
  import numpy as np
  from drsf_jax.io import samples
  from drsf_jax.io import video
  frames = samples.astronaut_clip()
  if os.path.lexists(path):
    try:
      same = np.array_equal(np.stack(list(video.VideoReader(path))), frames)
    except (ValueError, FileNotFoundError):
      same = False
    if same:
      return path
    if not FLAGS.overwrite:
      raise cli.UserError(f"{path} exists and is not the embedded sample; pass --overwrite to "
                          "replace it, or --input to de-identify it")
  with video.VideoWriter(path, 30.0, frames.shape[2:0:-1], "ffv1", overwrite=FLAGS.overwrite) as w:
    for f in frames:
      w.write(f)
  return path


def _corpus(cfg):
  from drsf_jax.deid import corpus  # pylint: disable=import-outside-toplevel
  if any(v is not None for v in (FLAGS.input, FLAGS.output, FLAGS.report, FLAGS.preview)):
    raise cli.UserError("--input_list (corpus mode) excludes --input, --output, --report and --preview")
  if FLAGS.output_dir is None:
    raise cli.UserError("--input_list needs --output_dir")
  corpus.check_output_dir(FLAGS.input_list, FLAGS.output_dir)
  corpus.init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                          FLAGS.distributed_auto)
  inputs, root = corpus.list_inputs(FLAGS.input_list)
  items = corpus.plan(inputs, root, FLAGS.output_dir, cfg.codec)
  summary = corpus.run(items, FLAGS.output_dir, cfg, FLAGS.weights_dir, progress=FLAGS.progress,
                       overwrite=FLAGS.overwrite)
  c = summary["counts"]
  scope = "corpus" if "done" in summary else f"process {summary['process_index']}"
  print(f"{scope}: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed "
        f"of {len(items)} videos" + (f"; summary {os.path.join(FLAGS.output_dir, corpus.SUMMARY_NAME)}"
                                     if "done" in summary else ""))
  failed = [v for v in summary["videos"] if v["status"] == "failed"]
  if failed:
    raise cli.UserError(f"{len(failed)} of {len(items)} video(s) failed (listed in the summary); "
                        f"first: {failed[0]['reason']}")


if __name__ == "__main__":
  cli.run(main)
