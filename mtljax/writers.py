"""Where a run's numbers go: `metrics.jsonl` (one JSON record per line) and TensorBoard events."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
from tensorboardX import SummaryWriter


def _clean(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)


class MetricWriter:
  """Appends `{"step": s, "split": ..., **scalars}` to metrics.jsonl and TensorBoard scalars.

  On resume, `truncate_after(step)` drops the records a killed run wrote after its last
  checkpoint, so the log of a resumed run equals that of an uninterrupted one.
  Only process 0 writes (multi-host runs).
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = jax.process_index() == 0
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard")) if self.enabled else None

  def truncate_after(self, step: int) -> None:
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, self.path)

  def write(self, step: int, split: str, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, **{k: _clean(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
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


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
