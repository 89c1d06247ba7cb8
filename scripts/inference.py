"""Runs the authorized models on a video and writes per-frame predictions (schema 1 JSON).

  python scripts/inference.py --input ../shared/data/talking_head_a.mp4 --output preds.json \
      --detector retinaface --gaze MPIIGaze --max_frames 64
"""

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

import drsf_jax
from drsf_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Input video.", short_name="i")
flags.DEFINE_string("output", None, "Output predictions JSON (written atomically).", short_name="o")
cli.define_model_flags(what="")
flags.DEFINE_integer("max_frames", None, "Only the first N frames.")
flags.DEFINE_integer("max_faces", 1, "Faces per frame (largest first) that get landmarks68/head pose/gaze.")
flags.DEFINE_integer("batch_size", 8, "Frames per batch.", short_name="bs")
flags.DEFINE_string("calibration", None, "Camera calibration YAML (ptgaze format); default a dummy camera.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("print_first", False, "Print the first frame's predictions.")
cli.define_overwrite_flag()
flags.mark_flags_as_required(["input", "output"])
cli.define_cache_flag()
flags.adopt_module_key_flags(cli)


def main(argv):
  from drsf_jax.io import outputs
  outputs.check_input(FLAGS.input)
  outputs.check([("output", FLAGS.output)], [FLAGS.input, FLAGS.calibration], FLAGS.overwrite)
  from drsf_jax.io import video
  total = len(video.VideoReader(FLAGS.input, max_frames=FLAGS.max_frames)) or None
  infer = functools.partial(
      drsf_jax.infer, FLAGS.input, FLAGS.detector, FLAGS.alignment, FLAGS.gaze,
      weights_dir=FLAGS.weights_dir, max_frames=FLAGS.max_frames, max_faces=FLAGS.max_faces,
      calibration=FLAGS.calibration, batch_size=FLAGS.batch_size)
  if FLAGS.progress:
    from tqdm import tqdm
    with tqdm(total=total, desc="inference", unit="frame") as bar:
      doc = infer(progress=bar.update)
  else:
    doc = infer()
  video.write_json_atomic(FLAGS.output, doc, overwrite=FLAGS.overwrite)
  n_faces = sum(len(f["faces"]) for f in doc["frames"])
  print(f"wrote {FLAGS.output}: {doc['video']['num_frames']} frames, {n_faces} faces, "
        f"{sum(1 for f in doc['frames'] if not f['faces'])} frames without a face")
  if FLAGS.print_first and doc["frames"]:
    first = doc["frames"][0]
    print(f"frame {first['frame_id']}: {len(first['faces'])} face(s)")
    for face in first["faces"]:
      print(f"  box {[round(v, 1) for v in face['box']]} score {face['score']:.3f}")
      lms = face["landmarks68"] or face["landmarks5"]
      print(f"  landmarks ({face['landmarks_source']}-point): " + " ".join(f"({x:.1f},{y:.1f})" for x, y in lms))
      if face["head_pose"]:
        from drsf_jax.geometry import headpose
        import numpy as np
        e = headpose.head_pose_euler_deg(np.asarray(face["head_pose"]["rotation_vector"]))
        print(f"  head pose: rotation_vector {[round(v, 4) for v in face['head_pose']['rotation_vector']]} "
              f"translation {[round(v, 4) for v in face['head_pose']['translation']]} m "
              f"(pitch {e[0]:.1f}, yaw {e[1]:.1f}, roll {e[2]:.1f} deg)")
      if face["gaze"]:
        p, y = face["gaze"]["pitch_yaw"]
        print(f"  gaze: pitch {p:.4f} rad, yaw {y:.4f} rad; vector {[round(v, 4) for v in face['gaze']['vector']]}")


if __name__ == "__main__":
  cli.run(main)
