"""Orbax checkpoints: resumable `latest/` (state + metadata) and `best/` (state).

The data-iterator position is the global step (the training stream is a pure function of the
seed and the step, see `mtljax.data.pipeline.train_iterator`), so a checkpoint resumes exactly
with any number of processes, e.g. one written by 2 hosts restored on 1. Every process takes
part in saving and restoring (orbax coordinates multi-host writes).

Two managers rather than one with `best_fn`: with a best-metric policy, `max_to_keep` keeps the N
*best* and may delete the latest checkpoint, which breaks resume (STACK_NOTES); and mid-epoch
saves have no validation metric. `latest/` keeps the most recent `keep` steps; `best/` keeps the single checkpoint with the best main-task validation metric.
Orbax writes into a temporary folder (`<step>.orbax-checkpoint-tmp-<ts>`) and renames it when
complete, so a process killed during a save leaves the previous checkpoint intact; the half-written
folder is ignored by `latest_step()` and removed when the next *training* run opens the managers
(`cleanup=True`; an eval or explain run leaves them, as they could belong to a run in progress).

Saves are idempotent and ordered, so that a run killed anywhere resumes:
- a step already present in `latest/` or `best/` is recognised and not saved again (a rerun of
  an epoch whose `best/<step>` was written before the kill reaches the same state and score);
- at an epoch end `best/<step>` is written and *finished* before `latest/<step>` is started:
  `latest/`'s metadata names the best epoch, so it must never point at a best checkpoint that a
  kill could leave unwritten. (Saving latest first would let a kill between the two resume past
  an epoch whose best checkpoint is missing; the final test would then use an older one.)
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from mtljax import faults


class CheckpointMismatchError(ValueError):
  """A checkpoint whose structure differs from the state the current config builds."""


def _save_args(state, meta: dict[str, Any]) -> ocp.args.Composite:
  """A checkpoint's items: the train state (arrays) and its metadata (JSON)."""
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


def _restore_args(abstract_state) -> ocp.args.Composite:
  """The items of `_save_args`, the state restored into `abstract_state`'s shapes and shardings."""
  return ocp.args.Composite(
    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
  )


class Checkpointer:
  def __init__(self, directory: str, keep: int = 2, cleanup: bool = False):
    directory = os.path.abspath(directory)
    self.directory = directory

    # Each manager needs its own barrier prefix: both save the epoch-end step, and orbax names
    # its multi-host barriers after the step alone (`_async_write_complete.<step>`), so two
    # managers saving step N at once collide ("Barrier ... is already ongoing") and abort.
    def options(name, max_to_keep):
      return ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        cleanup_tmp_directories=cleanup,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
      )

    self.latest = ocp.CheckpointManager(
      os.path.join(directory, "latest"), options=options("latest", keep)
    )
    self.best = ocp.CheckpointManager(os.path.join(directory, "best"), options=options("best", 1))

  # ------------------------------------------------------------------ latest (resume)
  def save_latest(self, step: int, state, meta: dict[str, Any], force=False) -> bool:
    """Starts the (asynchronous) save of `latest/<step>`; False when that step already exists."""
    if step in self.latest.all_steps():
      return False
    faults.point("ckpt.latest.before")
    self.latest.save(
      step,
      args=_save_args(state, meta),
      force=force,
    )
    faults.point("ckpt.latest.saved")
    return True

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, abstract_state):
    """Returns `(state, meta)`, or None when there is no checkpoint."""
    step = self.latest.latest_step()
    if step is None:
      return None
    try:
      out = self.latest.restore(step, args=_restore_args(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointMismatchError(
        f"{self.directory}/latest/{step} does not match the train state this config builds "
        f"(an optimizer, schedule, clipping or model change?): {str(e)[:500]}. Use a new "
        "--workdir, or rerun with the config that wrote it."
      ) from e
    return out.state, out.meta

  # ------------------------------------------------------------------ best (evaluation)
  def save_best(self, step: int, state, meta: dict[str, Any]) -> bool:
    """Saves `best/<step>` and waits until it is complete (before `latest/<step>` may name it);
    False when that step already exists (a rerun of an epoch whose best save had finished)."""
    if step in self.best.all_steps():
      return False
    faults.point("ckpt.best.before")
    self.best.save(
      step,
      args=_save_args(state, meta),
      force=True,
    )
    faults.point("ckpt.best.saved")
    self.best.wait_until_finished()
    faults.point("ckpt.best.done")
    return True

  def best_step(self) -> int | None:
    return self.best.latest_step()

  def restore_best(self, abstract_state):
    step = self.best.latest_step()
    if step is None:
      return None
    out = self.best.restore(step, args=_restore_args(abstract_state))
    return out.state, out.meta

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
