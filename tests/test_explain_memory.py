"""Explanations within the memory at hand: chunks sized from XLA's compiled memory analysis
against `config.explain.memory_budget` give the same maps as unchunked calls; an explain run with
a tiny budget writes the maps of a large one; an allocation failure is one `error:` line that
keeps the methods done before it."""

import json
import os
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax.attribution import methods, targets
from mtljax.explain import memory
from mtljax.explain.setup import ExplainError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/attributes.py:tiny,size=3"


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(8, (3, 3))(x["img"]))
    h = nn.relu(nn.Conv(8, (3, 3))(h)).mean(axis=(1, 2))
    return {"cls": nn.Dense(5)(h)}


def _ig_setup():
  model = _Net()
  x = {"img": jax.random.normal(jax.random.key(0), (4, 32, 32, 3))}
  params = model.init(jax.random.key(1), x)
  explain = types.SimpleNamespace(ig_steps=16, ig_method="riemann_middle", ig_batch_steps=0)
  index = jnp.array([[0, 3], [1, 2], [4, 4], [2, 0]], jnp.int32)
  valid = jnp.array([[True, True], [True, True], [True, False], [True, True]])

  def run_for(chunk):
    ctx = methods.Context(explain=explain, chunk=chunk)
    f = targets.make_target_scores(
      lambda v, xx: model.apply(v, xx), [("cls", "classification", 5)], index, valid
    )
    return jax.jit(lambda p, xx: methods.attribute("integrated_gradients", f, p, xx, ctx))

  return run_for, params, x


def test_plan_follows_the_affine_fit_and_the_order_of_the_dimensions():
  calls = []

  def measure(c):  # bytes: 100 + 10 per step × targets + 1000 per example
    calls.append(dict(c))
    return 100 + 10 * c["steps"] * c["targets"] * c["examples"] + 1000 * c["examples"]

  dims = [("steps", 32), ("targets", 4), ("examples", 8)]
  assert memory.plan("a", dims, measure, None) == {"steps": 32, "targets": 4, "examples": 8}
  assert not calls  # no budget: no compilation
  # 100 + 8000 + 10·s·32 ≤ 12000 → s ≤ 12, evened out to 32 / 3 chunks → 11.
  assert memory.plan("a", dims, measure, 12_000) == {"steps": 11, "targets": 4, "examples": 8}
  # One step does not fit 8200 (8420): then targets, both at 1 before the examples shrink.
  assert memory.plan("a", dims, measure, 8_200) == {"steps": 1, "targets": 1, "examples": 8}
  small = memory.plan("a", dims, measure, 3_000)
  assert small == {"steps": 1, "targets": 1, "examples": 2}
  n = len(calls)
  assert memory.plan("a", dims, measure, 3_000) == small and len(calls) == n  # cached
  assert memory.plan("a", dims, measure, 10**9) == {"steps": 32, "targets": 4, "examples": 8}


def test_budget_fraction_bytes_and_off():
  free = memory.free_bytes()
  assert 0 < free < 1 << 50
  assert memory.budget_bytes(0) is None
  assert memory.budget_bytes(12345) == 12345
  assert abs(memory.budget_bytes(0.5) - free // 2) < free // 10  # free memory moves a little
  with pytest.raises(ExplainError, match="memory_budget"):
    memory.budget_bytes(-1)


def test_a_smaller_budget_gives_a_smaller_chunk_and_the_same_attributions():
  run_for, params, x = _ig_setup()
  measure = lambda c: memory.program_bytes(run_for(c["steps"]), params, x)  # noqa: E731
  full = measure({"steps": 16})
  # Compiled bytes grow with the steps evaluated together (affine, the plan's premise).
  one, two, four = (measure({"steps": s}) for s in (1, 2, 4))
  assert one < two < four < full
  assert abs((four - two) - 2 * (two - one)) <= 0.25 * (four - two)
  plans = [
    memory.plan("ig", [("steps", 16)], measure, budget)["steps"] for budget in (full, two + 1)
  ]
  assert plans[0] == 16 and 1 < plans[1] < 16
  maps = [np.asarray(run_for(c)(params, x)["img"]) for c in plans]
  assert maps[0].shape == (4, 2, 32, 32, 3)
  np.testing.assert_allclose(maps[1], maps[0], rtol=1e-5, atol=1e-6 * np.abs(maps[0]).max())
  assert np.all(maps[0][2, 1] == 0)  # the padded target stays zero


def _main(workdir, *args, env=None, timeout=900):
  cmd = [sys.executable, "-m", "mtljax.main", CONFIG, f"--workdir={workdir}", *args]
  return subprocess.run(
    cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ)
  )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  work = tmp_path_factory.mktemp("mem") / "run"
  res = _main(work, "--config.train.num_epochs=1")
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return work


METHODS = "--config.explain.methods=('integrated_gradients','grad_cam')"


@pytest.mark.slow
def test_a_tiny_budget_writes_the_maps_of_a_large_one(trained, tmp_path):
  out = trained / "explanations" / "test"
  maps = {}
  for budget in ("0", "64"):  # 0: no sizing (as configured); 64 bytes: every chunk at 1
    res = _main(
      trained,
      "--mode=explain",
      METHODS,
      "--config.explain.metrics=('deletion',)",
      "--config.explain.max_examples=8",
      "--config.explain.batch_size=4",
      "--config.explain.ig_steps=8",
      f"--config.explain.memory_budget={budget}",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    names = ("integrated_gradients", "grad_cam")
    maps[budget] = {m: dict(np.load(out / f"maps_{m}.npz")) for m in names}
    maps[budget]["trust"] = dict(np.load(out / "trust_grad_cam.npz"))
    if budget == "64":
      assert "integrated_gradients: 1 of 8 steps" in res.stdout, res.stdout[-2000:]
  trust = maps["64"].pop("trust"), maps["0"].pop("trust")
  for m, got in maps["64"].items():
    want = maps["0"][m]
    np.testing.assert_array_equal(got["pairs"], want["pairs"])
    np.testing.assert_allclose(got["ensemble"], want["ensemble"], rtol=1e-4, atol=1e-5)
  # Deletion with one perturbation step per call (the trust chunk sized to the budget); the maps
  # agree to rounding, so a pixel order may flip between near-ties: most pairs agree to 1e-4,
  # the mean to a few 1e-3 (one flipped pixel of 8 × 24 × 24 moves a curve).
  for key in ("member_deletion", "ensemble_deletion"):
    got, want = trust[0][key], trust[1][key]
    assert np.mean(np.isclose(got, want, rtol=1e-4, atol=1e-5)) >= 0.9, key
    np.testing.assert_allclose(np.nanmean(got), np.nanmean(want), rtol=5e-3)


@pytest.mark.slow
def test_an_allocation_failure_is_one_error_line_and_keeps_earlier_methods(trained, tmp_path):
  """A method whose program fails to allocate (XLA's RESOURCE_EXHAUSTED, raised by a registered
  fake) ends the run with one `error:` line naming the budget, exit 2; the method before it has
  its maps and its results.json entry."""
  script = tmp_path / "run.py"
  script.write_text(
    "import jax, sys\n"
    "from absl import app\n"
    "from mtljax.attribution import methods\n"
    "from mtljax import main\n"
    "def fn(f, params, inputs):\n"
    "  raise jax.errors.JaxRuntimeError(\n"
    "    'RESOURCE_EXHAUSTED: Out of memory allocating 30257911344 bytes.')\n"
    "methods.register('exhausted', methods.MethodSpec(fn, signed=False))\n"
    "sys.argv = ['mtljax.main'] + sys.argv[1:]\n"
    "app.run(main.main, flags_parser=main._parse_flags)\n"
  )
  out = trained / "explanations" / "test"
  for f in out.glob("*"):
    f.unlink()
  cmd = [sys.executable, str(script), CONFIG, f"--workdir={trained}", "--mode=explain"]
  cmd += ["--config.explain.methods=('saliency','exhausted')", "--config.explain.max_examples=8"]
  cmd += ["--config.explain.metrics=()"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
  errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
  assert "exhausted" in errors[0] and "out of memory" in errors[0]
  assert "--config.explain.memory_budget=" in errors[0]
  assert (out / "maps_saliency.npz").exists() and not (out / "maps_exhausted.npz").exists()
  summary = json.loads((out / "results.json").read_text())
  assert list(summary["methods"]) == ["saliency"]
