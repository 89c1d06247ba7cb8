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

# Lowest first: the subpackages, then the top-level interface modules. README ("Library
# map") and each subpackage's __init__ docstring ("May import: ...") say the same.
LAYERS = [
    ("geometry", ["geometry"]),
    ("io", ["io"]),
    ("models", ["models"]),
    ("victims", ["victims"]),
    ("evaluation", ["evaluation"]),
    ("deid", ["deid"]),
    ("interface", ["api", "cli", ""]),  # "" is drsf_jax/__init__.py.
]


def _layer(module: str) -> int | None:
  """Index in LAYERS of a module (``deid.pipeline`` -> deid's), None when unplaced."""
  for i, (_, owners) in enumerate(LAYERS):
    for o in owners:
      if module == o or (o and module.startswith(o + ".")):
        return i
  return None


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
  assert sorted(m for m in modules if _layer(m) is None) == [], \
      "place new modules in a subpackage of LAYERS (and README's map)"
  top = sorted(m for m in modules if "." not in m and m and not os.path.isdir(
      os.path.join(ROOT, "drsf_jax", m)))
  assert top == ["api", "cli"], "only the interface lives at the top level: " + str(top)


def test_each_subpackage_says_what_it_may_import():
  """Each subpackage's docstring ends with "May import: <the layers below it>."."""
  import importlib
  for i, (name, _) in enumerate(LAYERS[:-1]):
    doc = importlib.import_module(f"drsf_jax.{name}").__doc__ or ""
    m = re.search(r"May import: ([^.]*)\.", doc)
    assert m, f"drsf_jax/{name}/__init__.py: no 'May import: ...' line"
    said = [w.strip() for w in m.group(1).split(",")] if i else []
    assert said == [n for n, _ in LAYERS[:i]], (name, m.group(1))


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
  bad = [f"{m or '__init__'} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
         for m, deps in graph.items() for d in deps if _layer(d) > _layer(m)]
  assert not bad, bad


def _readme_tree() -> tuple[set[str], set[str]]:
  """The files and subpackages README's "Library map" draws under ``drsf_jax/``."""
  text = open(os.path.join(ROOT, "README.md")).read()
  block = text[text.index("## Library map"):]
  block = block[block.index("```") + 3:]
  lines = block[:block.index("```")].strip("\n").split("\n")
  assert lines[0] == "drsf_jax/"
  files, dirs, cur = set(), set(), None
  for ln in lines[1:]:
    m = re.match(r"( *)([\w/.]+)", ln)
    depth, name = len(m.group(1)), m.group(2)
    if depth == 0:
      break
    if depth == 2 and name.endswith("/"):
      cur = name[:-1]
      dirs.add(cur)
    elif depth == 2:
      cur = None
      files.add(name)
    else:
      assert depth == 4 and cur, ln
      files.add(f"{cur}/{name}")
  return files - {"__init__.py"}, dirs


def test_readme_library_map_matches_the_tree():
  files, dirs = _readme_tree()
  tree = {os.path.relpath(p, os.path.join(ROOT, "drsf_jax")).replace(os.sep, "/")
          for p in _modules().values() if not p.endswith("__init__.py")}
  assert sorted(tree - files) == [], "modules missing from README's Library map"
  assert sorted(files - tree) == [], "README's Library map names files that do not exist"
  assert dirs == {n for n, _ in LAYERS[:-1]}, "README's subpackages differ from LAYERS"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
  """The parser on a planted example: a deferred import counts."""
  a = tmp_path / "a.py"
  a.write_text("def f():\n  from drsf_jax.deid import pipeline\n  return pipeline\n")
  assert _imports(str(a), {"deid.pipeline": "", "io.video": ""}) == {"deid.pipeline"}
  b = tmp_path / "b.py"
  b.write_text("from drsf_jax.models import fan\nimport drsf_jax.io.video\n")
  assert _imports(str(b), {"models": "", "models.fan": "", "io.video": ""}) == {"models.fan", "io.video"}


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
