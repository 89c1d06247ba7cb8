"""The bad-input matrix of issue 16, run as a user runs it.

Each case runs a script in a subprocess on real files in a temporary directory (a clip
of talking_head_a) and checks the exit status, the one-line message (``error: ...`` as
the last stderr line, the only such line, no traceback), and, byte for byte (sha256 of
every file, and the set of paths, hidden ones included), that every file that existed
before is unchanged and that nothing partial was left. Most cases are refused before any
model is loaded (a few seconds each); a few need a real run (``--max_iter 1``).
"""

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO, read_frames, shared_file
from drsf_jax.io import video

FRAMES = 6


def _script(name):
  return os.path.join(REPO, "scripts", name)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  """A 6-frame FFV1 clip of talking_head_a (30 fps and an absurd 90000 fps), a 1x1 clip,
  and a compilation cache shared by this module's subprocesses."""
  d = tmp_path_factory.mktemp("bad_input_assets")
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), FRAMES)
  with video.VideoWriter(str(d / "clip.mkv"), 30.0, (256, 256)) as w:
    for f in frames:
      w.write(f)
  # An FFV1 AVI written by another tool (OpenCV's writer), then patched to declare 90000 fps.
  import cv2
  wr = cv2.VideoWriter(str(d / "clip.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (256, 256))
  assert wr.isOpened()
  for f in frames:
    wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  wr.release()
  _declare_fps(str(d / "clip.avi"), str(d / "clip_90000fps.avi"), 90000)
  # A 1x1 video: FFmpeg's ffv1 encoder refuses it, MJPG writes it (an input a user may have).
  wr = cv2.VideoWriter(str(d / "tiny.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (1, 1))
  if wr.isOpened():
    for _ in range(3):
      wr.write(np.full((1, 1, 3), 128, np.uint8))
  wr.release()
  return {"dir": d, "cache": str(d / "cache")}


def _declare_fps(src, dst, rate):
  """Copies an AVI declaring ``rate`` fps (stream header dwScale=1, dwRate=rate), as files
  from other tools do; OpenCV's writer itself clamps to 30000."""
  b = bytearray(open(src, "rb").read())
  i = b.find(b"strh")
  assert i > 0
  off = i + 8 + 20  # fccType, fccHandler, dwFlags, wPriority, wLanguage, dwInitialFrames.
  b[off:off + 8] = struct.pack("<II", 1, rate)
  with open(dst, "wb") as f:
    f.write(b)
  assert abs(video.VideoReader(dst).fps - rate) < 1


def snapshot(root):
  """{relative path: sha256 (files) / 'dir' / 'link->target'} of everything under root."""
  out = {}
  for r, dirs, files in os.walk(root):
    for n in dirs:
      p = os.path.join(r, n)
      out[os.path.relpath(p, root)] = f"link->{os.readlink(p)}" if os.path.islink(p) else "dir"
    for n in files:
      p = os.path.join(r, n)
      if os.path.islink(p):
        out[os.path.relpath(p, root)] = f"link->{os.readlink(p)}"
      else:
        with open(p, "rb") as f:
          out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def run(script, args, cwd, assets, weights=None, timeout=600):
  env = dict(os.environ, DRSF_JAX_CACHE=assets["cache"])
  cmd = [sys.executable, _script(script), *args]
  if weights:
    cmd += ["--weights_dir", weights]
  return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def one_line_error(p, needle, rc=1):
  assert p.returncode == rc, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
  lines = p.stderr.strip().splitlines()
  assert lines, p.stderr
  assert lines[-1].startswith("error: "), p.stderr[-2000:]
  assert sum(l.startswith("error:") for l in lines) == 1, p.stderr[-2000:]
  assert "Traceback" not in p.stderr, p.stderr[-2000:]
  assert needle in lines[-1], lines[-1]


def make_work(root, assets):
  """root/ with d/in.mkv (the real clip), d/sub/notes.txt, other.mkv (a user's file), a
  symlink link.mkv -> d/in.mkv, ref.json and a file named weights_file."""
  root = os.fspath(root)
  os.makedirs(os.path.join(root, "d", "sub"))
  shutil.copy(assets["dir"] / "clip.mkv", os.path.join(root, "d", "in.mkv"))
  with open(os.path.join(root, "d", "sub", "notes.txt"), "w") as f:
    f.write("unrelated notes\n")
  with open(os.path.join(root, "other.mkv"), "wb") as f:
    f.write(b"a user's file, not a video" * 10)
  os.symlink(os.path.join("d", "in.mkv"), os.path.join(root, "link.mkv"))
  with open(os.path.join(root, "ref.json"), "w") as f:
    f.write('{"not": "read"}\n')
  with open(os.path.join(root, "weights_file"), "w") as f:
    f.write("a file, not a directory\n")
  return root


@pytest.fixture
def work(tmp_path, assets):
  return Path(make_work(tmp_path / "w", assets))


def unwritable_dir(tmp_path):
  """A directory this process cannot create files in (root ignores mode bits: /sys)."""
  if os.geteuid() != 0:
    d = os.path.join(tmp_path, "ro")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o555)
    return d
  try:
    fd, p = tempfile.mkstemp(dir="/sys")
  except OSError:
    return "/sys"
  os.close(fd)
  os.unlink(p)
  pytest.skip("no unwritable directory available to root here")


# ---- refused before any model is loaded ---------------------------------------------------

def _x_and_x_deid(root):
  shutil.copy(os.path.join(root, "d", "in.mkv"), os.path.join(root, "d", "in_deid.mkv"))


def _list_file(root):
  _x_and_x_deid(root)
  with open(os.path.join(root, "list.txt"), "w") as f:
    f.write("d/in.mkv\nd/in_deid.mkv\n")


def _foreign_report_md(root):
  os.makedirs(os.path.join(root, "rep"))
  with open(os.path.join(root, "rep", "report.md"), "w") as f:
    f.write("my own notes\n")


def _tiny(assets):
  def setup(root):
    shutil.copy(assets["dir"] / "tiny.avi", os.path.join(root, "tiny.avi"))
  return setup


def fast_cases(assets, ro):
  """(name, script, args, expected message, setup) of every case refused before any model
  loads: the data-loss, NaN and message cases of issue 16."""
  d = ["-i", "d/in.mkv"]
  cases = [
      ("png-seq onto a directory with files", "deid.py", d + ["-o", "d", "--codec", "png-seq"],
       "output d is a directory with files in it", None),
      ("report onto the input", "deid.py", d + ["-o", "o.mkv", "--report", "d/in.mkv"],
       "report d/in.mkv would overwrite the input d/in.mkv", None),
      ("report onto the output", "deid.py", d + ["-o", "o.mkv", "--report", "o.mkv"],
       "report o.mkv and output o.mkv are the same file", None),
      ("output onto the input, another spelling", "deid.py", d + ["-o", "d/sub/../in.mkv"],
       "would overwrite the input", None),
      ("output onto the input through a symlink", "deid.py", d + ["-o", "link.mkv", "--overwrite"],
       "would overwrite the input", None),
      ("output names an existing directory, even with --overwrite", "deid.py",
       d + ["-o", "d/sub", "--overwrite"], "output d/sub is a directory", None),
      ("output names a user's file", "deid.py", d + ["-o", "other.mkv"],
       "output other.mkv exists; pass --overwrite", None),
      ("input is a directory", "deid.py", ["-i", "d", "-o", "o.mkv"], "input d is a directory", None),
      ("webm container", "deid.py", d + ["-o", "o.webm"], "codec ffv1 cannot be written to a .webm file", None),
      ("unwritable report directory", "deid.py", d + ["-o", "o.mkv", "--report", os.path.join(ro, "r.json")],
       "is not writable", None),
      ("alpha nan", "deid.py", d + ["-o", "o.mkv", "--alpha", "nan"], "alpha must be a finite number", None),
      ("lr inf", "deid.py", d + ["-o", "o.mkv", "--lr", "inf"], "lr must be a finite number", None),
      ("mask_scale nan", "deid.py", d + ["-o", "o.mkv", "--mask_scale", "nan"],
       "mask_scale must be a finite number", None),
      ("mask_scale 0.01", "deid.py", d + ["-o", "o.mkv", "--mask_scale", "0.01"],
       "mask_scale must be in [1, 10]", None),
      ("corpus: output dir is the input dir", "deid.py", ["--input_list", "d", "--output_dir", "d"],
       "is the input directory", _x_and_x_deid),
      ("corpus: output dir inside the input dir", "deid.py", ["--input_list", "d", "--output_dir", "d/sub"],
       "is inside the input directory", None),
      ("corpus: x.mkv's output onto the input x_deid.mkv", "deid.py",
       ["--input_list", "list.txt", "--output_dir", "d"], "would overwrite the input", _list_file),
      ("inference onto its input", "inference.py", ["-i", "d/in.mkv", "-o", "d/in.mkv"],
       "would overwrite the input", None),
      ("evaluate onto its reference", "evaluate.py",
       ["--reference", "ref.json", "--prediction", "d/in.mkv", "--output", "ref.json"],
       "would overwrite the input", None),
      ("evaluate's CSV is its output", "evaluate.py",
       ["--reference", "ref.json", "--prediction", "d/in.mkv", "--output", "r.csv"], "are the same file", None),
      ("visualize onto its input through a symlink", "visualize.py", ["-i", "d/in.mkv", "-o", "link.mkv"],
       "would overwrite the input", None),
      ("report.py over a user's file", "report.py", ["-i", "d/in.mkv", "-o", "rep"],
       "report.md rep/report.md exists; pass --overwrite", _foreign_report_md),
      ("convert_weights: --weights_dir is a file", "convert_weights.py",
       ["--model", "mtcnn", "--weights_dir", "weights_file"], "is a file, not a directory", None),
      ("convert_weights: --weights_dir unwritable", "convert_weights.py",
       ["--model", "mtcnn", "--weights_dir", os.path.join(ro, "w")], "is not writable", None),
  ]
  if os.path.isfile(assets["dir"] / "tiny.avi"):
    cases.append(("1x1 video", "deid.py", ["-i", "tiny.avi", "-o", "o.mkv"],
                  "1x1 frames are too small for codec ffv1", _tiny(assets)))
  return cases


def test_refused_before_any_model_loads_and_nothing_changes(tmp_path, assets):
  """Every fast case in its own directory, four subprocesses at a time."""
  from concurrent.futures import ThreadPoolExecutor
  ro = unwritable_dir(tmp_path)
  cases = fast_cases(assets, ro)

  def one(i):
    name, script, args, needle, setup = cases[i]
    root = make_work(tmp_path / f"case{i}", assets)
    if setup:
      setup(root)
    before = snapshot(root)
    p = run(script, args, root, assets,
            weights=None if script == "convert_weights.py" else os.path.join(root, "no_weights"))
    try:
      one_line_error(p, needle)
      assert snapshot(root) == before, "files changed"
    except AssertionError as e:
      return f"{name}: {e}"
    return None

  with ThreadPoolExecutor(max_workers=4) as pool:
    failures = [f for f in pool.map(one, range(len(cases))) if f]
  assert not failures, "\n".join(failures)


# ---- real runs -----------------------------------------------------------------------------

RUN = ["--max_iter", "1", "--max_frames", "4", "--batch_size", "4", "--progress=false", "-d", "retinaface"]


def test_run_cleans_stale_parts_records_written_fps_and_needs_overwrite(work, assets, real_weights):
  """A SIGKILLed run left .o.*.part.* files; the next run removes them, writes o.mkv + o.json
  (recording the rate the file declares for a 90000 fps input: FFmpeg caps it at 30000;
  the frames' timestamps are Matroska's 1 ms steps), and a third run needs --overwrite."""
  shutil.copy(assets["dir"] / "clip_90000fps.avi", work / "fast.avi")
  for stale in (".o.k1l2m3q7.part.mkv", ".o.n4o5p6_x.part.json"):
    (work / stale).write_bytes(b"partial")
  (work / ".o.x.abcdefgh.part.mkv").write_bytes(b"another output's temporary: kept")
  before = snapshot(work)
  p = run("deid.py", ["-i", "fast.avi", "-o", "o.mkv", *RUN], work, assets, real_weights)
  assert p.returncode == 0, p.stderr[-3000:]
  after = snapshot(work)
  stale = {".o.k1l2m3q7.part.mkv", ".o.n4o5p6_x.part.json"}
  assert set(after) == (set(before) - stale) | {"o.mkv", "o.json"}
  assert all(after[k] == v for k, v in before.items() if k not in stale)
  with open(work / "o.json") as f:
    rep = json.load(f)
  assert rep["video"]["input_fps"] == 90000.0 and rep["video"]["fps"] == video.probe(str(work / "o.mkv"))[1]
  assert rep["video"]["fps"] == 30000.0 and rep["video"]["num_frames"] == 4
  r = video.VideoReader(str(work / "o.mkv"))
  assert len(list(r)) == 4 and r.timestamps == [0.0, 0.001, 0.002, 0.003]
  assert os.stat(work / "o.mkv").st_mode & 0o077 == 0o666 & ~_umask() & 0o077  # Not private.
  before = snapshot(work)
  p = run("deid.py", ["-i", "fast.avi", "-o", "o.mkv", *RUN], work, assets, real_weights)
  one_line_error(p, "output o.mkv exists; pass --overwrite")
  assert snapshot(work) == before
  p = run("deid.py", ["-i", "fast.avi", "-o", "o.mkv", "--overwrite", *RUN], work, assets, real_weights)
  assert p.returncode == 0, p.stderr[-3000:]
  after = snapshot(work)
  assert set(after) == set(before) and after["fast.avi"] == before["fast.avi"]
  assert after["o.json"] != before["o.json"]  # Replaced (wall times differ).


def _umask():
  m = os.umask(0)
  os.umask(m)
  return m


def test_png_sequence_into_an_empty_directory(work, assets, real_weights):
  (work / "seq").mkdir()
  before = snapshot(work)
  p = run("deid.py", ["-i", "d/in.mkv", "-o", "seq", "--codec", "png-seq", *RUN], work, assets,
          real_weights)
  assert p.returncode == 0, p.stderr[-3000:]
  after = snapshot(work)
  new = {f"seq/{i:06d}.png" for i in range(4)} | {"seq.json"}
  assert set(after) == set(before) | new
  assert all(after[k] == v for k, v in before.items() if k != "seq")
  assert os.stat(work / "seq").st_mode & 0o777 == 0o777 & ~_umask()


def test_ctrl_c_leaves_nothing(work, assets, real_weights):
  before = snapshot(work)
  env = dict(os.environ, DRSF_JAX_CACHE=assets["cache"])
  p = subprocess.Popen([sys.executable, _script("deid.py"), "-i", "d/in.mkv", "-o", "o.mkv",
                        "--weights_dir", real_weights, "--max_iter", "500", "--max_frames", "4",
                        "--batch_size", "4", "--progress=false", "-d", "retinaface"],
                       cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  deadline = time.time() + 300
  seen = False
  while time.time() < deadline and p.poll() is None:
    if any(n.startswith(".o.") and ".part" in n for n in os.listdir(work)):
      seen = True
      time.sleep(0.5)  # Inside the attack.
      p.send_signal(signal.SIGINT)
      break
    time.sleep(0.05)
  out, err = p.communicate(timeout=120)
  assert seen, f"the run ended before writing began: {err[-2000:]}"
  res = subprocess.CompletedProcess(p.args, p.returncode, out, err)
  one_line_error(res, "interrupted, nothing written", rc=130)
  assert snapshot(work) == before


# ---- the rule itself, in process (no subprocess, no model) ---------------------------------

def test_hard_links_and_spellings_resolve_to_the_input(tmp_path):
  from drsf_jax.io import outputs
  (tmp_path / "in.mkv").write_bytes(b"input")
  os.link(tmp_path / "in.mkv", tmp_path / "hard.mkv")
  for out in ("hard.mkv", "./in.mkv", "sub/../in.mkv"):
    with pytest.raises(ValueError, match="would overwrite the input"):
      outputs.check([("output", str(tmp_path / out))], [str(tmp_path / "in.mkv")], overwrite=True)
  outputs.check([("output", str(tmp_path / "new.mkv"))], [str(tmp_path / "in.mkv")])


def test_commit_is_all_or_nothing_and_never_clobbers_without_overwrite(tmp_path):
  from drsf_jax.io import outputs
  a, b = str(tmp_path / "a.json"), str(tmp_path / "b.mkv")
  outputs.check([("report", a), ("output", b)])
  ta, tb = outputs.temp_path(a), outputs.temp_path(b)
  for t in (ta, tb):
    with open(t, "w") as f:
      f.write("new")
  with open(b, "w") as f:  # Appears while the run writes: the user's file.
    f.write("user's")
  with pytest.raises(ValueError, match="appeared while this run was writing"):
    outputs.commit([(ta, a), (tb, b)])
  assert sorted(os.listdir(tmp_path)) == ["b.mkv"]  # a.json rolled back, temporaries gone.
  assert open(b).read() == "user's"
  ta, tb = outputs.temp_path(a), outputs.temp_path(b)
  outputs.commit([(ta, a), (tb, b)], overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["a.json", "b.mkv"]


def test_stale_parts_of_this_output_only(tmp_path):
  from drsf_jax.io import outputs
  names = [".o.abcdefgh.part.mkv", ".o.x.abcdefgh.part.mkv", ".o.abc.part.mkv", ".o.abcdefgh.part.json"]
  for n in names:
    (tmp_path / n).write_bytes(b"x")
  (tmp_path / ".seq.zzzzzzzz.part").mkdir()
  (tmp_path / ".seq.zzzzzzzz.part" / "notes.txt").write_text("not a frame")
  assert [os.path.basename(p) for p in outputs.remove_stale_parts(str(tmp_path / "o.mkv"))] == [names[0]]
  assert outputs.remove_stale_parts(str(tmp_path / "seq")) == []  # Holds a non-frame file.
  assert sorted(os.listdir(tmp_path)) == sorted(names[1:] + [".seq.zzzzzzzz.part"])


def test_float_settings_must_be_finite_and_in_range():
  from drsf_jax.deid import attacks
  from drsf_jax.deid import pipeline
  for bad in (dict(eps=float("nan")), dict(eps=float("inf")), dict(alpha=float("nan")), dict(alpha=2.0),
              dict(lr=float("inf")), dict(lr=0.0), dict(mask_scale=float("nan")), dict(mask_scale=0.99),
              dict(mask_scale=float("inf")), dict(mask_scale=11.0)):
    with pytest.raises(ValueError):
      pipeline.DeidConfig(**bad).validate()
  with pytest.raises(ValueError, match="momentum"):
    attacks.make_attack("mi-fgsm", momentum=float("nan"))
  pipeline.DeidConfig(mask_scale=1.0, alpha=1.0, eps=1.0, lr=5.0).validate()
