"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=4: one ensemble train step of a toy
two-head model under each gradient aggregation (and uncertainty weighting), jitted over a
1-device and a 4-device mesh, on a batch where one task has few labels; prints the updated
parameters, the weights and the weighting state as JSON."""

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mtljax import parallel, train


class Toy(nn.Module):
  @nn.compact
  def __call__(self, inputs, train=False):
    h = nn.relu(nn.Dense(8, name="trunk")(inputs["x"]))
    return {"a": nn.Dense(3, name="heads_a")(h), "b": nn.Dense(1, name="heads_b")(h)[:, 0]}, {}


def main(kinds):
  assert len(jax.devices()) == 4, jax.devices()
  rng = np.random.default_rng(0)
  n = 8
  batch = {
    "inputs": {"x": rng.normal(size=(n, 4)).astype(np.float32)},
    "targets": {"a": rng.integers(0, 3, n).astype(np.int32), "b": rng.normal(size=n)},
    "mask": {"a": np.ones(n, np.float32), "b": np.asarray([0, 0, 0, 0, 0, 1, 0, 1], np.float32)},
    "valid": np.ones(n, np.float32),
    "meta": {"index": np.arange(n, dtype=np.int32)},
  }
  out = {}
  for kind in kinds:
    c = ml_collections.ConfigDict()
    c.tasks = {
      "a": {"kind": "classification", "weight": 1.0, "num_classes": 3},
      "b": {"kind": "regression", "weight": 1.0},
    }
    c.weighting = {"kind": kind}
    c.train = {"learning_rate": 0.1}
    c.ensemble = {"size": 2, "strategy": "seeds"}
    c.data = {"augment": {}}
    model, tx = Toy(), optax.sgd(0.1)
    state = train.init_ensemble(model, tx, batch["inputs"], jax.random.key(0), 2, c)
    step = train.make_ensemble_train_step(model, tx, c, {})
    weights = jnp.ones((2, n))
    out[kind] = {}
    for d in (1, 4):
      mesh = parallel.make_mesh(d)
      repl, data = parallel.replicated(mesh), parallel.data_sharded(mesh)
      f = jax.jit(step, in_shardings=(repl, data, repl, repl), out_shardings=(repl, repl))
      new, m = f(state, parallel.shard_batch(batch, mesh), jax.random.key(1), weights)
      out[kind][d] = {
        "params": [np.asarray(x).tolist() for x in jax.tree.leaves(new["params"])],
        "wstate": [np.asarray(x).tolist() for x in jax.tree.leaves(new.get("weighting_state"))],
        "measure": {k: float(v) for k, v in m.items()},
      }
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1].split(","))
