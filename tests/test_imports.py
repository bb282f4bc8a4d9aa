"""The package's import structure: no import cycle, and every import points down the layers.

A walk over every module's imports (at the top and inside functions alike, since a lazy import
only hides a cycle or an upward dependency) with `ast`, failing with the cycle's modules in order,
or with the importing module, the imported one and their layers."""

import ast
import os
import pathlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mtljax"


def _modules() -> dict[str, str]:
  """`{dotted module name: file}` of every module of the package (packages as their __init__)."""
  out = {}
  for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out[".".join(rel)] = os.path.join(folder, f)
  return out


def _imports(name: str, path: str, modules) -> set[str]:
  """The package's modules that module `name` imports (`from a.b import c` is `a.b.c` when `c` is
  a module, else `a.b`)."""
  is_package = path.endswith("__init__.py")
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolved against this module's package
        parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(parts + ([base] if base else []))
      for a in node.names:
        found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
  return {m for m in found if m in modules and m != name}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as `[a, b, ..., a]`, or None (depth-first search, colours)."""
  colour, stack = {}, []

  def visit(node):
    colour[node] = "grey"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if colour.get(nxt) == "grey":
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in colour:
        cycle = visit(nxt)
        if cycle:
          return cycle
    colour[node] = "black"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in colour:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_walk_finds_a_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert _find_cycle(graph) == ["a", "b", "c", "a"]
  assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
  modules = _modules()
  assert "mtljax.explain.run" in modules and "mtljax.explain.timeseries" in modules
  graph = {m: _imports(m, path, modules) for m, path in modules.items()}
  assert "mtljax.explain.setup" in graph["mtljax.explain.timeseries"]
  cycle = _find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The layers of docs/architecture.md, lowest first: a module imports only from its own layer or
# one below. Each entry is a module or a package (every module under it).
LAYERS = (
  ("leaves", ("mtljax.errors", "mtljax.faults", "mtljax.fileio", "mtljax.parallel",
              "mtljax.workdir", "mtljax.config_variants", "mtljax.plugins",
              "mtljax.interrupts")),
  ("data", ("mtljax.data",)),
  ("models", ("mtljax.models", "mtljax.tasks", "mtljax.losses", "mtljax.metrics",
              "mtljax.hierarchy", "mtljax.mtc")),
  ("attribution library", ("mtljax.attribution",)),
  ("objective", ("mtljax.objective", "mtljax.weighting", "mtljax.aggregation", "mtljax.egl",
                 "mtljax.config_blocks", "mtljax.configlib", "mtljax.config_resume")),
  ("trainer", ("mtljax.train", "mtljax.checkpoint", "mtljax.writers", "mtljax.dense_pictures")),
  ("runners", ("mtljax.explain", "mtljax.analysis", "mtljax.sweeps", "mtljax.prepare",
               "mtljax.predict")),
  ("entry point", ("mtljax.main",)),
)  # fmt: skip


def _layer(module: str) -> int | None:
  for i, (_, members) in enumerate(LAYERS):
    if any(module == m or module.startswith(m + ".") for m in members):
      return i
  return None


def _upward_imports(graph) -> list[str]:
  out = []
  for mod, deps in sorted(graph.items()):
    for dep in sorted(deps):
      if _layer(dep) > _layer(mod):
        out.append(f"{mod} ({LAYERS[_layer(mod)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})")
  return out


def test_the_layer_check_finds_an_upward_import():
  graph = {"mtljax.data.source": {"mtljax.train.loop"}, "mtljax.train.loop": {"mtljax.data"}}
  assert _upward_imports(graph) == ["mtljax.data.source (data) imports mtljax.train.loop (trainer)"]


def test_every_module_has_a_layer_and_imports_only_down():
  modules = _modules()
  graph = {m: _imports(m, path, modules) for m, path in modules.items() if m != "mtljax"}
  unplaced = sorted(m for m in graph if _layer(m) is None)
  assert not unplaced, f"modules in no layer of tests/test_imports.py LAYERS: {unplaced}"
  up = _upward_imports(graph)
  assert not up, "imports that point up the layers:\n  " + "\n  ".join(up)


def test_every_module_reads_in_one_sitting():
  """docs/architecture.md: every module of mtljax/ stays under 400 lines."""
  root = pathlib.Path(__file__).resolve().parents[1] / "mtljax"
  long = {
    str(p.relative_to(root.parent)): n
    for p in root.rglob("*.py")
    if (n := len(p.read_text().splitlines())) > 400
  }
  assert not long, f"modules over 400 lines (split them by job): {long}"


def test_importing_the_package_does_not_start_the_jax_backend():
  """A multi-process run calls `jax.distributed.initialize` after importing `mtljax.main`; that
  fails once any module made a jax array at import time (e.g. a module-level `jnp.array`
  constant). Imports every module of the package in a fresh interpreter and checks no backend
  was created."""
  import subprocess
  import sys

  modules = _modules()
  # Entry points define absl flags of the same names: each in its own interpreter.
  entry = sorted(n for n, f in modules.items() if "flags.DEFINE" in open(f).read())
  groups = [sorted(set(modules) - set(entry))] + [[n] for n in entry]
  code = (
    "import importlib, sys\n"
    "for n in sys.argv[1:]: importlib.import_module(n)\n"
    "from jax._src import xla_bridge\n"
    "assert not xla_bridge._backends, sorted(xla_bridge._backends)\n"
  )
  env = dict(os.environ, PYTHONPATH=ROOT)
  for names in groups:
    res = subprocess.run(
      [sys.executable, "-c", code, *names], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, (names if len(names) == 1 else "", res.stderr[-3000:])
