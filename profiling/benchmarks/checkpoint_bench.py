"""Checkpoint save vs verified restore of the main command's train state (configs/treesat.py:
ResNet-18 aerial + Sentinel MLPs, AdamW), and what the integrity check adds: the manifest write
(CRC-32 of every file), the manifest check (sizes, CRC-32) and, for comparison, SHA-256 instead
of CRC-32. The target: a restore with verification costs < 5 % of a save more than one without.

  python -m profiling.benchmarks.checkpoint_bench [--repeats 5] [--dir /tmp/ckpt_bench]

Measure on an idle machine: the figures are dominated by disk and memory bandwidth.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time

import jax
import numpy as np

from configs import treesat
from mtljax import checkpoint, train
from mtljax.models.multitask import build_model


def _state():
  config = treesat.get_config()
  model = build_model(config)
  tx, _ = train.create_optimizer(config, 100)
  inputs = {
    "aerial": np.zeros((1, config.data.aerial_size, config.data.aerial_size, 4), np.float32),
    "s1": np.zeros((1, 6, 6, 3), np.float32),
    "s2": np.zeros((1, 6, 6, 12), np.float32),
  }
  state = train.init_state(model, tx, inputs, jax.random.key(0))
  return config, state


def _median(fn, repeats):
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    fn(i)
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--dir", default="", help="where to write (default: a temporary folder)")
  a = ap.parse_args()
  folder = a.dir or tempfile.mkdtemp(prefix="ckpt_bench_")
  config, state = _state()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  record = checkpoint.config_record(config)
  n_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  print(f"train state: {n_bytes / 2**20:.1f} MiB; {folder}")

  def save(i):  # a synchronous save of one step, manifest included
    ck = checkpoint.Checkpointer(os.path.join(folder, f"s{i}"), record=record)
    ck.save_best(1, state, {"step": 1})
    ck.close()

  def plain_save(i):  # the same save without the manifest
    ck = checkpoint.Checkpointer(os.path.join(folder, f"p{i}"), record=record)
    ck.best.save(1, args=checkpoint._save_args(state, {"step": 1}), force=True)
    ck.best.wait_until_finished()
    ck.best.close()
    ck.latest.close()

  def restore(verify):
    def go(i):
      ck = checkpoint.Checkpointer(os.path.join(folder, f"s{i}"), verify=verify)
      out = ck.restore_best(abstract)
      jax.block_until_ready(out[0])
      ck.close()

    return go

  step_dir = os.path.join(folder, "s0", "best", "1")

  def manifest_check(i):
    m = checkpoint.read_manifest(step_dir)
    assert checkpoint.verify_files(step_dir, m, checksums=True) == []

  def sha256(i):
    for rel in checkpoint._files(step_dir):
      with open(os.path.join(step_dir, rel), "rb") as f:
        hashlib.sha256(f.read()).hexdigest()

  rows = {
    "save (with manifest)": _median(save, a.repeats),
    "save (orbax only)": _median(plain_save, a.repeats),
    "restore verify=all": _median(restore("all"), a.repeats),
    "restore verify=none": _median(restore("none"), a.repeats),
    "manifest check, CRC-32": _median(manifest_check, a.repeats),
    "SHA-256 of the same files": _median(sha256, a.repeats),
  }
  for k, v in rows.items():
    print(f"  {k:28s} {v * 1e3:9.1f} ms")
  extra = rows["restore verify=all"] - rows["restore verify=none"]
  print(
    f"verification adds {extra * 1e3:.1f} ms = {100 * extra / rows['save (with manifest)']:.1f} % of a save"
  )
  if not a.dir:
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
  main()
