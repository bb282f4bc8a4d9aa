"""The pipeline's grain side: input statistics over a source (``compute_stats``), the shuffled,
sharded, resumable training stream (``train_dataset``, ``train_iterator``) and the padded
evaluation batches (``eval_batches``). The example and batch contract: ``mtljax.data.pipeline``."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mtljax.data.pipeline.transforms import (
  AugmentThenFinish,
  Example,
  Prepare,
  Stats,
  augment_options,
  combine_moments,
  example_moments,
)

log = logging.getLogger(__name__)


def _grain():
  import grain

  return grain


def default_read_options(num_threads: int | None = None, prefetch_buffer_size: int | None = None):
  """``grain.ReadOptions`` sized for this machine: one thread per core (at most 16).

  The pipelines here prefetch after ``batch``, so each thread builds a whole batch and the buffer
  counts batches: it must be >= the thread count to keep every thread busy, and is capped at 16
  because one batch of 32 aerial patches (304x304x4 float32) is 47 MB.
  """
  threads = num_threads or max(1, min(16, os.cpu_count() or 1))
  buffer = prefetch_buffer_size or min(max(2 * threads, 4), 16)
  return _grain().ReadOptions(num_threads=threads, prefetch_buffer_size=max(buffer, 1))


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------
def compute_stats(
  source: Any,
  input_names: Sequence[str],
  *,
  max_examples: int = 2048,
  seed: int = 0,
  read_options: Any = None,
  progress: bool = True,
) -> dict[str, dict[str, list[float]]]:
  """Per-channel mean / std of inputs over a seeded subsample of a (training) source.

  Channels are the last axis; all other axes and the examples are reduced. NaN (nodata) is
  ignored, as ``np.nanmean`` / ``np.nanstd`` (population std) over the stacked subsample would.
  Accumulation is streaming (float64, pairwise-stable), so large images need no big buffer.

  Args:
    source: random-access source following the example contract.
    input_names: inputs to describe.
    max_examples: subsample size; the first ``max_examples`` of a permutation seeded by ``seed``
      (everything when the source is smaller).
    seed: subsample seed.
    read_options: ``grain.ReadOptions`` for parallel reading (default: ``default_read_options()``).
    progress: show a tqdm bar when more than 200 examples are read.

  Returns:
    JSON-serialisable ``{name: {"mean": [C floats], "std": [C floats]}}``; std floored at 1e-6. A
    channel that is NaN everywhere gets mean 0, std 1 (and a warning).
  """
  grain = _grain()
  names = tuple(input_names)
  n = min(len(source), int(max_examples))
  if n <= 0:
    raise ValueError("compute_stats needs a non-empty source")
  ds = grain.MapDataset.source(source)
  if n < len(source):
    ds = ds.seed(seed).shuffle()[:n]
  ds = ds.map(functools.partial(example_moments, input_names=names))
  it: Any = ds.to_iter_dataset(read_options or default_read_options(prefetch_buffer_size=64))
  if progress and n > 200:
    from tqdm.auto import tqdm

    it = tqdm(it, total=n, desc="input statistics", unit="ex")
  acc: dict[str, tuple[np.ndarray, ...]] = {}
  for moments in it:
    for name, m in moments.items():
      acc[name] = combine_moments(acc[name], m) if name in acc else m
  stats = {}
  for name in names:
    count, mean, m2 = acc[name]
    std = np.sqrt(np.divide(m2, count, out=np.zeros_like(m2), where=count > 0))
    empty = count == 0
    if empty.any():
      log.warning(
        "compute_stats: input %r has all-NaN channels %s", name, np.flatnonzero(empty).tolist()
      )
    mean = np.where(empty, 0.0, mean)
    std = np.where(empty, 1.0, np.maximum(std, 1e-6))
    stats[name] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
  return stats


# --------------------------------------------------------------------------------------------------
# Datasets and iterators
# --------------------------------------------------------------------------------------------------
class _ProcessRows:
  """Random-access view of an (infinite) global example stream for one process.

  Global batch ``b`` holds global elements ``b*B .. b*B+B-1`` with ``B = L * shard_count``;
  process ``p`` owns rows ``p*L .. p*L+L-1`` of it. Local element ``i`` maps to global element
  ``(start_batch + i // L) * B + p * L + i % L``: every process reads only its own rows, and the
  global batch (hence the training trajectory) is the same whatever the number of processes.
  ``start_batch`` starts the stream at a given step, so a resumed run needs only the step.
  """

  def __init__(
    self, parent, local_batch: int, shard_index: int, shard_count: int, start_batch: int
  ):
    self.parent, self.local_batch = parent, int(local_batch)
    self.shard_index, self.shard_count, self.start_batch = (
      int(shard_index),
      int(shard_count),
      int(start_batch),
    )

  def __len__(self) -> int:
    return len(self.parent)  # infinite (repeated) stream: sys.maxsize

  def __getitem__(self, i: int):
    b, r = divmod(int(i), self.local_batch)
    g = (
      (self.start_batch + b) * self.local_batch * self.shard_count
      + self.shard_index * self.local_batch
      + r
    )
    return self.parent[g]


def train_dataset(
  source: Any,
  *,
  input_names: Sequence[str],
  task_names: Sequence[str],
  stats: Stats | None,
  batch_size: int,
  seed: int,
  augment_cfg: Any = None,
  shard_index: int = 0,
  shard_count: int = 1,
  start_step: int = 0,
  on_device: bool = False,
):
  """The infinite training ``grain.MapDataset`` of this process's batches (see ``train_iterator``).

  Args:
    source: random-access source (example contract in the module docstring).
    input_names, task_names: what to keep.
    stats: ``compute_stats`` output (inputs not in it are not standardised); None for none.
    batch_size: per-process batch size (the global batch is ``batch_size * shard_count``).
    seed: shuffle and augmentation seed.
    augment_cfg: None/False (off), True (flip + rot90), or a mapping with ``flip``, ``rot90``,
      ``enabled``.
    shard_index, shard_count: this process and the number of processes (e.g.
      ``jax.process_index()``, ``jax.process_count()``).
    start_step: the first global batch to yield (resume).
    on_device: leave integer-stored inputs for the step to standardise (``Prepare``).
  """
  grain = _grain()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  if len(source) < batch_size * shard_count:
    raise ValueError(
      f"{len(source)} examples, fewer than the global batch {batch_size * shard_count}"
    )
  prepare = Prepare(input_names, task_names, stats, on_device)
  source = _stored(source)
  prepare(source[0])  # fail early, in this thread, on bad names or a bad first file
  # The global stream, identical on every process: a new permutation every epoch, then
  # per-element preparation and augmentation seeded by the *global* element index.
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  kw = augment_options(augment_cfg)
  if kw is None:
    ds = ds.map(prepare)
  else:  # select, then augment before normalising (same bytes, fewer moved; the random_map
    # stays at the same depth below .seed, so its seed and draws are unchanged)
    ds = ds.map(prepare.select).random_map(AugmentThenFinish(prepare, kw))
  if shard_count > 1 or start_step:
    ds = grain.MapDataset.source(_ProcessRows(ds, batch_size, shard_index, shard_count, start_step))
  return ds.batch(batch_size, drop_remainder=True)


def _stored(source: Any) -> Any:
  """The view the pipelines read: the source's ``stored_inputs`` view when it has one."""
  from mtljax.data.source import capability

  view = capability(source, "stored_inputs")
  return source if view is None else view()


def resolve_workers(workers: int | None) -> int:
  """``config.data.workers``: 0/None = no worker process, -1 = one per core, else as given."""
  workers = int(workers or 0)
  return max(1, os.cpu_count() or 1) if workers < 0 else workers


def train_iterator(
  source: Any, *, read_options: Any = None, workers: int | None = 0, **dataset_kwargs
):
  """Infinite, deterministic, checkpointable iterator of training batches.

  Pipeline: ``MapDataset.source`` -> seeded shuffle, new permutation per epoch -> repeat ->
  select + normalise -> seeded random augmentation (if ``augment_cfg``) -> this process's rows
  of each global batch of ``batch_size * shard_count`` examples, from global batch
  ``start_step`` on -> batch (drop remainder) -> ``to_iter_dataset(read_options)``.
  The stream is a pure function of (seed, step): resuming needs only the step, and the global
  batches are the same for any number of processes.

  Args:
    source: random-access source (example contract in the module docstring).
    read_options: ``grain.ReadOptions`` (default ``default_read_options()``).
    workers: grain worker processes (``mp_prefetch``; see ``resolve_workers``): each reads,
      decodes, normalises, augments and batches whole batches off the training process; the
      order (hence the run) is the same for any number. Needs parsed absl flags (``main``).
    **dataset_kwargs: those of ``train_dataset`` (``input_names``, ``task_names``, ``stats``,
      ``batch_size``, ``seed``, ``augment_cfg``, ``shard_index``, ``shard_count``,
      ``start_step``, ``on_device``).

  Returns:
    a ``grain.DatasetIterator`` yielding batches (see module docstring; ``valid`` all ones).
    ``it.get_state()`` / ``it.set_state(state)`` resume exactly, and
    ``grain.checkpoint.CheckpointSave(it)`` / ``CheckpointRestore(it)`` work inside orbax.
  """
  ds = train_dataset(source, **dataset_kwargs)
  it = ds.to_iter_dataset(read_options or default_read_options())
  if n := resolve_workers(workers):
    grain = _grain()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=n))
  return iter(it)


class _IndexView:
  """``view[i] = source[indices[i]]`` with ``valid`` = ``valid[i]`` (picklable)."""

  def __init__(self, source: Any, indices: np.ndarray, valid: np.ndarray, prepare: "Prepare"):
    self.source, self.indices, self.valid, self.prepare = source, indices, valid, prepare

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Example:
    ex = self.prepare(self.source[int(self.indices[i])])
    ex["valid"] = np.float32(self.valid[i])
    return ex


def eval_batches(
  source: Any,
  *,
  input_names: Sequence[str],
  task_names: Sequence[str],
  stats: Stats | None,
  batch_size: int,
  read_options: Any = None,
  shard_index: int = 0,
  shard_count: int = 1,
  on_device: bool = False,
) -> Iterator[Example]:
  """One in-order pass over ``source`` in fixed-size global batches, no augmentation.

  The split is padded up to a multiple of ``batch_size`` (global) by repeating its last
  example, with ``valid`` = 0 for the padding, so every example is seen exactly once (weight
  metrics by ``valid``) and batch shapes never change. Process ``shard_index`` of
  ``shard_count`` reads and yields only its rows of each global batch (``batch_size //
  shard_count`` of them). Yields ``ceil(len(source) / batch_size)`` batches.
  """
  grain = _grain()
  n = len(source)
  if n == 0:
    return
  if batch_size % shard_count:
    raise ValueError(f"eval batch size {batch_size} is not divisible by {shard_count} processes")
  local = batch_size // shard_count
  num_batches = -(-n // batch_size)
  padded = np.arange(num_batches * batch_size)
  rows = lambda a: a.reshape(num_batches, shard_count, local)[:, shard_index].ravel()
  view = _IndexView(
    _stored(source),
    rows(np.minimum(padded, n - 1)),
    rows(padded < n).astype(np.float32),
    Prepare(input_names, task_names, stats, on_device),
  )
  ds = grain.MapDataset.source(view).batch(local, drop_remainder=False)
  yield from ds.to_iter_dataset(read_options or default_read_options())


def num_batches_per_epoch(
  source: Any, batch_size: int, *, drop_remainder: bool = True, shard_count: int = 1
) -> int:
  """Batches in one pass: ``floor`` (training, remainder dropped) or ``ceil`` (``eval_batches``).

  With ``shard_count > 1`` this is per shard, using the smallest shard.
  """
  n = len(source) // shard_count
  return n // batch_size if drop_remainder else -(-n // batch_size)
