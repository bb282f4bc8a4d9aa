"""Where a run's numbers go: `metrics.jsonl` (one JSON record per line) and TensorBoard events."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
from tensorboardX import SummaryWriter

from mtljax import faults, fileio
from mtljax.workdir import WorkdirError


class DamagedLogError(WorkdirError, ValueError):
  """A line of metrics.jsonl before its last that is not a JSON record (a user error: main.py's
  one `error:` line; still a ValueError, as `fileio.read_jsonl` raises it)."""


def _clean(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)


class MetricWriter:
  """Appends `{"step": s, "split": ..., **scalars}` to metrics.jsonl and TensorBoard scalars.

  On resume, `truncate_after(step)` drops the records a killed run wrote after its last
  checkpoint, a torn last line (a run killed while appending it; with a warning) and the final
  test's `*_best` records (the final test writes them again), so the log of a resumed run, or of
  a finished one run again, equals that of an uninterrupted run. A damaged line before the last
  is a `WorkdirError` (one `error:` line naming the file and line): the user decides what becomes
  of it, and nothing is dropped silently.
  Only process 0 writes (multi-host runs).
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = jax.process_index() == 0
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard")) if self.enabled else None

  def truncate_after(self, step: int, epoch_done: int | None = None) -> None:
    """Keeps the records up to `step` (the final test's left out); with `epoch_done`, also
    leaves out the validation of a later epoch (a run stopped during an epoch's end, which the
    resumed run evaluates and logs again)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    try:
      records = fileio.read_jsonl(self.path, warn=True)
    except ValueError as e:  # a damaged line before the last (a torn last line is dropped)
      raise DamagedLogError(
        f"{e}: the run's log is damaged before its last line; move that line out of the file "
        f"(e.g. into {os.path.basename(self.path)}.corrupt) and rerun to resume (nothing else "
        "is changed until then)"
      ) from None
    keep = [
      json.dumps(r) + "\n"
      for r in records
      if r.get("step", 0) <= step
      and not str(r.get("split", "")).endswith("_best")
      and not (epoch_done is not None and r.get("split") == "val" and r["epoch"] > epoch_done)
    ]
    fileio.write_text(self.path, "".join(keep))

  def write(self, step: int, split: str, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, **{k: _clean(v) for k, v in scalars.items()}}
    line = json.dumps(record) + "\n"
    with open(self.path, "a") as f:
      if faults.hit("metrics.append"):  # fault injection: a torn line, then kill -9
        f.write(line[: len(line) // 2])
        f.flush()
        faults.kill("metrics.append")
      f.write(line)
    for k in scalars:
      if isinstance(record[k], float):
        self._tb.add_scalar(f"{split}/{k}", record[k], global_step=int(step))
    self._tb.flush()

  def image(self, step: int, tag: str, image) -> None:
    """One picture (`[H, W, 3]` uint8 or float in [0, 1]) as a TensorBoard image."""
    if self.enabled:
      self._tb.add_image(tag, image, global_step=int(step), dataformats="HWC")
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


# Fields of a training record that measure time, not the run (they differ between two runs of
# the same config; a resumed run is compared with an uninterrupted one without them).
TIMING_FIELDS = ("examples_per_sec", "input_wait_ms", "input_wait_frac")


def read_metrics(workdir: str) -> list[dict]:
  """The records of `<workdir>/metrics.jsonl` (a torn last line is left out)."""
  return fileio.read_jsonl(os.path.join(workdir, "metrics.jsonl"), warn=False)
