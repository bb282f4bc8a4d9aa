"""Ensemble train step: E members vmapped in one jitted step versus E separate single-model steps.

    python profiling/ensemble_step.py [--size 5] [--image 64] [--batch 32] [--steps 5] [--tiny]

Builds the `configs/attributes.py` model (ResNet-18, class + attributes heads), times the jitted
ensemble train step (what training runs) and, side by side in the same run on the default device,
E calls of the jitted single-model step on the members one by one (what training E models
separately would cost), checks both give the same new parameters, and prints the ratio.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import attributes  # noqa: E402
from mtljax import train
from mtljax.models.multitask import build_model


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", type=int, default=5)
  ap.add_argument("--image", type=int, default=64)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--tiny", action="store_true")
  a = ap.parse_args()
  config = attributes.get_config(f"size={a.size}" + (",tiny" if a.tiny else ""))
  config.tasks.attributes.num_classes = 7
  config.tasks["class"].num_classes = 10
  model = build_model(config)
  tx, _ = train.create_optimizer(config, 100)
  rng = np.random.default_rng(0)
  b = a.batch
  batch = {"inputs": {"image": jnp.asarray(rng.normal(size=(b, a.image, a.image, 3)), jnp.float32)},
           "targets": {"attributes": jnp.asarray(rng.random((b, 7)) < 0.5, jnp.float32),
                       "class": jnp.asarray(rng.integers(0, 10, b), jnp.int32)},
           "mask": {"attributes": jnp.ones(b), "class": jnp.ones(b)},
           "valid": jnp.ones(b), "meta": {"index": jnp.arange(b, dtype=jnp.int32)}}
  state = train.init_ensemble(model, tx, {"image": batch["inputs"]["image"][:1]}, jax.random.key(0),
                              a.size)
  weights = jnp.ones((a.size, b))
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), E={a.size}, "
        f"batch {b}, image {a.image}px, {'tiny' if a.tiny else 'ResNet-18'}")
  def timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(a.steps):
      out = jax.block_until_ready(fn())
    return out, (time.perf_counter() - t0) / a.steps, first

  ens_step = jax.jit(train.make_ensemble_train_step(model, tx, config, {}))
  rng = jax.random.key(1)
  (ens_new, _), ens_s, ens_first = timed(lambda: ens_step(state, batch, rng, weights))
  one_step = jax.jit(train.make_train_step(model, tx, config, {}))
  members = [jax.tree.map(lambda x, k=k: x[k], state) for k in range(a.size)]
  rngs = [jax.random.fold_in(rng, k) for k in range(a.size)]
  loop, loop_s, loop_first = timed(lambda: [one_step(m, batch, r) for m, r in zip(members, rngs)])
  for name, sec, first in (("vmapped ensemble step", ens_s, ens_first),
                           (f"{a.size} single-model steps", loop_s, loop_first)):
    print(f"{name:24s}: {sec * 1e3:8.1f} ms  {a.size * b / sec:7.1f} member-images/s  "
          f"(first call {first:.1f} s)")
  diff = max(float(jnp.max(jnp.abs(x[k] - y))) for k, (m, _) in enumerate(loop)
             for x, y in zip(jax.tree.leaves(ens_new["params"]), jax.tree.leaves(m["params"])))
  print(f"vmapped / separate time ratio {ens_s / loop_s:.2f}; max |param difference| {diff:.2e}")


if __name__ == "__main__":
  main()
