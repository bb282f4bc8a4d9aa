r"""Training throughput, side by side in one process: ensembles, the TreeSAT step against PyTorch,
achieved FLOP/s, and the input pipeline against the step's consumption.

    python -m profiling.benchmarks.train_bench  # all four, TreeSAT at 304×304, batch 16
    python -m profiling.benchmarks.train_bench --size 64 --parts treesat flops     # a reduced size
    python -m profiling.benchmarks.train_bench --parts ensemble --members 5 --ensemble-size 64

Parts:
  ensemble  E members of the attributes ResNet-18 (configs/attributes.py) in one vmapped jitted
            step (how mtljax trains an ensemble) against E calls of the jitted single-model step
            (training E models one after another); also checks both give the same parameters.
  treesat   the TreeSAT Experiment 7 train step (aerial ResNet-18 + S1/S2 MLPs, L3/L2/age heads,
            weighted CE/CE/MSE, AdamW with gradient clipping, BatchNorm in training mode, dropout)
            against the same network, loss and optimiser in PyTorch (weights copied from JAX).
  flops     XLA's cost analysis of the compiled TreeSAT step (FLOPs per step) divided by the
            measured step time, against the machine's peak (`--peak-gflops`, default estimated
            as cores × clock × FLOPs/cycle: 32 fp32 FLOPs/cycle/core for AVX-512 FMA on
            2 × 256-bit pipes, i.e. AMD Zen 4; pass the right number for your CPU or GPU).
  pipeline  examples/s of the grain training iterator (read GeoTIFFs, normalise, augment, batch)
            on the synthetic TreeSAT archive, against the examples/s the train step consumes.
Results go to JSON (`--out`).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import attributes, treesat
from mtljax import train
from mtljax.models.multitask import build_model
from profiling.benchmarks import common


def _timed(fn, repeats):
  out = jax.block_until_ready(fn())
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = jax.block_until_ready(fn())
  return out, (time.perf_counter() - t0) / repeats


# ============================================================================ ensemble
def bench_ensemble(a):
  config = attributes.get_config(f"size={a.members}")
  config.tasks.attributes.num_classes = 7
  config.tasks["class"].num_classes = 10
  model = build_model(config)
  tx, _ = train.create_optimizer(config, 100)
  rng = np.random.default_rng(0)
  b, s = a.ensemble_batch, a.ensemble_size
  batch = {
    "inputs": {"image": jnp.asarray(rng.normal(size=(b, s, s, 3)), jnp.float32)},
    "targets": {
      "attributes": jnp.asarray(rng.random((b, 7)) < 0.5, jnp.float32),
      "class": jnp.asarray(rng.integers(0, 10, b), jnp.int32),
    },
    "mask": {"attributes": jnp.ones(b), "class": jnp.ones(b)},
    "valid": jnp.ones(b),
    "meta": {"index": jnp.arange(b, dtype=jnp.int32)},
  }
  state = train.init_ensemble(
    model, tx, {"image": batch["inputs"]["image"][:1]}, jax.random.key(0), a.members
  )
  weights = jnp.ones((a.members, b))
  key = jax.random.key(1)
  ens_step = jax.jit(train.make_ensemble_train_step(model, tx, config, {}))
  one_step = jax.jit(train.make_train_step(model, tx, config, {}))
  members = [common.member(state, k) for k in range(a.members)]
  keys = [jax.random.fold_in(key, k) for k in range(a.members)]
  times = common.time_side_by_side(
    {
      "vmapped": lambda: ens_step(state, batch, key, weights),
      "sequential": lambda: [one_step(m, batch, r) for m, r in zip(members, keys)],
    },
    a.repeats,
  )
  (ens_new, _), loop = (
    ens_step(state, batch, key, weights),
    [one_step(m, batch, r) for m, r in zip(members, keys)],
  )
  diff = max(
    float(jnp.max(jnp.abs(x[k] - y)))
    for k, (m, _) in enumerate(loop)
    for x, y in zip(jax.tree.leaves(ens_new["params"]), jax.tree.leaves(m["params"]))
  )
  row = {
    "part": "ensemble",
    "members": a.members,
    "batch": b,
    "image": s,
    "vmapped_s": times["vmapped"]["median_s"],
    "sequential_s": times["sequential"]["median_s"],
    "max_param_diff": diff,
  }
  row["vmapped_vs_sequential"] = row["sequential_s"] / row["vmapped_s"]
  row["member_images_per_s_vmapped"] = a.members * b / row["vmapped_s"]
  row["member_images_per_s_sequential"] = a.members * b / row["sequential_s"]
  print(
    f"ensemble E={a.members} batch {b} at {s}px: vmapped {row['vmapped_s']:.3f} s, "
    f"sequential {row['sequential_s']:.3f} s → vmapped is {row['vmapped_vs_sequential']:.2f}x "
    f"(max |Δparam| {diff:.1e})",
    flush=True,
  )
  return row


# ============================================================================ TreeSAT
def _treesat_setup(a):
  config = treesat.get_config()
  config.data.aerial_size = a.size
  config.train.batch_size = a.batch
  model = build_model(config)
  tx, _ = train.create_optimizer(config, 100)
  rng = np.random.default_rng(0)
  b = a.batch
  batch = {
    "inputs": {
      "aerial": rng.normal(size=(b, a.size, a.size, 4)).astype(np.float32),
      "s1": rng.normal(size=(b, 6, 6, 3)).astype(np.float32),
      "s2": rng.normal(size=(b, 6, 6, 12)).astype(np.float32),
    },
    "targets": {
      "l3": rng.integers(0, 15, b).astype(np.int32),
      "l2": rng.integers(0, 9, b).astype(np.int32),
      "age": rng.normal(size=b).astype(np.float32),
    },
    "mask": {t: np.ones(b, np.float32) for t in ("l3", "l2", "age")},
    "valid": np.ones(b, np.float32),
  }
  state = train.init_state(
    model, tx, {k: v[:1] for k, v in batch["inputs"].items()}, jax.random.key(0)
  )
  return config, model, tx, batch, state


def _torch_treesat(state, config, a):
  """The Experiment 7 network, loss and optimiser in PyTorch, with the JAX initial weights."""
  import torch

  tnn = torch.nn
  p, s = state["params"], state["batch_stats"]
  heads = config.tasks

  class TreeSat(tnn.Module):
    def __init__(self):
      super().__init__()
      self.aerial = common.torch_resnet(p["encoders_aerial"], s["encoders_aerial"])
      self.s1 = common.torch_mlp(p["encoders_s1"], 0.3)
      self.s2 = common.torch_mlp(p["encoders_s2"], 0.3)
      self.l3 = common._dense(p["heads_l3"]["out"])
      self.l2 = tnn.Sequential(
        common._dense(p["heads_l2"]["dense1"]),
        tnn.ReLU(),
        tnn.Dropout(heads.l2.head_kwargs.dropout),
        common._dense(p["heads_l2"]["out"]),
      )
      self.age = common._dense(p["heads_age"]["out"])

    def forward(self, aerial, s1, s2):
      # Sorted-name concatenation, as mtljax's ConcatFusion.
      f = torch.cat([self.aerial(aerial), self.s1(s1), self.s2(s2)], dim=1)
      return self.l3(f), self.l2(f), self.age(f)[:, 0]

  model = TreeSat().train()
  tr = config.train
  opt = torch.optim.AdamW(
    model.parameters(), lr=tr.learning_rate, weight_decay=tr.weight_decay, eps=1e-8
  )
  w = np.array([heads.l3.weight, heads.l2.weight, heads.age.weight], np.float64)
  w = w / w.sum()
  ce = tnn.CrossEntropyLoss()

  def step(inputs, targets):
    opt.zero_grad(set_to_none=True)
    l3, l2, age = model(*inputs)
    loss = (
      w[0] * ce(l3, targets[0])
      + w[1] * ce(l2, targets[1])
      + w[2] * torch.mean((age - targets[2]) ** 2)
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip_norm)
    opt.step()
    return loss.detach()

  return step


def bench_treesat(a, with_flops: bool):
  import torch

  config, model, tx, batch, state = _treesat_setup(a)
  step = jax.jit(train.make_train_step(model, tx, config, {}), donate_argnums=(0,))
  jbatch = jax.tree.map(jnp.asarray, batch)
  key = jax.random.key(0)
  holder = {"state": jax.tree.map(jnp.array, state)}

  def jax_step():
    holder["state"], m = step(holder["state"], jbatch, key)
    return m["loss"]

  torch_step = _torch_treesat(state, config, a)
  tb = batch["inputs"]
  t_inputs = (
    torch.from_numpy(common.to_nchw(tb["aerial"])),
    torch.from_numpy(tb["s1"]),
    torch.from_numpy(tb["s2"]),
  )
  t_targets = (
    torch.from_numpy(batch["targets"]["l3"].astype(np.int64)),
    torch.from_numpy(batch["targets"]["l2"].astype(np.int64)),
    torch.from_numpy(batch["targets"]["age"]),
  )
  times = common.time_side_by_side(
    {"jax": jax_step, "pytorch": lambda: torch_step(t_inputs, t_targets)}, a.repeats
  )
  row = {
    "part": "treesat",
    "batch": a.batch,
    "aerial": a.size,
    "jax_s": times["jax"]["median_s"],
    "pytorch_s": times["pytorch"]["median_s"],
    "jax_first_call_s": times["jax"]["first_call_s"],
  }
  row["jax_vs_pytorch"] = row["pytorch_s"] / row["jax_s"]
  row["jax_examples_per_s"] = a.batch / row["jax_s"]
  row["pytorch_examples_per_s"] = a.batch / row["pytorch_s"]
  print(
    f"TreeSAT step, batch {a.batch} at {a.size}px: JAX {row['jax_s']:.3f} s, PyTorch "
    f"{row['pytorch_s']:.3f} s → JAX is {row['jax_vs_pytorch']:.2f}x",
    flush=True,
  )
  rows = [row]
  if with_flops:
    compiled = step.lower(holder["state"], jbatch, key).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0))
    peak = a.peak_gflops or _estimated_peak_gflops()
    achieved = flops / row["jax_s"] / 1e9
    frow = {
      "part": "flops",
      "flops_per_step": flops,
      "step_s": row["jax_s"],
      "achieved_gflops": achieved,
      "peak_gflops": peak,
      "fraction_of_peak": achieved / peak if peak else None,
      "peak_source": "--peak-gflops" if a.peak_gflops else "estimated",
    }
    print(
      f"FLOP/s: {flops / 1e9:.1f} GFLOP per step (XLA cost analysis) / {row['jax_s']:.3f} s = "
      f"{achieved:.1f} GFLOP/s; peak {peak:.0f} GFLOP/s ({frow['peak_source']}) → "
      f"{100 * frow['fraction_of_peak']:.1f}% of peak (MFU)",
      flush=True,
    )
    rows.append(frow)
  return rows


def _estimated_peak_gflops() -> float:
  if jax.default_backend() != "cpu":
    return 0.0
  mhz = []
  try:
    with open("/proc/cpuinfo") as f:
      mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
  except OSError:
    pass
  ghz = (max(mhz) / 1000) if mhz else 2.5
  return (os.cpu_count() or 1) * ghz * 32


# ============================================================================ input pipeline
def bench_pipeline(a, step_examples_per_s):
  from mtljax.data import build as data_build
  from mtljax.data import pipeline

  config = treesat.get_config()
  config.data.aerial_size = a.size
  config.data.synthetic.num_train = max(4 * a.batch, 64)
  config.data.synthetic.num_test = 8
  config.data.synthetic.dir = a.data_dir
  sources, _ = data_build.make_sources(config, a.data_dir)
  src = sources["train"]
  names = tuple(sorted(config.inputs))
  stats = pipeline.compute_stats(src, names, max_examples=64, seed=0)
  it = pipeline.train_iterator(
    src,
    input_names=names,
    task_names=tuple(sorted(config.tasks)),
    stats=stats,
    batch_size=a.batch,
    seed=0,
    augment_cfg=config.data.augment.to_dict(),
    read_options=pipeline.default_read_options(config.data.num_threads, config.data.prefetch),
  )
  next(it)
  n = a.pipeline_batches
  t0 = time.perf_counter()
  for _ in range(n):
    next(it)
  ex_s = n * a.batch / (time.perf_counter() - t0)
  row = {
    "part": "pipeline",
    "examples_per_s": ex_s,
    "step_consumes_examples_per_s": step_examples_per_s,
    "headroom": ex_s / step_examples_per_s if step_examples_per_s else None,
    "threads": config.data.num_threads,
    "aerial": a.size,
  }
  print(
    f"input pipeline: {ex_s:.1f} examples/s ({config.data.num_threads} threads) vs the train "
    f"step's {step_examples_per_s:.1f} → {row['headroom']:.1f}x headroom",
    flush=True,
  )
  return row


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument(
    "--parts",
    nargs="+",
    default=["ensemble", "treesat", "flops", "pipeline"],
    choices=["ensemble", "treesat", "flops", "pipeline"],
  )
  ap.add_argument("--size", type=int, default=304, help="TreeSAT aerial patch side")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--members", type=int, default=5)
  ap.add_argument("--ensemble-size", type=int, default=64, help="image side of the ensemble part")
  ap.add_argument("--ensemble-batch", type=int, default=32)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--peak-gflops", type=float, default=0.0)
  ap.add_argument("--pipeline-batches", type=int, default=10)
  ap.add_argument("--data-dir", default="/tmp/mtljax_bench_data")
  ap.add_argument("--out", default="profiling/results/train_bench.json")
  a = ap.parse_args()
  payload = common.start_run(a)
  if "ensemble" in a.parts:
    payload["rows"].append(bench_ensemble(a))
    common.write_json(a.out, payload)
  step_rate = None
  if "treesat" in a.parts or "flops" in a.parts:
    rows = bench_treesat(a, "flops" in a.parts)
    step_rate = rows[0]["jax_examples_per_s"]
    payload["rows"] += rows
    common.write_json(a.out, payload)
  if "pipeline" in a.parts:
    payload["rows"].append(bench_pipeline(a, step_rate))
  common.write_json(a.out, payload)


if __name__ == "__main__":
  main()
