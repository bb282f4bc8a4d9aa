"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=4: loss and gradients of the tiny
TreeSAT model on one batch, on a 1-device mesh and on a 4-device mesh, printed as JSON."""

import json
import sys

import jax
import numpy as np
from loss_oracle import make_loss_fn  # tests/helpers, the script's own folder

from configs import treesat as treesat_config
from mtljax import parallel, train
from mtljax.models.multitask import build_model


def main(root):
  assert len(jax.devices()) == 4, jax.devices()
  config = treesat_config.get_config("tiny")
  config.data.root = root
  s = train.setup(config, sys.argv[2], write_config=False)
  batch = next(s.train_iter())
  model = build_model(config)
  loss_fn = make_loss_fn(model, config, s.target_stats)
  state = train.init_state(model, s.tx, s.example_inputs, jax.random.key(0))
  rng = jax.random.key(1)
  out = {}
  for n in (1, 4):
    mesh = parallel.make_mesh(n)
    repl, data = parallel.replicated(mesh), parallel.data_sharded(mesh)
    grad_fn = jax.jit(
      jax.value_and_grad(loss_fn, has_aux=True),
      in_shardings=(repl, repl, data, repl),
      out_shardings=repl,
    )
    (loss, (per_task, bstats)), grads = grad_fn(
      state["params"], state["batch_stats"], parallel.shard_batch(batch, mesh), rng
    )
    out[n] = {
      "loss": float(loss),
      "grads": [np.asarray(g).tolist() for g in jax.tree.leaves(grads)],
      "batch_stats": [np.asarray(b).tolist() for b in jax.tree.leaves(bstats)],
      "sharded": len(parallel.shard_batch(batch, mesh)["valid"].sharding.device_set),
    }
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1])
