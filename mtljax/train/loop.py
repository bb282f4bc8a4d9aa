"""The loop: train, evaluate every epoch, checkpoint, resume, stop cleanly on SIGTERM/SIGINT (at
the next step or evaluation batch, saving `latest/` at that step: mtljax/interrupts.py); then the
final test of the best checkpoint. `evaluate_workdir` re-evaluates a trained workdir.

Stages of `train_and_evaluate` (big_vision style): set-up (train/build.py) → state (fresh or
resumed) → jitted steps → epochs (steps, logging, pre-emption, checkpoints; validation,
prediction files and model selection (`config.train.select_by`, train/selection.py) at each
epoch's end) → test of the best checkpoint.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from mtljax import checkpoint, configlib, faults, fileio, interrupts, parallel
from mtljax.checkpoint import Checkpointer
from mtljax.train.build import Setup, setup
from mtljax.train.evaluation import evaluate, save_predictions, write_pictures
from mtljax.train.state import ensemble_size, init_ensemble, member_sample_weights
from mtljax.train.steps import make_ensemble_train_step, on_device_inputs
from mtljax.writers import MetricWriter


class NonFiniteLossError(FloatingPointError):
  pass


# Kept for callers of the old name: the exception a stopped run raises (exit 128 + signal).
Preempted = interrupts.Interrupted


def _checkpointer(s: Setup, cleanup: bool = False) -> Checkpointer:
  """The run's checkpoints (`cleanup`: a training run's open), each step saved with the run's
  config and verified on restore per `config.train.verify_checksums`."""
  return Checkpointer(
    os.path.join(s.workdir, "checkpoints"),
    keep=s.config.train.keep_checkpoints,
    cleanup=cleanup,
    verify=s.config.train.get("verify_checksums", "all"),
    record=checkpoint.config_record(s.config),
  )


def _summary_keys(metrics: Mapping[str, float]) -> list[str]:
  """Metric names worth printing: not counts, not each ensemble member's own (in metrics.jsonl)."""
  return sorted(
    k
    for k in metrics
    if not k.endswith("/count") and not (k.startswith("member") and k[6:7].isdigit())
  )


def _evaluate(s: Setup, state, split: str, desc: str, swapped: bool = True):
  """`evaluate` on `split`; `swapped`: with the source's decoy-swapped metrics, if it has them."""
  return evaluate(
    s.p_eval_step,
    state,
    s.eval_iter(split),
    s.config,
    s.mesh,
    desc=desc,
    source=s.sources[split],
    batches_of=s.eval_batches if swapped else None,
    dataset=s.dataset,
  )


def _describe(s: Setup) -> None:
  """One line: model size, inputs → tasks, data, schedule, mesh (process 0)."""
  config, size = s.config, ensemble_size(s.config)
  n_params = sum(x.size for x in jax.tree.leaves(s.abstract_state["params"])) // size
  members = f"ensemble of {size} ({config.ensemble.strategy}) × " if size > 1 else ""
  print(
    f"Model: {members}{n_params / 1e6:.2f}M parameters; inputs {list(s.input_names)} → tasks "
    f"{ {t: config.tasks[t].weight for t in s.task_names} } (main: {config.main_task}); "
    f"{len(s.sources['train'])} train / {len(s.sources['val'])} val / "
    f"{len(s.sources['test'])} test examples; {s.steps_per_epoch} steps/epoch × "
    f"{config.train.num_epochs} epochs; mesh {dict(s.mesh.shape)} on "
    f"{jax.devices()[0].platform}.",
    flush=True,
  )


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  allow_config_change: bool = False,
  checked: bool = False,
) -> dict[str, Any]:
  """Train, evaluate every epoch, checkpoint, resume; returns the final test metrics.
  `allow_config_change`: resume with a config that changes the run; `checked`: the caller ran
  `configlib.check(config)` (see build.setup)."""
  s = setup(config, workdir, allow_config_change=allow_config_change, checked=checked)
  is_main = jax.process_index() == 0
  repl = parallel.replicated(s.mesh)
  size = ensemble_size(config)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))

  # ------------------------------------------------------------------ state: fresh or resumed
  ckpt = _checkpointer(s, cleanup=True)
  # Verified, with a fallback to the newest intact step (mtljax/checkpoint.py); best/ is checked
  # now too, so that a damaged one stops the run before it trains, not at the final test.
  restored = ckpt.restore_latest(s.abstract_state)
  if restored is not None:
    best_epoch = restored[1].get("best_epoch")
    best_step = None if best_epoch is None else int(best_epoch) * s.steps_per_epoch
    ckpt.check_best(s.abstract_state, best_step, int(restored[1]["step"]))
  writer = MetricWriter(s.workdir)
  if restored is None:
    state = jax.jit(
      lambda r: init_ensemble(s.model, s.tx, s.example_inputs, r, size, objective=s.objective),
      out_shardings=s.state_shardings,
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
    writer.truncate_after(int(meta["step"]), epoch_done=int(meta["epoch_done"]))
  if is_main:
    _describe(s)

  # ------------------------------------------------------------------ the jitted train step
  p_train_step = jax.jit(
    on_device_inputs(
      make_ensemble_train_step(
        s.model,
        s.tx,
        config,
        s.target_stats,
        objective=s.objective,
        transform=s.output_transform,
      ),
      s.stats["inputs"],
    ),
    in_shardings=(s.state_shardings, parallel.data_sharded(s.mesh), repl, repl),
    out_shardings=(s.state_shardings, repl),
    donate_argnums=(0,),
  )
  sample_weights = jax.device_put(member_sample_weights(config, len(s.sources["train"])), repl)

  # Training measurements since the last log record; saved with each checkpoint so that the log
  # of a resumed run is identical to that of an uninterrupted one.
  window = meta.pop("log_window", None) or {"sums": {}, "count": 0}

  def meta_now(step):
    # A deep copy: orbax writes the JSON asynchronously while the loop keeps adding to `window`.
    return copy.deepcopy({**meta, "step": int(step), "log_window": window})

  # ------------------------------------------------------------------ epochs
  step = int(meta["step"])
  last_good_step = step
  saved_step = step  # the newest latest/ checkpoint: a stop at a later step saves that step
  data_it = s.train_iter(start_step=step)
  bar = None
  try:
    interrupts.check()  # a signal during set-up or restore: nothing newer to save
    try:
      while meta["epoch_done"] < config.train.num_epochs:
        epoch = meta["epoch_done"] + 1
        epoch_end = epoch * s.steps_per_epoch
        bar = tqdm(
          total=s.steps_per_epoch,
          initial=step - (epoch - 1) * s.steps_per_epoch,
          desc=f"epoch {epoch}/{config.train.num_epochs}",
          disable=not is_main,
          mininterval=1.0,
          dynamic_ncols=True,
        )
        t0, n0, wait = time.perf_counter(), step, 0.0
        while step < epoch_end:
          if step == int(meta["step"]):  # this process's first step: the compile
            interrupts.set_phase("compile")
            interrupts.point("train.compile")
          t_in = time.perf_counter()
          batch = next(data_it)
          wait += time.perf_counter() - t_in  # the loop waiting on the input pipeline
          state, m = p_train_step(
            state, parallel.shard_batch(batch, s.mesh), train_rng, sample_weights
          )
          step += 1
          interrupts.set_phase("training")
          faults.point("train.step")
          interrupts.point("train.step")
          m = {k: float(v) for k, v in m.items()}
          window["count"] += 1
          for k, v in m.items():
            window["sums"][k] = window["sums"].get(k, 0.0) + v
          loss, param_norm = m["loss"], m["param_norm"]
          if not (np.isfinite(loss) and np.isfinite(param_norm)):
            what = f"loss {loss}" if not np.isfinite(loss) else f"parameter norm {param_norm}"
            kept = (
              f"The last good checkpoint (step {last_good_step}) is kept in "
              f"{ckpt.directory}/latest."
              if last_good_step > 0
              else "No checkpoint was kept (none was saved before the divergence)."
            )
            bar.close()  # the error line starts on a line of its own
            raise NonFiniteLossError(
              f"training diverged: {what} at step {step} (epoch {epoch}); stopping. {kept} "
              "Lower config.train.learning_rate or check the data."
            )
          bar.update(1)
          if step % config.train.log_every_steps == 0 or step == epoch_end:
            dt = time.perf_counter() - t0
            ex_s = (step - n0) * s.batch_size / max(dt, 1e-9)  # global examples per second
            avg = {k: v / window["count"] for k, v in window["sums"].items()}
            avg.update(lr=float(s.lr_fn(step)), examples_per_sec=ex_s, epoch=epoch)
            # Input wait per step (ms) and its share of the wall time: > 0 = input-bound.
            avg.update(input_wait_ms=1e3 * wait / max(step - n0, 1), input_wait_frac=wait / dt)
            writer.write(step, "train", avg)
            bar.set_postfix(loss=f"{avg['loss']:.4f}", ex_s=f"{ex_s:.1f}")
            window = {"sums": {}, "count": 0}
            t0, n0, wait = time.perf_counter(), step, 0.0
          # SIGTERM/SIGINT: stop here, saving this step (below). On many processes the flag is
          # combined at each step (`multihost_utils.process_allgather`, interrupts.agreed): all
          # must checkpoint the same step, as orbax saves collectively.
          interrupts.check()
          if step % config.train.checkpoint_every_steps == 0 and step < epoch_end:
            interrupts.set_phase("saving")
            ckpt.save_latest(step, state, meta_now(step))
            interrupts.point("train.saving")
            last_good_step = saved_step = step
        bar.close()

        # -------------------------------------------------------------- end of epoch
        interrupts.set_phase("evaluation")
        val_metrics, val_preds = _evaluate(s, state, "val", f"val {epoch}")
        faults.point("eval.val.done")
        writer.write(step, "val", {**val_metrics, "epoch": epoch})
        for split in config.eval.prediction_splits:
          preds = val_preds
          if split != "val":  # the predictions alone: no decoy-swapped pass
            preds = _evaluate(s, state, split, f"{split} {epoch}", swapped=False)[1]
          save_predictions(s.workdir, split, epoch, preds, s.sources[split].names)
        score = s.select.score(val_metrics, epoch)
        improved = s.select.better(score, meta["best"])
        meta["epoch_done"] = epoch
        # best/<step> complete before latest/<step> (which names it); both skip an existing step.
        interrupts.set_phase("saving")
        if improved:
          meta["best"], meta["best_epoch"] = float(score), epoch
          ckpt.save_best(step, state, {**meta_now(step), "val": val_metrics})
        ckpt.save_latest(step, state, meta_now(step))
        faults.point("epoch.end.done")
        last_good_step = saved_step = step
        if is_main:
          summary = ", ".join(f"{k}={val_metrics[k]:.4f}" for k in _summary_keys(val_metrics))
          print(f"epoch {epoch}: val {summary}" + ("  (best)" if improved else ""), flush=True)
      ckpt.wait()
    finally:
      if bar is not None:
        bar.close()  # the stop's line starts on a line of its own
      ckpt.wait()
  except interrupts.Interrupted as stop:
    # The validation of an unfinished epoch is logged again when the run resumes it.
    writer.truncate_after(step, epoch_done=int(meta["epoch_done"]))
    if step > saved_step:  # a state newer than the last checkpoint: save it, and wait for it
      interrupts.set_phase(f"saving checkpoint step {step}")
      ckpt.save_latest(step, state, meta_now(step), force=True)
      ckpt.wait()
      stop.step, stop.checkpoint = step, os.path.join(ckpt.directory, "latest")
    raise
  interrupts.set_phase("final test")
  interrupts.point("final.test")

  # ------------------------------------------------------------------ final test on the best
  faults.point("final.test")
  restored = ckpt.restore_best(s.abstract_state)
  if restored is None:
    raise checkpoint.CheckpointDamagedError(f"{ckpt.directory}/best holds no checkpoint to test")
  best_state, best_meta = restored
  results = {
    "best_epoch": best_meta["best_epoch"],
    "best_step": best_meta["step"],
    "main_metric": s.main_key,
    "selected_by": s.select.describe(),
  }
  for split in ("val", "test"):
    m, preds = _evaluate(s, best_state, split, f"{split} best")
    results[split] = m
    writer.write(step, f"{split}_best", m)
    if split == "test":  # pictures of the best model: <workdir>/pictures/test/
      write_pictures(
        config, s.workdir, split, preds, s.sources[split], writer, step, dataset=s.dataset
      )
  if is_main:
    fileio.write_json(
      os.path.join(s.workdir, "final_metrics.json"), results, fault="final_metrics.rename"
    )
  writer.close()
  ckpt.close()
  if is_main:
    _print_summary(s, results)
  return results


def _print_summary(s: Setup, results) -> None:
  test, main_key = results["test"], s.main_key
  chosen = s.select.key or main_key
  lines = [
    f"Done. Best epoch {results['best_epoch']} by {s.select.describe()} (val {chosen} = "
    f"{results['val'][chosen]:.4f}). Test metrics (best checkpoint):"
  ]
  lines += [f"  {k:28s} {test[k]:.4f}" for k in _summary_keys(test)]
  lines += [
    f"Workdir {s.workdir}:",
    "  config.json           the resolved config",
    "  metrics.jsonl         train/val/test scalars, one JSON record per line",
    "  tensorboard/          TensorBoard events (tensorboard --logdir ...)",
    "  checkpoints/latest/   resumable checkpoints (rerun the command to continue)",
    f"  checkpoints/best/     the checkpoint of the epoch selected by {s.select.describe()}",
    "  predictions/<split>/  per-epoch predictions (npz) for the intrinsic analysis",
    "  final_metrics.json    val/test metrics of the best checkpoint",
  ]
  print("\n".join(lines), flush=True)


def evaluate_workdir(
  config: ml_collections.ConfigDict, workdir: str, *, checked: bool = False
) -> dict[str, Any]:
  """Evaluate the best checkpoint of an existing workdir on val and test (`--mode=eval`);
  `checked`: as for `train_and_evaluate`."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints", "best")):
    raise configlib.ConfigError(f"{workdir}: no checkpoints/best to evaluate; train first")
  s = setup(config, workdir, write_config=False, checked=checked)
  ckpt = _checkpointer(s)
  restored = ckpt.restore_best(s.abstract_state)
  if restored is None:
    raise configlib.ConfigError(f"{workdir}/checkpoints/best holds no checkpoint; train first")
  state, meta = restored
  results = {"best_epoch": meta["best_epoch"], "best_step": meta["step"], "main_metric": s.main_key}
  for split in ("val", "test"):
    results[split], _ = _evaluate(s, state, split, split)
  ckpt.close()
  if jax.process_index() == 0:
    fileio.write_json(os.path.join(s.workdir, "eval_metrics.json"), results)
    for split in ("val", "test"):
      print(
        f"{split}: "
        + ", ".join(f"{k}={results[split][k]:.4f}" for k in _summary_keys(results[split]))
      )
  return results
