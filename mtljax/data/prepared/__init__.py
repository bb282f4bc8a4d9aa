"""Prepared datasets: a dataset converted once (``convert``, ``python -m mtljax.prepare``) into
ArrayRecord shards with its index, statistics and checksums, and read back as a source
(``PreparedSource``) that grain reads at random, by any number of worker processes and hosts.
See docs/prepared-data.md.

``open_sources(config)`` is training's entry (``config.data.prepared``): the prepared splits,
after checking that the folder was made from the dataset and reader options ``config`` names.
"""

from __future__ import annotations

import sys

from mtljax.data.prepared.records import MANIFEST, PreparedSource, read_manifest
from mtljax.data.source import DataError


def open_sources(config) -> dict:
  """``{split: PreparedSource}`` of ``config.data.prepared``; a DataError naming the folder and
  every key where it differs from ``config`` (another dataset, other reader options, another
  archive)."""
  from mtljax.data import get_dataset
  from mtljax.data.prepared import identity

  directory = config.data.prepared
  manifest = read_manifest(directory)
  diff = identity.mismatch(manifest, config)
  if diff:
    listed = ", ".join(diff)
    raise DataError(
      f"config.data.prepared={directory}: prepared from another dataset or config: {listed}. "
      "Convert this config with `python -m mtljax.prepare`, or train from the raw archive"
    )
  spec = get_dataset(config.data.name)
  if manifest.get("reader_version") != identity.reader_version(spec):
    print(
      f"warning: {directory}/{MANIFEST} was written by reader {manifest.get('reader_version')}, "
      f"this is {identity.reader_version(spec)}; reconvert if the reader's output changed",
      file=sys.stderr,
      flush=True,
    )
  return {split: PreparedSource(directory, split, manifest) for split in spec.splits}


def statistics(config, input_names) -> dict | None:
  """The input statistics saved at conversion when they are what training would compute (same
  seed, ``stats_examples`` and inputs), else None."""
  stats = read_manifest(config.data.prepared).get("statistics") or {}
  same = stats.get("seed") == int(config.seed)
  same = same and stats.get("stats_examples") == int(config.data.stats_examples)
  if not same or not set(input_names) <= set(stats.get("inputs", {})):
    return None
  return {n: stats["inputs"][n] for n in input_names}


__all__ = ["DataError", "PreparedSource", "open_sources", "read_manifest", "statistics"]
