"""Video reading/writing: lossless round trips, atomic output, clear errors."""

import os

import numpy as np
import pytest

from tests.support import shared_file
from drsf_jax.io import video


def test_reader_on_real_video():
  r = video.VideoReader(shared_file("data", "talking_head_a.mp4"), max_frames=5)
  assert (r.width, r.height) == (256, 256) and abs(r.fps - 30) < 0.5
  frames = list(r)
  assert len(frames) == 5 and frames[0].shape == (256, 256, 3) and frames[0].dtype == np.uint8
  assert frames[0].std() > 10


@pytest.mark.parametrize("codec,ext", [(c, e) for c in ("ffv1", "h264-lossless") for e in video.CONTAINERS[c]])
def test_lossless_codecs_round_trip_bit_exactly(tmp_path, codec, ext):
  frames = list(video.VideoReader(shared_file("data", "talking_head_b.mp4"), max_frames=4))
  rng = np.random.default_rng(0)
  frames = [np.clip(f.astype(int) + rng.integers(-8, 9, f.shape), 0, 255).astype(np.uint8) for f in frames]
  path = str(tmp_path / f"out{ext}")
  with video.VideoWriter(path, 30, (256, 256), codec) as w:
    for f in frames:
      w.write(f)
  back = list(video.VideoReader(path))
  assert len(back) == 4
  for a, b in zip(frames, back):
    np.testing.assert_array_equal(a, b)


def test_png_sequence_and_lossy_codec(tmp_path):
  f = (np.random.default_rng(1).uniform(size=(3, 32, 48, 3)) * 255).astype(np.uint8)
  with video.VideoWriter(str(tmp_path / "seq"), 30, (48, 32), "png-seq") as w:
    for x in f:
      w.write(x)
  assert sorted(os.listdir(tmp_path / "seq")) == ["000000.png", "000001.png", "000002.png"]
  back = np.stack(list(video.VideoReader(str(tmp_path / "seq"))))  # A folder reads like a video.
  np.testing.assert_array_equal(back, f)
  with video.VideoWriter(str(tmp_path / "lossy.mp4"), 30, (48, 32), "h264") as w:
    for x in f:
      w.write(x)
  back = np.stack(list(video.VideoReader(str(tmp_path / "lossy.mp4"))))
  assert np.abs(back.astype(int) - f).max() > 8  # Why lossless is the default.


def test_failed_write_leaves_nothing(tmp_path):
  path = str(tmp_path / "out.mkv")
  with pytest.raises(RuntimeError):
    with video.VideoWriter(path, 30, (32, 32)) as w:
      w.write(np.full((32, 32, 3), 7, np.uint8))
      raise RuntimeError("interrupted")
  assert os.listdir(tmp_path) == []


def test_bad_inputs(tmp_path):
  with pytest.raises(FileNotFoundError, match="input not found"):
    video.VideoReader(str(tmp_path / "missing.mp4"))
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(os.urandom(4096))
  with pytest.raises(ValueError, match="not a video FFmpeg can decode"):
    video.VideoReader(str(junk))
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match=r"empty file \(0 bytes\), not a video"):
    video.VideoReader(str(empty))
  with pytest.raises(ValueError, match="unknown codec"):
    video.VideoWriter(str(tmp_path / "x.mkv"), 30, (8, 8), "mjpg")
  afile = tmp_path / "afile"
  afile.write_text("x")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    video.VideoWriter(str(afile / "sub" / "x.mkv"), 30, (8, 8))
  (tmp_path / "adir").mkdir()
  with pytest.raises(ValueError, match="is a directory"):
    video.VideoWriter(str(tmp_path / "adir"), 30, (8, 8), "ffv1")
  with pytest.raises(ValueError, match="exists; pass --overwrite"):
    video.VideoWriter(str(afile), 30, (8, 8))
  with pytest.raises(ValueError, match="codec ffv1 cannot be written to a .webm file"):
    video.VideoWriter(str(tmp_path / "x.webm"), 30, (8, 8))
  with pytest.raises(ValueError, match="codec h264 .4:2:0. needs an even width and height"):
    video.VideoWriter(str(tmp_path / "x.mp4"), 30, (9, 8), "h264")
  with pytest.raises(ValueError, match="--crf 60 is out of range for h264"):
    video.VideoWriter(str(tmp_path / "x.mp4"), 30, (8, 8), "h264", crf=60)
  with pytest.raises(ValueError, match="--crf applies to the lossy codecs"):
    video.VideoWriter(str(tmp_path / "x.mkv"), 30, (8, 8), "ffv1", crf=18)
  with pytest.raises(ValueError, match="1x1 frames are too small for codec ffv1"):
    video.VideoWriter(str(tmp_path / "x.mkv"), 30, (1, 1))
  assert sorted(os.listdir(tmp_path)) == ["adir", "afile", "empty.mp4", "junk.mp4"]
  with pytest.raises(ValueError, match="a directory with no .png frames"):
    video.VideoReader(str(tmp_path / "adir"))


def test_png_sequence_never_replaces_a_directory_with_files(tmp_path):
  (tmp_path / "seq").mkdir()
  (tmp_path / "seq" / "keep.txt").write_text("mine")
  with pytest.raises(ValueError, match="directory with files in it"):
    video.VideoWriter(str(tmp_path / "seq"), 30, (8, 8), "png-seq")
  assert os.listdir(tmp_path / "seq") == ["keep.txt"]
  (tmp_path / "empty").mkdir()
  with video.VideoWriter(str(tmp_path / "empty"), 30, (8, 8), "png-seq") as w:
    w.write(np.zeros((8, 8, 3), np.uint8))
  assert os.listdir(tmp_path / "empty") == ["000000.png"]
  assert sorted(os.listdir(tmp_path)) == ["empty", "seq"]  # No temporary folder left.


def test_overwrite_replaces_a_file_and_outputs_are_not_private(tmp_path):
  path = str(tmp_path / "o.mkv")
  frame = np.full((8, 8, 3), 9, np.uint8)
  with video.VideoWriter(path, 30, (8, 8)) as w:
    w.write(frame)
  with video.VideoWriter(path, 30, (8, 8), overwrite=True) as w:
    w.write(frame)
    w.write(frame)
  assert len(list(video.VideoReader(path))) == 2
  umask = os.umask(0o022)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_absurd_container_fps_is_clamped_by_the_writer_and_probe_reports_it(tmp_path):
  path = str(tmp_path / "o.mkv")
  with video.VideoWriter(path, 90000.0, (8, 8)) as w:
    w.write(np.zeros((8, 8, 3), np.uint8))
  assert video.probe(path) == (1, 30000.0)


def test_to_uint8_rounds():
  np.testing.assert_array_equal(video.to_uint8(np.array([0.0, 0.499 / 255, 0.51 / 255, 1.2, -0.1])),
                                [0, 0, 1, 255, 0])
