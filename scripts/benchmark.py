"""Throughput of the victims and the attack, against PyTorch eager, in one run.

For each victim set (detector; detector + landmarks; detector + landmarks + gaze) and
batch size it measures, on real frames of talking_head_a (../shared) resized to
--frame_size:

* inference frames/s: the forward of every victim on the batch (crops and warps from
  the original frames' geometry included), jitted;
* attack iterations/s: one step of the attack the pipeline runs (forward + backward of
  every victim, Adam update, L-inf projection; thresholds set so every victim is in the
  loss), the same jitted step ``deid.py`` uses on this backend;
* compile time, cold (empty persistent cache) and warm (persistent cache, in-memory
  caches cleared); XLA's FLOP count of one step and the FLOP/s it reaches, against a
  4096^3 float32 matmul measured in the same run; XLA's memory estimate of the step;
* with --compare_torch, the same computation in PyTorch eager (benchmarks/), with the
  same weights, inputs, targets and loss, and the JAX/PyTorch ratio (``speedup_vs_torch``).
  Like with like: the JAX step computes the baselines' loss (MTCNN on the original's crops
  only, the gaze models on every landmark geometry; ``benchmarks.jax_loss_options``), not the
  larger loss of deid's defaults.

--end_to_end times whole de-identification runs (frames/s) against the eager PyTorch
pipeline of benchmarks/ that recomputes crops and warps every iteration, and --startup
the default pipeline's cold compile and warm start in fresh processes. Medians of
--repeats after a warm-up. Weights: converted into --weights_dir from ../shared (FAN has
no public checkpoint here: seeded random weights, the same in both frameworks).

  python scripts/benchmark.py --compare_torch --end_to_end --startup --output B.json
  python scripts/benchmark.py --sets mtcnn --batch_sizes 4 --repeats 3     # a quick look
"""

import dataclasses
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from drsf_jax import cli
from benchmarks import jax_loss_options  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
DEFAULT_SETS = "retinaface,retinaface+fan,retinaface+fan+MPIIGaze"
flags.DEFINE_string("sets", DEFAULT_SETS, "Comma-separated victim sets; each is victims joined by '+', "
                    "in cascade order (detector, landmarks, gaze), e.g. mtcnn or retinaface+fan.")
flags.DEFINE_string("batch_sizes", "1,4,16,64", "Comma-separated batch sizes.")
flags.DEFINE_string("fan_batch_sizes", None, "Batch sizes for the sets with fan, when they should "
                    "differ from --batch_sizes (FAN-4 is ~100 GFLOP per frame and iteration).")
flags.DEFINE_integer("frame_size", 256, "Frames are talking_head_a's, resized to this square size.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement (the median is reported).")
flags.DEFINE_float("time_budget_s", 60.0, "Fewer repeats (at least 2) when one measurement would "
                   "take longer than this.")
flags.DEFINE_bool("compare_torch", False, "Also run the PyTorch eager baselines of benchmarks/.")
flags.DEFINE_bool("end_to_end", False, "Time whole de-identification runs (JAX pipeline vs the "
                  "eager PyTorch pipeline of benchmarks/ that recomputes geometry every iteration).")
flags.DEFINE_string("e2e_sets", "mtcnn,retinaface+MPIIGaze,retinaface+fan+MPIIGaze",
                    "Comma-separated victim sets of --end_to_end.")
flags.DEFINE_integer("e2e_frames", 16, "Frames of talking_head_a in --end_to_end.")
flags.DEFINE_integer("e2e_iters", 20, "Attack iterations per batch in --end_to_end (no early stop; "
                     "both sides compute the same loss, as the step rows do). "
                     "0 = each side at its defaults: the JAX pipeline as deid.py runs it (the stop "
                     "in user units, warm start, at most 150 steps), the original-like pipeline its "
                     "full 150-step budget; the utility of both written files is measured either way.")
flags.DEFINE_bool("e2e_equal_utility", False, "With --e2e_iters 0 and --compare_torch: also run the "
                  "JAX pipeline with its stop tolerances set to the utility the original-like file "
                  "reached (IoU, landmarks, and head pose / gaze where the stop tests them), and "
                  "report the speedup at equal or better utility when the JAX file is at least as "
                  "good on every measure.")
flags.DEFINE_integer("e2e_batch_size", 8, "Batch size in --end_to_end.")
flags.DEFINE_integer("e2e_frame_size", None, "--end_to_end on talking_head_a resized (bicubic) to this "
                     "square size (the face grows with it); default its own 256x256.")
flags.DEFINE_bool("startup", False, "Cold compile and warm start of the default deid pipeline "
                  "(fresh processes, empty then filled persistent cache).")
flags.DEFINE_integer("threads", None, "PyTorch threads (default: os.cpu_count(); XLA uses every core).")
flags.DEFINE_string("weights_dir", None, "Where converted weights go (default: a temporary directory).")
flags.DEFINE_string("output", None, "Write every figure to this JSON file (B.json); an existing "
                    "file is replaced only with --overwrite.")
cli.define_overwrite_flag()
flags.DEFINE_bool("startup_probe", False, "Internal: one --startup measurement in this process.")
cli.define_cache_flag()


def _median(xs):
  return float(statistics.median(xs))


def _time(fn, repeats: int, budget: float) -> list[float]:
  """Wall times of ``fn()`` after one warm-up; fewer repeats when it is slow."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  n = max(2, min(repeats, int(budget / max(first, 1e-9))))
  out = []
  for _ in range(n):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def machine_info() -> dict:
  import jax
  import jaxlib
  info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "python": platform.python_version(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
          "devices": [d.device_kind for d in jax.devices()]}
  try:
    import flax
    import optax
    info.update(flax=flax.__version__, optax=optax.__version__)
  except ImportError:
    pass
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    if names:
      info["cpu_model"] = names[0]
  except OSError:
    pass
  try:
    import torch
    info["torch"] = torch.__version__
  except ImportError:
    pass
  return info


def matmul_gflops(repeats: int) -> float:
  """float32 4096^3 matmul FLOP/s under JAX: the machine's practical ceiling."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  n = 4096
  a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
  f = jax.jit(lambda a: a @ a)
  ts = _time(lambda: f(a).block_until_ready(), repeats, 30.0)
  return 2 * n ** 3 / _median(ts) / 1e9


def shared_dir() -> str:
  return os.environ.get("DRSF_SHARED_DIR") or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")


def _shared_file(*parts) -> str:
  path = os.path.join(shared_dir(), *parts)
  if not os.path.exists(path):
    raise FileNotFoundError(f"benchmark input not found: {path} (set $DRSF_SHARED_DIR to the "
                            "directory with data/ and weights/)")
  return path


@functools.lru_cache(maxsize=1)
def _video_frames() -> tuple:
  """Every frame of talking_head_a, decoded once per run."""
  from drsf_jax.io import video
  return tuple(video.VideoReader(_shared_file("data", "talking_head_a.mp4")))


def real_frames(n: int, size: int):
  """``n`` frames of talking_head_a (every 3rd, wrapping), resized to ``size``."""
  import cv2
  import numpy as np
  allf = _video_frames()
  idx = [(3 * i) % len(allf) for i in range(n)]
  return np.stack([cv2.resize(allf[i], (size, size), interpolation=cv2.INTER_AREA)
                   if allf[i].shape[:2] != (size, size) else allf[i] for i in idx])


def _all_active_thresholds(names):
  """Every victim but the last under threshold, the last never: all V losses in the step."""
  return {n: (1e30 if i < len(names) - 1 else -1.0) for i, n in enumerate(names)}  # Losses are >= 0.


def _deidentifier(names, weights_dir, batch, max_iter=1, defaults=False):
  """The pipeline for ``names``. ``defaults``: deid.py's settings (thresholds, the stop in
  user units, the backend's loop); otherwise exactly ``max_iter`` steps of every victim, each
  computing the PyTorch baseline's loss (``benchmarks.jax_loss_options``)."""
  from drsf_jax.deid import pipeline
  det, rest = names[0], names[1:]
  align = next((n for n in rest if n == "fan"), "none")
  gaze = next((n for n in rest if n != "fan"), "none")
  if [det] + ([align] if align != "none" else []) + ([gaze] if gaze != "none" else []) != list(names):
    raise ValueError(f"victim set {'+'.join(names)} is not in cascade order detector[+fan][+gaze]")
  # verify=False: the end-to-end rows time de-identification as the original-like eager
  # pipeline does it (no re-decode and inference of the written file); the privacy guard,
  # which is not optional, is included.
  if defaults:
    return pipeline.Deidentifier(pipeline.DeidConfig(detector=det, alignment=align, gaze=gaze,
                                                     batch_size=batch, verify=False), weights_dir)
  cfg = pipeline.DeidConfig(detector=det, alignment=align, gaze=gaze, batch_size=batch,
                            max_iter=max_iter, verify=False, stop="loss")
  return pipeline.Deidentifier(cfg, weights_dir, thresholds=_all_active_thresholds(names), loop="host",
                               victim_options=jax_loss_options(names))


def prepare_batch(d, frames_u8):
  """Detections on the originals (neighbours fill misses), targets and obfuscated frames."""
  import numpy as np
  from drsf_jax.deid import temporal
  det = d.detector
  dets = det.predict(det.params, frames_u8.astype(np.float32) / 255.0)
  filled, _, no_face = temporal.fill_missing(dets)
  if no_face:
    raise ValueError(f"{d.cfg.detector} finds no face in the benchmark frames")
  return d.prepare_batch(frames_u8, filled)


def bench_jax(d, x_obf, targets, repeats, budget) -> dict:
  """Inference and attack-step timings, compile times, FLOPs and memory of one config."""
  import jax
  import jax.numpy as jnp
  from drsf_jax.deid import attacks
  b = x_obf.shape[0]
  params = [v.params for v in d.victims]
  args = (params, targets)
  thr = jnp.asarray(d.thresholds)
  loop = attacks.make_host_loop(d.loss_fn, d.attack, 1)
  infer = jax.jit(d.loss_fn)
  out = {}

  # Compile: cold (nothing cached), then warm from the persistent cache.
  jax.clear_caches()
  t0 = time.perf_counter()
  c0 = loop.init(x_obf, thr, args)
  step_lowered = loop.body.lower(c0, args)
  compiled = step_lowered.compile()
  infer.lower(x_obf, params, targets).compile()
  out["compile_s_cold"] = time.perf_counter() - t0
  jax.clear_caches()
  t0 = time.perf_counter()
  loop.init(x_obf, thr, args)
  loop.body.lower(c0, args).compile()
  infer.lower(x_obf, params, targets).compile()
  out["compile_s_warm"] = time.perf_counter() - t0

  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  try:
    mem = compiled.memory_analysis()
    out["xla_memory_bytes"] = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                  + mem.output_size_in_bytes - mem.alias_size_in_bytes)
  except (AttributeError, TypeError):
    pass

  ts = _time(lambda: infer(x_obf, params, targets).block_until_ready(), repeats, budget)
  out["inference_s"] = _median(ts)
  out["inference_frames_per_s"] = b / out["inference_s"]

  state = {"c": loop.init(x_obf, thr, args)}

  def step():
    state["c"] = loop.body(state["c"], args)
    jax.block_until_ready(state["c"][1])

  ts = _time(step, repeats, budget)
  out["step_s"] = _median(ts)
  out["step_s_all"] = ts
  out["attack_iters_per_s"] = 1.0 / out["step_s"]
  out["attack_frame_iters_per_s"] = b / out["step_s"]
  out["flops_per_iter"] = flops
  out["gflops_per_s"] = flops / out["step_s"] / 1e9
  if jax.default_backend() != "cpu":
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  return out


_TORCH_MODELS = {}  # Upstream models, loaded once and reused across batch sizes.


def bench_torch(names, sources, x_obf, targets, repeats, budget, threads) -> dict:
  """The same inference and attack step in PyTorch eager (benchmarks/torch_baselines.py)."""
  import numpy as np
  import torch
  from benchmarks import torch_baselines
  from drsf_jax.deid import attacks
  torch.set_num_threads(threads)
  ts_set = torch_baselines.TorchVictimSet(list(names), sources, list(targets),
                                          np.asarray(x_obf), eps=attacks.DEFAULT_EPS,
                                          lr=attacks.DEFAULT_LR["adam"], threads=threads,
                                          models=_TORCH_MODELS)
  _TORCH_MODELS.update(ts_set.models)
  b = x_obf.shape[0]

  def infer():
    with torch.no_grad():
      ts_set.losses(ts_set.x_obf)

  out = {}
  ts = _time(infer, repeats, budget)
  out["inference_s"] = _median(ts)
  out["inference_frames_per_s"] = b / out["inference_s"]
  ts = _time(ts_set.step, repeats, budget)
  out["step_s"] = _median(ts)
  out["step_s_all"] = ts
  out["attack_iters_per_s"] = 1.0 / out["step_s"]
  out["attack_frame_iters_per_s"] = b / out["step_s"]
  return out


def write_clip(path: str, frames: int, size: int | None = None) -> str:
  """The first ``frames`` frames of talking_head_a, lossless (FFV1), at native size or
  resized (bicubic) to ``size`` x ``size`` (the face grows with the frame)."""
  from drsf_jax.io import samples
  from drsf_jax.io import video
  r = video.VideoReader(_shared_file("data", "talking_head_a.mp4"), max_frames=frames)
  wh = (size, size) if size else (r.width, r.height)
  with video.VideoWriter(path, r.fps, wh) as w:
    for f in r:
      w.write(samples.upscaled_frames(f[None], size)[0] if size else f)
  return path


def _fmt_utility(u: dict) -> str:
  def f(v, unit):
    return "n/a" if v is None else f"{v:.3f}{unit}" if unit == "" else f"{v:.2f}{unit}"
  return (f"IoU {f(u['iou_mean'], '')}, landmarks {f(u['landmark_px_mean'], ' px')}, head pose "
          f"{f(u['head_pose_deg_mean'], ' deg')}, gaze {f(u['gaze_angle_deg_mean'], ' deg')} "
          f"(p95 {f(u['gaze_angle_deg_p95'], ' deg')}), faces lost {u['faces_lost']}")


UTILITY_HIGHER_IS_BETTER = ("iou_mean",)
UTILITY_LOWER_IS_BETTER = ("landmark_px_mean", "head_pose_deg_mean", "gaze_angle_deg_mean",
                           "gaze_angle_deg_p95", "faces_lost")


def utility_shortfalls(u: dict, ref: dict) -> list[str]:
  """The measures on which utility ``u`` is worse than ``ref`` (empty: equal or better on
  every one). A measure neither side has (no gaze model) is skipped."""
  worse = []
  for k in UTILITY_HIGHER_IS_BETTER + UTILITY_LOWER_IS_BETTER:
    a, b = u.get(k), ref.get(k)
    if a is None and b is None:
      continue
    if a is None or b is None or (a < b if k in UTILITY_HIGHER_IS_BETTER else a > b):
      worse.append(f"{k} {a} vs {b}")
  return worse


def end_to_end(names, clip, out_dir, weights_dir, sources, iters, batch, threads,
               compare_torch, equal_utility=False) -> dict:
  """Whole de-identification of ``clip`` (see :func:`write_clip`): frames/s of both sides,
  and the utility of both written files (the authorized models as ``inference.py`` runs
  them on the decoded output, against their reading of ``clip``, as ``evaluate.py`` does).

  ``iters`` 0: each side at its defaults (see ``--e2e_iters``). ``equal_utility`` (with
  ``iters`` 0 and ``compare_torch``): a third run, the JAX pipeline stopping each frame
  once the authorized models read it as well as they read the original-like file on
  average (``--e2e_equal_utility``).
  """
  from drsf_jax.deid import attacks, pipeline
  from drsf_jax.evaluation import metrics
  from drsf_jax.victims import inference
  defaults = iters == 0
  d = _deidentifier(names, weights_dir, batch, max_iter=iters, defaults=defaults)
  cfg = d.cfg
  torch_iters = cfg.max_iter if defaults else iters
  reference = inference.run(clip, d.predictor)

  def utility(path):
    s = metrics.compare(reference, inference.run(path, d.predictor))["summary"]
    return {k: s[k] for k in ("iou_mean", "landmark_px_mean", "head_pose_deg_mean",
                              "gaze_angle_deg_mean", "gaze_angle_deg_p95")} | {
        "faces_lost": s["missing_faces"]["in_prediction"]}

  warm = dataclasses.replace(cfg, max_frames=batch)  # One batch compiles every program.
  pipeline.deidentify(clip, os.path.join(out_dir, "warm.mkv"), warm, weights_dir, progress=False,
                      deidentifier=d)
  rep = pipeline.deidentify(clip, os.path.join(out_dir, "jax.mkv"), cfg, weights_dir, progress=False,
                            deidentifier=d)
  frames = rep["video"]["num_frames"]
  out = {"victims": list(names), "frames": frames, "iterations": "defaults" if defaults else iters,
         "batch_size": batch, "frame_size": [rep["video"]["width"], rep["video"]["height"]]}
  out["jax"] = {"wall_s": rep["wall_time_s"], "frames_per_second": rep["frames_per_second"],
                "iterations_mean": rep["summary"]["iterations_mean"],
                "settings": {"stop": cfg.stop, "max_iter": cfg.max_iter, "warm_start": cfg.warm_start},
                "utility": utility(os.path.join(out_dir, "jax.mkv"))}
  if compare_torch:
    from benchmarks import original_like
    t = original_like.run_original_like(clip, os.path.join(out_dir, "torch.mkv"), list(names), sources,
                                        max_frames=frames, batch_size=batch, iters=torch_iters,
                                        deid=cfg.deid, threads=threads, eps=cfg.eps,
                                        lr=attacks.DEFAULT_LR["adam"])
    t["utility"] = utility(os.path.join(out_dir, "torch.mkv"))
    out["torch_original_like"] = t
    out["speedup_vs_torch"] = rep["frames_per_second"] / t["frames_per_second"]
    if equal_utility and defaults:
      tu = t["utility"]
      # The stop's tolerances become the original-like file's mean reading; stop_score
      # reads them from d.cfg between steps, nothing compiled depends on them.
      matched = dataclasses.replace(
          cfg, stop_iou=tu["iou_mean"], stop_landmarks_px=tu["landmark_px_mean"],
          **({"stop_head_pose_deg": tu["head_pose_deg_mean"]} if tu["head_pose_deg_mean"] is not None else {}),
          **({"stop_gaze_deg": tu["gaze_angle_deg_mean"]} if tu["gaze_angle_deg_mean"] is not None else {}))
      d.cfg = matched
      try:
        rep_m = pipeline.deidentify(clip, os.path.join(out_dir, "jax_matched.mkv"), matched, weights_dir,
                                    progress=False, deidentifier=d)
      finally:
        d.cfg = cfg
      u = utility(os.path.join(out_dir, "jax_matched.mkv"))
      worse = utility_shortfalls(u, tu)
      out["jax_equal_utility"] = {
          "wall_s": rep_m["wall_time_s"], "frames_per_second": rep_m["frames_per_second"],
          "iterations_mean": rep_m["summary"]["iterations_mean"],
          "settings": {"stop": matched.stop, "max_iter": matched.max_iter, "warm_start": matched.warm_start,
                       "stop_iou": matched.stop_iou, "stop_landmarks_px": matched.stop_landmarks_px,
                       "stop_head_pose_deg": matched.stop_head_pose_deg,
                       "stop_gaze_deg": matched.stop_gaze_deg},
          "utility": u, "worse_than_torch_on": worse}
      out["speedup_at_equal_utility"] = (None if worse else
                                         rep_m["frames_per_second"] / t["frames_per_second"])
  return out


def startup_probe():
  """Runs in a fresh process: the default pipeline on one batch of the embedded sample."""
  t_start = time.perf_counter()
  import numpy as np
  from drsf_jax.deid import pipeline
  from drsf_jax.deid import temporal
  from drsf_jax.io import samples
  cfg = pipeline.DeidConfig(max_iter=2)  # The compiled programs do not depend on max_iter.
  frames = samples.astronaut_clip(cfg.batch_size)
  t0 = time.perf_counter()
  d = pipeline.Deidentifier(cfg, FLAGS.weights_dir)
  t_load = time.perf_counter() - t0

  def one_batch():
    dets = d.detect_video(iter(frames))
    filled, _, _ = temporal.fill_missing(dets)
    return d.attack_batch(frames, filled)

  t0 = time.perf_counter()
  one_batch()
  t_first = time.perf_counter() - t0
  t_ready = time.perf_counter() - t_start
  steady = [0.0] * 3
  for i in range(3):
    t0 = time.perf_counter()
    one_batch()
    steady[i] = time.perf_counter() - t0
  print("STARTUP_PROBE " + json.dumps({
      "load_s": t_load, "first_batch_s": t_first, "steady_batch_s": float(np.median(steady)),
      "compile_s": t_first - float(np.median(steady)), "process_to_first_batch_s": t_ready,
      "config": {"detector": cfg.detector, "attack": cfg.attack, "deid": cfg.deid,
                 "batch_size": cfg.batch_size, "frame_size": int(frames.shape[1])}}))


def startup(weights_dir) -> dict:
  """Cold then warm start of the default pipeline in fresh processes (own cache dir)."""
  cache = tempfile.mkdtemp(prefix="drsf_bench_cache_")
  out = {}
  for what in ("cold", "warm"):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--startup_probe",
                        "--weights_dir", weights_dir, "--compilation_cache_dir", cache],
                       capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    line = [l for l in p.stdout.splitlines() if l.startswith("STARTUP_PROBE ")]
    if p.returncode or not line:
      raise RuntimeError(f"startup probe failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    out[what] = {**json.loads(line[0].split(" ", 1)[1]), "process_wall_s": wall}
  return out


def _fmt(x, spec=".2f"):
  return "—" if x is None else format(x, spec)


def main(argv):
  del argv
  if FLAGS.startup_probe:
    return startup_probe()
  threads = FLAGS.threads or os.cpu_count()
  sets = [tuple(s.split("+")) for s in FLAGS.sets.split(",") if s]
  e2e_sets = [tuple(s.split("+")) for s in FLAGS.e2e_sets.split(",") if s] if FLAGS.end_to_end else []
  batches = [int(b) for b in FLAGS.batch_sizes.split(",") if b]
  fan_batches = [int(b) for b in (FLAGS.fan_batch_sizes or FLAGS.batch_sizes).split(",") if b]
  if not sets or not batches or not fan_batches or min(batches + fan_batches) < 1:
    raise cli.UserError("--sets and --batch_sizes need at least one entry each (batch sizes >= 1)")
  if FLAGS.e2e_iters < 0:
    raise cli.UserError(f"--e2e_iters must be >= 0 (0: each side at its defaults), got {FLAGS.e2e_iters}")
  if FLAGS.e2e_frame_size is not None and FLAGS.e2e_frame_size < 64:
    raise cli.UserError(f"--e2e_frame_size must be >= 64 (pixels), got {FLAGS.e2e_frame_size}")
  if FLAGS.e2e_equal_utility and not (FLAGS.end_to_end and FLAGS.compare_torch and FLAGS.e2e_iters == 0):
    raise cli.UserError("--e2e_equal_utility needs --e2e_iters 0 with --end_to_end and --compare_torch "
                        "(it matches the original-like file of the defaults run)")
  if FLAGS.output:
    from drsf_jax.io import outputs
    outputs.check([("output", FLAGS.output)], overwrite=FLAGS.overwrite)
  from drsf_jax.victims import detectors
  from drsf_jax.victims import registry as victims
  known = set(detectors.DETECTORS) | set(victims.ALIGNMENTS) | set(victims.GAZE_MODELS)
  for s in sets + e2e_sets:
    for n in s:
      if n not in known or n == "none":
        raise cli.UserError(f"unknown victim {n!r} in --sets/--e2e_sets; known: "
                            f"{', '.join(sorted(known - {'none'}))}")
  with tempfile.TemporaryDirectory(prefix="drsf_bench_") as scratch:  # Removed at the end.
    _run(sets, batches, fan_batches, e2e_sets, threads,
         FLAGS.weights_dir or os.path.join(scratch, "weights"), scratch)


def _run(sets, batches, fan_batches, e2e_sets, threads, weights_dir, scratch):
  """The measurements of :func:`main`, after the flags are checked."""
  import jax
  needed = sorted({n for s in sets + e2e_sets for n in s} | ({"mtcnn"} if FLAGS.startup else set()))
  from drsf_jax.io import checkpoints
  have = all(os.path.exists(checkpoints.weights_path(n, weights_dir)) for n in needed)
  sources = {}
  if FLAGS.compare_torch or not have:
    from benchmarks import torch_common  # Converts from ../shared (needs torch).
    print(f"converting weights into {weights_dir} ...", flush=True)
    sources = torch_common.prepare_weights(weights_dir, shared_dir(), tuple(needed))

  result = {"schema": "drsf-jax/benchmark/1", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "machine": machine_info(), "torch_threads": threads if FLAGS.compare_torch else None,
            "settings": {"frame_size": FLAGS.frame_size, "repeats": FLAGS.repeats,
                         "time_budget_s": FLAGS.time_budget_s, "attack": "adam",
                         "weights": {n: os.path.basename(p) for n, p in sources.items()} or weights_dir},
            "configs": [], "speedup_vs_torch": {}}
  print(f"machine: {result['machine'].get('cpu_model', result['machine']['processor'])}, "
        f"{os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()})", flush=True)
  result["matmul_gflops"] = matmul_gflops(FLAGS.repeats)
  print(f"float32 4096^3 matmul: {result['matmul_gflops']:.0f} GFLOP/s", flush=True)

  header = ("| victims | batch | JAX inf fr/s | JAX it/s | torch inf fr/s | torch it/s | "
            "speedup it/s | GFLOP/it | % matmul | compile cold/warm s |")
  rows = []
  for names in sets:
    key = "+".join(names)
    result["speedup_vs_torch"][key] = {}
    for b in (fan_batches if "fan" in names else batches):
      print(f"{key}, batch {b} ...", flush=True)
      d = _deidentifier(names, weights_dir, b)
      # targets = (per-victim targets, perturbation mask, obfuscated frames): what the JAX
      # loss takes; the PyTorch baseline takes the per-victim targets.
      x_obf, targets = prepare_batch(d, real_frames(b, FLAGS.frame_size))
      entry = {"set": key, "victims": list(names), "batch": b, "frame_size": FLAGS.frame_size}
      entry["jax"] = bench_jax(d, x_obf, targets, FLAGS.repeats, FLAGS.time_budget_s)
      entry["jax"]["fraction_of_matmul"] = entry["jax"]["gflops_per_s"] / result["matmul_gflops"]
      if FLAGS.compare_torch:
        entry["torch"] = bench_torch(names, sources, x_obf, targets[0], FLAGS.repeats,
                                     FLAGS.time_budget_s, threads)
        entry["speedup_vs_torch"] = {
            "attack": entry["jax"]["attack_iters_per_s"] / entry["torch"]["attack_iters_per_s"],
            "inference": entry["jax"]["inference_frames_per_s"] / entry["torch"]["inference_frames_per_s"]}
        result["speedup_vs_torch"][key][str(b)] = entry["speedup_vs_torch"]["attack"]
      result["configs"].append(entry)
      j, t = entry["jax"], entry.get("torch", {})
      row = (f"| {key} | {b} | {j['inference_frames_per_s']:.2f} | {j['attack_iters_per_s']:.3f} | "
             f"{_fmt(t.get('inference_frames_per_s'))} | {_fmt(t.get('attack_iters_per_s'), '.3f')} | "
             f"{_fmt(entry.get('speedup_vs_torch', {}).get('attack'))}x | "
             f"{j['flops_per_iter'] / 1e9:.1f} | {100 * j['fraction_of_matmul']:.0f}% | "
             f"{j['compile_s_cold']:.1f} / {j['compile_s_warm']:.1f} |")
      rows.append(row)
      print(row, flush=True)
      del d, x_obf, targets
      if FLAGS.output:  # Partial results survive an interrupted run.
        _write(FLAGS.output, result)

  if FLAGS.end_to_end:
    result["end_to_end"] = []
    clip = write_clip(os.path.join(scratch, "clip.mkv"), FLAGS.e2e_frames, FLAGS.e2e_frame_size)
    for names in e2e_sets:
      print(f"end to end: {'+'.join(names)}, {FLAGS.e2e_frames} frames, {FLAGS.e2e_iters} iterations ...",
            flush=True)
      out_dir = tempfile.mkdtemp(prefix="e2e_", dir=scratch)
      result["end_to_end"].append(end_to_end(names, clip, out_dir, weights_dir, sources,
                                             FLAGS.e2e_iters, FLAGS.e2e_batch_size, threads,
                                             FLAGS.compare_torch, FLAGS.e2e_equal_utility))
      if FLAGS.output:
        _write(FLAGS.output, result)
  if FLAGS.startup:
    print("startup of the default pipeline (fresh processes) ...", flush=True)
    result["startup"] = startup(weights_dir)
  result["targets"] = targets_summary(result)

  print()
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  print("\n".join(rows))
  for e in result.get("end_to_end", []):
    line = (f"end to end {'+'.join(e['victims'])} ({e['frames']} frames, {e['iterations']} it): "
            f"JAX {e['jax']['frames_per_second']:.3f} frames/s")
    if "torch_original_like" in e:
      line += (f", PyTorch original-like {e['torch_original_like']['frames_per_second']:.3f} frames/s, "
               f"speedup {e['speedup_vs_torch']:.2f}x")
    print(line)
    for side in ("jax", "torch_original_like", "jax_equal_utility"):
      if side in e:
        print(f"  utility of {side}'s written file: {_fmt_utility(e[side]['utility'])}")
    if "jax_equal_utility" in e:
      m = e["jax_equal_utility"]
      print(f"  JAX stopped at the original-like file's utility: {m['frames_per_second']:.3f} frames/s, "
            f"{m['iterations_mean']:.1f} mean iterations, " + (
                f"speedup at equal or better utility {e['speedup_at_equal_utility']:.2f}x"
                if e["speedup_at_equal_utility"] is not None else
                f"not at equal utility (worse on {', '.join(m['worse_than_torch_on'])})"))
  if "startup" in result:
    s = result["startup"]
    print(f"default pipeline: cold compile {s['cold']['compile_s']:.1f} s, warm compile "
          f"{s['warm']['compile_s']:.1f} s, warm start to first batch {s['warm']['process_to_first_batch_s']:.1f} s")
  for k, v in result["targets"].items():
    print(f"target {k}: {v}")
  if FLAGS.output:
    _write(FLAGS.output, result)
    print(f"wrote {FLAGS.output}")


def targets_summary(result) -> dict:
  """The issue's four targets, each with the measured figure and pass/fail."""
  out = {}
  sp = result.get("speedup_vs_torch") or {}
  if any(sp.values()):
    worst = {k: min(v.values()) for k, v in sp.items() if v}
    out["a_attack_vs_torch>=1.0"] = {"worst_per_set": worst, "met": all(x >= 1.0 for x in worst.values())}
  e2e = {"+".join(e["victims"]): e["speedup_vs_torch"] for e in result.get("end_to_end", [])
         if "speedup_vs_torch" in e}
  if e2e:
    out["b_end_to_end_vs_torch>=1.5"] = {"speedup_per_set": e2e,
                                         "met": all(v >= 1.5 for v in e2e.values())}
  fan = [c for c in result["configs"] if "fan" in c["victims"]]
  if fan:
    best = max(c["jax"]["fraction_of_matmul"] for c in fan)
    out["c_fan_fraction_of_matmul>=0.70"] = {"best": best, "met": best >= 0.70}
  s = result.get("startup")
  if s:
    out["d_cold_compile<60s_warm_start<5s"] = {
        "cold_compile_s": s["cold"]["compile_s"], "warm_compile_s": s["warm"]["compile_s"],
        "warm_process_to_first_batch_s": s["warm"]["process_to_first_batch_s"],
        "met": s["cold"]["compile_s"] < 60 and s["warm"]["compile_s"] < 5}
  return out


def _write(path, obj):
  from drsf_jax.io import video
  video.write_json_atomic(path, obj)


if __name__ == "__main__":
  cli.run(main)
