"""The package's shape: no import cycles, no upward imports, README's map matches the tree.

Imports are parsed (``ast``), module-level and inside functions alike: a deferred import
is still a dependency. A module may import modules of its own layer or of a lower one;
a new module must be placed in a layer here (and in README's "Library map") or this fails.
"""

import ast
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first. README, "Library map", says the same in words.
LAYERS = [
    ("core", ["frames", "outputs", "geometry", "checkpoints", "obfuscation", "crop", "attacks",
              "temporal", "models", "models.layers"]),
    ("models", ["models.retinaface", "models.mtcnn", "models.fan", "models.gaze", "headpose"]),
    ("io", ["video", "records", "samples"]),
    ("victims", ["detectors", "victim_interface", "victims", "gaze_victims", "inference", "metrics",
                 "visualize"]),
    ("evaluation", ["privacy", "guard"]),
    ("deid", ["pipeline", "corpus", "report"]),
    ("interface", ["api", "cli", ""]),  # "" is drsf_jax/__init__.py.
]


def _modules() -> dict[str, str]:
  out = {}
  for p in glob.glob(os.path.join(ROOT, "drsf_jax", "**", "*.py"), recursive=True):
    rel = os.path.relpath(p, os.path.join(ROOT, "drsf_jax"))[:-3].replace(os.sep, ".")
    out[rel[:-len("__init__")].rstrip(".") if rel.endswith("__init__") else rel] = p
  return out


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """The package modules ``path`` imports (``from drsf_jax import video`` -> ``video``;
  ``from drsf_jax.api import infer`` -> ``api``; ``import drsf_jax`` -> ``""``)."""
  rel = lambda n: n[len("drsf_jax."):] if n.startswith("drsf_jax.") else ("" if n == "drsf_jax" else None)
  deps = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      deps.update(r for r in (rel(a.name) for a in node.names) if r is not None and r in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      base = rel(node.module)
      if base is None:
        continue
      for a in node.names:
        sub = f"{base}.{a.name}" if base else a.name
        deps.add(sub if sub in modules else base)
  return {d for d in deps if d in modules}


def _graph():
  modules = _modules()
  return modules, {m: _imports(p, modules) - {m} for m, p in modules.items()}


def test_every_module_has_a_layer():
  modules, _ = _graph()
  placed = [m for _, ms in LAYERS for m in ms]
  assert len(placed) == len(set(placed))
  assert sorted(set(modules) - set(placed)) == [], "place new modules in LAYERS (and README's map)"
  assert sorted(set(placed) - set(modules)) == [], "LAYERS names modules that no longer exist"


def test_no_import_cycle():
  _, graph = _graph()
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == 1:
        cycles.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m)
  assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_upward_import():
  _, graph = _graph()
  rank = {m: i for i, (_, ms) in enumerate(LAYERS) for m in ms}
  bad = [f"{m or '__init__'} ({LAYERS[rank[m]][0]}) imports {d} ({LAYERS[rank[d]][0]})"
         for m, deps in graph.items() for d in deps if rank[d] > rank[m]]
  assert not bad, bad


def test_readme_library_map_matches_the_tree():
  text = open(os.path.join(ROOT, "README.md")).read()
  block = text[text.index("## Library map"):]
  block = block[block.index("```") + 3:]
  block = block[:block.index("```")]
  named = {n for n in re.findall(r"(?<![\w/])([\w/]+\.py)", block)
           if not n.startswith(("drsf_jax/", "scripts/", "tests/"))}
  tree = {os.path.relpath(p, os.path.join(ROOT, "drsf_jax")).replace(os.sep, "/")
          for p in _modules().values() if not p.endswith("__init__.py")}
  assert sorted(tree - named) == [], "modules missing from README's Library map"
  assert sorted(named - tree) == [], "README's Library map names files that do not exist"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
  """The parser on a planted example: a deferred import counts."""
  a = tmp_path / "a.py"
  a.write_text("def f():\n  from drsf_jax import pipeline\n  return pipeline\n")
  assert _imports(str(a), {"pipeline": "", "video": ""}) == {"pipeline"}
  b = tmp_path / "b.py"
  b.write_text("from drsf_jax.models import fan\nimport drsf_jax.video\n")
  assert _imports(str(b), {"models": "", "models.fan": "", "video": ""}) == {"models.fan", "video"}


def test_benchmarks_package_has_no_cycle():
  """benchmarks/ (the PyTorch baselines): original_like used torch_baselines, which
  forwarded run_original_like back to it."""
  bench = os.path.join(ROOT, "benchmarks")
  mods = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(bench, "*.py"))} - {"__init__"}
  graph = {}
  for m in mods:
    deps = set()
    for node in ast.walk(ast.parse(open(os.path.join(bench, m + ".py")).read())):
      if isinstance(node, ast.ImportFrom) and node.module == "benchmarks":
        deps.update(a.name for a in node.names if a.name in mods)
      elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("benchmarks."):
        deps.add(node.module.split(".", 1)[1])
      elif isinstance(node, ast.Import):
        deps.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("benchmarks."))
    graph[m] = (deps & mods) - {m}

  def reaches(a, b, seen=()):
    return any(d == b or (d not in seen and reaches(d, b, seen + (d,))) for d in graph[a])

  assert [m for m in sorted(mods) if reaches(m, m)] == []
