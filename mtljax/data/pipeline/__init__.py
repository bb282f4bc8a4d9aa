"""Dataset-agnostic grain input pipeline: statistics, normalisation, augmentation, batching.

``transforms``: per-example (and per-batch) pure functions: select, normalize, augment;
``loaders``: input statistics over a source, and the grain datasets and iterators of training and
evaluation. This package is their public API.

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
With ``on_device=True`` (``config.data.normalise_on_device``) an input read in an integer type
(a prepared dataset's 8-bit imagery) stays integer in the batch — a quarter of the bytes to
batch, to hand over from the worker processes and to copy to the accelerator — and the step
standardises it (``standardize_on_device``; ``train.on_device_inputs`` wraps a step with it).

Training order: shard -> seeded shuffle -> repeat. grain's ``MapDataset.shuffle().repeat()``
draws a *new* permutation for every epoch (the shuffle derives its per-epoch seed from
``index // len``), so each epoch has a different order, reproducible from ``seed``. Batches are
formed on the repeated stream, so one batch may straddle an epoch boundary; an "epoch" of steps is
``num_batches_per_epoch(...)``.
"""

from mtljax.data.pipeline.loaders import (
  compute_stats,
  default_read_options,
  eval_batches,
  num_batches_per_epoch,
  train_dataset,
  train_iterator,
)
from mtljax.data.pipeline.transforms import (
  augment,
  augment_batch,
  augment_options,
  normalize,
  select,
  standardize_on_device,
)

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
  "standardize_on_device",
  "train_dataset",
  "train_iterator",
]
