"""Step time of every task weighting against the fixed weighting, measured side by side in one
run (rounds interleaved, so machine contention hits all alike), and the aggregation step against
TorchJD 0.18.0 on the same per-task gradients.

Model: an MLP trunk (`--width` units, 2 layers: the shared parameters) and T regression heads,
batch 64, Adam; the one-backward strategies take one `value_and_grad`, the gradient strategies
the T per-task gradients (`jax.jacrev`) plus a T × T problem on their Gram matrix.

  python -m profiling.benchmarks.weighting_bench                       # T = 2, 4, 8
  python -m profiling.benchmarks.weighting_bench --tasks=3 --widths=64,512 --rounds=5
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mtljax import aggregation, train, weighting


class Net(nn.Module):
  tasks: tuple
  width: int

  @nn.compact
  def __call__(self, inputs, train=False):
    h = nn.relu(nn.Dense(self.width, name="trunk_0")(inputs["x"]))
    h = nn.relu(nn.Dense(self.width, name="trunk_1")(h))
    return {t: nn.Dense(1, name=f"heads_{t}")(h)[:, 0] for t in self.tasks}, {}


def make(kind, T, width, batch):
  names = tuple(f"t{i}" for i in range(T))
  c = ml_collections.ConfigDict()
  c.tasks = {t: {"kind": "regression", "weight": 1.0} for t in names}
  c.weighting = {"kind": kind}
  c.train = {"learning_rate": 1e-3}
  c.ensemble = {"size": 1, "strategy": "seeds"}
  c.data = {"augment": {}}
  model, tx = Net(names, width), optax.adam(1e-3)
  rng = np.random.default_rng(0)
  b = {
    "inputs": {"x": jnp.asarray(rng.normal(size=(batch, 64)), jnp.float32)},
    "targets": {t: jnp.asarray(rng.normal(size=batch), jnp.float32) for t in names},
    "mask": {t: jnp.ones(batch) for t in names},
    "valid": jnp.ones(batch),
    "meta": {"index": jnp.arange(batch)},
  }
  state = train.init_ensemble(model, tx, b["inputs"], jax.random.key(0), 1, c)
  step = jax.jit(train.make_ensemble_train_step(model, tx, c, {}), donate_argnums=(0,))
  shared = sum(
    x.size for k, v in state["params"].items() if k.startswith("trunk") for x in jax.tree.leaves(v)
  )
  return step, state, b, shared


def time_steps(step, state, b, n):
  w = jnp.ones((1, b["valid"].shape[0]))
  t0 = time.perf_counter()
  for i in range(n):
    state, m = step(state, b, jax.random.key(i), w)
  jax.block_until_ready(m["loss"])
  return state, (time.perf_counter() - t0) / n


def bench_steps(args):
  kinds = args.kinds.split(",")
  print("\n## Step time against `fixed` (median over rounds; ratio of medians)\n")
  print("| T | width | shared params | " + " | ".join(kinds) + " |")
  print("|---|---|---|" + "---|" * len(kinds))
  for T in map(int, args.tasks.split(",")):
    for width in map(int, args.widths.split(",")):
      runs = {k: list(make(k, T, width, args.batch)) for k in kinds}
      for r in runs.values():  # compile + warm up
        r[1], _ = time_steps(r[0], r[1], r[2], 3)
      times = {k: [] for k in kinds}
      for _ in range(args.rounds):
        for k, r in runs.items():
          r[1], dt = time_steps(r[0], r[1], r[2], args.steps)
          times[k].append(dt)
      base = np.median(times["fixed"])
      shared = runs["fixed"][3]
      cells = [
        f"{1000 * base:.2f} ms" if k == "fixed" else f"{np.median(times[k]) / base:.2f}×"
        for k in kinds
      ]
      print(f"| {T} | {width} | {shared} | " + " | ".join(cells) + " |", flush=True)


def bench_vs_torchjd(args):
  try:
    import torch
    from torchjd import aggregation as tja
  except ImportError:
    print("\n(TorchJD not importable: the aggregation comparison is skipped)")
    return
  print("\n## Aggregation of fixed per-task gradients G [T, D] -> one vector [D]")
  print("(ours: jitted Gram matrix + weights + weighted sum, float32; TorchJD 0.18.0: its")
  print("aggregator on the same matrix, float32, torch threads as set; median of repeats)\n")
  refs = {
    "pcgrad": lambda T: tja.PCGrad(),
    "mgda": lambda T: tja.MGDA(),
    "upgrad": lambda T: tja.UPGrad(),
    "cagrad": lambda T: tja.CAGrad(c=0.4),
    "nash_mtl": lambda T: tja.NashMTL(n_tasks=T),
  }
  print("| T | D | strategy | ours ms | TorchJD ms | max rel. diff |")
  print("|---|---|---|---|---|---|")
  for T in map(int, args.tasks.split(",")):
    for D in (10_000, 1_000_000):
      G = np.random.default_rng(T).normal(size=(T, D)).astype(np.float32)
      G[1] -= 1.5 * G[0]
      Gj, Gt = jnp.asarray(G), torch.tensor(G)
      for kind, ref_fn in refs.items():
        entry = weighting.WEIGHTINGS[kind]
        wfn = entry.factory(None, (), weighting.settings())["gram_weights"]

        @jax.jit
        def ours(G, key):
          w = wfn(aggregation.gram([G]), jnp.ones(G.shape[0], bool), key)
          return w @ G

        key = jax.random.key(0)
        jax.block_until_ready(ours(Gj, key))
        t_ours, t_ref = [], []
        for _ in range(args.rounds):
          t0 = time.perf_counter()
          a = jax.block_until_ready(ours(Gj, key))
          t_ours.append(time.perf_counter() - t0)
          ref = ref_fn(T)
          t0 = time.perf_counter()
          r = ref(Gt)
          t_ref.append(time.perf_counter() - t0)
        diff = np.abs(np.asarray(a) - r.numpy()).max() / np.abs(r.numpy()).max()
        note = " (random order)" if kind == "pcgrad" else ""
        print(
          f"| {T} | {D} | {kind} | {1000 * np.median(t_ours):.2f} | "
          f"{1000 * np.median(t_ref):.2f} | {diff:.1e}{note} |",
          flush=True,
        )


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--kinds", default=",".join(weighting.kinds()))
  p.add_argument("--tasks", default="2,4,8")
  p.add_argument("--widths", default="64,512")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=20, help="steps per timed block")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--skip_torchjd", action="store_true")
  args = p.parse_args()
  print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}); {args}")
  bench_steps(args)
  if not args.skip_torchjd:
    bench_vs_torchjd(args)


if __name__ == "__main__":
  main()
