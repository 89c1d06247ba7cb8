"""Converted-weights files and the generic conversion rules."""

import os

import jax
import numpy as np
import pytest

from drsf_jax.io import checkpoints


def _tree(rng):
  return {"params": {"a": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                           "bias": rng.normal(size=(4,)).astype(np.float32)}},
          "batch_stats": {"bn": {"mean": rng.normal(size=(4,)).astype(np.float32),
                                 "var": rng.uniform(0.5, 1.5, size=(4,)).astype(np.float32)}}}


def test_save_load_round_trip_is_exact(tmp_path, rng):
  tree = _tree(rng)
  meta = {"model": "retinaface", "family": "retinaface", "config": {"min_sizes": [[10, 20]]},
          "source_sha256": "ab" * 32, "converter_version": 1}
  path = checkpoints.weights_path("retinaface", str(tmp_path))
  checkpoints.save(path, tree, meta)
  got, got_meta = checkpoints.load("retinaface", str(tmp_path))
  assert got_meta == meta
  for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(got)):
    np.testing.assert_array_equal(a, b)
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_missing_weights_error_names_the_convert_command(tmp_path):
  with pytest.raises(checkpoints.WeightsError, match="convert_weights.py --model mtcnn"):
    checkpoints.load("mtcnn", str(tmp_path))
  with pytest.raises(checkpoints.WeightsError, match="--model fan --src"):
    checkpoints.load("fan", str(tmp_path))


def test_unknown_model_and_corrupt_file(tmp_path):
  with pytest.raises(checkpoints.WeightsError, match="unknown model 'yolo'"):
    checkpoints.weights_path("yolo", str(tmp_path))
  bad = tmp_path / "mtcnn.msgpack"
  bad.write_bytes(b"\x00garbage\xff" * 10)
  with pytest.raises(checkpoints.WeightsError, match="not a drsf-jax weights file|format"):
    checkpoints.load("mtcnn", str(tmp_path))


def test_wrong_model_in_file(tmp_path, rng):
  checkpoints.save(checkpoints.weights_path("mtcnn", str(tmp_path)), _tree(rng),
                   {"model": "fan"})
  with pytest.raises(checkpoints.WeightsError, match="holds weights of model 'fan'"):
    checkpoints.load("mtcnn", str(tmp_path))


def test_check_tree_names_keys(rng):
  tree = _tree(rng)
  expected = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  checkpoints.check_tree(expected, tree)
  bad = _tree(rng)
  del bad["params"]["a"]["bias"]
  bad["params"]["extra"] = {"kernel": np.ones((1,), np.float32)}
  bad["batch_stats"]["bn"]["mean"] = np.ones((5,), np.float32)
  with pytest.raises(checkpoints.WeightsError) as e:
    checkpoints.check_tree(expected, bad)
  msg = str(e.value)
  assert "missing keys: params/a/bias" in msg
  assert "unexpected keys: params/extra/kernel" in msg
  assert "batch_stats/bn/mean: expected (4,), got (5,)" in msg


def test_weights_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.setenv("DRSF_JAX_WEIGHTS", str(tmp_path / "env"))
  assert checkpoints.weights_dir() == str(tmp_path / "env")
  assert checkpoints.weights_dir(str(tmp_path / "flag")) == str(tmp_path / "flag")
  monkeypatch.delenv("DRSF_JAX_WEIGHTS")
  assert checkpoints.weights_dir().endswith(os.path.join(".cache", "drsf_jax"))


torch = pytest.importorskip("torch")
from weights_conversion import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def _toy_module():
  torch.manual_seed(0)
  return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, groups=1), torch.nn.BatchNorm2d(4),
                             torch.nn.PReLU(4), torch.nn.Flatten(), torch.nn.Linear(4, 2))


@pytest.mark.parametrize("layout", ["plain", "model", "state_dict", "module_prefix", "legacy",
                                    "torchscript", "safetensors"])
def test_load_state_dict_reads_every_published_layout(tmp_path, layout):
  m = _toy_module()
  sd = m.state_dict()
  path = str(tmp_path / "ckpt.pth")
  if layout == "plain":
    torch.save(sd, path)
  elif layout == "model":
    torch.save({"model": sd}, path)
  elif layout == "state_dict":
    torch.save({"state_dict": sd, "epoch": 3}, path)
  elif layout == "module_prefix":
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
  elif layout == "legacy":
    torch.save(sd, path, _use_new_zipfile_serialization=False)
  elif layout == "torchscript":
    torch.jit.save(torch.jit.trace(m.eval(), torch.randn(1, 3, 3, 3)), path)
  elif layout == "safetensors":
    st = pytest.importorskip("safetensors.torch")
    path = str(tmp_path / "ckpt.safetensors")
    st.save_file({k: v.contiguous() for k, v in sd.items()}, path)
  got = common.load_state_dict(path)
  assert set(got) == set(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(got[k], v.numpy())


def test_state_dict_rules_and_strictness(tmp_path):
  m = _toy_module()
  sd = common.state_dict_from_module(m)
  s = common.StateDict(sd, "toy.pth")
  conv = s.conv("0")
  assert conv["kernel"].shape == (3, 3, 3, 4)
  np.testing.assert_array_equal(conv["kernel"], np.transpose(sd["0.weight"], (2, 3, 1, 0)))
  p, st = s.bn("1")
  assert set(p) == {"scale", "bias"} and set(st) == {"mean", "var"}
  assert s.prelu("2")["alpha"].shape == (4,)
  with pytest.raises(common.ConversionError, match=r"unexpected key\(s\): 4.bias, 4.weight"):
    s.finish()
  assert s.linear("4")["kernel"].shape == (4, 2)
  s.finish()
  with pytest.raises(common.ConversionError, match="missing key 'nope.weight'"):
    s.conv("nope")
  with pytest.raises(common.ConversionError, match=r"key '4.bias' has shape \(2,\), expected \(3,\)"):
    common.StateDict(sd, "toy.pth").take("4.bias", (3,))


def test_corrupt_and_missing_checkpoints(tmp_path):
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"this is not a checkpoint" * 20)
  with pytest.raises(common.ConversionError, match="not a readable PyTorch checkpoint"):
    common.load_state_dict(str(bad))
  with pytest.raises(common.ConversionError, match="checkpoint not found"):
    common.load_state_dict(str(tmp_path / "missing.pth"))


def test_corrupted_payload_is_an_error_naming_the_convert_command(tmp_path, rng):
  """Two flipped bytes inside the tensors (the msgpack still parses) must not load."""
  path = checkpoints.weights_path("mtcnn", str(tmp_path))
  checkpoints.save(path, _tree(rng), {"model": "mtcnn"})
  data = bytearray(open(path, "rb").read())
  for off in (len(data) // 2, len(data) // 2 + 7):  # Inside the float payload.
    data[off] ^= 0x5A
  open(path, "wb").write(bytes(data))
  with pytest.raises(checkpoints.WeightsError,
                     match=r"corrupted.*convert_weights\.py --model mtcnn --weights_dir"):
    checkpoints.load("mtcnn", str(tmp_path))
