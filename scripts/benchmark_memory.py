"""Peak memory of a de-identification run against the video's length.

  python scripts/benchmark_memory.py --weights_dir ~/.cache/drsf_jax \
      --output benchmarks/results/memory.json --plot benchmarks/results/memory.png

Builds a real-footage clip of ``--duration_s`` seconds at ``--width`` x ``--height`` and
``--fps`` (talking_head_a from ../shared played forwards and backwards, pasted unscaled
into a cabin frame with ``samples.cabin_frames``, the face drifting slowly across it, H.264
CRF 18 like a camera's file) and the same clip cut to its first ``--short_s`` seconds. It
then runs ``scripts/deid.py`` on each, exactly as a user does (a separate process, deid's
defaults but ``--max_iter``, so the time goes to reading, detecting, encoding and verifying
every frame rather than to the attack), samples the process's resident memory
(``/proc/PID/status`` VmRSS) every ``--sample_s`` seconds and reads its peak
(``ru_maxrss`` from ``wait4``). Writes JSON (each run's peak, wall time, frames and RSS
trace) and a plot of both traces; prints a Markdown table. Linux only (/proc).

A pipeline whose memory is bounded has the same peak for both clips: the issue's target is
a long-clip peak within 10% of the short one.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top

from drsf_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_float("duration_s", 180.0, "Length of the long clip, seconds.")
flags.DEFINE_float("short_s", 10.0, "Length of the short clip (the long one's start), seconds.")
flags.DEFINE_float("fps", 30.0, "Frame rate of both clips.")
flags.DEFINE_integer("width", 1280, "Frame width.")
flags.DEFINE_integer("height", 720, "Frame height.")
flags.DEFINE_integer("max_iter", 2, "deid --max_iter (small: memory, not the attack, is measured).")
flags.DEFINE_string("detector", "retinaface", "deid --detector.")
flags.DEFINE_string("gaze", "none", "deid --gaze.")
flags.DEFINE_float("sample_s", 0.5, "RSS sampling period, seconds.")
flags.DEFINE_string("work_dir", None, "Where the clips and outputs go (default: a temporary folder, removed).")
flags.DEFINE_string("weights_dir", None, "Converted weights directory.")
flags.DEFINE_string("output", None, "JSON results.")
flags.DEFINE_string("plot", None, "PNG of the RSS traces.")
cli.define_overwrite_flag()
flags.adopt_module_key_flags(cli)


def _source_path() -> str:
  root = os.environ.get("DRSF_SHARED_DIR") or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
  path = os.path.join(root, "data", "talking_head_a.mp4")
  if not os.path.isfile(path):
    raise cli.UserError(f"{path} not found: this benchmark needs ../shared (or $DRSF_SHARED_DIR)")
  return path


def write_clips(long_path: str, short_path: str) -> dict:
  """Writes the long clip and its first --short_s seconds (same frames) as H.264."""
  import numpy as np
  from drsf_jax.io import samples
  from drsf_jax.io import video
  src = np.stack(list(video.VideoReader(_source_path())))
  n_long = int(round(FLAGS.duration_s * FLAGS.fps))
  n_short = int(round(FLAGS.short_s * FLAGS.fps))
  if not 0 < n_short <= n_long:
    raise cli.UserError(f"--short_s {FLAGS.short_s} must be > 0 and at most --duration_s {FLAGS.duration_s}")
  h, w = src.shape[1:3]
  if w + 80 > FLAGS.width or h + 40 > FLAGS.height:
    raise cli.UserError(f"--width/--height {FLAGS.width}x{FLAGS.height} too small for the {w}x{h} source")
  period = 2 * (len(src) - 1)  # Forwards then backwards: no jump cut.
  size = (FLAGS.width, FLAGS.height)
  cx, cy = (FLAGS.width - w) * 0.55, (FLAGS.height - h) * 0.5
  ax, ay = min(120.0, cx - 1), min(40.0, cy - 1)
  writers = [video.VideoWriter(long_path, FLAGS.fps, size, "h264", crf=18),
             video.VideoWriter(short_path, FLAGS.fps, size, "h264", crf=18)]
  try:
    for t in range(n_long):
      k = t % period
      f = src[k if k < len(src) else period - k]
      s = t / FLAGS.fps
      x = int(round(cx + ax * np.sin(2 * np.pi * s / 23.0)))
      y = int(round(cy + ay * np.cos(2 * np.pi * s / 17.0)))
      frame = samples.cabin_frames(f[None], FLAGS.width, FLAGS.height, x, y)[0]
      writers[0].write(frame)
      if t < n_short:
        writers[1].write(frame)
  finally:
    for wr in writers:
      wr.close()
  return {"long_frames": n_long, "short_frames": n_short}


def run_deid(clip: str, out: str, log_path: str) -> dict:
  """Runs scripts/deid.py on ``clip`` in its own process and measures its memory."""
  deid = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deid.py")
  cmd = [sys.executable, deid, "-i", clip, "-o", out, "-d", FLAGS.detector, "-z", FLAGS.gaze,
         "--max_iter", str(FLAGS.max_iter), "--noprogress", "--overwrite"]
  if FLAGS.weights_dir:
    cmd += ["--weights_dir", FLAGS.weights_dir]
  logging.info("running %s", " ".join(cmd))
  trace = []
  t0 = time.perf_counter()
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # pylint: disable=consider-using-with
    while True:
      # wait4 (not Popen.poll, which would reap the child and lose its rusage).
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      try:
        with open(f"/proc/{proc.pid}/status") as f:
          rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        trace.append((round(time.perf_counter() - t0, 2), round(rss / 1024.0, 1)))
      except (OSError, StopIteration):
        pass
      time.sleep(FLAGS.sample_s)
  wall = time.perf_counter() - t0
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    with open(log_path) as f:
      tail = f.read()[-2000:]
    raise cli.UserError(f"deid failed on {clip} (exit {proc.returncode}); its log ends:\n{tail}")
  with open(os.path.splitext(out)[0] + ".json") as f:
    rep = json.load(f)
  return {"clip": os.path.basename(clip), "frames": rep["video"]["num_frames"], "wall_s": round(wall, 1),
          "peak_rss_mib": round(usage.ru_maxrss / 1024.0, 1),
          "trace_peak_rss_mib": max((r for _, r in trace), default=None),
          "attack_time_s": rep.get("attack_time_s"), "command": " ".join(cmd[1:]),
          "rss_trace_s_mib": trace}


def plot(doc: dict, path: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 4))
  for r, c in zip(doc["runs"], ("tab:blue", "tab:orange")):
    t, m = zip(*r["rss_trace_s_mib"]) if r["rss_trace_s_mib"] else ((), ())
    ax.plot(t, m, color=c, label=f"{r['clip']}: {r['frames']} frames, peak {r['peak_rss_mib']:.0f} MiB")
    ax.axhline(r["peak_rss_mib"], color=c, ls="--", lw=0.8)
  ax.set_xlabel("seconds since deid started")
  ax.set_ylabel("resident memory, MiB")
  ax.set_title(f"deid memory vs video length ({doc['size']}, {doc['fps']:g} fps, "
               f"--max_iter {doc['max_iter']}): long/short peak {doc['peak_ratio']:.3f}")
  ax.legend(loc="lower right")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  from drsf_jax.io import outputs
  tmp = outputs.temp_path(path)
  fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)
  outputs.commit([(tmp, path)], overwrite=FLAGS.overwrite)


def main(argv):
  del argv
  from drsf_jax.io import outputs
  from drsf_jax.io import video
  outputs.check([(k, v) for k, v in (("output", FLAGS.output), ("plot", FLAGS.plot)) if v],
                overwrite=FLAGS.overwrite)
  with tempfile.TemporaryDirectory(prefix="drsf_memory.") as tmp:
    work = FLAGS.work_dir or tmp
    os.makedirs(work, exist_ok=True)
    long_clip, short_clip = os.path.join(work, "long.mp4"), os.path.join(work, "short.mp4")
    t0 = time.perf_counter()
    counts = write_clips(long_clip, short_clip)
    logging.info("clips written in %.0f s: %s", time.perf_counter() - t0, counts)
    runs = [run_deid(c, os.path.join(work, os.path.basename(c)[:-4] + "_deid.mkv"),
                     os.path.join(work, os.path.basename(c)[:-4] + "_deid.log"))
            for c in (short_clip, long_clip)]
  short, long_ = runs
  doc = {"size": f"{FLAGS.width}x{FLAGS.height}", "fps": FLAGS.fps, "duration_s": FLAGS.duration_s,
         "short_s": FLAGS.short_s, "max_iter": FLAGS.max_iter, "detector": FLAGS.detector,
         "gaze": FLAGS.gaze, **counts, "runs": runs,
         "peak_ratio": long_["peak_rss_mib"] / short["peak_rss_mib"],
         "measure": "ru_maxrss of the deid process (wait4); trace = /proc/PID/status VmRSS"}
  print("| clip | frames | wall s | peak RSS MiB |")
  print("| --- | --- | --- | --- |")
  for r in runs:
    print(f"| {r['clip']} | {r['frames']} | {r['wall_s']:.0f} | {r['peak_rss_mib']:.0f} |")
  print(f"long/short peak: {doc['peak_ratio']:.3f} (target <= 1.10)")
  if FLAGS.output:
    video.write_json_atomic(FLAGS.output, doc, overwrite=FLAGS.overwrite)
    print(f"wrote {FLAGS.output}")
  if FLAGS.plot:
    plot(doc, FLAGS.plot)
    print(f"wrote {FLAGS.plot}")


if __name__ == "__main__":
  cli.run(main)
