"""Convert a dataset (any registered reader, through the ``Source`` contract) once into ArrayRecord
shards: resumable, parallel over cores, verified. ``python -m mtljax.prepare`` is its command line.

Layout of ``out``::

    conversion.json        identity of the conversion (written first; refuses another dataset)
    <split>/shard-00000.array_record   records of examples [0, S), [S, 2S), ... (S = shard_size)
    <split>/shard-00000.json           its count, bytes and sha256 (written once the shard is)
    <split>/index.npz      names, label arrays, groups and per-split extras (no file reading)
    prepared.json          the manifest, written last (splits, counts, checksums, fields,
                           statistics, archive, reader version, config)

A killed conversion resumes: a shard with its ``.json`` is kept, any other is rewritten.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from mtljax import faults, fileio
from mtljax.data import get_dataset
from mtljax.data.prepared import records
from mtljax.data.prepared.identity import _jsonable, differences, identity, reader_version
from mtljax.data.source import DataError, capability


class PrepareError(ValueError):
  """A conversion that cannot go ahead (another dataset in ``out``, a bad argument)."""


# -------------------------------------------------------------------------------------- shards
def _shard_path(out, split, k):
  return os.path.join(out, split, f"shard-{k:05d}")


def _write_shard(source, out: str, split: str, k: int, lo: int, hi: int) -> dict:
  """Write examples [lo, hi) of ``source`` as one shard; returns its sidecar record."""
  from array_record.python.array_record_module import ArrayRecordWriter

  base = _shard_path(out, split, k)
  final = base + ".array_record"
  tmp = f"{final}.{os.getpid()}.tmp"
  annotate = capability(source, "explain_annotations")
  writer = ArrayRecordWriter(tmp, records.WRITER_OPTIONS)
  try:
    for i in range(lo, hi):
      example = source[i]
      if annotate is not None:
        example = {**example, "annotations": annotate(i)}
      writer.write(records.encode(example))
  finally:
    writer.close()
  faults.point("prepare.shard.written")
  os.replace(tmp, final)
  shard = {
    "file": os.path.basename(final),
    "first": lo,
    "count": hi - lo,
    "bytes": os.path.getsize(final),
    "sha256": records.file_sha256(final),
  }
  fileio.write_json(base + ".json", shard, fault="prepare.shard.sidecar")
  faults.point("prepare.shard.done")
  return shard


def _done(out, split, k, lo, hi) -> dict | None:
  """The sidecar of a complete shard (right range, file of the recorded size), else None."""
  base = _shard_path(out, split, k)
  try:
    with open(base + ".json") as f:
      shard = json.load(f)
  except (OSError, ValueError):
    return None
  ok = shard.get("first") == lo and shard.get("count") == hi - lo
  path = base + ".array_record"
  if ok and os.path.exists(path) and os.path.getsize(path) == shard.get("bytes"):
    return shard
  return None


def _write_split(source, out, split, shard_size, workers, progress) -> list[dict]:
  n = len(source)
  ranges = [(k, lo, min(lo + shard_size, n)) for k, lo in enumerate(range(0, n, shard_size))]
  os.makedirs(os.path.join(out, split), exist_ok=True)
  shards = {k: s for k, lo, hi in ranges if (s := _done(out, split, k, lo, hi))}
  todo = [r for r in ranges if r[0] not in shards]
  bar = None
  if progress:
    from tqdm.auto import tqdm

    done = sum(s["count"] for s in shards.values())
    bar = tqdm(total=n, initial=done, desc=f"prepare {split}", unit="ex", dynamic_ncols=True)
    if shards:
      bar.write(f"{split}: {len(shards)} of {len(ranges)} shards already written, kept")
  if workers <= 1 or len(todo) <= 1:
    for k, lo, hi in todo:
      shards[k] = _write_shard(source, out, split, k, lo, hi)
      if bar:
        bar.update(hi - lo)
  else:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold jax threads
    with cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
      futures = {pool.submit(_write_shard, source, out, split, k, lo, hi): k for k, lo, hi in todo}
      for fut in cf.as_completed(futures):
        shard = fut.result()
        shards[futures[fut]] = shard
        if bar:
          bar.update(shard["count"])
  if bar:
    bar.close()
  return [shards[k] for k, _, _ in ranges]


def _verify(out, split, shards, n, progress) -> None:
  """Counts and checksums of what was written, read back; a DataError naming the first bad one."""
  total = 0
  for s in shards:
    path = os.path.join(out, split, s["file"])
    if records.file_sha256(path) != s["sha256"]:
      raise DataError(f"{path}: checksum differs from what was written (disk error?)")
    total += s["count"]
  from array_record.python.array_record_data_source import ArrayRecordDataSource

  data = ArrayRecordDataSource([os.path.join(out, split, s["file"]) for s in shards])
  if len(data) != n or total != n:
    raise DataError(f"{out}/{split}: {len(data)} records written, expected {n}")
  for i in {0, n - 1} if n else ():
    got = int(records.decode(data[i])["meta"]["index"])
    if got != i:
      raise DataError(f"{out}/{split}: record {i} holds example {got}")


def _index(source) -> dict[str, np.ndarray]:
  """Per-split arrays saved beside the shards: names, label arrays, groups, per-example extras."""
  arrays = {"names": np.asarray(list(source.names), dtype=str)}
  labels = source.label_arrays()
  for part in ("targets", "mask"):
    for task, v in labels.get(part, {}).items():
      arrays[f"{part}/{task}"] = np.asarray(v)
  if (groups := capability(source, "groups")) is not None:
    arrays["groups"] = np.asarray(groups)
  for name in ("prediction_meta", "metric_strata"):
    if (fn := capability(source, name)) is not None:
      arrays.update({f"{name}/{k}": np.asarray(v) for k, v in fn().items()})
  return arrays


def _extras(source) -> dict[str, Any]:
  extras = {}
  if (day := capability(source, "day_reference")) is not None:
    extras["day_reference"] = day
  for name in ("prediction_meta", "metric_strata"):
    if capability(source, name) is not None:
      extras[name] = True
  if (planted := capability(source, "planted_truth")) is not None:
    extras["planted_truth"] = _jsonable(planted())
  return extras


# -------------------------------------------------------------------------------------- convert
def default_workers() -> int:
  return max(1, os.cpu_count() or 1)


def convert(
  config,
  out: str,
  *,
  shard_size: int = 1024,
  workers: int = 0,
  progress: bool = True,
  standardized: Mapping[str, bool],
) -> dict:
  """Convert the dataset ``config.data`` names into ``out`` (see the module docstring); returns
  the manifest. Reruns finish a killed conversion; a complete one is verified and kept.

  Args:
    config: a training config (``configs/<name>.py``): its ``data`` block picks the dataset, the
      archive and the reader's options; ``inputs``, ``tasks``, ``seed`` and
      ``data.stats_examples`` the normalisation statistics saved with it.
    out: the prepared dataset's folder.
    shard_size: examples per shard (the unit of parallelism and of resuming).
    workers: processes writing shards (0 = one per core).
    standardized: `{task: dense}` of the regression targets whose statistics are saved
      (`mtljax.tasks.standardized_targets(config)`).
  """
  from mtljax.data import build

  if shard_size < 1:
    raise PrepareError(f"--shard_size={shard_size}: expected a positive number of examples")
  out = os.path.abspath(out)
  workers = workers or default_workers()
  spec = get_dataset(config.data.name)
  ident = {**identity(config), "reader_version": reader_version(spec), "format": records.FORMAT}
  progress_path = os.path.join(out, records.PROGRESS)
  if os.path.exists(out) and not os.path.isdir(out):
    raise PrepareError(f"--out={out} is a file, not a directory")
  if os.path.isdir(out) and [n for n in os.listdir(out) if not n.startswith(".")]:
    if not os.path.exists(progress_path):
      raise PrepareError(f"--out={out} is not empty and holds no conversion; choose a new folder")
    with open(progress_path) as f:
      recorded = json.load(f)
    if diff := differences(recorded, ident, list(ident)):
      listed = ", ".join(diff)
      raise PrepareError(
        f"--out={out} holds a conversion of another dataset or config: {listed}; "
        "choose a new folder (nothing was overwritten)"
      )
    shard_size = recorded.get("shard_size", shard_size)  # a resumed conversion keeps its shards
  else:
    record = {**ident, "shard_size": shard_size, "config": _jsonable(config.data.to_dict())}
    fileio.write_json(progress_path, record)
  manifest_path = os.path.join(out, records.MANIFEST)
  if os.path.exists(manifest_path):
    manifest = records.read_manifest(out)
    for split in manifest["splits"]:
      records.PreparedSource(out, split, manifest).check_files(full=True)
    print(f"{out}: already prepared and verified ({_counts(manifest)})", flush=True)
    return manifest

  t0 = time.perf_counter()
  if not config.data.root and not config.data.synthetic.dir:
    config = config.copy_and_resolve_references()
    config.data.synthetic.dir = os.path.join(out, "raw_synthetic")
  sources, _ = build.make_sources(config, out)
  splits = {}
  for split, source in sources.items():
    shards = _write_split(source, out, split, shard_size, workers, progress)
    _verify(out, split, shards, len(source), progress)
    fileio.savez(os.path.join(out, split, "index.npz"), compressed=False, **_index(source))
    splits[split] = {
      "count": len(source),
      "checksum": records.split_checksum(shards),
      "shards": shards,
      "extras": _extras(source),
      "annotations": capability(source, "explain_annotations") is not None,
    }
  train = sources["train"]
  manifest = {
    **ident,
    "shard_size": shard_size,
    "config": _jsonable(config.data.to_dict()),
    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "seconds": round(time.perf_counter() - t0, 1),
    "splits": splits,
    "input_fields": _jsonable(train.input_fields),
    "target_fields": _jsonable(train.target_fields),
  }
  manifest["statistics"] = _statistics(config, out, manifest, standardized)
  fileio.write_json(manifest_path, manifest, fault="prepare.manifest")
  print(f"{out}: prepared {_counts(manifest)} in {manifest['seconds']} s", flush=True)
  return manifest


def _counts(manifest) -> str:
  return ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())


def _statistics(config, out, manifest, standardized) -> dict:
  """Training's normalisation statistics, computed as training computes them (the same
  function, seed and subsample) over the prepared training split; reused by a run whose seed,
  ``stats_examples`` and inputs match."""
  from mtljax.data import pipeline, statistics

  train = records.PreparedSource(out, "train", manifest)
  fields = train.input_fields
  names = sorted(m for m in config.inputs if fields.get(m, {}).get("kind") != "categorical")
  return {
    "seed": int(config.seed),
    "stats_examples": int(config.data.stats_examples),
    "inputs": pipeline.compute_stats(
      train, names, max_examples=config.data.stats_examples, seed=config.seed
    ),
    "targets": {t: list(v) for t, v in statistics.regression_target_stats(train, config, standardized).items()},
  }
