"""A planted task conflict: the main task's accuracy under each task weighting.

Two tasks share a narrow trunk (16 → 32 → 4 units): the main task is a 4-class classification
(the argmax of 4 random linear functions of the input), the auxiliary a regression on other input
directions whose target is `--aux_scale` times larger (its squared error dwarfs the main loss),
labelled on a fraction `--aux_labelled` of the examples (missing labels elsewhere). With the
fixed 1:1 weights the auxiliary's gradient dominates the shared trunk; a strategy that balances
the tasks leaves the main task its share of the trunk.

Each strategy trains `--members` seeds as ONE vmapped ensemble (mtljax's own ensemble train step,
each member its own weighting state) and reports the main task's test accuracy and the
auxiliary's test R² as mean ± std over the members, plus the step time.

  python -m profiling.experiments.weighting_conflict            # all strategies
  python -m profiling.experiments.weighting_conflict --kinds=fixed,uncertainty@lr=0.05
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

from mtljax import train, weighting


class Net(nn.Module):
  @nn.compact
  def __call__(self, inputs, train=False):
    h = nn.relu(nn.Dense(32, name="trunk_0")(inputs["x"]))
    h = nn.relu(nn.Dense(4, name="trunk_1")(h))
    return {
      "main": nn.Dense(4, name="heads_main")(h),
      "aux": nn.Dense(1, name="heads_aux")(h)[:, 0],
    }, {}


def data(n, seed, aux_scale, aux_labelled):
  rng = np.random.default_rng(1234)  # the same task for every split
  W = rng.normal(size=(16, 4))
  V = rng.normal(size=(16, 3))
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, 16)).astype(np.float32)
  main = np.argmax(x @ W, axis=1).astype(np.int32)
  aux = (aux_scale * np.tanh(x @ V).sum(1)).astype(np.float32)
  mask = (r.random(n) < aux_labelled).astype(np.float32)
  return x, main, aux, mask


def config_for(kind, lr):
  """`kind` may carry one weighting option: `uncertainty@lr=0.05`."""
  kind, _, option = kind.partition("@")
  c = ml_collections.ConfigDict()
  c.tasks = {
    "main": {"kind": "classification", "weight": 1.0, "num_classes": 4},
    "aux": {"kind": "regression", "weight": 1.0},
  }
  c.weighting = {"kind": kind}
  if option:
    key, value = option.split("=")
    c.weighting[key] = float(value)
  c.train = {"learning_rate": lr}
  c.ensemble = {"size": 1, "strategy": "seeds"}
  c.data = {"augment": {}}
  return c


def run(kind, args, train_data, test_data):
  E = args.members
  config = config_for(kind, args.lr)
  config.ensemble.size = E
  model, tx = Net(), optax.adam(args.lr)
  x, y, a, m = train_data
  n = len(x)
  state = train.init_ensemble(
    model, tx, {"x": jnp.asarray(x[:2])}, jax.random.key(args.seed), E, config
  )
  step = jax.jit(train.make_ensemble_train_step(model, tx, config, {}))
  ones = jnp.ones((E, args.batch))
  order = np.random.default_rng(args.seed)
  times = []
  for s in range(args.steps):
    idx = order.integers(0, n, args.batch)
    batch = {
      "inputs": {"x": jnp.asarray(x[idx])},
      "targets": {"main": jnp.asarray(y[idx]), "aux": jnp.asarray(a[idx])},
      "mask": {"main": jnp.ones(args.batch), "aux": jnp.asarray(m[idx])},
      "valid": jnp.ones(args.batch),
      "meta": {"index": jnp.arange(args.batch)},
    }
    t0 = time.perf_counter()
    state, metrics = step(state, batch, jax.random.key(s), ones)
    jax.block_until_ready(state["step"])
    if s >= 5:
      times.append(time.perf_counter() - t0)
  xt, yt, at, _ = test_data

  def predict(params):
    return model.apply({"params": params}, {"x": jnp.asarray(xt)})[0]

  out = jax.vmap(predict)(state["params"])
  acc = np.mean(np.asarray(out["main"]).argmax(-1) == yt[None], axis=1)
  r2 = 1 - np.mean((np.asarray(out["aux"]) - at[None]) ** 2, 1) / np.var(at)
  return acc, r2, 1000 * float(np.median(times))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--kinds", default=",".join(weighting.kinds()))
  p.add_argument("--members", type=int, default=5)
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--aux_scale", type=float, default=30.0)
  p.add_argument("--aux_labelled", type=float, default=0.5)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  train_data = data(2048, 1, args.aux_scale, args.aux_labelled)
  test_data = data(2048, 2, args.aux_scale, 1.0)
  print(f"device: {jax.devices()[0].platform} ({jax.device_count()} device(s)); {args}")
  print("| weighting | main accuracy (test) | aux R² (test) | step ms (E members) |")
  print("|---|---|---|---|")
  for kind in args.kinds.split(","):
    acc, r2, ms = run(kind, args, train_data, test_data)
    print(
      f"| {kind} | {acc.mean():.3f} ± {acc.std():.3f} | {r2.mean():.3f} ± {r2.std():.3f} "
      f"| {ms:.2f} |",
      flush=True,
    )


if __name__ == "__main__":
  main()
