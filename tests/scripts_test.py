"""The absl scripts as a user runs them: one-line errors, exit codes, the conversion path."""

import os
import subprocess
import sys

import pytest

from tests.support import REPO, shared_file


def run(script, *args, env=None):
  e = dict(os.environ)
  e.update(env or {})
  e.setdefault("DRSF_JAX_CACHE", "none")
  p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", script), *args],
                     capture_output=True, text=True, env=e, timeout=600)
  return p.returncode, p.stdout, p.stderr


def _one_line_error(stderr, needle):
  lines = [l for l in stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1, stderr
  assert needle in lines[0], lines[0]
  assert "Traceback" not in stderr


def test_convert_retinaface_gets_its_anchors_without_flags(tmp_path):
  pytest.importorskip("torch")
  src = shared_file("weights", "retinaface_mobilenet0.25.pth")
  rc, out, err = run("convert_weights.py", "--model", "retinaface", "--src", src,
                     "--weights_dir", str(tmp_path))
  assert rc == 0, err
  assert '"min_sizes": [[10, 20], [32, 64], [128, 256]]' in out
  assert (tmp_path / "retinaface.msgpack").exists()
  # The same keys from an unknown file get the upstream anchors.
  import torch
  unknown = tmp_path / "other.pth"
  sd = torch.load(src, map_location="cpu")
  sd["body.stage1.0.0.weight"] = sd["body.stage1.0.0.weight"] * 1.0001
  torch.save(sd, str(unknown))
  rc, out, err = run("convert_weights.py", "--model", "retinaface", "--src", str(unknown),
                     "--weights_dir", str(tmp_path / "u"))
  assert rc == 0, err
  assert '"min_sizes": [[16, 32], [64, 128], [256, 512]]' in out


def test_conversion_errors_are_one_line(tmp_path):
  pytest.importorskip("torch")
  rc, _, err = run("convert_weights.py", "--model", "yolo", "--src", "x.pth")
  assert rc != 0 and "yolo" in err
  corrupt = tmp_path / "corrupt.pth"
  corrupt.write_bytes(b"\x80\x02garbage" * 100)
  rc, _, err = run("convert_weights.py", "--model", "retinaface", "--src", str(corrupt),
                   "--weights_dir", str(tmp_path))
  assert rc == 1
  _one_line_error(err, "not a readable PyTorch checkpoint")
  # A checkpoint of the wrong family names a key; the known MPIIGaze file names itself.
  rc, _, err = run("convert_weights.py", "--model", "retinaface", "--src",
                   shared_file("weights", "mpiigaze_resnet_preact.pth"), "--weights_dir", str(tmp_path))
  assert rc == 1
  _one_line_error(err, "of model 'MPIIGaze', not 'retinaface'")
  rc, _, err = run("convert_weights.py", "--model", "missing_src_model_fan_x", "--src", "a")
  assert rc != 0
  rc, _, err = run("convert_weights.py", "--model", "fan", "--src", str(tmp_path / "nope.zip"))
  assert rc == 1
  _one_line_error(err, "checkpoint not found")
  rc, _, err = run("convert_weights.py", "--model", "ETH-XGaze", "--download",
                   "--weights_dir", str(tmp_path))
  assert rc == 1
  _one_line_error(err, "no pinned sha256")


def test_download_offline_error_path(tmp_path):
  pytest.importorskip("torch")
  rc, _, err = run("convert_weights.py", "--model", "MPIIGaze", "--download", "--weights_dir", str(tmp_path),
                   env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                        "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
  assert rc == 1
  _one_line_error(err, "download of https://")
  assert not any(p.endswith(".part") for _, _, fs in os.walk(tmp_path) for p in fs)


def test_missing_weights_name_the_convert_command(tmp_path):
  rc, _, err = run("detect.py", "--detector", "retinaface", "--weights_dir", str(tmp_path))
  assert rc == 1
  _one_line_error(err, "convert_weights.py --model retinaface")
  rc, _, err = run("deid.py", "-i", shared_file("data", "talking_head_a.mp4"), "-o", str(tmp_path / "o.mkv"),
                   "-d", "mtcnn", "--weights_dir", str(tmp_path))
  assert rc == 1
  _one_line_error(err, "convert_weights.py --model mtcnn")
  assert not (tmp_path / "o.mkv").exists()


def test_deid_bad_flags_and_inputs(tmp_path):
  rc, _, err = run("deid.py", "-i", str(tmp_path / "none.mp4"), "-m", "pixelate_x")
  assert rc == 1
  _one_line_error(err, "pixelate_x")
  rc, _, err = run("deid.py", "-i", str(tmp_path / "none.mp4"), "--eps", "2")
  assert rc == 1
  _one_line_error(err, "eps must be in (0, 1]")
  rc, _, err = run("deid.py", "-g", "fgsm-9")
  assert rc != 0 and "fgsm-9" in err
