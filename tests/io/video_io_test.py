"""Real video in and out (PyAV): clips generated here with PyAV, as phones and dash cameras
write them, through the project's reader and writer and through deid itself.

- H.264 MP4 with AAC audio (a 440 Hz tone starting at 0.5 s): audio kept, bit-identical
  packets on stream copy, the tone's onset within one frame after re-encoding to Opus.
- H.265 MOV with a display-matrix rotation (a phone filmed in portrait): frames upright.
- variable-frame-rate MKV: every timestamp kept, nothing resampled.
- truncated, empty, audio-only and non-video files: one-line errors.
"""

import fractions
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support import REPO, shared_file
from drsf_jax.io import video

av = pytest.importorskip("av")

FPS = 30
TONE_HZ = 440.0
ONSET_S = 0.5
SR = 48000


def _frames(n, w=64, h=48, seed=0):
  """Frames with structure (a gradient and a moving square), seeded noise on top."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    f = np.zeros((h, w, 3), np.uint8)
    f[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    f[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    x = (4 * i) % (w - 8)
    f[8:16, x:x + 8] = 255
    out.append(np.clip(f.astype(int) + rng.integers(-6, 7, f.shape), 0, 255).astype(np.uint8))
  return out


def _tone(seconds, channels=1):
  """Silence until ONSET_S, then a 440 Hz tone; float32 planar (channels, samples)."""
  t = np.arange(int(seconds * SR)) / SR
  x = np.where(t >= ONSET_S, 0.5 * np.sin(2 * np.pi * TONE_HZ * t), 0.0).astype(np.float32)
  return np.repeat(x[None], channels, axis=0)


def make_clip(path, frames, encoder="libx264", pix_fmt="yuv420p", pts=None, time_base=None,
              audio=False, rotation=None, options=None, container_options=None):
  """Writes ``frames`` with PyAV directly (not through the code under test)."""
  tb = time_base or fractions.Fraction(1, FPS)
  pts = list(range(len(frames))) if pts is None else pts
  with av.open(path, "w", options=container_options or {}) as c:
    s = c.add_stream(encoder, rate=FPS, options=options or {})
    s.width, s.height = frames[0].shape[1], frames[0].shape[0]
    s.pix_fmt = pix_fmt
    s.codec_context.time_base = tb
    s.time_base = tb
    if rotation is not None:
      s.set_display_rotation(rotation)
    a = None
    if audio:
      a = c.add_stream("aac", rate=SR)
      a.layout = "mono"
    for f, p in zip(frames, pts):
      vf = av.VideoFrame.from_ndarray(f, format="rgb24")
      vf.pts, vf.time_base = p, tb
      for pkt in s.encode(vf):
        c.mux(pkt)
    for pkt in s.encode():
      c.mux(pkt)
    if a is not None:
      samples = _tone(len(frames) / FPS)
      step = 1024
      for k in range(0, samples.shape[1], step):
        af = av.AudioFrame.from_ndarray(samples[:, k:k + step], format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = SR, k, fractions.Fraction(1, SR)
        for pkt in a.encode(af):
          c.mux(pkt)
      for pkt in a.encode():
        c.mux(pkt)
  return path


def _audio(path):
  """(decoded mono samples, sample rate, codec, stream-duration seconds, packet bytes)."""
  with av.open(path) as c:
    a = c.streams.audio[0]
    packets = [bytes(p) for p in c.demux(a) if p.size]
  with av.open(path) as c:
    a = c.streams.audio[0]
    x = np.concatenate([f.to_ndarray().reshape(f.to_ndarray().shape[0], -1)[0] if f.format.is_planar
                        else f.to_ndarray().reshape(-1, a.codec_context.channels)[:, 0]
                        for f in c.decode(a)])
    return x.astype(np.float32), a.codec_context.sample_rate, a.codec_context.name, packets


def _onset_s(x, sr):
  """First time the envelope reaches half the tone's amplitude."""
  env = np.abs(x)
  k = int(np.argmax(env > 0.25))
  return k / sr


def _copy_through_writer(src, dst, codec, **kw):
  r = video.VideoReader(src)
  with video.VideoWriter(dst, r.rate, (r.width, r.height), codec, time_base=r.time_base,
                         audio_from=src, **kw) as w:
    for f in r:
      w.write(f, r.pts[w.count])
  return r


def _video_duration(path):
  r = video.VideoReader(path)
  list(r)
  return r.timestamps[-1] + 1 / FPS


def test_h264_mp4_with_aac_audio_is_kept_copied_or_reencoded(tmp_path):
  src = make_clip(str(tmp_path / "phone.mp4"), _frames(45), audio=True)
  x0, sr0, codec0, pk0 = _audio(src)
  assert codec0 == "aac" and abs(_onset_s(x0, sr0) - ONSET_S) < 0.03
  # Stream copy (mkv and mp4 take AAC): the very same packets, so identical samples.
  for ext, codec in ((".mkv", "ffv1"), (".mp4", "h264")):
    out = str(tmp_path / f"copy{ext}")
    _copy_through_writer(src, out, codec)
    x1, sr1, codec1, pk1 = _audio(out)
    assert codec1 == "aac" and sr1 == sr0
    assert pk1 == pk0[:len(pk1)] and len(pk0) - len(pk1) <= 2, ext  # Cut at the video's end.
    # Same packets decode to the same samples; only the encoder's priming (1024 samples,
    # which MP4 trims through its edit list) may stay in front of them.
    d = len(x1) - len(x0) if len(x1) > len(x0) else 0
    assert d in (0, 1024), (ext, d)
    n = min(len(x1) - d, len(x0))
    np.testing.assert_array_equal(x1[d:d + n], x0[:n])
    assert abs(_onset_s(x1, sr1) - _onset_s(x0, sr0)) < 1 / FPS
    assert abs(_video_duration(out) - 45 / FPS) < 1 / FPS
    d = video.describe(out)
    assert abs(d["duration_s"] - 1.5) < 1 / FPS, d  # The file's duration: within one frame.
    # Audio packets are copied whole: the last may reach one AAC frame (1024 samples) past.
    assert d["audio"]["codec"] == "aac" and abs(d["audio"]["duration_s"] - 1.5) < 1 / FPS + 1024 / SR, d
  # .webm takes no AAC: re-encoded to Opus; the tone starts within one frame of where it did.
  out = str(tmp_path / "web.webm")
  _copy_through_writer(src, out, "vp9")
  x2, sr2, codec2, _ = _audio(out)
  assert codec2 == "opus"
  assert abs(_onset_s(x2, sr2) - _onset_s(x0, sr0)) < 1 / FPS
  assert abs(_video_duration(out) - 45 / FPS) < 1 / FPS


def test_rotated_h265_mov_is_read_upright_and_written_upright(tmp_path):
  frames = _frames(6, w=64, h=32)
  src = make_clip(str(tmp_path / "portrait.mov"), frames, encoder="libx265",
                  options={"x265-params": "log-level=error"}, rotation=90)
  r = video.VideoReader(src)
  got = list(r)
  assert r.rotation == 90 and (r.width, r.height) == (32, 64) and got[0].shape == (64, 32, 3)
  # Upright = rotated counter-clockwise by the tag (FFmpeg's display-matrix convention):
  # compare with the source frames rotated the same way (H.265 is lossy: mean error).
  for a, b in zip(frames, got):
    assert np.abs(np.rot90(a, 1).astype(int) - b).mean() < 6
    assert np.abs(a.T.astype(int) - b.transpose(1, 0, 2)[..., 0].T).mean() > 20  # Not a no-op.
  out = str(tmp_path / "out.mkv")
  _copy_through_writer(src, out, "ffv1")
  back_r = video.VideoReader(out)
  back = list(back_r)
  assert back_r.rotation == 0 and back[0].shape == (64, 32, 3)  # Stored upright, no tag.
  for a, b in zip(got, back):
    np.testing.assert_array_equal(a, b)


def test_variable_frame_rate_mkv_keeps_every_timestamp(tmp_path):
  tb = fractions.Fraction(1, 1000)
  pts = [0, 33, 67, 100, 200, 233, 400, 433, 467, 1000]  # Gaps: a camera dropping frames.
  frames = _frames(len(pts))
  src = make_clip(str(tmp_path / "vfr.mkv"), frames, encoder="ffv1", pix_fmt="bgr0", pts=pts, time_base=tb)
  r = video.VideoReader(src)
  got = list(r)
  assert len(got) == len(pts)  # Not resampled to a constant rate.
  np.testing.assert_allclose(r.timestamps, np.array(pts) / 1000, atol=1e-9)
  for a, b in zip(frames, got):
    np.testing.assert_array_equal(a, b)
  for codec, ext in (("ffv1", ".mkv"), ("h264-lossless", ".mp4"), ("h264", ".mov"), ("vp9", ".webm")):
    out = str(tmp_path / f"out_{codec}{ext}")
    _copy_through_writer(src, out, codec)
    b = video.VideoReader(out)
    list(b)
    np.testing.assert_allclose(b.timestamps, np.array(pts) / 1000, atol=1e-3, err_msg=f"{codec}{ext}")


def test_truncated_empty_audio_only_and_non_video_files_are_refused(tmp_path):
  src = make_clip(str(tmp_path / "ok.mkv"), _frames(30), encoder="ffv1", pix_fmt="bgr0")
  data = open(src, "rb").read()
  cut = tmp_path / "cut.mkv"
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match="decoding (failed|stopped) at frame"):
    list(video.VideoReader(str(cut)))
  # An MP4 with its index in front (as phones write them) cut at 60%: the index lists 30.
  fast = make_clip(str(tmp_path / "fast.mp4"), _frames(30), container_options={"movflags": "+faststart"})
  data = open(fast, "rb").read()
  cut2 = tmp_path / "cut.mp4"
  cut2.write_bytes(data[:int(len(data) * 0.6)])
  with pytest.raises(ValueError, match=r"cut.mp4: (truncated or damaged: decoding stopped at frame \d+ of the 30|"
                                       r"decoding failed at frame \d+)"):
    list(video.VideoReader(str(cut2)))
  # The default MP4 (index at the end) cut: FFmpeg finds no stream at all.
  plain = make_clip(str(tmp_path / "plain.mp4"), _frames(30))
  data = open(plain, "rb").read()
  cut3 = tmp_path / "cut3.mp4"
  cut3.write_bytes(data[:int(len(data) * 0.6)])
  with pytest.raises(ValueError, match=r"cut3.mp4: (holds no stream at all|not a video FFmpeg can decode)"):
    video.VideoReader(str(cut3))
  audio_only = tmp_path / "voice.m4a"
  with av.open(str(audio_only), "w") as c:
    a = c.add_stream("aac", rate=SR)
    a.layout = "mono"
    af = av.AudioFrame.from_ndarray(_tone(0.1), format="fltp", layout="mono")
    af.sample_rate = SR
    for pkt in a.encode(af):
      c.mux(pkt)
    for pkt in a.encode():
      c.mux(pkt)
  with pytest.raises(ValueError, match="voice.m4a: has no video stream"):
    video.VideoReader(str(audio_only))
  text = tmp_path / "notes.mp4"
  text.write_text("not a video\n" * 100)
  with pytest.raises(ValueError, match="notes.mp4: not a video FFmpeg can decode"):
    video.VideoReader(str(text))


def test_report_records_streams_and_deid_keeps_audio_and_timing(tmp_path, real_weights):
  """deid.py on a real face clip re-muxed as a phone writes it: H.264 + AAC, irregular
  timestamps. Output: H.264 MP4 with the audio packets copied, every timestamp kept, the
  streams described in the report, and the --preview video."""
  faces = list(video.VideoReader(shared_file("data", "talking_head_a.mp4"), max_frames=6))
  tb = fractions.Fraction(1, 90000)
  pts = [0, 3000, 6000, 12000, 15000, 21000]
  src = make_clip(str(tmp_path / "drive.mp4"), faces, pts=pts, time_base=tb, audio=True,
                  options={"crf": "10"})
  out = tmp_path / "drive_deid.mp4"
  prev = tmp_path / "drive_preview.mp4"
  cmd = [sys.executable, os.path.join(REPO, "scripts", "deid.py"),
         "-i", src, "-o", str(out), "--codec", "h264", "--crf", "0", "--max_iter", "2",
         "--weights_dir", real_weights, "--noprogress", "--noverify", "--preview", str(prev)]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-2000:]
  import json
  rep = json.load(open(tmp_path / "drive_deid.json"))
  v = rep["video"]
  assert v["input_file"]["codec"] == "h264" and v["input_file"]["audio"]["codec"] == "aac"
  assert v["output_file"]["codec"] == "h264" and v["output_file"]["pix_fmt"] == "yuv420p"
  assert v["output_file"]["crf"] == 0 and v["audio"]["mode"] == "copy"
  r = video.VideoReader(str(out))
  assert len(list(r)) == 6
  np.testing.assert_allclose(r.timestamps, np.array(pts) / 90000, atol=1e-4)
  x0, _, _, pk0 = _audio(src)
  x1, _, codec1, pk1 = _audio(str(out))
  assert codec1 == "aac" and pk1 == pk0[:len(pk1)]
  p = video.VideoReader(str(prev))
  pf = list(p)
  assert p.codec == "h264" and pf[0].shape == (256, 768, 3) and len(pf) == 6
  np.testing.assert_allclose(p.timestamps, r.timestamps, atol=1e-4)
  # Left panel: the original (the preview is for the user's own inspection).
  assert np.abs(pf[0][:, :256].astype(int) - faces[0]).mean() < 6
  # --noaudio drops it.
  out2 = tmp_path / "silent.mkv"
  cmd2 = [c for c in cmd if c not in ("--preview", str(prev))]
  cmd2[cmd2.index(str(out))] = str(out2)
  cmd2[cmd2.index("h264")] = "ffv1"
  cmd2.remove("--crf")
  cmd2.remove("0")
  res = subprocess.run(cmd2 + ["--noaudio"], capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-2000:]
  assert video.describe(str(out2))["audio"] is None
