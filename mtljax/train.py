"""Multitask training and evaluation, in reading order (after flax `examples/imagenet/train.py`).

  create_optimizer → init_state → make_train_step / make_eval_step (pure, not jitted here)
  → evaluate → train_and_evaluate (the loop: mesh, data, checkpoints, logging, resume).

The train state is a plain dict `{"step", "params", "batch_stats", "opt_state"}` and the step a
pure function `(state, batch, rng) -> (state, measurements)`, so an ensemble is `jax.vmap` of the
same step over stacked states, and data parallelism is `jax.jit` with shardings over a mesh,
applied where the step is called.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from mtljax import configlib, dense_pictures, objective, parallel
from mtljax import losses as losses_lib
from mtljax import metrics as metrics_lib
from mtljax.checkpoint import Checkpointer
from mtljax.data import build as data_build
from mtljax.data import pipeline
from mtljax.data.source import capability
from mtljax.models.multitask import build_model
from mtljax.writers import MetricWriter


class NonFiniteLossError(FloatingPointError):
  pass


# ============================================================================ optimizer
def create_learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int):
  tr = config.train
  total = max(1, int(tr.num_epochs * steps_per_epoch))
  if tr.schedule == "warmup_cosine":
    warmup = min(total - 1, int(tr.warmup_epochs * steps_per_epoch))
    # Starts at lr/10 rather than 0: with 0 the first update would be a no-op (STACK_NOTES).
    return optax.warmup_cosine_decay_schedule(
      tr.learning_rate / 10, tr.learning_rate, max(warmup, 1), total, end_value=0.0
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
def init_state(model, tx, example_inputs: Mapping[str, Any], rng) -> dict:
  variables = model.init({"params": rng, "dropout": rng}, example_inputs, train=False)
  params = variables["params"]
  return {
    "step": jnp.zeros((), jnp.int32),
    "params": params,
    "batch_stats": variables.get("batch_stats", {}),
    "opt_state": tx.init(params),
  }


# ============================================================================ ensembles
def ensemble_size(config: ml_collections.ConfigDict) -> int:
  return int(config.ensemble.size) if "ensemble" in config else 1


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


def init_ensemble(model, tx, example_inputs: Mapping[str, Any], rng, size: int) -> dict:
  """E train states stacked on a leading axis; member k is initialised from `fold_in(rng, k)`
  (the "different random weights" ensemble of the ensembles paper, §3.1), so member 0 of any
  ensemble is the single model of the same seed."""
  rngs = jax.vmap(lambda k: jax.random.fold_in(rng, k))(jnp.arange(size))
  return member_map(lambda r: init_state(model, tx, example_inputs, r), size, (0,))(rngs)


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


def _target_transform(target_stats):
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


# ============================================================================ steps
def make_loss_fn(
  model, config: ml_collections.ConfigDict, target_stats: Mapping[str, tuple[float, float]]
) -> Callable:
  """Pure `(params, batch_stats, batch, rng) -> (loss, (per_task_losses, new_batch_stats))`."""
  kinds = {t: c.kind for t, c in config.tasks.items()}
  weights = losses_lib.normalized_weights({t: c.weight for t, c in config.tasks.items()})
  to_model, _ = _target_transform(target_stats)

  def loss_fn(params, batch_stats, batch, rng):
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
    total, per_task = objective.multitask_loss(outputs, targets, masks, kinds, weights)
    # Auxiliary supervised outputs (intermediates["aux_outputs"], e.g. MTC-LIM's interim
    # modules) add their own losses; logged as loss_aux_<module>. Nothing for other models.
    aux_total, aux = objective.auxiliary_loss(inter, targets, masks, kinds, weights)
    total = total + aux_total
    per_task = {**per_task, **{f"aux_{m}": v for m, v in aux.items()}}
    return total, (per_task, updates.get("batch_stats", batch_stats))

  return loss_fn


def make_train_step(
  model, tx, config: ml_collections.ConfigDict, target_stats: Mapping[str, tuple[float, float]]
) -> Callable:
  """Pure `(state, batch, rng) -> (state, measurements)`; jit/shard/vmap it where it is called."""
  loss_fn = make_loss_fn(model, config, target_stats)

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state["step"])
    (loss, (per_task, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], state["batch_stats"], batch, rng
    )
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"], value=loss)
    params = optax.apply_updates(state["params"], updates)
    new_state = {
      "step": state["step"] + 1,
      "params": params,
      "batch_stats": batch_stats,
      "opt_state": opt_state,
    }
    measurements = {
      "loss": loss,
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(params),
    }
    measurements.update({f"loss_{t}": v for t, v in per_task.items()})
    return new_state, measurements

  return train_step


def make_ensemble_train_step(
  model, tx, config: ml_collections.ConfigDict, target_stats: Mapping[str, tuple[float, float]]
) -> Callable:
  """Pure `(stacked_state, batch, rng, sample_weights [E, N]) -> (stacked_state, measurements)`.

  All E members take one step on the same batch in one program, vmapped over their stacked
  params, optimizer states and RNGs (member k's dropout RNG is `fold_in(rng, k)`); member k
  weighs example i by `sample_weights[k, i]` (bagging, leave-one-bucket-out). With
  `config.ensemble.augment_per_member` (and `config.data.augment` on), member k also applies its
  own random flips/rotations to the batch (`pipeline.augment_batch`, from `fold_in(rng, k)`), so
  members see independently augmented data, as separately trained networks do. Measurements are
  averaged over members (a non-finite member makes the average non-finite).
  """
  size = ensemble_size(config)
  step = make_train_step(model, tx, config, target_stats)
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


def make_eval_step(
  model, config: ml_collections.ConfigDict, target_stats: Mapping[str, tuple[float, float]]
) -> Callable:
  """Pure `(stacked_state, batch) -> {"pred": {task: prediction}, "targets", "mask", "index",
  "valid"}` (+ `"member_pred": {task: [B, E, ...]}` for an ensemble of E > 1).

  Predictions are class probabilities, label probabilities or regression values in the
  target's original units; an ensemble's prediction is the mean over its members (averaged
  probabilities).
  """
  size = ensemble_size(config)
  kinds = {t: c.kind for t, c in config.tasks.items()}
  _, from_model = _target_transform(target_stats)

  def member_preds(state, batch):
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    outputs, _ = model.apply(variables, batch["inputs"], train=False)
    outputs = from_model(outputs)
    preds = {}
    for t, kind in kinds.items():
      if kind in ("classification", "segmentation"):
        preds[t] = jax.nn.softmax(outputs[t], axis=-1)
      elif kind == "multilabel":
        preds[t] = jax.nn.sigmoid(outputs[t])
      else:
        preds[t] = outputs[t]
    return preds

  def eval_step(state, batch):
    members = member_map(member_preds, size, (0, None))(state, batch)  # {task: [E, B, ...]}
    out = {"pred": jax.tree.map(lambda x: jnp.mean(x, axis=0), members)}
    # Segmentation: only the argmax of the (averaged) probabilities leaves the device.
    seg = [t for t, kind in kinds.items() if kind == "segmentation"]
    for t in seg:
      out["pred"][t] = jnp.argmax(out["pred"][t], axis=-1).astype(jnp.int32)
      members[t] = jnp.argmax(members[t], axis=-1).astype(jnp.int32)
    if size > 1:
      out["member_pred"] = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), members)
    # The labels travel with the predictions so that one gather assembles the global batch on
    # every host (each process only read its own rows).
    return {
      **out,
      "targets": {t: batch["targets"][t] for t in kinds},
      "mask": {t: batch["mask"][t] for t in kinds},
      "index": batch["meta"]["index"],
      "valid": batch["valid"],
    }

  return eval_step


# ============================================================================ evaluation
def _task_metrics(config, out, pred_of) -> dict[str, float]:
  """Metrics of every task, `pred_of(task)` giving the probabilities or regression values."""
  metrics = {}
  for t, tcfg in config.tasks.items():
    m = metrics_lib.task_metrics(
      tcfg.kind, out[f"target/{t}"], pred_of(t), out[f"mask/{t}"], tcfg.get("num_classes")
    )
    metrics.update({f"{t}/{k}": v for k, v in m.items()})
  return metrics


# Task kinds whose prediction is saved as `pred/<t>` only (values or argmax labels, no `prob/<t>`).
_PRED_KINDS = ("regression", "dense_regression", "segmentation")


def evaluate(
  eval_fn, state, batches, config: ml_collections.ConfigDict, mesh, desc: str = "eval", source=None
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """One pass over `batches`; returns `(metrics, predictions)` with every real example once.

  predictions: `index`, and per task `target/<t>`, `mask/<t>`, `prob/<t>` (classification,
  multilabel) or `pred/<t>` (regression; classification also gets the argmax as `pred/<t>`).
  An ensemble (E > 1) adds each member's `member_prob/<t>` / `member_pred/<t>` `[N, E, ...]`;
  its metrics are the ensemble's (averaged probabilities), each member's as `member<k>/...` and
  their mean over members as `members_mean/...` (the paper's Ind-Avg).
  With the split's `source`, its optional per-example context is added (`_source_context`).
  """
  size = ensemble_size(config)
  chunks: dict[str, list] = {}
  for batch in tqdm(
    batches, desc=desc, leave=False, disable=jax.process_index() != 0, mininterval=2.0
  ):
    out = parallel.gather(eval_fn(state, parallel.shard_batch(batch, mesh)))
    valid = out["valid"] > 0
    chunks.setdefault("index", []).append(out["index"][valid])
    for t in config.tasks:
      chunks.setdefault(f"target/{t}", []).append(out["targets"][t][valid])
      chunks.setdefault(f"mask/{t}", []).append(out["mask"][t][valid])
      key = "pred" if config.tasks[t].kind in _PRED_KINDS else "prob"
      chunks.setdefault(f"{key}/{t}", []).append(out["pred"][t][valid])
      if size > 1:
        chunks.setdefault(f"member_{key}/{t}", []).append(out["member_pred"][t][valid])
  out = {k: np.concatenate(v) for k, v in chunks.items()}

  def score(prefix, member=None):
    def pred_of(t):
      kind = config.tasks[t].kind
      key = f"{prefix}pred/{t}" if kind in _PRED_KINDS else f"{prefix}prob/{t}"
      return out[key] if member is None else out[key][:, member]

    m = _task_metrics(config, out, pred_of)
    # Optional `config.train.select_task_mean` (issue 7, multitask tables): that metric's mean
    # over all tasks as `task_mean/<metric>`, the best-checkpoint score instead of the main task's.
    name = config.train.get("select_task_mean", "")
    if name:
      m[f"task_mean/{name}"] = float(np.mean([m[f"{t}/{name}"] for t in config.tasks]))
    return m

  metrics = score("")
  for t, tcfg in config.tasks.items():
    if tcfg.kind == "classification":
      out[f"pred/{t}"] = out[f"prob/{t}"].argmax(-1).astype(np.int32)
  if size > 1:
    members = [score("member_", k) for k in range(size)]
    for k, m in enumerate(members):
      metrics.update({f"member{k}/{name}": v for name, v in m.items()})
    metrics.update(
      {f"members_mean/{name}": float(np.mean([m[name] for m in members])) for name in members[0]}
    )
  if source is not None:
    _source_context(config, source, out, metrics)
  return metrics, out


def _source_context(config, source, out, metrics) -> None:
  """Optional per-example context a source offers (all indexed by `out["index"]`): `groups`
  (e.g. CropYield's field id) → `out["group"]`; `prediction_meta()` → `out["meta/<key>"]`;
  `metric_strata()` `{prefix: labels [N]}` → every regression task's metrics per label value,
  `<task>/<metric>_<prefix><value>` (e.g. `yield/r2_corn`, Table 6 of the paper)."""
  idx = out["index"]
  if (groups := capability(source, "groups")) is not None:
    out["group"] = np.asarray(groups)[idx]
  if (prediction_meta := capability(source, "prediction_meta")) is not None:
    out.update({f"meta/{k}": np.asarray(v)[idx] for k, v in prediction_meta().items()})
  if (metric_strata := capability(source, "metric_strata")) is not None:
    for prefix, labels in metric_strata().items():
      labels = np.asarray(labels)[idx]
      for t, tcfg in config.tasks.items():
        if tcfg.kind != "regression":
          continue
        for value in np.unique(labels):
          sel = labels == value
          m = metrics_lib.regression_metrics(
            out[f"target/{t}"][sel], out[f"pred/{t}"][sel], out[f"mask/{t}"][sel]
          )
          metrics.update({f"{t}/{k}_{prefix}{value}": v for k, v in m.items() if k != "count"})


def save_predictions(
  workdir: str, split: str, epoch: int, preds: Mapping[str, np.ndarray], names
) -> str:
  """`<workdir>/predictions/<split>/epoch_<NNN>.npz` (+ the example names of the split)."""
  if jax.process_index() != 0:
    return ""
  folder = os.path.join(workdir, "predictions", split)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"epoch_{epoch:03d}.npz")
  names = np.asarray(names)
  tmp = path + ".tmp.npz"
  np.savez_compressed(tmp, name=names[preds["index"]], epoch=np.int32(epoch), **preds)
  os.replace(tmp, path)
  return path


# ============================================================================ data
def regression_target_stats(source, config) -> dict[str, tuple]:
  """Mean and std of each regression target over the training split (labels only, no images).

  A target `[N, D]` gets per-output lists (e.g. weather in K, %, hPa); a `dense_regression`
  target one mean/std over the labelled pixels of up to `config.data.stats_examples` training
  examples (read with `source.read_target(task, i)` when the source has it). A task with
  `normalize=False` is left in its own units.
  """
  if not config.train.normalize_regression_targets:
    return {}
  reg = [
    t
    for t, c in config.tasks.items()
    if c.kind in ("regression", "dense_regression") and c.get("normalize", True)
  ]
  out = {}
  labels = source.label_arrays() if any(config.tasks[t].kind == "regression" for t in reg) else None
  for t in reg:
    if config.tasks[t].kind == "regression":
      vals = np.asarray(labels["targets"][t], np.float64)[np.asarray(labels["mask"][t]) > 0]
    else:
      n = min(len(source), int(config.data.get("stats_examples", 2048)))
      rows = np.random.default_rng(int(config.seed)).permutation(len(source))[:n]

      def read(i):
        if (read_target := capability(source, "read_target")) is not None:  # no input rasters
          return read_target(t, i)
        example = source[i]
        return example["targets"][t], example["mask"][t]

      pairs = [read(int(i)) for i in rows]
      vals = np.concatenate([np.asarray(y, np.float64)[np.asarray(m) > 0] for y, m in pairs])
    if vals.size == 0:
      raise ValueError(f"regression task {t!r}: no training example has a label")
    if vals.ndim > 1:  # a vector target [N, D] (CropYield's DEM): per-column statistics
      out[t] = (vals.mean(0).tolist(), np.maximum(vals.std(0), 1e-6).tolist())
      continue
    out[t] = (float(vals.mean()), float(max(vals.std(), 1e-6)))
  return out


def _dataset_pictures(config, workdir, split, preds, source, writer, step) -> None:
  """The dataset's own pictures of `preds` (its `DatasetSpec.pictures`, e.g. CropYield's yield
  maps), written under `<workdir>/report/<split>/` and as TensorBoard images."""
  from mtljax.data import get_dataset

  fn = get_dataset(config.data.name).pictures_fn
  if fn is None:
    return
  for tag, image in fn(preds, source, os.path.join(workdir, "report", split)):
    writer.image(step, f"{split}/{tag}", image)


def _load_or_compute_stats(path, compute):
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  stats = compute()
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(stats, f, indent=1)
    os.replace(tmp, path)
  return stats


# ============================================================================ the loop
class _Preemption:
  """SIGTERM (cluster pre-emption, TPU maintenance) → checkpoint at the next step, then exit."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      del frame
      logging.warning("received signal %d: will checkpoint and stop after this step", signum)
      self.requested = True

    try:
      self._previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread (e.g. some test runners): no handler
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def agreed(self) -> bool:
    """True on every process once any process got the signal: all must checkpoint the same step
    (orbax saves collectively), so the flag is combined across processes at each step."""
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.any(flags))


class Preempted(SystemExit):
  """Raised after a SIGTERM-triggered checkpoint; exit status 143 (= 128 + SIGTERM)."""

  def __init__(self):
    super().__init__(143)


def _summary_keys(metrics: Mapping[str, float]) -> list[str]:
  """Metric names worth printing: not counts, not each ensemble member's own (in metrics.jsonl)."""
  return sorted(
    k
    for k in metrics
    if not k.endswith("/count") and not (k.startswith("member") and k[6:7].isdigit())
  )


def _banner(lines):
  width = max(len(s) for s in lines) + 4
  print("\n" + "#" * width)
  for s in lines:
    print(f"# {s.ljust(width - 4)} #")
  print("#" * width + "\n", flush=True)


@dataclasses.dataclass
class Setup:
  """Everything a run derives from (config, workdir) before training or evaluating."""

  config: ml_collections.ConfigDict
  workdir: str
  sources: dict
  stats: dict
  target_stats: dict
  mesh: Any
  model: Any
  tx: Any
  lr_fn: Any
  steps_per_epoch: int
  example_inputs: dict
  abstract_state: Any
  state_shardings: Any
  p_eval_step: Any
  main_key: str
  larger_better: bool
  input_names: tuple
  task_names: tuple

  def eval_iter(self, split):
    """This process's rows of the global eval batches of `split`."""
    return pipeline.eval_batches(
      self.sources[split],
      input_names=self.input_names,
      task_names=self.task_names,
      stats=self.stats["inputs"],
      batch_size=int(self.config.eval.batch_size),
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
      read_options=pipeline.default_read_options(
        self.config.data.num_threads, self.config.data.prefetch
      ),
    )

  def train_iter(self, start_step: int = 0):
    """This process's rows of the global training batches, from global step `start_step`."""
    config = self.config
    return pipeline.train_iterator(
      self.sources["train"],
      input_names=self.input_names,
      task_names=self.task_names,
      stats=self.stats["inputs"],
      batch_size=int(config.train.batch_size) // jax.process_count(),
      seed=config.seed,
      augment_cfg=config.data.augment.to_dict(),
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
      start_step=start_step,
      read_options=pipeline.default_read_options(config.data.num_threads, config.data.prefetch),
    )


def setup(config: ml_collections.ConfigDict, workdir: str, *, write_config: bool = True) -> Setup:
  """Data sources (writing the synthetic dataset when no root is given), validation, statistics,
  mesh, model, optimizer and the abstract (shape-only) train state."""
  if config.model.get("variant"):  # an unknown MTC-LIM variant fails before anything is written
    from mtljax.models import lim

    lim.parse_variant(config.model.variant)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  # ------------------------------------------------------------------ data sources
  sources, synthetic_root = data_build.make_sources(config, workdir)
  train_src = sources["train"]
  if synthetic_root and is_main:
    _banner(
      [
        "NO DATA ROOT GIVEN: using the BUILT-IN SYNTHETIC dataset",
        f"(planted truth, real {config.data.name} layout) written to {synthetic_root}",
        "Pass --config.data.root=/path/to/the/real/archive to train on real data.",
      ]
    )
  configlib.resolve_from_data(config, train_src.target_fields)
  configlib.validate(config, train_src.input_fields, train_src.target_fields)

  # ------------------------------------------------------------------ workdir config
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      configlib.check_compatible(json.load(f), config, config_path)
  elif is_main and write_config:
    with open(config_path + ".tmp", "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(config_path + ".tmp", config_path)  # other processes may be reading it

  input_names = tuple(sorted(config.inputs))
  task_names = tuple(sorted(config.tasks))
  stats = _load_or_compute_stats(
    os.path.join(workdir, "normalization.json"),
    lambda: {
      # Categorical inputs (embedding indices) are not standardised.
      "inputs": pipeline.compute_stats(
        train_src,
        [m for m in input_names if train_src.input_fields.get(m, {}).get("kind") != "categorical"],
        max_examples=config.data.stats_examples,
        seed=config.seed,
      ),
      "targets": {t: list(v) for t, v in regression_target_stats(train_src, config).items()},
    },
  )
  target_stats = {t: tuple(v) for t, v in stats["targets"].items() if t in config.tasks}

  # ------------------------------------------------------------------ mesh, model, optimizer
  size = ensemble_size(config)
  mesh = parallel.make_mesh(ensemble=int(config.ensemble.get("devices", 1)) if size > 1 else 1)
  batch_size = int(config.train.batch_size)
  parallel.check_batch_size(batch_size, mesh)
  parallel.check_batch_size(int(config.eval.batch_size), mesh, "config.eval.batch_size")
  steps_per_epoch = len(train_src) // batch_size
  if steps_per_epoch < 1:
    raise ValueError(
      f"the training split has {len(train_src)} examples, fewer than "
      f"config.train.batch_size={batch_size}"
    )
  model = build_model(config)
  tx, lr_fn = create_optimizer(config, steps_per_epoch)

  first = next(
    pipeline.eval_batches(
      train_src, input_names=input_names, task_names=task_names, stats=stats["inputs"], batch_size=1
    )
  )
  example_inputs = jax.tree.map(jnp.zeros_like, first["inputs"])

  members = parallel.ensemble_sharded(mesh)  # replicated unless members are spread over devices
  abstract_state = jax.eval_shape(
    lambda r: init_ensemble(model, tx, example_inputs, r, size), jax.random.key(0)
  )
  state_shardings = jax.tree.map(lambda _: members, abstract_state)
  abstract_state = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, state_shardings
  )
  p_eval_step = jax.jit(
    make_eval_step(model, config, target_stats),
    in_shardings=(state_shardings, parallel.data_sharded(mesh)),
    out_shardings=parallel.data_sharded(mesh),
  )
  main_metric, larger_better = metrics_lib.MAIN_METRIC[config.tasks[config.main_task].kind]
  main_key = f"{config.main_task}/{main_metric}"
  if config.train.get("select_task_mean", ""):  # see evaluate(); e.g. "kappa": larger is better
    main_key, larger_better = f"task_mean/{config.train.select_task_mean}", True
  return Setup(
    config=config,
    workdir=workdir,
    sources=sources,
    stats=stats,
    target_stats=target_stats,
    mesh=mesh,
    model=model,
    tx=tx,
    lr_fn=lr_fn,
    steps_per_epoch=steps_per_epoch,
    example_inputs=example_inputs,
    abstract_state=abstract_state,
    state_shardings=state_shardings,
    p_eval_step=p_eval_step,
    main_key=main_key,
    larger_better=larger_better,
    input_names=input_names,
    task_names=task_names,
  )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Train, evaluate every epoch, checkpoint, resume; returns the final test metrics."""
  s = setup(config, workdir)
  workdir, mesh, sources = s.workdir, s.mesh, s.sources
  is_main = jax.process_index() == 0
  train_src = sources["train"]
  steps_per_epoch, batch_size = s.steps_per_epoch, int(config.train.batch_size)
  model, tx, lr_fn, target_stats = s.model, s.tx, s.lr_fn, s.target_stats
  abstract_state, state_shardings = s.abstract_state, s.state_shardings
  example_inputs, input_names, task_names = s.example_inputs, s.input_names, s.task_names
  p_eval_step, eval_iter = s.p_eval_step, s.eval_iter
  main_task, main_key, larger_better = config.main_task, s.main_key, s.larger_better
  repl = parallel.replicated(mesh)
  size = ensemble_size(config)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  writer = MetricWriter(workdir)

  restored = ckpt.restore_latest(abstract_state)
  if restored is None:
    state = jax.jit(
      lambda r: init_ensemble(model, tx, example_inputs, r, size), out_shardings=state_shardings
    )(init_rng)
    meta = {"step": 0, "best": None, "best_epoch": None, "epoch_done": 0}
    writer.truncate_after(0)
  else:
    state, meta = restored
    logging.info("resumed from step %d", meta["step"])
    if is_main:
      print(
        f"Resuming from {ckpt.directory}/latest at step {meta['step']} "
        f"(epoch {meta['epoch_done']} of {config.train.num_epochs} done).",
        flush=True,
      )
    writer.truncate_after(int(meta["step"]))

  n_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"])) // size
  if is_main:
    members = f"ensemble of {size} ({config.ensemble.strategy}) × " if size > 1 else ""
    print(
      f"Model: {members}{n_params / 1e6:.2f}M parameters; inputs {list(input_names)} → tasks "
      f"{ {t: config.tasks[t].weight for t in task_names} } (main: {main_task}); "
      f"{len(train_src)} train / {len(sources['val'])} val / {len(sources['test'])} test "
      f"examples; {steps_per_epoch} steps/epoch × {config.train.num_epochs} epochs; "
      f"mesh {dict(mesh.shape)} on {jax.devices()[0].platform}.",
      flush=True,
    )

  data_sh = parallel.data_sharded(mesh)
  p_train_step = jax.jit(
    make_ensemble_train_step(model, tx, config, target_stats),
    in_shardings=(state_shardings, data_sh, repl, repl),
    out_shardings=(state_shardings, repl),
    donate_argnums=(0,),
  )
  sample_weights = jax.device_put(member_sample_weights(config, len(train_src)), repl)

  # Training measurements since the last log record; saved with each checkpoint so that the log
  # of a resumed run is identical to that of an uninterrupted one.
  window = meta.pop("log_window", None) or {"sums": {}, "count": 0}

  def meta_now(step):
    # A deep copy: orbax writes the JSON asynchronously while the loop keeps adding to `window`.
    return copy.deepcopy({**meta, "step": int(step), "log_window": window})

  step = int(meta["step"])
  last_good_step = step
  data_it = s.train_iter(start_step=step)
  with _Preemption() as preemption:
    try:
      while meta["epoch_done"] < config.train.num_epochs:
        epoch = meta["epoch_done"] + 1
        epoch_end = epoch * steps_per_epoch
        bar = tqdm(
          total=steps_per_epoch,
          initial=step - (epoch - 1) * steps_per_epoch,
          desc=f"epoch {epoch}/{config.train.num_epochs}",
          disable=not is_main,
          mininterval=1.0,
          dynamic_ncols=True,
        )
        t0, n0 = time.perf_counter(), step
        while step < epoch_end:
          batch = next(data_it)
          state, m = p_train_step(
            state, parallel.shard_batch(batch, mesh), train_rng, sample_weights
          )
          step += 1
          m = {k: float(v) for k, v in m.items()}
          window["count"] += 1
          for k, v in m.items():
            window["sums"][k] = window["sums"].get(k, 0.0) + v
          loss, param_norm = m["loss"], m["param_norm"]
          if not (np.isfinite(loss) and np.isfinite(param_norm)):
            what = f"loss {loss}" if not np.isfinite(loss) else f"parameter norm {param_norm}"
            raise NonFiniteLossError(
              f"training diverged: {what} at step {step} (epoch {epoch}); stopping. "
              f"The last good checkpoint (step {last_good_step}) is kept in "
              f"{ckpt.directory}/latest. Lower config.train.learning_rate or check the data."
            )
          bar.update(1)
          if step % config.train.log_every_steps == 0 or step == epoch_end:
            dt = time.perf_counter() - t0
            ex_s = (step - n0) * batch_size / max(dt, 1e-9)
            avg = {k: v / window["count"] for k, v in window["sums"].items()}
            avg.update(lr=float(lr_fn(step)), examples_per_sec=ex_s, epoch=epoch)
            writer.write(step, "train", avg)
            bar.set_postfix(loss=f"{avg['loss']:.4f}", ex_s=f"{ex_s:.1f}")
            window = {"sums": {}, "count": 0}
            t0, n0 = time.perf_counter(), step
          if preemption.agreed():
            ckpt.save_latest(step, state, meta_now(step), force=True)
            ckpt.wait()
            print(
              f"Stopped by SIGTERM at step {step}; checkpoint saved in {ckpt.directory}. "
              "Rerun the same command to resume.",
              flush=True,
            )
            raise Preempted()
          if step % config.train.checkpoint_every_steps == 0 and step < epoch_end:
            ckpt.save_latest(step, state, meta_now(step))
            last_good_step = step
        bar.close()

        # -------------------------------------------------------------- end of epoch
        val_metrics, val_preds = evaluate(
          p_eval_step,
          state,
          eval_iter("val"),
          config,
          mesh,
          desc=f"val {epoch}",
          source=sources["val"],
        )
        writer.write(step, "val", {**val_metrics, "epoch": epoch})
        if "val" in config.eval.prediction_splits:
          save_predictions(workdir, "val", epoch, val_preds, sources["val"].names)
        for split in config.eval.prediction_splits:
          if split != "val":
            _, preds = evaluate(
              p_eval_step,
              state,
              eval_iter(split),
              config,
              mesh,
              desc=f"{split} {epoch}",
              source=sources[split],
            )
            save_predictions(workdir, split, epoch, preds, sources[split].names)
        score = val_metrics[main_key]
        improved = meta["best"] is None or (
          score > meta["best"] if larger_better else score < meta["best"]
        )
        meta["epoch_done"] = epoch
        if improved:
          meta["best"], meta["best_epoch"] = float(score), epoch
          ckpt.save_best(step, state, {**meta_now(step), "val": val_metrics})
        ckpt.save_latest(step, state, meta_now(step))
        last_good_step = step
        if is_main:
          summary = ", ".join(f"{k}={val_metrics[k]:.4f}" for k in _summary_keys(val_metrics))
          print(f"epoch {epoch}: val {summary}" + ("  (best)" if improved else ""), flush=True)
      ckpt.wait()
    finally:
      ckpt.wait()

  # ------------------------------------------------------------------ final test on the best
  best = ckpt.restore_best(abstract_state)
  best_state, best_meta = best
  results = {
    "best_epoch": best_meta["best_epoch"],
    "best_step": best_meta["step"],
    "main_metric": main_key,
  }
  for split in ("val", "test"):
    m, preds = evaluate(
      p_eval_step,
      best_state,
      eval_iter(split),
      config,
      mesh,
      desc=f"{split} best",
      source=sources[split],
    )
    results[split] = m
    writer.write(step, f"{split}_best", m)
    if split == "test" and is_main:
      # Segmentation / dense regression: truth, prediction and error maps; then the dataset's own
      # pictures of the best model (DatasetSpec.pictures, e.g. CropYield's yield maps).
      dense_pictures.write_dense_pictures(
        workdir, preds, config, names=sources[split].names, tb_writer=writer, step=step
      )
      _dataset_pictures(config, workdir, split, preds, sources[split], writer, step)
  if is_main:
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump(results, f, indent=1)
  writer.close()
  ckpt.close()
  if is_main:
    test = results["test"]
    lines = [
      f"Done. Best epoch {results['best_epoch']} (val {main_key} = "
      f"{results['val'][main_key]:.4f}). Test metrics (best checkpoint):"
    ]
    lines += [f"  {k:28s} {test[k]:.4f}" for k in _summary_keys(test)]
    lines += [
      f"Workdir {workdir}:",
      "  config.json           the resolved config",
      "  metrics.jsonl         train/val/test scalars, one JSON record per line",
      "  tensorboard/          TensorBoard events (tensorboard --logdir ...)",
      "  checkpoints/latest/   resumable checkpoints (rerun the command to continue)",
      "  checkpoints/best/     best checkpoint by the main task's validation metric",
      "  predictions/<split>/  per-epoch predictions (npz) for the intrinsic analysis",
      "  final_metrics.json    val/test metrics of the best checkpoint",
    ]
    print("\n".join(lines), flush=True)
  return results


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluate the best checkpoint of an existing workdir on val and test (`--mode=eval`)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints", "best")):
    raise configlib.ConfigError(f"{workdir}: no checkpoints/best to evaluate; train first")
  s = setup(config, workdir, write_config=False)
  ckpt = Checkpointer(os.path.join(s.workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  restored = ckpt.restore_best(s.abstract_state)
  if restored is None:
    raise configlib.ConfigError(f"{workdir}/checkpoints/best holds no checkpoint; train first")
  state, meta = restored
  results = {"best_epoch": meta["best_epoch"], "best_step": meta["step"], "main_metric": s.main_key}
  for split in ("val", "test"):
    results[split], _ = evaluate(
      s.p_eval_step, state, s.eval_iter(split), config, s.mesh, desc=split, source=s.sources[split]
    )
  ckpt.close()
  if jax.process_index() == 0:
    with open(os.path.join(s.workdir, "eval_metrics.json"), "w") as f:
      json.dump(results, f, indent=1)
    for split in ("val", "test"):
      print(
        f"{split}: "
        + ", ".join(f"{k}={results[split][k]:.4f}" for k in _summary_keys(results[split]))
      )
  return results
