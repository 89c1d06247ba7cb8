"""Draws boxes, landmarks, head-pose axes and gaze on a video or an image (not mirrored).

  python scripts/visualize.py -i video.mp4 -o drawn.mkv -d retinaface -z MPIIGaze
  python scripts/visualize.py -i video.mp4 -o drawn.mkv --predictions preds.json
  python scripts/visualize.py -i frame.png -o drawn.png -d mtcnn
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from drsf_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Input video or image.", short_name="i")
flags.DEFINE_string("output", None, "Output video (.mkv/.mp4/.mov/.webm, by --codec) or image "
                    "(.png/.jpg).", short_name="o")
flags.DEFINE_string("predictions", None, "Draw these saved predictions instead of running models.")
cli.define_model_flags(what="")
flags.DEFINE_integer("max_frames", None, "Only the first N frames (when running models).")
flags.DEFINE_string("codec", "ffv1", "Video codec: ffv1, h264-lossless (lossless), h264, h265, vp9 "
                    "(lossy, CRF 18; h264 in .mp4 plays in any browser) or png-seq (a new or empty "
                    "folder of PNGs).")
flags.DEFINE_string("calibration", None, "Camera calibration YAML (ptgaze format).")
cli.define_overwrite_flag()
flags.mark_flags_as_required(["input", "output"])
cli.define_cache_flag()
flags.adopt_module_key_flags(cli)


def main(argv):
  from drsf_jax.evaluation import visualize
  from drsf_jax.io import outputs
  from drsf_jax.io import records
  from drsf_jax.io import video
  from drsf_jax.victims import inference
  outputs.check_input(FLAGS.input)
  is_image = FLAGS.input.lower().endswith(video.IMAGE_EXTS)
  if is_image:
    if not FLAGS.output.lower().endswith(video.IMAGE_EXTS):
      raise cli.UserError(f"an image input needs an image output ({', '.join(video.IMAGE_EXTS)}), "
                          f"got {FLAGS.output}")
  else:
    video.check_codec(FLAGS.output, FLAGS.codec)
  outputs.check([("output", FLAGS.output)], [FLAGS.input, FLAGS.predictions, FLAGS.calibration],
                FLAGS.overwrite, dirs=[FLAGS.output] if FLAGS.codec == "png-seq" and not is_image else ())
  if FLAGS.predictions:
    doc = records.read(FLAGS.predictions)
  else:
    pred = inference.Predictor(FLAGS.detector, FLAGS.alignment, FLAGS.gaze, FLAGS.weights_dir)
    if is_image:
      img = video.read_image(FLAGS.input)
      doc = {"frames": pred.predict(img[None].astype("float32") / 255.0)}
    else:
      doc = inference.run(FLAGS.input, pred, FLAGS.max_frames)
  if is_image:
    import cv2
    img = video.read_image(FLAGS.input)
    faces = doc["frames"][0]["faces"] if doc["frames"] else []
    out = visualize.draw_faces(img, faces)
    tmp = video.atomic_path(FLAGS.output)
    if not cv2.imwrite(tmp, cv2.cvtColor(out, cv2.COLOR_RGB2BGR)):
      outputs.discard(tmp)
      raise cli.UserError(f"cannot write image {FLAGS.output}")
    outputs.commit([(tmp, FLAGS.output)], overwrite=FLAGS.overwrite)
    print(f"wrote {FLAGS.output}: {len(faces)} face(s)")
    return
  n = visualize.draw_video(FLAGS.input, FLAGS.output, doc, FLAGS.codec, FLAGS.calibration,
                           overwrite=FLAGS.overwrite)
  print(f"wrote {FLAGS.output}: {n} frames")


if __name__ == "__main__":
  cli.run(main)
