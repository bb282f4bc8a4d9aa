r"""Input pipeline: examples/s of the raw-archive iterator against the prepared (ArrayRecord)
iterator on the TreeSatAI layout at the real patch size (304×304 CIR aerial + S1/S2 6×6), with 1
and 2 grain worker processes, side by side in one run (with the time per example of each stage,
read / augment / normalise / batch, and the load average of each round); and the examples/s an
accelerator's training step would consume (from the compiled step's FLOPs at a stated utilisation) against
what the pipeline delivers per core.

  nice python -m profiling.benchmarks.pipeline_bench --num_train=2000 --dir=/tmp/prepared/bench
  nice python -m profiling.benchmarks.pipeline_bench --num_train=2000 --dir=/tmp/prepared/bench \
    --skip_flops

Writes the synthetic archive (real layout, TIFFs as the real archive's: uncompressed) and its
prepared form once under --dir, then alternates the measured configurations (rounds) so that a
busy machine slows both sides alike. Reported per configuration: examples/s of the source alone
(`source[i]` in a loop, one process) and of the whole training iterator (shuffle, decode,
normalise, flip/rot90 augmentation, batch; `--batch` examples per batch) with `workers` grain
processes, and that divided by the workers (per core).

Three configurations: `raw` (the GeoTIFF reader, float32 batches standardised on the host),
`prepared` (the prepared dataset as a run reads it by default, `config.data.normalise_on_device`:
the 8-bit aerial tiles stay uint8 through augmentation and batching, and the jitted step
standardises them; `device_ms` is that standardisation's cost per example on this CPU) and
`prepared_host` (the same records standardised on the host, float32 batches, as before
`normalise_on_device`).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

_DIR = flags.DEFINE_string(
  "dir", "/tmp/prepared/bench", "Where the archive and its prepared form go."
)
_NUM_TRAIN = flags.DEFINE_integer("num_train", 2000, "Training patches of the generated archive.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size of the iterators.")
_BATCHES = flags.DEFINE_integer("batches", 12, "Batches timed per configuration and round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds over the configurations.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "grain worker processes to compare.")
_SKIP_FLOPS = flags.DEFINE_bool("skip_flops", False, "Skip the compiled-step FLOP count.")
_UTIL = flags.DEFINE_float("utilisation", 0.4, "Accelerator utilisation assumed (MFU).")
_OUT = flags.DEFINE_string("out", "", "JSON results file (default <dir>/pipeline_bench.json).")

# Dense bf16 peaks (vendor figures, TFLOP/s): what a step could consume at --utilisation.
PEAKS = {"A100 (bf16 312 TFLOP/s)": 312e12, "H100/H200 SXM (bf16 989 TFLOP/s)": 989e12,
         "TPU v4 chip (bf16 275 TFLOP/s)": 275e12, "TPU v5e chip (bf16 197 TFLOP/s)": 197e12}  # fmt: skip


def configurations(raw, prep):
  """(name, training source, on_device) of each measured configuration."""
  return (("raw", raw["train"], False), ("prepared", prep["train"], True),
          ("prepared_host", prep["train"], False))  # fmt: skip


def config_for(base, prepared=""):
  from configs import treesat

  c = treesat.get_config(None)
  c.data.root = os.path.join(base, "archive")
  c.data.prepared = prepared
  c.data.stats_examples = 256
  return c


def source_rate(src, n):
  t = time.perf_counter()
  for i in range(n):
    src[i % len(src)]
  return n / (time.perf_counter() - t)


def stage_ms(src, stats, n, on_device=False):
  """Milliseconds per example of each stage of the training iterator, in this process, as the
  pipeline runs them: read (the source, or its ``stored_inputs`` view), select, augment
  (flip/rot90), normalise (+ ``valid``), batch (stacking)."""
  import numpy as np
  from grain._src.python.dataset.transformations.batch import make_batch

  from mtljax.data.pipeline.loaders import _stored
  from mtljax.data.pipeline.transforms import Prepare, augment

  view = _stored(src)
  prepare = Prepare(("aerial", "s1", "s2"), ("l3", "l2", "age"), stats, on_device)
  rng, times = (
    np.random.default_rng(0),
    dict.fromkeys(("read", "augment", "normalise", "batch"), 0.0),
  )
  done, batch = [], None
  for i in range(n):
    t0 = time.perf_counter()
    ex = view[i % len(view)]
    t1 = time.perf_counter()
    ex = augment(prepare.select(ex), rng)
    t2 = time.perf_counter()
    done.append(prepare.finish(ex))
    t3 = time.perf_counter()
    times["read"] += t1 - t0
    times["augment"] += t2 - t1
    times["normalise"] += t3 - t2
    if len(done) == _BATCH.value:
      t4 = time.perf_counter()
      batch = make_batch(done)
      times["batch"] += time.perf_counter() - t4
      done = []
  batches = max(n // _BATCH.value, 1)
  out = {k: 1e3 * v / n for k, v in times.items()}
  out["batch"] = 1e3 * times["batch"] / (batches * _BATCH.value)
  if on_device:  # on the last full batch (`n` >= the batch size)
    out["device"] = device_ms(batch, stats)
  return out


def device_ms(batch, stats, reps=5):
  """Milliseconds per example of `standardize_on_device` (jitted) on this CPU."""
  import jax

  from mtljax.data.pipeline import standardize_on_device

  fn = jax.jit(lambda x: standardize_on_device(x, stats))
  x = jax.device_put(batch["inputs"])
  jax.block_until_ready(fn(x))
  t = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(fn(x))
  n = len(batch["inputs"]["aerial"])
  return 1e3 * (time.perf_counter() - t) / (reps * n)


def iterator_rate(src, stats, workers, seed, on_device=False):
  import grain

  from mtljax.data import pipeline

  it = pipeline.train_iterator(
    src, input_names=("aerial", "s1", "s2"), task_names=("l3", "l2", "age"), stats=stats,
    batch_size=_BATCH.value, seed=seed, augment_cfg=True, workers=workers, on_device=on_device,
    read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=2),
  )  # fmt: skip
  for _ in range(2 * max(workers, 1)):  # warm-up: the workers start and fill their buffers
    next(it)
  t = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(it)
  rate = _BATCHES.value * _BATCH.value / (time.perf_counter() - t)
  del it
  return rate


def step_flops(config) -> float:
  """FLOPs of one compiled training step (forward + backward, batch 8) per example, from XLA's
  cost analysis of the TreeSAT model at 304×304."""
  import jax
  import jax.numpy as jnp

  from mtljax.models.multitask import build_model

  model, b = build_model(config), 8
  x = {"aerial": jnp.zeros((b, 304, 304, 4)), "s1": jnp.zeros((b, 6, 6, 3)),
       "s2": jnp.zeros((b, 6, 6, 12))}  # fmt: skip
  v = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False))

  def loss(p, s, x):
    out, _ = model.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(1)})  # fmt: skip
    return sum(jnp.sum(o) for o in jax.tree.leaves(out))

  compiled = jax.jit(jax.grad(loss)).lower(v["params"], v["batch_stats"], x).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) / b


def main(argv):
  del argv
  from mtljax import tasks
  from mtljax.data import build, prepared
  from mtljax.data.prepared import convert
  from mtljax.data.treesat.synthetic import write_synthetic_treesat

  base = os.path.abspath(_DIR.value)
  t = time.perf_counter()
  write_synthetic_treesat(os.path.join(base, "archive"), num_train=_NUM_TRAIN.value,
                          num_test=max(64, _NUM_TRAIN.value // 8), seed=0, aerial_size=304)  # fmt: skip
  print(f"archive ready ({time.perf_counter() - t:.0f} s)", flush=True)
  out = os.path.join(base, "prepared")
  t = time.perf_counter()
  manifest = convert.convert(
    config_for(base),
    out,
    workers=2,
    progress=True,
    standardized=tasks.standardized_targets(config_for(base)),
  )
  convert_s = time.perf_counter() - t
  raw, _ = build.make_sources(config_for(base), base)
  prep = prepared.open_sources(config_for(base, out))
  stats = manifest["statistics"]["inputs"]
  results = {"device": "this 2-core CPU, shared with other jobs", "batch": _BATCH.value,
             "num_train": len(raw["train"]), "convert_s": round(convert_s, 1), "rounds": []}  # fmt: skip
  workers = [int(w) for w in _WORKERS.value]
  keys = ["source"] + [f"workers{w}" for w in workers]
  for r in range(_ROUNDS.value):
    row, stages = {"load_avg_1min": os.getloadavg()[0]}, {}
    for name, src, dev in configurations(raw, prep):
      row[f"{name}/source"] = source_rate(src, 4 * _BATCH.value)
      stages[name] = stage_ms(src, stats, 2 * _BATCH.value, dev)
      for w in workers:
        row[f"{name}/workers{w}"] = iterator_rate(src, stats, w, seed=r, on_device=dev)
    row["stages_ms"] = stages
    results["rounds"].append(row)
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}))
    for name in ("prepared", "prepared_host"):
      print(f"round {r} (load average {row['load_avg_1min']:.1f}), {name} / raw per core: "
            + ", ".join(f"{k} x{row[f'{name}/{k}'] / row[f'raw/{k}']:.2f}" for k in keys),
            flush=True)  # fmt: skip
    for name, st in stages.items():
      print(f"  {name:9s} ms/example: " + "  ".join(f"{k} {v:.2f}" for k, v in st.items()))
  rates = [k for k in results["rounds"][0] if "/" in k]
  best = {k: max(rd[k] for rd in results["rounds"]) for k in rates}
  results["best"] = best
  print(f"\nexamples/s ({results['device']}, best of {_ROUNDS.value} rounds):")
  print(f"{'':22s}{'raw':>10s}{'prepared':>10s}{'ratio':>8s}{'prep_host':>10s}{'ratio':>8s}")
  for k in keys:
    a, b, c = (best[f"{n}/{k}"] for n in ("raw", "prepared", "prepared_host"))
    per = max(int(k[7:]), 1) if k.startswith("workers") else 1
    print(f"{k + ' (per core)':22s}{a / per:10.1f}{b / per:10.1f}{b / a:8.2f}{c / per:10.1f}"
          f"{c / a:8.2f}")  # fmt: skip
  for w0, w1 in zip(workers, workers[1:]):  # total examples/s, not per core
    for n in ("raw", "prepared", "prepared_host"):
      s = best[f"{n}/workers{w1}"] / best[f"{n}/workers{w0}"]
      print(f"{n}: {w0} -> {w1} workers: ×{s:.2f}")
  if not _SKIP_FLOPS.value:
    flops = step_flops(config_for(base))
    per_core = best[f"prepared/workers{workers[0]}"] / max(workers[0], 1)
    results["step_gflop_per_example"] = flops / 1e9
    results["consumption"] = {}
    print(f"\ntraining step: {flops / 1e9:.1f} GFLOP per example (XLA cost analysis, fwd+bwd)")
    for name, peak in PEAKS.items():
      need = _UTIL.value * peak / flops
      results["consumption"][name] = need
      print(f"{name} at {_UTIL.value:.0%}: {need:,.0f} ex/s -> {need / per_core:,.0f} cores "
            f"at {per_core:.0f} prepared ex/s per core")  # fmt: skip
  path = _OUT.value or os.path.join(base, "pipeline_bench.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  app.run(main)
