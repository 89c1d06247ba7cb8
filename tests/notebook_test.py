"""examples/quickstart.ipynb executes, top to bottom, on a short clip (so it cannot rot),
and what it measures through the public API agrees with the pipeline's own report."""

import json
import os

import pytest


@pytest.mark.slow
def test_quickstart_notebook_executes(real_weights, tmp_path):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("dlib")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  nb = nbformat.read(os.path.join(root, "examples", "quickstart.ipynb"), as_version=4)
  env = {"DRSF_QUICKSTART_FRAMES": "4", "DRSF_QUICKSTART_MAX_ITER": "10", "DRSF_JAX_WEIGHTS": real_weights,
         "MPLBACKEND": "module://matplotlib_inline.backend_inline", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)  # The kernel is a child process: it inherits these.
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  line = next(l for l in text.splitlines() if l.startswith("QUICKSTART_RESULT "))
  res = json.loads(line[len("QUICKSTART_RESULT "):])
  assert res["frames"] == 4
  # infer() on the written file, then evaluate(), gives what deidentify() verified.
  assert res["iou_mean"] == pytest.approx(res["verification"]["iou_mean"], rel=1e-6)
  assert res["landmark_px_mean"] == pytest.approx(res["verification"]["landmark_px_mean"], rel=1e-6)
  assert 0.0 <= res["reid_rate_same_frame"] <= 1.0 and res["embedding_distance_mean"] > 0.0
  # The figures were drawn (two PNG outputs: the frames and the trade-off).
  pngs = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "image/png" in o.get("data", {}))
  assert pngs == 2
