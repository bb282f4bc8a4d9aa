r"""Using a trained model, side by side in one run: `--mode=predict`'s throughput without and with
explanations, and the exported artifact's latency per batch against predict mode's jitted function.

    python -m profiling.benchmarks.predict_bench                     # README's TreeSAT model
    python -m profiling.benchmarks.predict_bench --workdir=/tmp/treesat   # reuse a trained one
    python -m profiling.benchmarks.predict_bench --config=configs/treesat.py:tiny \
        --config.train.num_epochs=1 --workdir=/tmp/pb_tiny             # a quick check

Without `--workdir` (or with one that holds no `checkpoints/best`) it first trains `--config`
there, as `python -m mtljax.main --config=... --workdir=...` would (the README's main command by
default: `configs/treesat.py`, default size); `--config.*` overrides apply to every step.

Parts, all on `config.predict.split` of the workdir's dataset:
  predict   `run.predict_workdir` (what `--mode=predict` calls), once plain and once with
            `config.predict.explain=True`; each first run (compilation included) into
            `predict/bench-cold-*`, then, with the XLA executables in a persistent compilation
            cache (a temporary folder), the warm run into `predict/bench-*` (both rewritten by
            every bench run; nothing else of the workdir is touched). examples/s = inputs predicted / wall
            seconds of the call (the restore and the data included, as a user waits for them).
  latency   the artifact of `--mode=export` loaded through the copied `load.py` (jax and numpy
            only; the standardisation of raw inputs inside), called on the first 1 and
            `config.eval.batch_size` raw inputs, against predict mode's jitted function
            (`model.make_predict_fn`) on the same inputs already standardised by the pipeline;
            median of `--repeats` interleaved calls after one warm call (common.py), outputs
            copied to the host in both; also the artifact's first call at each batch size
            (its compilation) and the largest relative difference of their outputs.
It prints the CPU model and /proc/loadavg before and after (figures from a loaded machine are
not comparable) and writes everything to JSON (`--out`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from profiling.benchmarks import common

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  "configs/treesat.py",
  "The trained model's config (the README's main one).",
  lock_config=False,
)
_WORKDIR = flags.DEFINE_string("workdir", "", "A trained workdir to reuse, or where to train.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per batch size (latency).")
_OUT = flags.DEFINE_string("out", "/tmp/predict_bench.json", "Results (JSON).")


def _loadavg() -> str:
  with open("/proc/loadavg") as f:
    return " ".join(f.read().split()[:3])


def _trained(config, workdir: str) -> None:
  """Trains `config` in `workdir` unless it holds a best checkpoint already."""
  from mtljax import configlib, train

  if os.path.isdir(os.path.join(workdir, "checkpoints", "best")):
    print(f"reusing the trained {workdir}", flush=True)
    return
  configlib.check(config)
  t0 = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  print(f"trained {workdir} in {time.perf_counter() - t0:.0f} s", flush=True)


def _predict(config, workdir: str, name: str, explain: bool) -> dict:
  """One `--mode=predict` call into `predict/<name>/` (removed first: a finished folder would be
  skipped); its wall seconds and counts."""
  from mtljax.predict import run

  c = config.copy_and_resolve_references()
  c.predict.name, c.predict.explain = name, explain
  shutil.rmtree(os.path.join(workdir, "predict", name), ignore_errors=True)
  t0 = time.perf_counter()
  out = run.predict_workdir(c, workdir)
  seconds = time.perf_counter() - t0
  with np.load(os.path.join(out, "predictions.npz")) as f:
    n = len(f["index"])
  explained = 0
  if explain:
    with open(os.path.join(out, "explanations", "results.json")) as f:
      explained = int(json.load(f)["num_examples"])
  return {"seconds": seconds, "examples": n, "explained": explained, "examples_per_s": n / seconds}


def _load_module(folder: str):
  """The export's `load.py` as a module (it imports jax and numpy only)."""
  spec = importlib.util.spec_from_file_location(
    "mtljax_export_load", os.path.join(folder, "load.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _latency(config, workdir: str, folder: str, repeats: int) -> list[dict]:
  """Per batch size: the artifact's call on raw inputs against the jitted predict function on
  the same inputs standardised (milliseconds, medians)."""
  from mtljax import train
  from mtljax.data import pipeline
  from mtljax.explain.setup import Subset
  from mtljax.predict import model as model_lib

  s = train.setup(config, workdir, write_config=False)
  state, _ = model_lib.restore(config, s, config.predict.checkpoint)
  variables = model_lib.variables_of(state)
  fn = jax.jit(model_lib.make_predict_fn(s))
  artifact = _load_module(folder).Model(folder)
  source = s.sources[config.predict.split]
  rows = []
  for b in sorted({1, min(int(config.eval.batch_size), len(source))}):
    raw = {}
    for m in s.input_names:
      first = source[0]["inputs"][m]
      take = [source[i]["inputs"][m] for i in range(b)]
      raw[m] = (
        {p: np.stack([t[p] for t in take]) for p in first}
        if isinstance(first, dict)
        else np.stack(take)
      )
    (batch,) = list(
      pipeline.eval_batches(
        Subset(source, range(b)), input_names=s.input_names, task_names=(),
        stats=s.stats["inputs"], batch_size=b,
      )
    )  # fmt: skip
    x = batch["inputs"]
    t0 = time.perf_counter()
    got = artifact(raw)  # the first call at this batch size compiles the artifact's program
    first = time.perf_counter() - t0
    want = jax.device_get(fn(variables, x))
    worst = max(common.max_rel_diff(got[k], want[k]) for k in got)
    times = common.time_side_by_side(
      {
        "export": lambda: artifact(raw),
        "jit": lambda: jax.device_get(fn(variables, x)),
      },
      repeats=repeats,
    )
    rows.append(
      {
        "batch": b,
        "export_ms": 1e3 * times["export"]["median_s"],
        "jit_ms": 1e3 * times["jit"]["median_s"],
        "export_over_jit": times["export"]["median_s"] / times["jit"]["median_s"],
        "export_first_ms": 1e3 * first,
        "max_rel_diff": worst,
      }
    )
  return rows


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # as mtljax.main: orbax's INFO lines are not results
  config = _CONFIG.value
  workdir = os.path.abspath(_WORKDIR.value or os.path.join(tempfile.gettempdir(), "predict_bench"))
  payload = {
    "device": common.device_description(),
    "config": str(flags.FLAGS["config"].serialize()),
    "workdir": workdir,
    "loadavg_before": _loadavg(),
  }
  print(payload["device"], flush=True)
  # Warm runs read their executables from here instead of compiling them again (set before the
  # first compilation: jax decides once whether a process uses the cache).
  cache = tempfile.mkdtemp(prefix="predict_bench_jax_cache_")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  from mtljax.errors import ConfigError, DataError
  from mtljax.predict import export

  try:
    _trained(config, workdir)
  except (ConfigError, DataError) as e:  # e.g. a workdir trained with another config
    raise SystemExit(f"error: {e}") from None

  payload["predict"] = {}
  for explain in (False, True):
    what = "explained" if explain else "plain"
    cold = _predict(config, workdir, f"bench-cold-{what}", explain)
    warm = _predict(config, workdir, f"bench-{what}", explain)
    payload["predict"][what] = {"cold": cold, "warm": warm}
  t0 = time.perf_counter()
  folder = export.export_workdir(config, workdir)
  payload["export_seconds"] = time.perf_counter() - t0
  payload["latency"] = _latency(config, workdir, folder, _REPEATS.value)
  payload["loadavg_after"] = _loadavg()

  print(f"\nCPU: {payload['device'].get('cpu_model', '?')}, {payload['device']['cpus']} cores; "
        f"load average (1, 5, 15 min) before {payload['loadavg_before']}, after "
        f"{payload['loadavg_after']}\n")  # fmt: skip
  rows = [
    {"mode": f"predict{' + explain' if what == 'explained' else ''}", "run": run_name, **r}
    for what, runs in payload["predict"].items()
    for run_name, r in runs.items()
  ]
  common.print_table(
    rows,
    [("mode", "predict mode"), ("run", "run"), ("examples", "inputs"),
     ("explained", "explained"), ("seconds", "s"), ("examples_per_s", "inputs/s")],
  )  # fmt: skip
  print()
  common.print_table(
    payload["latency"],
    [("batch", "batch"), ("export_ms", "export (load.py) ms"), ("jit_ms", "predict jit ms"),
     ("export_over_jit", "export / jit"), ("export_first_ms", "export first call ms"),
     ("max_rel_diff", "max rel. diff")],
  )  # fmt: skip
  common.write_json(_OUT.value, payload)
  shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
