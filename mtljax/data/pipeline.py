"""Dataset-agnostic grain input pipeline: statistics, normalisation, augmentation, batching.

Works on any random-access *source* (``__len__``, ``__getitem__``) whose examples follow the
contract::

    {"inputs": {name: array}, "targets": {task: array}, "mask": {task: float32},
     "meta": {"index": int32 []}}

An input may also be a padded time series, a dict ``{"values": [T, F], "days": [T], "mask": [T]}``
(mask 1 = real step): its statistics cover the real steps only, ``values`` is standardised per
feature with padding set to 0, and ``days``/``mask`` pass through as int32.

Batches are nested dicts of numpy arrays with a leading batch axis ``B``::

    {"inputs": {name: float32 [B, ...]}, "targets": {task: [B, ...]}, "mask": {task: float32 [B, ...]},
     "meta": {"index": int32 [B]}, "valid": float32 [B]}

``valid`` is 1 for real examples and 0 for padding (only the last ``eval_batches`` batch pads).

Training order: shard -> seeded shuffle -> repeat. grain's ``MapDataset.shuffle().repeat()``
draws a *new* permutation for every epoch (the shuffle derives its per-epoch seed from
``index // len``), so each epoch has a different order, reproducible from ``seed``. Batches are
formed on the repeated stream, so one batch may straddle an epoch boundary; an "epoch" of steps is
``num_batches_per_epoch(...)``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
  "augment",
  "augment_batch",
  "augment_options",
  "compute_stats",
  "default_read_options",
  "eval_batches",
  "normalize",
  "num_batches_per_epoch",
  "select",
  "train_dataset",
  "train_iterator",
]

Example = dict[str, Any]
Stats = Mapping[str, Mapping[str, Sequence[float]]]


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


def _tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
  """Map over nested dicts (leaves: arrays / scalars)."""
  if isinstance(tree, Mapping):
    return {k: _tree_map(fn, tree[k], *(r[k] for r in rest)) for k in tree}
  return fn(tree, *rest)


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------
def _moments(example: Example, input_names: tuple[str, ...]) -> dict[str, tuple[np.ndarray, ...]]:
  """Per-channel (count, mean, M2) of each input of one example, NaN ignored (float64 [C] each)."""
  out = {}
  for name in input_names:
    x = example["inputs"][name]
    if isinstance(x, Mapping):  # time series {"values", "days", "mask"}: real steps only
      x = np.asarray(x["values"])[np.asarray(x["mask"]) > 0]
    x = np.asarray(x)
    x = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    if x.dtype.kind == "f" and np.isnan(x).any():  # slow path, float64 throughout
      x = x.astype(np.float64)
      ok = ~np.isnan(x)
      count = ok.sum(axis=0).astype(np.float64)
      total = np.where(ok, x, 0.0).sum(axis=0)
      mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
      m2 = np.where(ok, (x - mean) ** 2, 0.0).sum(axis=0)
    else:  # fast path: float32 deviations, float64 accumulation, exact shift correction
      x = x.astype(np.float32, copy=False)
      count = np.full(x.shape[1], float(x.shape[0]))
      mean = x.mean(axis=0, dtype=np.float64)
      shift = mean.astype(np.float32)
      d = x - shift
      m2 = np.einsum("ij,ij->j", d, d, dtype=np.float64) - count * (mean - shift) ** 2
    out[name] = (count, mean, m2)
  return out


def _combine(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
  """Chan et al.'s pairwise update of (count, mean, M2)."""
  na, ma, m2a = a
  nb, mb, m2b = b
  n = na + nb
  safe = np.maximum(n, 1.0)
  delta = mb - ma
  mean = ma + delta * nb / safe
  m2 = m2a + m2b + delta**2 * na * nb / safe
  return n, mean, m2


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
  ds = ds.map(functools.partial(_moments, input_names=names))
  it: Any = ds.to_iter_dataset(read_options or default_read_options(prefetch_buffer_size=64))
  if progress and n > 200:
    from tqdm.auto import tqdm

    it = tqdm(it, total=n, desc="input statistics", unit="ex")
  acc: dict[str, tuple[np.ndarray, ...]] = {}
  for moments in it:
    for name, m in moments.items():
      acc[name] = _combine(acc[name], m) if name in acc else m
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
# Per-example transforms
# --------------------------------------------------------------------------------------------------
def select(example: Example, input_names: Sequence[str], task_names: Sequence[str]) -> Example:
  """Keep only the requested inputs and tasks (targets and masks); keep ``meta``.

  A task without a mask entry gets mask 1.0.

  Raises:
    KeyError: a requested input or task is not in the example (the message lists what is).
  """
  inputs, targets, masks = example["inputs"], example["targets"], example.get("mask", {})
  missing_in = [k for k in input_names if k not in inputs]
  missing_t = [k for k in task_names if k not in targets]
  if missing_in or missing_t:
    raise KeyError(
      f"requested inputs {missing_in} / tasks {missing_t} not in the example; "
      f"inputs: {sorted(inputs)}, targets: {sorted(targets)}"
    )
  return {
    "inputs": {k: inputs[k] for k in input_names},
    "targets": {k: targets[k] for k in task_names},
    "mask": {k: masks[k] if k in masks else np.float32(1.0) for k in task_names},
    "meta": dict(example.get("meta", {})),
  }


def _stats_arrays(stats: Stats | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """JSON stats -> {name: (mean float32 [C], std float32 [C])}; already-converted entries pass."""
  out = {}
  for k, v in (stats or {}).items():
    out[k] = (
      v
      if isinstance(v, tuple)
      else (np.asarray(v["mean"], np.float32), np.asarray(v["std"], np.float32))
    )
  return out


def normalize(example: Example, stats: Stats, input_names: Sequence[str] | None = None) -> Example:
  """Standardise inputs per channel and replace NaN (nodata) by 0.0.

  Each input named in ``stats`` becomes ``(x - mean) / std`` (float32, channels = last axis), so
  the NaN fill 0.0 equals the channel mean. Inputs not in ``stats`` pass through as float32 (their
  NaN also become 0.0, and so do infinities anywhere, so no non-finite value leaves this
  function). If ``input_names`` is given, other inputs are dropped. Targets, masks and meta are
  passed through. ``stats`` is ``compute_stats``' JSON form.
  """
  arrays = _stats_arrays(stats)
  names = list(example["inputs"]) if input_names is None else list(input_names)
  inputs = {}
  for k in names:
    if isinstance(example["inputs"][k], Mapping):
      inputs[k] = _normalize_series(example["inputs"][k], arrays.get(k))
      continue
    x = np.asarray(example["inputs"][k], np.float32)
    if k in arrays:
      mean, std = arrays[k]
      x = x - mean  # a new array: the source's arrays are never modified
      x /= std
    bad = ~np.isfinite(x)
    if bad.any():
      x = np.where(bad, np.float32(0.0), x)
    inputs[k] = x
  return {**example, "inputs": inputs}


def _normalize_series(
  series: Mapping[str, Any], stats: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, np.ndarray]:
  """A padded time series ``{"values": [T, F], "days": [T], "mask": [T]}`` (mask 1 = real step):
  ``values`` standardised per feature (statistics over real steps, see ``compute_stats``), with
  NaN and padded steps set to 0.0; ``days`` and ``mask`` stay int32 (attribution methods hold
  integer leaves fixed)."""
  mask = np.asarray(series["mask"]).astype(np.int32)
  x = np.asarray(series["values"], np.float32)
  if stats is not None:
    x = (x - stats[0]) / stats[1]
  x = np.where(np.isfinite(x) & (mask[:, None] > 0), x, np.float32(0.0)).astype(np.float32)
  return {"values": x, "days": np.asarray(series["days"]).astype(np.int32), "mask": mask}


def _is_image(x, batched: bool = False) -> bool:
  """An image-like array ``[H, W, C]`` with H == W (``[B, H, W, C]`` when ``batched``)."""
  a = int(batched)
  return x.ndim == 3 + a and x.shape[a] == x.shape[a + 1]


def _is_dense(y, sides: set[int], batched: bool = False) -> bool:
  """A dense target / mask ``[H, W, ...]`` (``[B, H, W, ...]``) whose square side is in ``sides``."""
  a = int(batched)
  return y.ndim >= 2 + a and y.shape[a] == y.shape[a + 1] and y.shape[a] in sides


def _geometric(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
  if k:
    x = np.rot90(x, k, axes=(0, 1))
  if flip:
    x = x[:, ::-1]
  return np.ascontiguousarray(x)


def augment(
  example: Example, rng: np.random.Generator, *, flip: bool = True, rot90: bool = True
) -> Example:
  """One random dihedral transform (rot90 by k*90 deg, then optional left-right flip) for a whole example.

  The same transform applies to every image-like input (ndim 3, H == W, [H, W, C]) — co-registered
  modalities of different resolutions stay aligned — and to every target / mask with ndim >= 2
  whose leading two axes are square and match the side of a transformed input (dense targets).
  Other arrays are untouched. Usable as ``MapDataset.random_map(functools.partial(augment, ...))``.
  """
  k = int(rng.integers(4)) if rot90 else 0
  f = bool(rng.integers(2)) if flip else False
  if k == 0 and not f:
    return example
  inputs = dict(example["inputs"])
  sides = set()
  for name, x in inputs.items():
    if isinstance(x, Mapping):  # time series: nothing to rotate
      continue
    x = np.asarray(x)
    if _is_image(x):
      inputs[name] = _geometric(x, k, f)
      sides.add(x.shape[0])

  def dense(tree: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(tree)
    for name, y in tree.items():
      y = np.asarray(y)
      if _is_dense(y, sides):
        out[name] = _geometric(y, k, f)
    return out

  out = {**example, "inputs": inputs}
  if "targets" in example:
    out["targets"] = dense(example["targets"])
  if "mask" in example:
    out["mask"] = dense(example["mask"])
  return out


def augment_batch(batch: Example, rng, *, flip: bool = True, rot90: bool = True) -> Example:
  """``augment`` for a whole batch on device (jax): one random dihedral transform per example.

  The same rules as ``augment``: every image-like input ``[B, H, W, C]`` (H == W; time series and
  vectors untouched) and every target / mask ``[B, H, W, ...]`` whose side matches a transformed
  input get example b's transform. Jittable and vmappable: an ensemble member can draw its own
  transforms of a shared batch from its own ``rng`` (``train.make_ensemble_train_step``).
  Composed with the host pipeline's ``augment`` of the same options, each member sees each
  example under an independent, uniformly random transform, as separately trained members would.
  """
  import jax
  import jax.numpy as jnp

  if not (flip or rot90):
    return batch
  inputs = batch["inputs"]
  images = [
    name for name, x in inputs.items() if not isinstance(x, Mapping) and _is_image(x, batched=True)
  ]
  if not images:
    return batch
  sides = {inputs[name].shape[1] for name in images}
  size = next(iter(jax.tree.leaves(inputs))).shape[0]
  k_rng, f_rng = jax.random.split(rng)
  k = jax.random.randint(k_rng, (size,), 0, 4) if rot90 else jnp.zeros((size,), jnp.int32)
  f = jax.random.bernoulli(f_rng, 0.5, (size,)) if flip else jnp.zeros((size,), bool)

  def transform(x):
    def one(xi, ki, fi):  # xi [H, W, ...]: rot90 by ki quarter turns, then a left-right flip
      if rot90:
        xi = jax.lax.switch(
          ki, [functools.partial(jnp.rot90, k=r, axes=(0, 1)) for r in range(4)], xi
        )
      return jnp.where(fi, xi[:, ::-1], xi) if flip else xi

    return jax.vmap(one)(x, k, f)

  def dense(tree):
    return {
      name: transform(y) if _is_dense(y, sides, batched=True) else y for name, y in tree.items()
    }

  out = {
    **batch,
    "inputs": {name: transform(x) if name in images else x for name, x in inputs.items()},
  }
  for key in ("targets", "mask"):
    if key in batch:
      out[key] = dense(batch[key])
  return out


class _Prepare:
  """select -> normalize -> add ``valid``; picklable (grain may run it in worker processes)."""

  def __init__(self, input_names: Sequence[str], task_names: Sequence[str], stats: Stats | None):
    self.input_names = tuple(input_names)
    self.task_names = tuple(task_names)
    self.stats = _stats_arrays(stats)

  def __call__(self, example: Example) -> Example:
    ex = normalize(select(example, self.input_names, self.task_names), self.stats)
    ex["targets"] = {k: np.asarray(v) for k, v in ex["targets"].items()}
    ex["mask"] = {k: np.asarray(v, np.float32) for k, v in ex["mask"].items()}
    ex["valid"] = np.float32(1.0)
    return ex


def augment_options(augment_cfg: Any) -> dict[str, bool] | None:
  """None/False -> None; True -> defaults; a mapping / ConfigDict -> its flip/rot90 (``enabled`` may turn it off)."""
  if augment_cfg is None or augment_cfg is False:
    return None
  if augment_cfg is True:
    return {"flip": True, "rot90": True}
  cfg = augment_cfg.to_dict() if hasattr(augment_cfg, "to_dict") else dict(augment_cfg)
  if not cfg.pop("enabled", True):
    return None
  unknown = set(cfg) - {"flip", "rot90"}
  if unknown:
    raise ValueError(f"unknown augmentation options {sorted(unknown)}; known: flip, rot90, enabled")
  kw = {"flip": bool(cfg.get("flip", True)), "rot90": bool(cfg.get("rot90", True))}
  return kw if any(kw.values()) else None


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
):
  """The infinite training ``grain.MapDataset`` of this process's batches (see ``train_iterator``)."""
  grain = _grain()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  if len(source) < batch_size * shard_count:
    raise ValueError(
      f"{len(source)} examples, fewer than the global batch {batch_size * shard_count}"
    )
  prepare = _Prepare(input_names, task_names, stats)
  prepare(source[0])  # fail early, in this thread, on bad names or a bad first file
  # The global stream, identical on every process: a new permutation every epoch, then
  # per-element preparation and augmentation seeded by the *global* element index.
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds.map(prepare)
  kw = augment_options(augment_cfg)
  if kw is not None:
    ds = ds.random_map(functools.partial(augment, **kw))
  if shard_count > 1 or start_step:
    ds = grain.MapDataset.source(_ProcessRows(ds, batch_size, shard_index, shard_count, start_step))
  return ds.batch(batch_size, drop_remainder=True)


def train_iterator(
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
  read_options: Any = None,
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
    input_names, task_names: what to keep.
    stats: ``compute_stats`` output (inputs not in it are not standardised); None for none.
    batch_size: per-process batch size (the global batch is ``batch_size * shard_count``).
    seed: shuffle and augmentation seed.
    augment_cfg: None/False (off), True (flip + rot90), or a mapping with ``flip``, ``rot90``,
      ``enabled``.
    shard_index, shard_count: this process and the number of processes (e.g.
      ``jax.process_index()``, ``jax.process_count()``).
    start_step: the first global batch to yield (resume).
    read_options: ``grain.ReadOptions`` (default ``default_read_options()``).

  Returns:
    a ``grain.DatasetIterator`` yielding batches (see module docstring; ``valid`` all ones).
    ``it.get_state()`` / ``it.set_state(state)`` resume exactly, and
    ``grain.checkpoint.CheckpointSave(it)`` / ``CheckpointRestore(it)`` work inside orbax.
  """
  ds = train_dataset(
        source, input_names=input_names, task_names=task_names, stats=stats, batch_size=batch_size,
        seed=seed, augment_cfg=augment_cfg, shard_index=shard_index, shard_count=shard_count,
        start_step=start_step,
    )  # fmt: skip
  return iter(ds.to_iter_dataset(read_options or default_read_options()))


class _IndexView:
  """``view[i] = source[indices[i]]`` with ``valid`` = ``valid[i]`` (picklable)."""

  def __init__(self, source: Any, indices: np.ndarray, valid: np.ndarray, prepare: "_Prepare"):
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
    source,
    rows(np.minimum(padded, n - 1)),
    rows(padded < n).astype(np.float32),
    _Prepare(input_names, task_names, stats),
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
