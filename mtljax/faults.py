"""Kill points for fault-injection tests: `point(name)` SIGKILLs this process when the
environment variable `MTLJAX_KILL_AT` names it.

`MTLJAX_KILL_AT="name"` kills at the first hit of `point("name")`; `"name@N"` at its N-th hit in
this process (e.g. `train.step@7`: after the 7th training step this process runs). Several
points may be given, separated by commas; the first one reached kills. Unset (the normal case),
a point costs one dictionary lookup.

The points a run passes (see `POINTS`) are listed for the harnesses (tests/test_faults.py,
profiling/experiments/fault_injection.py).
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "MTLJAX_KILL_AT"

# Every point the code calls, in the order a run meets them (per epoch / save).
POINTS = (
  "train.step",  # after each training step (with @N: a kill at a chosen step)
  "metrics.append",  # half a metrics.jsonl line written (a torn line), then killed
  "ckpt.latest.before",  # before the orbax save of latest/<step>
  "ckpt.latest.saved",  # after the orbax save call returned, before it finished (async write)
  "eval.val.done",  # epoch-end validation computed, before its metrics line
  "predictions.rename",  # predictions npz written to its temporary file, not yet renamed
  "ckpt.best.before",  # before the orbax save of best/<step>
  "ckpt.best.saved",  # after the save call, before it finished
  "ckpt.manifest.rename",  # a finished step's manifest in its temporary file, not yet renamed
  "ckpt.best.done",  # best/<step> complete, latest/<step> not yet saved
  "epoch.end.done",  # the epoch's checkpoints saved (latest possibly still being written)
  "final.test",  # before the final test of the best checkpoint
  "final_metrics.rename",  # final_metrics.json in its temporary file, not yet renamed
  # python -m mtljax.prepare (mtljax/data/prepared/convert.py), per shard and at the end:
  "prepare.shard.written",  # a shard's records written to its temporary file, not yet renamed
  "prepare.shard.sidecar",  # the shard renamed, its .json (count, sha256) not yet renamed
  "prepare.shard.done",  # the shard and its .json complete
  "prepare.manifest",  # every split written and verified, prepared.json not yet renamed
  # python -m mtljax.main --mode=predict (mtljax/predict/run.py), per part of the inputs:
  "predict.part",  # a part's predictions in their temporary file, not yet renamed
)

_hits: dict[tuple[str, str], int] = {}


def passes(name: str, env: str = ENV) -> str | None:
  """Counts a pass through point `name` for the spec in environment variable `env`
  (`name[@N][:WHAT]`, several comma-separated); at the N-th pass (default 1) returns the spec's
  `WHAT` ("" when none), else None. One parser for the kill points here and the signal points of
  mtljax/interrupts.py."""
  spec = os.environ.get(env)
  if not spec:
    return None
  for part in spec.split(","):
    where, _, what = part.strip().partition(":")
    target, _, n = where.partition("@")
    if target != name:
      continue
    key = (env, name)
    _hits[key] = _hits.get(key, 0) + 1
    return what if _hits[key] == (int(n) if n else 1) else None
  return None


def hit(name: str) -> bool:
  """Counts a pass through `name`; True when the environment asks to be killed here now."""
  return passes(name) is not None


def kill(name: str) -> None:
  """SIGKILL this process (nothing is flushed or cleaned up, as with `kill -9`)."""
  print(f"faults: killed at {name}", file=sys.stderr, flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


def point(name: str) -> None:
  """A kill point: SIGKILLs the process when `MTLJAX_KILL_AT` names this point (and hit)."""
  if hit(name):
    kill(name)
