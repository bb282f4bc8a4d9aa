"""Config → data sources: the one place that maps `config.data` onto a dataset's reader.

`make_sources(config, workdir)` returns `({split: source}, synthetic_root)`. With an empty
`config.data.root`, the dataset's synthetic generator writes its real on-disk layout first
(into `config.data.synthetic.dir`, default `<workdir>/synthetic_data`; skipped when already
there with the same parameters) and `synthetic_root` is that folder; otherwise it is None.
With `config.data.prepared`, the splits are read from that prepared dataset (ArrayRecord,
`mtljax.data.prepared`) after checking it was made from this config's dataset and reader options.
Each dataset's registry entry (`mtljax.data.Dataset`, in its package) says how its reader's and
its generator's keyword arguments are read from the config.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Mapping

import ml_collections

from mtljax.data import DATASETS, get_dataset, values


class _Adapters(Mapping):
  """name -> (source_kwargs, synthetic_kwargs) of every registered dataset, read from its entry
  on access (so only the dataset a run uses is imported)."""

  def __getitem__(self, name: str) -> tuple[Callable, Callable]:
    spec = get_dataset(name)
    return spec.source_kwargs, spec.synthetic_kwargs

  def __iter__(self) -> Iterator[str]:
    return iter(DATASETS)

  def __len__(self) -> int:
    return len(DATASETS)


_ADAPTERS: Mapping[str, tuple[Callable, Callable]] = _Adapters()


def make_sources(
  config: ml_collections.ConfigDict,
  workdir: str,
  dataset=None,
  *,
  splits: tuple[str, ...] | None = None,
  inputs_only: bool = False,
):
  """`({split: source}, synthetic_root)`; `dataset`: the run's registry entry (looked up from
  `config.data.name` when not given); `splits`: only these of the dataset's splits (default
  all); `inputs_only`: the readers open the model's input modalities alone, not those that are
  targets (`Dataset.source_kwargs`; predicting new data that lacks them)."""
  spec = dataset or get_dataset(config.data.name)
  splits = spec.splits if splits is None else tuple(s for s in spec.splits if s in splits)
  if config.data.get("prepared"):  # a prepared dataset (python -m mtljax.prepare) instead
    from mtljax.data import prepared

    return {s: v for s, v in prepared.open_sources(config).items() if s in splits}, None
  root, synthetic_root = config.data.root or None, None
  if not root and spec.write_synthetic is not None:
    root = config.data.synthetic.dir or os.path.join(workdir, "synthetic_data")
    synthetic_root = str(spec.write_synthetic(root, **spec.synthetic_kwargs(config)))
    root = synthetic_root
  kwargs = reader_kwargs(config, spec, inputs_only=inputs_only)
  return {split: spec.source_cls(root, split, **kwargs) for split in splits}, synthetic_root


def reader_kwargs(config: ml_collections.ConfigDict, spec, *, inputs_only: bool = False) -> dict:
  """The keyword arguments `config` gives the reader of `spec` (a `Dataset` entry): its
  `source_kwargs` (`inputs_only`: for new data, where the entry's `source_kwargs` takes it) and
  the bound on image sides for a reader that takes it. Also what the entry's `read_input` is
  given (`mtljax.data.new_inputs`)."""
  # (an entry whose own `source_kwargs` takes no `inputs_only` reads what it always reads)
  only = inputs_only and "inputs_only" in inspect.signature(spec.source_kwargs).parameters
  kwargs = spec.source_kwargs(config, inputs_only=True) if only else spec.source_kwargs(config)
  # The bound on image sides (read from each file's header before decoding), for a reader that
  # takes it; not a reader option of the dataset's identity (a prepared dataset's check).
  if "max_image_side" in inspect.signature(spec.source_cls).parameters:
    kwargs["max_image_side"] = values.max_image_side(config)
  return kwargs
