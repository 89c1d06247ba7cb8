"""The attack touches only the faces: outside the obfuscated squares the written output is
the decoded input, bit for bit (real weights, decoded back from disk). The clip is the
package-shipped astronaut sample, whose face covers part of the frame (talking_head_a's
obfuscated square covers all of its 256x256 frame)."""

import numpy as np
import pytest

from drsf_jax.deid import obfuscation
from drsf_jax.deid import pipeline
from drsf_jax.geometry import bbox
from drsf_jax.io import samples
from drsf_jax.io import video

N = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  frames = samples.astronaut_clip(N, 256)
  path = str(tmp_path_factory.mktemp("clip") / "astronaut.mkv")
  with video.VideoWriter(path, 30.0, (256, 256), "ffv1") as w:
    for f in frames:
      w.write(f)
  return path, frames


def _run(tmp_path, wdir, clip, perturb, margin=0):
  src, orig = clip
  out = str(tmp_path / f"{perturb}{margin}.mkv")
  cfg = pipeline.DeidConfig(detector="retinaface", deid="pixelate_10", max_iter=4, batch_size=N,
                            max_frames=N, perturb=perturb, perturb_margin=margin)
  rep = pipeline.deidentify(src, out, cfg, wdir, progress=False)
  frames = np.stack(list(video.VideoReader(out)))
  return orig, frames, rep


@pytest.fixture(scope="module")
def detections(real_weights, clip):
  from drsf_jax.victims import detectors
  det = detectors.load_detector("retinaface", real_weights)
  return det.detect(clip[1].astype(np.float32) / 255.0)


@pytest.mark.parametrize("margin", [6])
def test_face_mode_leaves_every_other_pixel_unchanged(real_weights, tmp_path, clip, detections, margin):
  orig, out, _ = _run(tmp_path, real_weights, clip, "face", margin)
  regions = [bbox.face_regions(d["boxes"], orig.shape[1:3]) for d in detections]
  mask = pipeline.perturbation_mask(regions, orig.shape[1:3], margin)[..., 0] > 0
  assert mask.any() and (~mask).any()
  np.testing.assert_array_equal(out[~mask], orig[~mask])
  # Inside, the face is obfuscated and within eps of the obfuscated frame.
  obf = video.to_uint8(obfuscation.obfuscate(orig.astype(np.float32) / 255, regions, "pixelate_10"))
  inside = pipeline.perturbation_mask(regions, orig.shape[1:3], 0)[..., 0] > 0
  d = np.abs(out.astype(np.int32) - obf.astype(np.int32))[inside]
  assert d.max() <= 9, d.max()  # eps = 8/255, plus rounding.
  assert np.abs(out.astype(np.int32) - orig.astype(np.int32))[inside].mean() > 5
  if margin:
    ring = mask & ~inside
    assert (out[ring] != orig[ring]).any()  # The margin is used by the attack.


def test_frame_mode_perturbs_outside_the_face(real_weights, tmp_path, clip, detections):
  orig, out, _ = _run(tmp_path, real_weights, clip, "frame")
  regions = [bbox.face_regions(d["boxes"], orig.shape[1:3]) for d in detections]
  mask = pipeline.perturbation_mask(regions, orig.shape[1:3], 0)[..., 0] > 0
  assert (out[~mask] != orig[~mask]).mean() > 0.05


def test_bad_perturb_settings_are_errors():
  with pytest.raises(ValueError, match="perturb mode"):
    pipeline.DeidConfig(perturb="hands").validate()
  with pytest.raises(ValueError, match="perturb_margin"):
    pipeline.DeidConfig(perturb_margin=-1).validate()
