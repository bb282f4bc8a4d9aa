"""The train state and what makes it: optimizer, learning rate, initial state, ensembles.

The train state is a plain dict `{"step", "params", "batch_stats", "opt_state"}` (plus
`"weighting_state"` when the configured task weighting keeps state between steps: learned
log-variances, loss history; mtljax/weighting.py); an ensemble of E members is the same dict with
a leading member axis `[E, ...]` on every leaf.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mtljax import configlib, parallel
from mtljax.models import pretrained


# ============================================================================ optimizer
def create_learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int):
  tr = config.train
  total = max(1, int(tr.num_epochs * steps_per_epoch))
  if tr.schedule == "warmup_cosine":
    warmup = max(1, min(total - 1, int(tr.warmup_epochs * steps_per_epoch)))
    # Starts at lr/10 rather than 0: with 0 the first update would be a no-op (STACK_NOTES). At
    # least one decay step after the warmup (optax refuses none): a one-step run takes lr/10.
    return optax.warmup_cosine_decay_schedule(
      tr.learning_rate / 10, tr.learning_rate, warmup, max(total, warmup + 1), end_value=0.0
    )
  return optax.constant_schedule(tr.learning_rate)


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
  tr = config.train
  lr = create_learning_rate(config, steps_per_epoch)
  if tr.optimizer == "adamw":
    opt = optax.adamw(lr, weight_decay=tr.weight_decay)
  elif tr.optimizer == "adam":
    opt = optax.adam(lr)
  else:
    opt = optax.sgd(lr, momentum=0.9)
  parts = []
  if tr.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(tr.grad_clip_norm))
  parts.append(opt)
  if tr.schedule == "plateau":
    # Scales the updates when the (epoch-averaged) training loss stops improving; the train step
    # passes `value=loss` to every update.
    parts.append(
      optax.contrib.reduce_on_plateau(
        factor=tr.plateau_factor,
        patience=tr.plateau_patience,
        accumulation_size=max(1, steps_per_epoch),
      )
    )
  return optax.chain(*parts), lr


# ============================================================================ state
def init_state(
  model, tx, example_inputs: Mapping[str, Any], rng, config=None, *, objective=None
) -> dict:
  """A fresh state; with `config` (or the run's built `objective`, `Setup.objective`), the
  weighting's state too when it keeps one."""
  variables = model.init({"params": rng, "dropout": rng}, example_inputs, train=False)
  # Encoders that name pretrained weights (encoder_kwargs.pretrained) start from them.
  params, batch_stats = pretrained.apply(
    model, variables["params"], variables.get("batch_stats", {})
  )
  state = {
    "step": jnp.zeros((), jnp.int32),
    "params": params,
    "batch_stats": batch_stats,
    "opt_state": tx.init(params),
  }
  if objective is None and config is not None:
    from mtljax import objective as objective_lib  # only here: it imports the task kinds

    objective = objective_lib.build(config)
  if objective is not None:
    init = objective.weighting.init_state
    if init is not None:
      state["weighting_state"] = init()
  return state


# ============================================================================ ensembles
def ensemble_size(config: ml_collections.ConfigDict) -> int:
  return int(config.ensemble.size) if "ensemble" in config else 1


def ensemble_mesh(config: ml_collections.ConfigDict):
  """The device mesh of a run: `config.ensemble.devices` along the ensemble axis when there is
  more than one member, the data axis across the rest."""
  size = ensemble_size(config)
  return parallel.make_mesh(ensemble=int(config.ensemble.get("devices", 1)) if size > 1 else 1)


def member_map(fn: Callable, size: int, in_axes: tuple) -> Callable:
  """`jax.vmap(fn, in_axes)` over the leading member axis of the arguments whose axis is 0.

  With one member the function is applied to that member and the result re-stacked, without
  vmap: a vmapped convolution *kernel* lowers to a grouped convolution, which XLA:CPU runs far
  more slowly than the plain one. (Several members are still vmapped: on XLA:CPU a Python-unrolled
  loop over 5 ResNet-18 members ran 2.4x and `lax.map` 10x slower than the vmapped step.)
  """
  if size > 1:
    return jax.vmap(fn, in_axes=in_axes)

  def single(*args):
    args = [a if ax is None else jax.tree.map(lambda x: x[0], a) for a, ax in zip(args, in_axes)]
    return jax.tree.map(lambda x: x[None], fn(*args))

  return single


def init_ensemble(
  model, tx, example_inputs: Mapping[str, Any], rng, size: int, config=None, *, objective=None
) -> dict:
  """E train states stacked on a leading axis; member k is initialised from `fold_in(rng, k)`
  (the "different random weights" ensemble of the ensembles paper, §3.1), so member 0 of any
  ensemble is the single model of the same seed. `config`, `objective`: as for `init_state`."""
  rngs = jax.vmap(lambda k: jax.random.fold_in(rng, k))(jnp.arange(size))

  def one(r):
    return init_state(model, tx, example_inputs, r, config, objective=objective)

  return member_map(one, size, (0,))(rngs)


def member_sample_weights(config: ml_collections.ConfigDict, num_train: int) -> np.ndarray:
  """Per-member weights of each training example, `[E, N]` (ensembles paper §3.1).

  `seeds`: all ones (members differ by initialisation and dropout). `bagging`: bootstrap counts,
  member k sees N draws with replacement. `leave_one_bucket_out`: the examples are dealt into E
  buckets by a seeded permutation; member k gets weight 0 on bucket k and 1 elsewhere. The
  weights multiply each example's loss mask, so a weighted loss is a weighted mean.
  """
  size, strategy = ensemble_size(config), config.ensemble.strategy
  rng = np.random.default_rng([int(config.seed), 7919])
  if strategy == "seeds":
    return np.ones((size, num_train), np.float32)
  if strategy == "bagging":
    draws = rng.integers(0, num_train, size=(size, num_train))
    return np.stack([np.bincount(d, minlength=num_train) for d in draws]).astype(np.float32)
  if strategy == "leave_one_bucket_out":
    bucket = rng.permutation(num_train) % size
    return (bucket[None, :] != np.arange(size)[:, None]).astype(np.float32)
  raise configlib.ConfigError(
    f"config.ensemble.strategy={strategy!r} is not one of {configlib.ENSEMBLE_STRATEGIES}"
  )


def abstract_ensemble(model, tx, example_inputs, size: int, objective, sharding):
  """`(abstract_state, state_shardings)`: the shapes of the ensemble's train state (`init_ensemble`
  traced, no parameter computed), every leaf with `sharding` (the members' placement)."""
  abstract_state = jax.eval_shape(
    lambda r: init_ensemble(model, tx, example_inputs, r, size, objective=objective),
    jax.random.key(0),
  )
  state_shardings = jax.tree.map(lambda _: sharding, abstract_state)
  abstract_state = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, state_shardings
  )
  return abstract_state, state_shardings
