"""Privacy–utility report over a grid of obfuscation levels, with and without the attack.

  python scripts/report.py -i ../shared/data/talking_head_a.mp4 -o outputs/report \
      --gallery ../shared/data/identities,../shared/data/talking_head_b.mp4,skimage:astronaut \
      -d retinaface -z MPIIGaze

Writes report.json, report.md (table), tradeoff.png and contact_sheet.png (original /
predictions before de-identification / predictions after, and de-identified faces beside
their nearest gallery faces) into --output_dir.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from drsf_jax import cli
from drsf_jax.deid import attacks
from drsf_jax.deid import obfuscation

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Input video.", short_name="i")
flags.DEFINE_string("output_dir", None, "Directory for the report files.", short_name="o")
flags.DEFINE_list("gallery", [], "Other identities for rank-1/mAP/k: folders of NAME/*.jpg, videos "
                  "or images (one identity each), or skimage:astronaut.")
flags.DEFINE_list("levels", ["pixelate_10", "pixelate_20", "pixelate_30", "blur_31"], "Obfuscation levels.")
cli.define_model_flags(gaze="MPIIGaze")
flags.DEFINE_enum("attack", "adam", list(attacks.ATTACKS), "Attack.", short_name="g")
flags.DEFINE_integer("max_frames", 16, "Frames evaluated (from the start of the video).")
flags.DEFINE_integer("max_iter", 100, "Attack steps per batch.")
flags.DEFINE_integer("batch_size", 16, "Frames per attack batch.", short_name="bs")
flags.DEFINE_integer("cnn_frames", 4, "dlib's CNN detector (slow on a CPU) runs on this many evenly "
                     "spaced frames.")
flags.DEFINE_list("attacker", None, "Attacker processings measured (default: all of "
                  "privacy.ATTACKER_PROCESSINGS).")
cli.define_overwrite_flag()
flags.mark_flags_as_required(["input", "output_dir"])
cli.define_cache_flag()
flags.adopt_module_key_flags(cli)


def main(argv):
  for level in FLAGS.levels:
    obfuscation.parse_spec(level)
  if len(set(FLAGS.levels)) != len(FLAGS.levels):
    raise cli.UserError(f"--levels names a level twice: {','.join(FLAGS.levels)}")
  from drsf_jax.deid import report
  from drsf_jax.io import outputs
  inputs = [FLAGS.input, *(g for g in FLAGS.gallery if g != report.ASTRONAUT and not os.path.isdir(g))]
  for p in inputs:
    outputs.check_input(p)
  if os.path.lexists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
    raise cli.UserError(f"--output_dir {FLAGS.output_dir} is a file, not a directory")
  outputs.check(report.output_paths(FLAGS.output_dir, FLAGS.levels), inputs, FLAGS.overwrite)
  cfg = report.ReportConfig(detector=FLAGS.detector, alignment=FLAGS.alignment, gaze=FLAGS.gaze,
                            attack=FLAGS.attack, levels=tuple(FLAGS.levels), max_frames=FLAGS.max_frames,
                            max_iter=FLAGS.max_iter, batch_size=FLAGS.batch_size,
                            cnn_frames=FLAGS.cnn_frames)
  if FLAGS.attacker is not None:
    cfg.processings = tuple(FLAGS.attacker)
  report.run(FLAGS.input, FLAGS.output_dir, cfg, FLAGS.gallery, FLAGS.weights_dir,
             overwrite=FLAGS.overwrite)
  with open(os.path.join(FLAGS.output_dir, "report.md")) as f:
    print(f.read())
  print(f"wrote report.json, report.md, tradeoff.png, contact_sheet.png in {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main)
