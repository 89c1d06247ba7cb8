"""Reading images and video (PyAV/FFmpeg) with clear errors, and atomic writes.

Frames are uint8 RGB ``(H, W, 3)``. Errors for bad input are one-line ``ValueError`` /
``FileNotFoundError`` messages that name the file and the problem (missing, empty, not a
video, no video stream, zero frames, decoding failed at frame N). One reader and one
writer serve every script; OpenCV is used for image files and geometry only.
"""

import fractions
import json
import math
import os
from typing import Iterator

import numpy as np

from drsf_jax.io import outputs

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str) -> np.ndarray:
  import cv2
  outputs.check_input(path)
  img = cv2.imread(path, cv2.IMREAD_COLOR)
  if img is None:
    raise ValueError(f"{path}: not a readable image")
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _open_av(path: str):
  """``av.open`` with one-line errors (empty file, not a video FFmpeg can read)."""
  import av  # pylint: disable=import-outside-toplevel
  if os.path.getsize(path) == 0:
    raise ValueError(f"{path}: empty file (0 bytes), not a video")
  try:
    return av.open(path)
  except av.error.FFmpegError as e:
    raise ValueError(f"{path}: not a video FFmpeg can decode ({_reason(e)})") from None


def _reason(e) -> str:
  msg = getattr(e, "strerror", None) or str(e)
  return str(msg).split(":")[0].strip().rstrip(".") or type(e).__name__


def _frac(x):
  return fractions.Fraction(x) if x is not None else None


class VideoReader:
  """Streaming reader (PyAV/FFmpeg): iterate to get uint8 RGB ``(H, W, 3)`` frames.

  Any container and codec FFmpeg decodes (mp4, mov, mkv, avi, webm; H.264, H.265, VP9,
  AV1, MJPEG, FFV1, ...), or a directory of numbered ``.png`` files (``png-seq``).
  Frames are rotated upright when the stream carries a display-matrix rotation (a phone
  filmed in portrait), so ``width``/``height`` are the upright size; ``rotation`` records
  the tag. Presentation timestamps are kept per frame (``pts`` in ``time_base`` units,
  ``timestamps`` in seconds, filled while iterating): variable frame rate is preserved,
  never resampled. Decoding errors, and a file that ends before the frames its container
  lists, are one-line ``ValueError`` s naming the frame where decoding stopped.
  """

  def __init__(self, path: str, max_frames: int | None = None):
    self.path = path
    self.max_frames = max_frames
    self.pts: list[int] = []
    self.rotation = 0
    self.audio = None
    self.sample_aspect_ratio = None
    if os.path.isdir(path):
      self._init_png_dir(path)
      return
    outputs.check_input(path)
    self._container = _open_av(path)
    if not self._container.streams.video:
      what = ("has no video stream" if len(self._container.streams) else
              "holds no stream at all (truncated before its index, or not a media file)")
      self._container.close()
      raise ValueError(f"{path}: {what}")
    self._stream = s = self._container.streams.video[0]
    s.thread_type = "AUTO"
    self.codec = s.codec_context.name
    self.pix_fmt = s.codec_context.pix_fmt
    rate = s.average_rate or s.guessed_rate or s.base_rate
    self.rate = _frac(rate) if rate else None
    fps = float(rate) if rate else float("nan")
    # The container's rate as stored (may be absurd, e.g. 90000); 30 when missing.
    self.fps = fps if math.isfinite(fps) and fps > 0 else 30.0
    self.time_base = s.time_base or fractions.Fraction(1, 90000)
    self.num_frames_hint = int(s.frames) if s.frames else None
    if not self.num_frames_hint and s.duration and self.rate:
      self.num_frames_hint = int(round(float(s.duration * s.time_base * self.rate)))
    sar = s.sample_aspect_ratio
    self.sample_aspect_ratio = _frac(sar) if sar and sar != 1 else None
    if self._container.streams.audio:
      a = self._container.streams.audio[0]
      self.audio = {"codec": a.codec_context.name, "sample_rate": a.codec_context.sample_rate,
                    "channels": a.codec_context.channels}
    self._frames = self._decode()
    try:
      first = next(self._frames)
    except StopIteration:
      self._container.close()
      raise ValueError(f"{path}: video has zero decodable frames") from None
    self._first = first
    self.height, self.width = first.shape[:2]

  def _init_png_dir(self, path):
    names = sorted(f for f in os.listdir(path) if f.lower().endswith(".png"))
    if not names:
      raise ValueError(f"{path}: a directory with no .png frames in it")
    self._png = [os.path.join(path, n) for n in names]
    self.codec, self.pix_fmt, self.fps, self.rate = "png-seq", "rgb24", 30.0, fractions.Fraction(30)
    self.time_base = fractions.Fraction(1, 30)
    self.num_frames_hint = len(names)
    self._container = None
    self._frames = self._png_frames()
    self._first = next(self._frames)
    self.height, self.width = self._first.shape[:2]

  def _png_frames(self) -> Iterator[np.ndarray]:
    for i, p in enumerate(self._png):
      if self.max_frames is not None and i >= max(self.max_frames, 1):
        return
      self.pts.append(i)
      yield read_image(p)

  def _decode(self) -> Iterator[np.ndarray]:
    import av  # pylint: disable=import-outside-toplevel
    n = 0
    last = None
    it = self._container.decode(self._stream)
    while True:
      try:
        frame = next(it)
      except StopIteration:
        break
      except av.error.FFmpegError as e:
        raise ValueError(f"{self.path}: decoding failed at frame {n} ({_reason(e)})") from None
      if frame.is_corrupt:
        raise ValueError(f"{self.path}: decoding failed at frame {n} (corrupt data)")
      if n == 0:
        self.rotation = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
      pts = frame.pts if frame.pts is not None else (last + 1 if last is not None else 0)
      if last is not None and pts <= last:  # Broken or missing timestamps: keep order.
        pts = last + 1
      last = pts
      self.pts.append(int(pts))
      img = frame.to_ndarray(format="rgb24")
      if self.rotation:
        img = np.ascontiguousarray(np.rot90(img, k=self.rotation // 90))
      yield img
      n += 1
      if self.max_frames is not None and n >= self.max_frames:
        return
    if self.max_frames is not None and n >= self.max_frames:
      return
    expected = int(self._stream.frames or 0)
    if expected and n < expected:
      raise ValueError(f"{self.path}: truncated or damaged: decoding stopped at frame {n} of the "
                       f"{expected} the container lists")
    end = self._declared_end()
    if end is not None and last is not None:
      got = float(last * self.time_base) + 1.0 / self.fps
      if end - got > max(2.0 / self.fps, 0.1):
        raise ValueError(f"{self.path}: truncated or damaged: decoding stopped at frame {n} "
                         f"({got:.2f} s) of a video stream that lasts {end:.2f} s")

  def _declared_end(self) -> float | None:
    """When the container says the video stream ends (seconds), or None if it does not say."""
    s = self._stream
    start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
    if s.duration:
      return start + float(s.duration * s.time_base)
    tag = s.metadata.get("DURATION") or s.metadata.get("duration")
    if tag:  # Matroska: per-track "HH:MM:SS.nnnnnnnnn".
      try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
      except ValueError:
        return None
    c = self._container
    if c.duration and len(c.streams) == 1:
      return float(c.duration) / 1e6 + (float(c.start_time) / 1e6 if c.start_time else 0.0)
    return None

  @property
  def timestamps(self) -> list[float]:
    """Seconds of each frame read so far (``pts * time_base``)."""
    return [float(p * self.time_base) for p in self.pts]

  def __iter__(self) -> Iterator[np.ndarray]:
    first, self._first = self._first, None
    if first is None:
      raise RuntimeError("VideoReader can be iterated once")
    try:
      if self.max_frames is not None and self.max_frames <= 0:
        return
      yield first
      yield from self._frames
    finally:
      self.close()

  def close(self):
    if self._container is not None:
      self._container.close()

  def __len__(self):
    n = self.num_frames_hint or 0
    return min(n, self.max_frames) if self.max_frames is not None else n

  def describe(self) -> dict:
    """What the report records about this input (see :func:`describe`)."""
    return describe(self.path)


def describe(path: str) -> dict:
  """Container, codec, pixel format, frame rate, time base, duration, rotation and audio
  stream of a video file (or a PNG folder), for reports."""
  if os.path.isdir(path):
    n = len([f for f in os.listdir(path) if f.lower().endswith(".png")])
    return {"container": "png-seq", "codec": "png", "frames": n}
  c = _open_av(path)
  try:
    s = c.streams.video[0] if c.streams.video else None
    out = {"container": c.format.name, "size_bytes": os.path.getsize(path),
           "duration_s": float(c.duration) / 1e6 if c.duration else None}
    if s is not None:
      cc = s.codec_context
      rate = s.average_rate or s.guessed_rate
      out.update(codec=cc.name, pix_fmt=cc.pix_fmt, width=cc.width, height=cc.height,
                 fps=float(rate) if rate else None, time_base=str(s.time_base),
                 frames=int(s.frames) or None,
                 sample_aspect_ratio=str(s.sample_aspect_ratio) if s.sample_aspect_ratio else None)
    if c.streams.audio:
      a = c.streams.audio[0]
      dur = float(a.duration * a.time_base) if a.duration else None
      if dur is None:  # Matroska stores no per-stream duration: read the packets' end.
        ends = [float((p.pts + (p.duration or 0)) * p.time_base) for p in c.demux(a) if p.pts is not None]
        starts = float(a.start_time * a.time_base) if a.start_time is not None else 0.0
        dur = max(ends) - starts if ends else None
      out["audio"] = {"codec": a.codec_context.name, "sample_rate": a.codec_context.sample_rate,
                      "channels": a.codec_context.channels, "duration_s": dur}
    else:
      out["audio"] = None
    return out
  finally:
    c.close()


def read_image_or_video(path: str | None, max_frames: int = 1) -> tuple[str, list[np.ndarray]]:
  """``(name, frames)`` for an image, a video (first ``max_frames``) or None (astronaut)."""
  if path is None:
    from skimage import data  # pylint: disable=import-outside-toplevel
    return "skimage.data.astronaut()", [data.astronaut()]
  if path.lower().endswith(IMAGE_EXTS):
    return path, [read_image(path)]
  return path, list(VideoReader(path, max_frames=max_frames))


def atomic_path(final: str) -> str:
  """A temporary path beside ``final`` (same directory, so the rename is atomic).

  Removed by :func:`drsf_jax.io.outputs.discard` (or on Ctrl-C by ``cli.run``).
  """
  return outputs.temp_path(final)


def dumps_json(obj) -> str:
  """JSON text of ``obj``; a NaN/inf anywhere is a one-line ``ValueError`` naming the key."""
  _check_finite(obj)
  return json.dumps(obj, indent=1, allow_nan=False) + "\n"


def _check_finite(obj):
  bad = outputs.non_finite_path(obj)
  if bad is not None:
    raise ValueError(f"refusing to write a non-finite number at {bad}")


def stage_json(path: str, obj) -> str:
  """Writes ``obj`` (validated: finite numbers only) to a temporary file beside ``path``;
  returns the temporary path, for :func:`drsf_jax.io.outputs.commit`."""
  text = dumps_json(obj)
  tmp = atomic_path(path)
  try:
    with open(tmp, "w") as f:
      f.write(text)
  except BaseException:
    outputs.discard(tmp)
    raise
  return tmp


def write_json_atomic(path: str, obj, overwrite: bool = True) -> str:
  """Writes ``obj`` to ``path`` through a temporary file; replaces ``path`` only if
  ``overwrite`` (callers check with :func:`drsf_jax.io.outputs.check` first)."""
  outputs.commit([(stage_json(path, obj), path)], overwrite=overwrite)
  return path


# ---- writing --------------------------------------------------------------------------

# --codec -> (FFmpeg encoder, pixel format it is given). Lossless ones decode back
# bit-exactly, which an 8/255 adversarial perturbation needs: ffv1 stores BGR0, libx264rgb
# with qp 0 stores planar RGB (x264's 4:4:4 *YUV* at qp 0 is not exact: the RGB->YUV
# conversion rounds). The lossy ones are 4:2:0 YUV (BT.601, limited range), what every
# player and browser plays; --crf sets their quality.
ENCODERS = {
    "ffv1": ("ffv1", "bgr0"),
    "h264-lossless": ("libx264rgb", "rgb24"),
    "h264": ("libx264", "yuv420p"),
    "h265": ("libx265", "yuv420p"),
    "vp9": ("libvpx-vp9", "yuv420p"),
}
LOSSLESS_CODECS = ("ffv1", "h264-lossless", "png-seq")
LOSSY_CODECS = ("h264", "h265", "vp9")
CODECS = ("ffv1", "h264-lossless", "h264", "h265", "vp9", "png-seq")
DEFAULT_CRF = 18
# Container extensions per codec where the PyAV wheel's FFmpeg writes the pair *and* the
# file decodes back (lossless ones bit-exactly): measured by tests/io/video_test.py
# (test_every_listed_container_round_trips). .mov refuses ffv1; .webm takes only VP8/VP9/AV1.
CONTAINERS = {
    "ffv1": (".mkv", ".mp4"),
    "h264-lossless": (".mkv", ".mp4", ".mov"),
    "h264": (".mp4", ".mkv", ".mov"),
    "h265": (".mp4", ".mkv", ".mov"),
    "vp9": (".webm", ".mkv", ".mp4"),
}
# 4:2:0 chroma needs even sides; every encoder refuses 1-pixel frames.
MIN_FRAME_SIDE = 2
# Audio codecs each container takes as a stream copy; anything else is re-encoded
# (AAC, or Opus for .webm). .mkv takes every codec FFmpeg knows.
AUDIO_COPY = {
    ".mp4": ("aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"),
    ".mov": ("aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le", "pcm_f32le"),
    ".avi": ("mp3", "ac3", "pcm_s16le", "aac"),
    ".webm": ("opus", "vorbis"),
}
AUDIO_ENCODER = {".webm": "libopus"}


def check_codec(path: str, codec: str, size_wh: tuple[int, int] | None = None,
                crf: int | None = None) -> None:
  """One-line errors for a codec/container pair, a quality or a frame size that cannot be
  written, before any work."""
  if codec not in CODECS:
    raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
  if crf is not None:
    if codec not in LOSSY_CODECS:
      raise ValueError(f"--crf applies to the lossy codecs ({', '.join(LOSSY_CODECS)}), not {codec}")
    top = 63 if codec == "vp9" else 51
    if not 0 <= int(crf) <= top:
      raise ValueError(f"--crf {crf} is out of range for {codec} (0..{top})")
  if codec != "png-seq":
    ext = os.path.splitext(path)[1].lower()
    if not ext:
      raise ValueError(f"output {os.path.basename(path)} has no container extension; codec {codec} "
                       f"goes into {', '.join(CONTAINERS[codec])} (png-seq writes a folder)")
    if ext not in CONTAINERS[codec]:
      raise ValueError(f"codec {codec} cannot be written to a {ext} file ({os.path.basename(path)}); "
                       f"{codec} goes into {', '.join(CONTAINERS[codec])}")
  if size_wh is not None:
    w, h = (int(v) for v in size_wh)
    if min(w, h) < MIN_FRAME_SIDE and codec != "png-seq":
      raise ValueError(f"{w}x{h} frames are too small for codec {codec} "
                       f"(at least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}; png-seq writes any size)")
    if codec in LOSSY_CODECS and (w % 2 or h % 2):
      raise ValueError(f"{w}x{h} frames: codec {codec} (4:2:0) needs an even width and height; "
                       "use --codec ffv1 or h264-lossless, which write any size")


def count_frames(path: str) -> int:
  """Frames in a video file without decoding them (its video packets), or PNGs in a folder."""
  if os.path.isdir(path):
    return len([f for f in os.listdir(path) if f.lower().endswith(".png")])
  c = _open_av(path)
  try:
    if not c.streams.video:
      raise ValueError(f"{path}: has no video stream")
    return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
  finally:
    c.close()


def encoder_options(codec: str, crf: int | None = None) -> dict:
  """The FFmpeg encoder options of ``codec`` (shared by the writer and :func:`roundtrip`,
  so the codec-aware attack encodes exactly as the output is encoded)."""
  if codec == "h264-lossless":
    return {"qp": "0", "preset": "medium"}
  if codec not in LOSSY_CODECS:
    return {}
  options = {"crf": str(DEFAULT_CRF if crf is None else int(crf))}
  if codec == "h265":
    options["x265-params"] = "log-level=error"
  if codec == "vp9":
    options.update({"b": "0", "row-mt": "1"})
  return options


def probe(path: str) -> tuple[int, float | None]:
  """``(decodable frames, fps)`` of a written video file or PNG-sequence directory."""
  if os.path.isdir(path):
    return len([f for f in os.listdir(path) if f.lower().endswith(".png")]), None
  try:
    r = VideoReader(path)
  except ValueError:
    return 0, None
  n = sum(1 for _ in r)
  return n, (r.fps if math.isfinite(r.fps) and r.fps > 0 else None)


def _rate(fps) -> fractions.Fraction:
  """The stream's nominal rate: an exact fraction (30000/1001 stays exact)."""
  if isinstance(fps, fractions.Fraction):
    return fps
  f = float(fps)
  if not math.isfinite(f) or f <= 0:
    return fractions.Fraction(30)
  return fractions.Fraction(f).limit_denominator(1001)


class VideoWriter:
  """Writes uint8 RGB frames to a temporary file, renamed onto ``path`` by ``close()``.

  ``codec``: ``ffv1`` (lossless, default; .mkv/.avi), ``h264-lossless`` (libx264 RGB at
  qp 0; .mkv/.mp4/.mov), lossy ``h264``/``h265``/``vp9`` at ``crf`` (default 18), or
  ``png-seq`` (a directory of numbered PNG files, written into a new or empty directory
  only). ``time_base`` and the ``pts`` given to :meth:`write` carry the input's timestamps
  frame by frame (variable frame rate kept); without them frames are ``1/fps`` apart.
  ``audio_from``: a file whose first audio stream is copied into the output (stream copy
  when the container takes the codec, else re-encoded to AAC or Opus), cut at the end of
  the last video frame. ``sample_aspect_ratio`` is carried to the output stream.

  Until ``close()`` succeeds nothing exists at ``path``; ``abort()`` (or an exception
  inside a ``with`` block) removes the partial file. An existing file at ``path`` is
  replaced only with ``overwrite``; an existing directory never. ``finish()`` ends
  writing without renaming (the caller commits the temporary file with
  :func:`drsf_jax.io.outputs.commit`, e.g. together with a report).
  """

  def __init__(self, path: str, fps, size_wh: tuple[int, int], codec: str = "ffv1",
               overwrite: bool = False, *, crf: int | None = None,
               time_base: fractions.Fraction | None = None, audio_from: str | None = None,
               sample_aspect_ratio: fractions.Fraction | None = None):
    self.path = os.path.abspath(path)
    self.codec = codec
    self.size_wh = tuple(int(v) for v in size_wh)
    self.overwrite = overwrite
    self.count = 0
    self.audio = None  # What happened to the audio: see _open_audio.
    self._container = None
    self._audio_in = None
    self._last_pts = None
    outputs.check([("output", self.path)], overwrite=overwrite,
                  dirs=[self.path] if codec == "png-seq" else (), clean_stale=False)
    check_codec(self.path, codec, self.size_wh, crf)
    if codec == "png-seq":
      self._tmp = outputs.temp_dir(self.path)
      return
    import av  # pylint: disable=import-outside-toplevel
    self._tmp = atomic_path(self.path)
    rate = _rate(fps)
    # time_base: the unit of the pts given to write() (the input's). Matroska/WebM store
    # milliseconds whatever the stream asks for: timestamps are rounded to them here, and
    # kept strictly increasing (an input declaring 90000 fps gets 1 ms steps).
    self.time_base = fractions.Fraction(time_base) if time_base else 1 / rate
    self._frame_step = max(1, round(1 / (rate * self.time_base)))
    ext = os.path.splitext(self.path)[1].lower()
    self._out_tb = fractions.Fraction(1, 1000) if ext in (".mkv", ".webm") else self.time_base
    self._last_out = None
    encoder, pix_fmt = ENCODERS[codec]
    options = encoder_options(codec, crf)
    self.crf = int(options["crf"]) if "crf" in options else None
    try:
      container_options = {"movflags": "+faststart"} if self.path.lower().endswith((".mp4", ".mov")) else {}
      self._container = av.open(self._tmp, "w", options=container_options)
      s = self._container.add_stream(encoder, rate=rate, options=options)
      s.width, s.height = self.size_wh
      s.pix_fmt = pix_fmt
      s.codec_context.time_base = self._out_tb
      s.time_base = self._out_tb
      if sample_aspect_ratio:
        s.codec_context.sample_aspect_ratio = sample_aspect_ratio
      if codec == "h265" and self.path.lower().endswith((".mp4", ".mov")):
        s.codec_tag = "hvc1"  # What Apple's players and browsers look for.
      if pix_fmt == "yuv420p":  # Tag what swscale's RGB->YUV used: BT.601, limited range.
        s.codec_context.colorspace = 6
        s.codec_context.color_range = 1
      self._stream = s
      if audio_from:
        self._open_audio(audio_from)
    except av.error.FFmpegError as e:
      self.abort()
      raise ValueError(f"FFmpeg cannot open a {codec} writer for {os.path.basename(path)} "
                       f"({self.size_wh[0]}x{self.size_wh[1]}): {_reason(e)}") from None

  # -- audio ---------------------------------------------------------------------------
  def _open_audio(self, source: str):
    import av  # pylint: disable=import-outside-toplevel
    if os.path.isdir(source):
      return
    src = av.open(source)
    if not src.streams.audio:
      src.close()
      return
    a_in = src.streams.audio[0]
    ext = os.path.splitext(self.path)[1].lower()
    name = a_in.codec_context.name
    copy = ext == ".mkv" or name in AUDIO_COPY.get(ext, ())
    if copy:
      a_out = self._container.add_stream_from_template(a_in)
    else:
      enc = AUDIO_ENCODER.get(ext, "aac")
      rate = a_in.codec_context.sample_rate
      if enc == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        rate = 48000
      a_out = self._container.add_stream(enc, rate=rate)
      a_out.layout = a_in.codec_context.layout
    self._audio_in, self._audio_src, self._audio_out = a_in, src, a_out
    self._audio_packets = src.demux(a_in)
    self._audio_pending = None
    self._audio_copy = copy
    self.audio = {"source_codec": name, "codec": name if copy else a_out.codec_context.name,
                  "mode": "copy" if copy else "re-encoded", "sample_rate": a_in.codec_context.sample_rate,
                  "channels": a_in.codec_context.channels}

  def _pump_audio(self, until: float | None):
    """Muxes the source's audio packets that start before ``until`` seconds (all: None)."""
    if self._audio_in is None:
      return
    while True:
      pkt = self._audio_pending
      self._audio_pending = None
      if pkt is None:
        pkt = next(self._audio_packets, None)
        if pkt is None:
          break
      if pkt.size == 0 or pkt.pts is None:
        continue
      t = float(pkt.pts * pkt.time_base)
      if until is not None and t >= until:
        self._audio_pending = pkt
        break
      if self._audio_copy:
        pkt.stream = self._audio_out
        self._container.mux(pkt)
      else:
        for frame in pkt.decode():
          for out in self._audio_out.encode(frame):
            self._container.mux(out)

  def _end_audio(self, end_time: float):
    if self._audio_in is None:
      return
    self._pump_audio(end_time)
    if not self._audio_copy:
      for out in self._audio_out.encode(None):
        self._container.mux(out)
    self._audio_src.close()
    self._audio_in = None

  # -- video ---------------------------------------------------------------------------
  def write(self, frame_rgb_uint8: np.ndarray, pts: int | None = None):
    """Appends one frame; ``pts`` in ``time_base`` units (increasing), default frame-spaced."""
    f = np.asarray(frame_rgb_uint8)
    if f.dtype != np.uint8 or f.shape != (self.size_wh[1], self.size_wh[0], 3):
      raise ValueError(f"frame must be uint8 {(self.size_wh[1], self.size_wh[0], 3)}, got {f.dtype} {f.shape}")
    if self._container is None:
      import cv2  # pylint: disable=import-outside-toplevel
      if not cv2.imwrite(os.path.join(self._tmp, f"{self.count:06d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"cannot write frame {self.count} of {self.path}")
      self.count += 1
      return
    import av  # pylint: disable=import-outside-toplevel
    if pts is None:
      pts = 0 if self._last_pts is None else self._last_pts + self._frame_step
    pts = int(pts)
    if self._last_pts is not None and pts <= self._last_pts:
      pts = self._last_pts + 1
    out = round(pts * self.time_base / self._out_tb)
    if self._last_out is not None and out <= self._last_out:
      out = self._last_out + 1
    self._last_out = out
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
    vf.pts, vf.time_base = out, self._out_tb
    for pkt in self._stream.encode(vf):
      self._container.mux(pkt)
    self._last_pts = pts
    self.count += 1
    self._pump_audio(float(pts * self.time_base))

  def finish(self) -> str:
    """Ends writing; returns the temporary path (not yet renamed onto ``path``)."""
    if self.count == 0:
      self.abort()
      raise ValueError(f"no frames written to {self.path}")
    if self._container is not None:
      try:
        for pkt in self._stream.encode(None):
          self._container.mux(pkt)
        self._end_audio(float((self._last_pts + self._frame_step) * self.time_base))
        self._container.close()
      except Exception as e:  # pylint: disable=broad-except
        self.abort()
        raise ValueError(f"FFmpeg failed to finish {os.path.basename(self.path)} ({_reason(e)})") from None
      self._container = None
    return self._tmp

  def close(self) -> str:
    tmp = self.finish()
    outputs.commit([(tmp, self.path)], overwrite=self.overwrite)
    return self.path

  def abort(self):
    for c in (self._container, getattr(self, "_audio_src", None)):
      if c is not None:
        try:
          c.close()
        except Exception:  # pylint: disable=broad-except
          pass
    self._container = None
    outputs.discard(getattr(self, "_tmp", None))

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False


def roundtrip(frames_u8: np.ndarray, codec: str, crf: int | None = None) -> np.ndarray:
  """``frames_u8`` (N, H, W, 3) encoded with ``codec`` at ``crf`` as :class:`VideoWriter`
  encodes them (same encoder, pixel format and options), in memory, and decoded back.

  What the codec-aware attack optimises through (the frames form one short clip: its first
  is an intra frame). Lossless codecs return the input unchanged.
  """
  import io  # pylint: disable=import-outside-toplevel
  import av  # pylint: disable=import-outside-toplevel
  frames_u8 = np.asarray(frames_u8)
  if codec in LOSSLESS_CODECS:
    return frames_u8.copy()
  encoder, pix_fmt = ENCODERS[codec]
  options = encoder_options(codec, crf)
  buf = io.BytesIO()
  h, w = frames_u8.shape[1:3]
  with av.open(buf, "w", format="matroska") as c:
    s = c.add_stream(encoder, rate=30, options=options)
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    s.codec_context.colorspace, s.codec_context.color_range = 6, 1
    for i, f in enumerate(frames_u8):
      vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
      vf.pts = i
      for pkt in s.encode(vf):
        c.mux(pkt)
    for pkt in s.encode():
      c.mux(pkt)
  buf.seek(0)
  with av.open(buf, "r") as c:
    out = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
  if len(out) != len(frames_u8):
    raise RuntimeError(f"{codec} round trip gave {len(out)} frames for {len(frames_u8)}")
  return np.stack(out)


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """Float [0, 1] -> uint8 by rounding (the original truncated, losing up to 1 grey level)."""
  return np.clip(np.rint(np.asarray(frames, np.float32) * 255.0), 0, 255).astype(np.uint8)
