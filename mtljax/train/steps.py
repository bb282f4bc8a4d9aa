"""The pure steps: loss, train step, ensemble train step, eval step (not jitted here).

  train_step(state, batch, rng) -> (state, measurements)
  ensemble_step(stacked_state, batch, rng, sample_weights [E, N]) -> (stacked_state, measurements)
  eval_step(stacked_state, batch) -> predictions, targets, masks, index, valid

The ensemble step is `jax.vmap` of the single step over the stacked members (`member_map`); data
parallelism is `jax.jit` with shardings over a mesh, applied where a step is called
(train/loop.py). The loss is the configured objective (mtljax/objective.py).
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mtljax import hierarchy, tasks
from mtljax import objective as objective_lib
from mtljax.data import pipeline
from mtljax.egl import term as _egl_term  # noqa: F401 (registers the "explanation" term)
from mtljax.train import grads as grads_lib
from mtljax.train.state import ensemble_size, member_map


def target_transform(target_stats):
  """Regression targets are standardised for the loss; returns (to_model, from_model) maps."""

  # mean/std may be per-output lists (a regression target [D]); jnp.asarray broadcasts either.
  def to_model(targets):
    out = dict(targets)
    for t, (mean, std) in target_stats.items():
      out[t] = (targets[t] - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return out

  def from_model(outputs):
    out = dict(outputs)
    for t, (mean, std) in target_stats.items():
      out[t] = outputs[t] * jnp.asarray(std, jnp.float32) + jnp.asarray(mean, jnp.float32)
    return out

  return to_model, from_model


def _make_context_fn(model, objective, target_stats, transform=None) -> Callable:
  """`(params, batch_stats, batch, rng, weighting_state=None) -> (Context, new_batch_stats)`: one
  forward pass; `transform` maps the model's outputs (the hierarchy's marginalisation)."""
  kinds = objective.kinds
  to_model, _ = target_transform(target_stats)
  transform = transform or (lambda outputs: outputs)

  def context_fn(params, batch_stats, batch, rng, weighting_state=None):
    valid = batch["valid"]
    # `valid` [B] broadcast over a dense (per-pixel) mask [B, H, W].
    masks = {
      t: batch["mask"][t] * valid.reshape(valid.shape + (1,) * (batch["mask"][t].ndim - 1))
      for t in kinds
    }
    targets = to_model({t: batch["targets"][t] for t in kinds})
    variables = {"params": params, "batch_stats": batch_stats}
    (outputs, inter), updates = model.apply(
      variables, batch["inputs"], train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
    )
    outputs = transform(outputs)

    def apply(p, inputs, *, train=True, rng=rng, batch_stats=batch_stats):
      v = {"params": p, "batch_stats": batch_stats}
      if not train:
        return model.apply(v, inputs, train=False)
      return model.apply(v, inputs, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])[0]

    ctx = objective.context(
      params=params,
      batch_stats=batch_stats,
      batch=batch,
      rng=rng,
      outputs=outputs,
      intermediates=inter,
      targets=targets,
      masks=masks,
      apply=apply,
      weighting_state=weighting_state,
    )
    return ctx, updates.get("batch_stats", batch_stats)

  return context_fn


def make_train_step(
  model,
  tx,
  config: ml_collections.ConfigDict,
  target_stats: Mapping[str, tuple[float, float]],
  *,
  objective=None,
  transform=None,
) -> Callable:
  """Pure `(state, batch, rng) -> (state, measurements)`; jit/shard/vmap it where it is called.

  measurements: `loss`, `grad_norm`, `param_norm`, `loss_<name>` for every objective log and,
  for a learned weighting or a gradient aggregation, `weight_<task>` (and `cos_<task>`). A
  weighting with state keeps it in `state["weighting_state"]` (updated here after each step).
  `objective`, `transform`: the run's (`Setup.objective`, `Setup.output_transform`); built from
  `config` when not given."""
  objective = objective or objective_lib.build(config)
  weighting = objective.weighting
  transform = transform or hierarchy.output_transform(config)
  context_fn = _make_context_fn(model, objective, target_stats, transform)
  grads_fn = grads_lib.make_grads_fn(objective, context_fn)

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state["step"])
    wstate = state.get("weighting_state")
    if wstate is None and weighting.init_state is not None:
      raise ValueError(
        f"weighting {weighting.name!r} keeps state: build the train state with "
        "init_state(..., config=config) / init_ensemble(..., config=config)"
      )
    loss, logs, batch_stats, grads, extra = grads_fn(
      state["params"], state["batch_stats"], batch, rng, wstate
    )
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"], value=loss)
    params = optax.apply_updates(state["params"], updates)
    new_state = {
      "step": state["step"] + 1,
      "params": params,
      "batch_stats": batch_stats,
      "opt_state": opt_state,
    }
    if wstate is not None:
      new_state["weighting_state"] = weighting.update_state(
        wstate, extra["wgrads"], extra["losses"], extra["present"], rng
      )
    measurements = {
      "loss": loss,
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(params),
    }
    measurements.update({f"loss_{k}": v for k, v in logs.items()})
    measurements.update(extra["measure"])
    return new_state, measurements

  return train_step


def make_ensemble_train_step(
  model,
  tx,
  config: ml_collections.ConfigDict,
  target_stats: Mapping[str, tuple[float, float]],
  *,
  objective=None,
  transform=None,
) -> Callable:
  """Pure `(stacked_state, batch, rng, sample_weights [E, N]) -> (stacked_state, measurements)`.

  All E members take one step on the same batch in one program, vmapped over their stacked
  params, optimizer states and RNGs (member k's dropout RNG is `fold_in(rng, k)`); member k
  weighs example i by `sample_weights[k, i]` (bagging, leave-one-bucket-out). With
  `config.ensemble.augment_per_member` (and `config.data.augment` on), member k also applies its
  own random flips/rotations to the batch (`pipeline.augment_batch`, from `fold_in(rng, k)`), so
  members see independently augmented data, as separately trained networks do. Measurements are
  averaged over members (a non-finite member makes the average non-finite). `objective`,
  `transform`: as for `make_train_step`.
  """
  size = ensemble_size(config)
  step = make_train_step(model, tx, config, target_stats, objective=objective, transform=transform)
  augment = (
    pipeline.augment_options(config.data.get("augment"))
    if size > 1 and config.ensemble.get("augment_per_member", False)
    else None
  )

  def member_step(state, weights, rng, batch):
    batch = {**batch, "valid": batch["valid"] * weights[batch["meta"]["index"]]}
    if augment:  # the member's own transform of the shared (already augmented) batch
      aug_rng = jax.random.fold_in(jax.random.fold_in(rng, state["step"]), 1)
      batch = pipeline.augment_batch(batch, aug_rng, **augment)
    return step(state, batch, rng)

  def ensemble_step(state, batch, rng, sample_weights):
    rngs = jax.vmap(lambda k: jax.random.fold_in(rng, k))(jnp.arange(size))
    state, m = member_map(member_step, size, (0, 0, 0, None))(state, sample_weights, rngs, batch)
    return state, jax.tree.map(jnp.mean, m)

  return ensemble_step


def on_device_inputs(step: Callable, input_stats) -> Callable:
  """`step(state, batch, *rest)` that first standardises the batch's integer-stored inputs
  (`pipeline.standardize_on_device` with the run's input statistics): the step to use with
  batches read with `on_device=True` (`config.data.normalise_on_device`). Host-normalised
  batches pass through unchanged (the choice is made from dtypes at trace time)."""

  def wrapped(state, batch, *rest):
    inputs = pipeline.standardize_on_device(batch["inputs"], input_stats)
    return step(state, {**batch, "inputs": inputs}, *rest)

  return wrapped


def make_eval_step(
  model,
  config: ml_collections.ConfigDict,
  target_stats: Mapping[str, tuple[float, float]],
  *,
  transform=None,
) -> Callable:
  """Pure `(stacked_state, batch) -> {"pred": {task: prediction}, "targets", "mask", "index",
  "valid"}` (+ `"member_pred": {task: [B, E, ...]}` for an ensemble of E > 1).

  Predictions are each kind's activation of the outputs (class probabilities, label
  probabilities, or regression values in the target's original units); an ensemble's prediction
  is the mean over its members (averaged probabilities), of which only the kind's `on_device`
  part leaves the device (segmentation: the argmax labels). `transform`: the run's
  `Setup.output_transform` (built from `config` when not given).
  """
  size = ensemble_size(config)
  specs = {t: tasks.of(c) for t, c in config.tasks.items()}  # each task's kind
  _, from_model = target_transform(target_stats)
  transform = transform or hierarchy.output_transform(config)

  def member_preds(state, batch):
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    outputs, _ = model.apply(variables, batch["inputs"], train=False)
    outputs = from_model(transform(outputs))
    return {t: spec.activation(outputs[t]) for t, spec in specs.items()}

  def eval_step(state, batch):
    members = member_map(member_preds, size, (0, None))(state, batch)  # {task: [E, B, ...]}
    mean = jax.tree.map(lambda x: jnp.mean(x, axis=0), members)
    out = {"pred": {t: spec.on_device(mean[t]) for t, spec in specs.items()}}
    if size > 1:
      members = {t: spec.on_device(members[t]) for t, spec in specs.items()}
      out["member_pred"] = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), members)
    # The labels travel with the predictions so that one gather assembles the global batch on
    # every host (each process only read its own rows).
    return {
      **out,
      "targets": {t: batch["targets"][t] for t in specs},
      "mask": {t: batch["mask"][t] for t in specs},
      "index": batch["meta"]["index"],
      "valid": batch["valid"],
    }

  return eval_step
