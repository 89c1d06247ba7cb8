"""How the attack's cost grows with the frame: full-frame vs crop-local, and the utility.

  python scripts/benchmark_frame_size.py --weights_dir ~/.cache/drsf_jax \
      --output benchmarks/results/frame_size.json

Frames of talking_head_a (../shared) as three inputs:

* ``256``: the video as it is (256x256, the face ~140x180 px);
* ``960 cabin``: a 960x960 frame with the 256x256 video pasted where a driver sits (the
  face keeps its size; the rest is the video's blurred, darkened frame), as in-cabin
  footage is: a small face in a large frame;
* ``960 upscaled``: the video upscaled x3.75 (the face grows with the frame).

For each, the victims (default retinaface + MPIIGaze) are attacked with the crop-local
window (``--crop_local``, deid's default) and on the whole frame (``--nocrop_local``):
the attack time per frame and per step is measured at a fixed number of steps (every
victim kept in the loss, no early stop), and a full de-identification of --frames frames at
deid's defaults is run and verified on its decoded output (IoU, landmarks, head pose,
gaze, mean iterations), so a speed-up is reported beside the utility it keeps.
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from drsf_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("detector", "retinaface", "Authorized detector (retinaface or retinaface_r50).")
flags.DEFINE_string("gaze", "MPIIGaze", "Authorized gaze model, or none.")
flags.DEFINE_integer("batch_size", 4, "Frames per attack batch.")
flags.DEFINE_integer("steps", 5, "Attack steps timed per batch (no early stop).")
flags.DEFINE_integer("repeats", 3, "Timed repeats (median).")
flags.DEFINE_integer("frames", 16, "Frames of the verified de-identification run (0 skips it).")
flags.DEFINE_list("inputs", ["256", "960-cabin", "960-upscaled"], "Inputs measured.")
flags.DEFINE_string("weights_dir", None, "Converted weights directory.")
flags.DEFINE_string("output", None, "JSON results.")
cli.define_overwrite_flag()
cli.define_cache_flag()
flags.adopt_module_key_flags(cli)


def make_frames(kind: str, n: int):
  import numpy as np
  from drsf_jax.io import samples
  from drsf_jax.io import video
  src = os.path.join(os.environ.get("DRSF_SHARED_DIR") or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared"), "data", "talking_head_a.mp4")
  frames = list(video.VideoReader(src, max_frames=n))
  if kind == "256":
    return np.stack(frames)
  if kind == "960-upscaled":
    return samples.upscaled_frames(np.stack(frames), 960)
  if kind == "960-cabin":
    return samples.cabin_frames(np.stack(frames), 960, 960, 560, 420)
  raise cli.UserError(f"--inputs: unknown input {kind!r}")


def step_time(frames, crop_local: bool):
  """Seconds per attack step and frame (median), and the window used."""
  import numpy as np
  from drsf_jax.deid import pipeline
  from drsf_jax.deid import temporal
  cfg = pipeline.DeidConfig(detector=FLAGS.detector, gaze=FLAGS.gaze, batch_size=FLAGS.batch_size,
                            max_iter=FLAGS.steps, crop_local=crop_local, verify=False)
  names = cfg.victim_names
  th = {n: (1e30 if i < len(names) - 1 else -1.0) for i, n in enumerate(names)}
  d = pipeline.Deidentifier(cfg, FLAGS.weights_dir, thresholds=th, loop="host")
  x = frames[:FLAGS.batch_size]
  det = d.detector
  dets = temporal.fill(det.predict(det.params, x.astype(np.float32) / 255.0)).detections
  win = d.crop_window(dets, x.shape[1:3])
  d.attack_batch(x, dets)  # Compile.
  ts = []
  for _ in range(FLAGS.repeats):
    t0 = time.perf_counter()
    d.attack_batch(x, dets)
    ts.append(time.perf_counter() - t0)
  ts.sort()
  per = ts[len(ts) // 2] / (FLAGS.steps * len(x))
  return per, (None if win is None else [win.x0, win.y0, win.w, win.h])


def deid_run(frames, crop_local: bool, tmp: str):
  from drsf_jax.deid import pipeline
  from drsf_jax.io import video
  src = os.path.join(tmp, f"in_{frames.shape[1]}.mkv")
  if not os.path.exists(src):
    with video.VideoWriter(src, 30, (frames.shape[2], frames.shape[1])) as w:
      for f in frames:
        w.write(f)
  cfg = pipeline.DeidConfig(detector=FLAGS.detector, gaze=FLAGS.gaze, crop_local=crop_local, audio=False)
  t0 = time.perf_counter()
  rep = pipeline.deidentify(src, os.path.join(tmp, "out.mkv"), cfg, FLAGS.weights_dir, progress=False,
                            overwrite=True)
  s = rep["verification"]["summary"]
  return {"wall_s": time.perf_counter() - t0, "attack_s": rep["attack_time_s"],
          "attack_s_per_frame": rep["attack_time_s"] / len(frames),
          "iterations_mean": rep["summary"]["iterations_mean"],
          "iou": s.get("iou_mean"), "landmark_px": s.get("landmark_px_mean"),
          "head_pose_deg": s.get("head_pose_deg_mean"), "gaze_deg": s.get("gaze_angle_deg_mean"),
          "faces_lost": len(rep["verification"]["frames_face_lost"])}


def main(argv):
  del argv
  import jax
  if FLAGS.output:
    from drsf_jax.io import outputs
    outputs.check([("output", FLAGS.output)], overwrite=FLAGS.overwrite)
  rows = []
  with tempfile.TemporaryDirectory(prefix="drsf_frame_size.") as tmp:
    for kind in FLAGS.inputs:
      frames = make_frames(kind, max(FLAGS.frames, FLAGS.batch_size))
      for crop_local in (True, False):
        per, win = step_time(frames, crop_local)
        row = {"input": kind, "frame": f"{frames.shape[2]}x{frames.shape[1]}", "crop_local": crop_local,
               "window": win, "step_s_per_frame": per}
        if FLAGS.frames:
          row.update(deid_run(frames[:FLAGS.frames], crop_local, tmp))
        rows.append(row)
        print(json.dumps(row), flush=True)
  base = next(r["step_s_per_frame"] for r in rows if r["input"] == "256" and r["crop_local"]) \
      if any(r["input"] == "256" for r in rows) else None
  for r in rows:
    r["step_time_vs_256"] = r["step_s_per_frame"] / base if base else None
  doc = {"victims": [FLAGS.detector] + ([FLAGS.gaze] if FLAGS.gaze != "none" else []),
         "batch_size": FLAGS.batch_size, "steps": FLAGS.steps, "backend": jax.default_backend(),
         "rows": rows}
  print("| input | frame | attack | window (x, y, w, h) | step s/frame | vs 256 | deid attack s/frame | "
        "iterations | IoU | landmarks px | head pose ° | gaze ° | lost |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  f = lambda v, p: "–" if v is None else f"{v:.{p}f}"
  for r in rows:
    print(f"| {r['input']} | {r['frame']} | {'crop-local' if r['crop_local'] else 'full frame'} | "
          f"{r['window'] or '–'} | {r['step_s_per_frame']:.3f} | {f(r['step_time_vs_256'], 2)} | "
          f"{f(r.get('attack_s_per_frame'), 2)} | {f(r.get('iterations_mean'), 1)} | {f(r.get('iou'), 3)} | "
          f"{f(r.get('landmark_px'), 2)} | {f(r.get('head_pose_deg'), 2)} | {f(r.get('gaze_deg'), 2)} | "
          f"{r.get('faces_lost', '–')} |")
  if FLAGS.output:
    from drsf_jax.io import video
    video.write_json_atomic(FLAGS.output, doc, overwrite=FLAGS.overwrite)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  cli.run(main)
