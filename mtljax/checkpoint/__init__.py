"""Orbax checkpoints: resumable `latest/` (state + metadata) and `best/` (state), each step
verified before it is trusted.

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

Integrity. Orbax's rename says a save *finished*, not that its files are still what it wrote: a
disk, a copy or a user can truncate, delete or flip bytes of them later, and orbax then either
fails with a TensorStore traceback or, for flipped bytes of compressed array data, restores wrong
numbers without a word. So once a step is known finished (the next save, `wait()`, `close()`),
process 0 writes `<step>/mtljax_manifest.json` LAST and atomically: each file's relative path,
size and CRC-32 (zlib's, about as fast as reading the file), the step (= the data position), the
run's resolved config and its fingerprint, and a SHA-256 of the manifest itself. A restore checks
the manifest (sizes always; the checksums per `config.train.verify_checksums`: "all" (default),
"best" (checksums for best/, sizes for latest/) or "none"), the files orbax needs, then restores
and checks every array is finite. A step that fails any of these is *damaged*: it is moved aside
to `<step>.corrupt` (left for the user; orbax no longer lists it) and the newest intact step is
used instead (`latest/`, then `best/`), with one line on stderr. A step without a manifest (a run
killed between orbax's rename and the manifest write) is verified by restoring it, then gets its
manifest. Only when no step is intact does the run stop (`CheckpointDamagedError`, one `error:`
line, nothing moved). A restore that fails on an intact step's *structure* is a config change
(`CheckpointMismatchError`, as before).
The config recorded with each step: mtljax/checkpoint/manifest.py.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from mtljax import faults
from mtljax.checkpoint.manifest import (  # noqa: F401 (re-exported)
  MANIFEST,
  _all_finite,
  _Damage,
  _files,
  _valid_record,
  config_record,
  fingerprint,
  read_manifest,
  recorded_config,
  verify_files,
  write_manifest,
)

VERIFY_MODES = ("all", "best", "none")
# Files orbax cannot restore without (a step's data files are listed in its manifest).
_REQUIRED = ("_CHECKPOINT_METADATA", "meta/metadata", "state/_METADATA")
# TensorStore/orbax read failures (absl status codes in the message): damage, not a config change.
_READ_ERROR = re.compile(
  r"OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|FAILED_PRECONDITION|UNKNOWN:|INTERNAL:|Error (reading|"
  r"opening|decoding)|Requested byte range|No such file|Expecting value|Unterminated string"
)


class CheckpointMismatchError(ValueError):
  """A checkpoint whose structure differs from the state the current config builds."""


class CheckpointDamagedError(CheckpointMismatchError):
  """No intact checkpoint to restore (a user's matter: mtljax/main.py reports it in one line).
  A subclass of CheckpointMismatchError so that every caller that reports that one reports this."""


# ============================================================================ orbax items
def _save_args(state, meta: dict[str, Any]) -> ocp.args.Composite:
  """A checkpoint's items: the train state (arrays) and its metadata (JSON)."""
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


def _restore_args(abstract_state) -> ocp.args.Composite:
  """The items of `_save_args`, the state restored into `abstract_state`'s shapes and shardings."""
  return ocp.args.Composite(
    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
  )


def _any_process(flag: bool) -> bool:
  """True on every process when it is True on any (all must take the same fallback)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _first_line(e: BaseException, n: int = 200) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:n]}"


class Checkpointer:
  """`latest/` and `best/` of a run. `record`: `config_record(config)` of the run, saved with
  every step; `verify`: one of VERIFY_MODES (`config.train.verify_checksums`); `cleanup`: a
  training run's open (removes orbax's half-written folders and `latest/` steps beyond `keep`)."""

  def __init__(
    self,
    directory: str,
    keep: int = 2,
    cleanup: bool = False,
    verify: str = "all",
    record: dict | None = None,
  ):
    directory = os.path.abspath(directory)
    self.directory = directory
    self.keep, self.cleanup, self.verify, self.record = keep, cleanup, verify, record
    if verify not in VERIFY_MODES:
      raise ValueError(f"verify={verify!r} is not one of {VERIFY_MODES}")
    self._saved: set[tuple[str, int]] = set()  # steps this process saved, manifest not yet written

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
    self._managers = {"latest": self.latest, "best": self.best}

  def _dir(self, which: str, step: int) -> str:
    return os.path.join(self.directory, which, str(step))

  def _with_record(self, meta: dict[str, Any]) -> dict[str, Any]:
    return {**meta, "run_config": self.record} if self.record is not None else meta

  # ------------------------------------------------------------------ manifests
  def _write_manifests(self, which: str) -> None:
    """Manifests of the finished steps this process saved in `which` (process 0 writes them)."""
    for name, step in sorted(self._saved):
      if name != which:
        continue
      self._saved.discard((name, step))
      d = self._dir(name, step)
      if jax.process_index() == 0 and os.path.isdir(d) and not os.path.exists(f"{d}/{MANIFEST}"):
        write_manifest(d, step, self.record)

  # ------------------------------------------------------------------ latest (resume)
  def save_latest(self, step: int, state, meta: dict[str, Any], force=False) -> bool:
    """Starts the (asynchronous) save of `latest/<step>`; False when that step already exists.
    The previous save is finished first (orbax would wait for it too) and gets its manifest."""
    if step in self.latest.all_steps():
      return False
    self.latest.wait_until_finished()
    self._write_manifests("latest")
    faults.point("ckpt.latest.before")
    self.latest.save(step, args=_save_args(state, self._with_record(meta)), force=force)
    self._saved.add(("latest", step))
    faults.point("ckpt.latest.saved")
    return True

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def _restore(self, which: str, step: int, abstract_state, full: bool = True):
    """`(state, meta)` of `which/<step>` once verified (see the module docstring); `full=False`
    checks the manifest and the required files only (when the step has a manifest) and returns
    None. Raises `_Damage`, or CheckpointMismatchError for a structure that this config does not
    build."""
    d = self._dir(which, step)
    checksums = self.verify == "all" or (self.verify == "best" and which == "best")
    manifest = read_manifest(d)
    if manifest is not None:
      if problems := verify_files(d, manifest, checksums):
        raise _Damage("; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))
    for rel in _REQUIRED:
      if not os.path.isfile(os.path.join(d, rel)):
        raise _Damage(f"{rel} is missing")
    if not full and manifest is not None:
      return None
    try:
      out = self._managers[which].restore(step, args=_restore_args(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
      if _READ_ERROR.search(str(e)) or isinstance(e, json.JSONDecodeError):
        raise _Damage(f"unreadable ({_first_line(e)})") from None
      raise CheckpointMismatchError(
        f"{d} does not match the train state this config builds (an optimizer, schedule, "
        f"clipping or model change?): {str(e)[:500]}. Use a new --workdir, or rerun with the "
        "config that wrote it."
      ) from e
    except Exception as e:  # noqa: BLE001 (any other read failure: OSError, TensorStore, ...)
      raise _Damage(f"unreadable ({_first_line(e)})") from None
    # Checksummed files are the bytes that were saved (and a run saves only finite states: the
    # loop stops at a non-finite loss or parameter norm); unchecked ones are also read for NaNs.
    if not (checksums and manifest is not None) and not _all_finite(out.state):
      raise _Damage("it holds non-finite values")
    meta = dict(out.meta)
    record = meta.pop("run_config", None)
    if manifest is None and jax.process_index() == 0:  # verified by the restore: record it
      write_manifest(d, step, record if _valid_record(record) else self.record)
    return out.state, meta

  def _check(self, which, step, abstract_state, full=True):
    """`_restore` agreed over the processes: `(result, None)` or `(None, why it is damaged)`."""
    try:
      result, why = self._restore(which, step, abstract_state, full), None
    except _Damage as e:
      result, why = None, str(e)
    if _any_process(why is not None):
      return None, why or "damaged on another process"
    return result, None

  def _quarantine(self, which: str, step: int) -> str:
    """Moves `which/<step>` to `which/<step>.corrupt` (numbered if taken); returns the new name."""
    d = self._dir(which, step)
    target, n = f"{d}.corrupt", 1
    while os.path.exists(target):
      n += 1
      target = f"{d}.corrupt{n}"
    if jax.process_index() == 0:
      os.rename(d, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"mtljax_quarantine_{which}_{step}")
    self._managers[which].reload()
    return f"{which}/{os.path.basename(target)}"

  def _say(self, text: str) -> None:
    if jax.process_index() == 0:
      print(f"warning: {text}", file=sys.stderr, flush=True)

  def _damaged_error(self, damaged: list[tuple[str, int, str]]) -> CheckpointDamagedError:
    listed = "; ".join(f"{w}/{s}: {why}" for w, s, why in damaged)
    return CheckpointDamagedError(
      f"{self.directory} holds no intact checkpoint ({listed}). Nothing was moved: restore the "
      "files, or move checkpoints/ away to train from the start"
    )

  def restore_latest(self, abstract_state):
    """Returns `(state, meta)` of the newest intact step of `latest/` (else of `best/`), or None
    when there is no checkpoint. Damaged newer steps are moved aside, with one line on stderr;
    CheckpointDamagedError when every step is damaged. A training run's open (`cleanup`) then
    deletes the steps of `latest/` beyond the newest `keep` (a run killed right after a save
    would otherwise keep one more than an uninterrupted one)."""
    damaged, found = [], None
    candidates = [("latest", s) for s in sorted(self.latest.all_steps(), reverse=True)]
    candidates += [("best", s) for s in sorted(self.best.all_steps(), reverse=True)[:1]]
    for which, step in candidates:
      result, why = self._check(which, step, abstract_state)
      if why is None:
        found = (which, step, result)
        break
      damaged.append((which, step, why))
    if found is None:
      if damaged:
        raise self._damaged_error(damaged)
      return None
    which, step, (state, meta) = found
    meta.pop("val", None)  # a best/ step's validation metrics; its meta is otherwise latest's
    if damaged:
      moved = [
        f"{w}/{s} is damaged ({why}), moved to {self._quarantine(w, s)}" for w, s, why in damaged
      ]
      self._say(f"{self.directory}: {'; '.join(moved)}; resuming from {which}/{step}")
    if self.cleanup:
      for old in sorted(self.latest.all_steps())[: -self.keep]:
        self.latest.delete(old)
    return state, meta

  # ------------------------------------------------------------------ best (evaluation)
  def save_best(self, step: int, state, meta: dict[str, Any]) -> bool:
    """Saves `best/<step>` and waits until it is complete (before `latest/<step>` may name it);
    False when that step already exists (a rerun of an epoch whose best save had finished)."""
    if step in self.best.all_steps():
      return False
    faults.point("ckpt.best.before")
    self.best.save(step, args=_save_args(state, self._with_record(meta)), force=True)
    self._saved.add(("best", step))
    faults.point("ckpt.best.saved")
    self.best.wait_until_finished()
    self._write_manifests("best")
    faults.point("ckpt.best.done")
    return True

  def best_step(self) -> int | None:
    return self.best.latest_step()

  def _remake_best(self, step: int, abstract_state):
    """`best/<step>` saved again from an intact `latest/<step>` (the same state); its meta."""
    if step not in self.latest.all_steps():
      return None
    result, _ = self._check("latest", step, abstract_state)
    if result is None:
      return None
    state, meta = result
    self.save_best(step, state, meta)
    return state, meta

  def restore_best(self, abstract_state):
    """`(state, meta)` of `best/`, or None when it holds no step. A damaged best step is moved
    aside and saved again from `latest/<step>` when that holds the same step; otherwise
    CheckpointDamagedError (nothing moved)."""
    steps = sorted(self.best.all_steps(), reverse=True)
    if not steps:
      return None
    step = steps[0]
    result, why = self._check("best", step, abstract_state)
    if why is None:
      return result
    return self._repair_best(step, why, abstract_state)

  def _repair_best(self, step: int, why: str, abstract_state):
    if step in self.latest.all_steps():
      result, latest_why = self._check("latest", step, abstract_state)
      if latest_why is None:
        moved = self._quarantine("best", step)
        state, meta = result
        self.save_best(step, state, meta)
        self._say(
          f"{self.directory}: best/{step} is damaged ({why}), moved to {moved}; "
          f"saved again from latest/{step}"
        )
        return state, meta
    raise CheckpointDamagedError(
      f"{self.directory}/best/{step} is damaged ({why}) and latest/ holds no intact copy of step "
      f"{step}: the best epoch's state is lost. Nothing was moved: restore the files, or train "
      "again in a new --workdir"
    )

  def check_best(self, abstract_state, best_step: int | None, resumed_step: int) -> None:
    """Before a resumed run trains on: `best/` must hold the best epoch's step `best_step`
    (named by the restored metadata) intact, or a later step that the resumed run reaches again
    (`> resumed_step`, e.g. after a fallback to an older `latest/` step). A damaged later step is
    moved aside (the run saves it again); a damaged best step is saved again from `latest/` where
    that holds it, and otherwise stops the run now (CheckpointDamagedError), not after training."""
    steps = sorted(self.best.all_steps(), reverse=True)
    newest = steps[0] if steps else None
    if newest is not None and (best_step is None or newest >= best_step):
      _, why = self._check("best", newest, abstract_state, full=False)
      if why is None:
        return
      if newest > resumed_step:  # the resumed run writes it again when it gets there
        moved = self._quarantine("best", newest)
        self._say(
          f"{self.directory}: best/{newest} is damaged ({why}), moved to {moved}; "
          f"the run saves it again at step {newest}"
        )
        return
      self._repair_best(newest, why, abstract_state)
      return
    if best_step is None:
      return
    why = "missing" if newest is None else f"missing (best/ holds step {newest})"
    if self._remake_best(best_step, abstract_state) is not None:
      self._say(
        f"{self.directory}: best/{best_step} was {why}; saved again from latest/{best_step}"
      )
      return
    raise CheckpointDamagedError(
      f"{self.directory}/best/{best_step}, the best epoch's checkpoint, is {why} and latest/ holds "
      f"no intact copy of step {best_step}: the best epoch's state is lost. Restore the files, or "
      "train again in a new --workdir"
    )

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()
    self._write_manifests("latest")
    self._write_manifests("best")

  def close(self) -> None:
    self.wait()
    self.latest.close()
    self.best.close()
