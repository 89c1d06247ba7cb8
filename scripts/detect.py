"""Detects faces in an image or video and prints them (boxes, scores, 5 landmarks).

With no --input it runs on the astronaut photo that ships with scikit-image.

  python scripts/detect.py --detector mtcnn
  python scripts/detect.py --input frame.png --detector retinaface
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from drsf_jax import cli
from drsf_jax.io import video
from drsf_jax.victims import detectors

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Image or video (default: skimage's astronaut photo).")
flags.DEFINE_enum("detector", "mtcnn", list(detectors.DETECTORS), "Face detector.")
flags.DEFINE_string("weights_dir", None, "Converted weights directory.")
flags.DEFINE_integer("max_frames", 1, "Frames of a video to run on.")
flags.DEFINE_string("output", None, "Optional JSON file for the detections.")
cli.define_overwrite_flag()
cli.define_cache_flag()
flags.adopt_module_key_flags(cli)


def main(argv):
  from drsf_jax.io import outputs
  if FLAGS.input is not None:
    outputs.check_input(FLAGS.input)
  if FLAGS.output:
    outputs.check([("output", FLAGS.output)], [FLAGS.input], FLAGS.overwrite)
  det = detectors.load_detector(FLAGS.detector, FLAGS.weights_dir)
  name, frames = video.read_image_or_video(FLAGS.input, FLAGS.max_frames)
  results = []
  for i, frame in enumerate(frames):
    dets = det.detect(frame.astype("float32")[None] / 255.0)[0]
    print(f"{name} frame {i}: {len(dets['boxes'])} face(s) found by {FLAGS.detector}")
    faces = []
    for b, s, lm in zip(dets["boxes"], dets["scores"], dets["landmarks"]):
      print(f"  box [{b[0]:.1f}, {b[1]:.1f}, {b[2]:.1f}, {b[3]:.1f}]  score {s:.4f}  "
            f"landmarks {' '.join(f'({x:.1f},{y:.1f})' for x, y in lm)}")
      faces.append({"box": [float(v) for v in b], "score": float(s),
                    "landmarks5": [[float(x), float(y)] for x, y in lm]})
    results.append({"frame_id": i, "faces": faces})
  if FLAGS.output:
    video.write_json_atomic(FLAGS.output, {"input": name, "detector": FLAGS.detector, "frames": results},
                            overwrite=FLAGS.overwrite)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  cli.run(main)
