"""Writes examples/quickstart.ipynb from the cells below (outputs empty; run it to fill them).

  python examples/make_quickstart.py

The notebook is generated so that its code is reviewed as code; tests/notebook_test.py
executes the written .ipynb on a short clip.
"""

import json
import os

CELLS = [
    ("markdown", """# drsf-jax quickstart

De-identify a driver-facing clip, then check — on the written file, as a researcher would —
that the authorized models still see the same face, and that an independent recogniser
does not see the same person. Only the public API (`import drsf_jax`) is used.

* Weights: `make demo` converts MTCNN (the weights `facenet-pytorch` ships) into
  `~/.cache/drsf_jax`; set `DRSF_JAX_WEIGHTS` to use another folder.
* The clip is the embedded sample (no file needed): the astronaut photo moved like a
  driver's head, 256x256, 30 fps.
* Runtime on a 2-core laptop CPU: about 10 s per frame with MTCNN at the default 150 steps.
  `DRSF_QUICKSTART_FRAMES` and `DRSF_QUICKSTART_MAX_ITER` shorten it (the test suite runs
  4 frames, 10 steps)."""),
    ("code", """import json
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import drsf_jax

FRAMES = int(os.environ.get("DRSF_QUICKSTART_FRAMES", "16"))
MAX_ITER = int(os.environ.get("DRSF_QUICKSTART_MAX_ITER", "150"))
WEIGHTS = os.environ.get("DRSF_JAX_WEIGHTS")  # None: ~/.cache/drsf_jax
work = tempfile.mkdtemp(prefix="drsf_quickstart.")
src = drsf_jax.sample_video(os.path.join(work, "sample.mkv"), num_frames=FRAMES)
print(src)"""),
    ("markdown", """## 1. De-identify

Pixelate the face (`pixelate_10`: 10x10 cells across it), then let the attack nudge the
pixelated pixels (at most 8/255 each) until MTCNN, the authorized detector, finds the same
box and landmarks it found on the original. The output is written, decoded, checked by the
privacy guard and verified before it is renamed into place."""),
    ("code", """out = os.path.join(work, "sample_deid.mkv")
report = drsf_jax.deidentify(src, out, weights_dir=WEIGHTS, detector="mtcnn",
                             deid="pixelate_10", max_iter=MAX_ITER)
print("privacy guard passed:", report["privacy_guard"]["passed"])
print("mean attack steps per frame:", report["summary"]["iterations_mean"])
print("verified on the decoded output:", json.dumps(report["verification"]["summary"], default=str)[:300])"""),
    ("markdown", """## 2. Utility, measured as a user measures it

Run the authorized model on the original and on the de-identified file and compare."""),
    ("code", """before = drsf_jax.infer(src, "mtcnn", weights_dir=WEIGHTS)
after = drsf_jax.infer(out, "mtcnn", weights_dir=WEIGHTS)
utility = drsf_jax.evaluate(before, after)
s = utility["summary"]
print(f"IoU {s['iou_mean']:.3f}   landmarks {s['landmark_px_mean']:.2f} px   "
      f"faces lost {s['missing_faces']['in_prediction']} of {s['frames']}")"""),
    ("code", """originals = drsf_jax.read_video(src)
deid = drsf_jax.read_video(out)
show = sorted({0, len(originals) // 2, len(originals) - 1})
fig, axes = plt.subplots(len(show), 3, figsize=(9, 3 * len(show)), squeeze=False)
for row, i in zip(axes, show):
    panels = [(originals[i], "original"),
              (drsf_jax.draw_predictions(originals[i], before["frames"][i]["faces"]), "predictions, original"),
              (drsf_jax.draw_predictions(deid[i], after["frames"][i]["faces"]), "predictions, de-identified")]
    for ax, (img, title) in zip(row, panels):
        ax.imshow(img)
        ax.set_title(f"frame {i}: {title}", fontsize=9)
        ax.axis("off")
fig.tight_layout()
plt.show()"""),
    ("markdown", """## 3. Privacy, measured with models the attack never saw

dlib's face-recognition ResNet embeds the original and the de-identified face at the
original box; a distance under 0.6 is dlib's "same person". dlib's HOG detector and
scikit-image's LBP cascade say whether a face is still found."""),
    ("code", """boxes = np.array([f["faces"][0]["box"] if f["faces"] else [np.nan] * 4 for f in before["frames"]])
privacy = drsf_jax.privacy_metrics(originals, deid, boxes)
print(f"same-frame re-identification {privacy['reid_rate_same_frame']:.2f}   "
      f"mean dlib distance {privacy['embedding_distance_mean']:.3f} (same person < 0.6)")
for name, rate in privacy["detection_rate"].items():
    print(f"  {name}: finds the face in {rate['original']:.2f} of originals, {rate['deidentified']:.2f} after")"""),
    ("markdown", """## 4. The trade-off, frame by frame

Each point is a frame: how far the authorized landmarks moved (utility, lower is better)
against how far the face moved for an independent recogniser (privacy, higher is better).
The goal is the top-left corner: landmarks kept, identity gone."""),
    ("code", """per_u = {r["frame_id"]: r for r in utility["per_frame"]}
xs, ys = [], []
for r in privacy["per_frame"]:
    u = per_u.get(r["frame"])
    if u and u["landmark_px"] is not None and np.isfinite(r["distance"]):
        xs.append(u["landmark_px"])
        ys.append(r["distance"])
fig, ax = plt.subplots(figsize=(5, 4))
ax.scatter(xs, ys)
ax.axhline(0.6, color="red", ls="--", label="dlib same-person threshold")
ax.set_xlabel("authorized landmark error, px (utility: lower is better)")
ax.set_ylabel("dlib distance to the original (privacy: higher is better)")
ax.set_xlim(left=0)
ax.set_ylim(0, max([1.0] + [y + 0.05 for y in ys]))
ax.legend()
plt.show()
result = {"frames": len(originals), "iou_mean": s["iou_mean"], "landmark_px_mean": s["landmark_px_mean"],
          "verification": report["verification"]["summary"],
          "reid_rate_same_frame": privacy["reid_rate_same_frame"],
          "embedding_distance_mean": privacy["embedding_distance_mean"]}
print("QUICKSTART_RESULT " + json.dumps(result, default=str))"""),
]


def main():
  nb = {"nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": []}
  for i, (kind, src) in enumerate(CELLS):
    lines = src.splitlines(keepends=True)
    cell = {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": lines}
    if kind == "code":
      cell.update(execution_count=None, outputs=[])
    nb["cells"].append(cell)
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.ipynb")
  with open(path, "w") as f:
    json.dump(nb, f, indent=1)
    f.write("\n")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
