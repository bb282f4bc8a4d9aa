"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=4: one ensemble train step (E=2) of
the tiny TreeSAT model on a (data=4) mesh and on a (data=2, ensemble=2) mesh, where each device
holds one member; prints the parameter difference and the per-device shard shapes as JSON."""

import json
import sys

import jax
import numpy as np

from configs import treesat as treesat_config
from mtljax import parallel, train


def main(root, workdir):
  assert len(jax.devices()) == 4, jax.devices()
  out = {}
  for devices in (1, 2):
    config = treesat_config.get_config("tiny,size=2")
    config.data.root = root
    config.ensemble.devices = devices
    s = train.setup(config, f"{workdir}/{devices}", write_config=False)
    batch = next(s.train_iter())
    state = jax.jit(
      lambda r: train.init_ensemble(s.model, s.tx, s.example_inputs, r, 2),
      out_shardings=s.state_shardings,
    )(jax.random.key(0))
    repl = parallel.replicated(s.mesh)
    step = jax.jit(
      train.make_ensemble_train_step(s.model, s.tx, config, s.target_stats),
      in_shardings=(s.state_shardings, parallel.data_sharded(s.mesh), repl, repl),
      out_shardings=(s.state_shardings, repl),
    )
    weights = jax.device_put(train.member_sample_weights(config, len(s.sources["train"])), repl)
    new, m = step(state, parallel.shard_batch(batch, s.mesh), jax.random.key(1), weights)
    leaf = jax.tree.leaves(new["params"])[0]
    out[devices] = {
      "mesh": dict(s.mesh.shape),
      "loss": float(m["loss"]),
      "params": [np.asarray(x).tolist() for x in jax.tree.leaves(new["params"])[:4]],
      "shard_shapes": sorted({tuple(sh.data.shape) for sh in leaf.addressable_shards}),
      "leaf_shape": list(leaf.shape),
    }
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
