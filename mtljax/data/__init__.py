"""Datasets (readers, synthetic generators) and the grain input pipeline.

Layout: one package per dataset (``treesat/``, ``attributes/`` for CUB-200-2011 and ISIC 2018,
``cropyield/``, ``benge/``, ``facades/``) holding its reader, its synthetic generator (which writes
the real on-disk layout with planted truth) and its extras; beside them, shared by all:

* ``source.py``: the written source contract (``Source``: the required members; ``CAPABILITIES``
  and ``capability(source, name)``: the optional ones, each found that one way), ``DataError``,
  ``example_index`` and ``split_test_list``;
* ``synthetic.py``: writing a synthetic folder once (``write_once``, ``MARKER``);
* ``pipeline/``: the dataset-agnostic grain pipeline; ``build.py``: ``make_sources(config,
  workdir)``, config → one source per split.

Each dataset package exports one registry entry, a ``Dataset`` record (below), and ``DATASETS``
lists them once by name. ``get_dataset(name)`` imports the package on first use, so
``import mtljax.data`` stays light.

To add a dataset: write ``mtljax/data/<name>/`` with a source class (``Source`` in ``source.py``),
a synthetic generator and a ``Dataset`` entry (``source_kwargs``/``synthetic_kwargs`` read the
config), add one line to ``DATASETS``, and a config under ``configs/``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Dataset:
  """One dataset's registry entry (exported by its package).

  Attributes:
    name: the ``config.data.name`` that selects it.
    source_cls: the reader, called as ``source_cls(root, split, **source_kwargs(config))``.
    write_synthetic: the generator, ``write_synthetic(root, **synthetic_kwargs(config)) -> Path``
      (the real on-disk layout with planted truth, written once).
    source_kwargs: ``config -> dict``, the reader's keyword arguments.
    synthetic_kwargs: ``config -> dict``, the generator's keyword arguments.
    splits: the splits ``make_sources`` builds.
    pictures_fn: optional, ``(preds, source, out_dir) -> [(tag, image [H, W, 3])]``: pictures of a
      split's predictions drawn at the end of training (e.g. CropYield's yield maps); None = none.
    label_hierarchy: optional, ``(child_task, parent_task) -> int [C_child] | None``: the parent
      class of each child class (read by the intrinsic analysis); None = no hierarchy.
  """

  name: str
  source_cls: Callable[..., Any]
  write_synthetic: Callable[..., Any]
  source_kwargs: Callable[[Any], dict[str, Any]]
  synthetic_kwargs: Callable[[Any], dict[str, Any]]
  splits: tuple[str, ...] = ("train", "val", "test")
  pictures_fn: Callable[..., Any] | None = None
  label_hierarchy: Callable[[str, str], Any] | None = None


#: name -> "package:attribute" of its ``Dataset`` entry (imported on first use).
DATASETS: dict[str, str] = {
  "treesat": "mtljax.data.treesat:DATASET",
  "cub": "mtljax.data.attributes:CUB",
  "isic2018": "mtljax.data.attributes:ISIC",
  "cropyield": "mtljax.data.cropyield:DATASET",
  "benge": "mtljax.data.benge:DATASET",
  # Street-level façades, five interdependent classification tasks (MTC-LIM paper).
  "facades": "mtljax.data.facades:DATASET",
}


def get_dataset(name: str) -> Dataset:
  """The registered dataset ``name`` (see ``DATASETS``)."""
  try:
    ref = DATASETS[name]
  except KeyError:
    raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}") from None
  module, attr = ref.split(":")
  return getattr(importlib.import_module(module), attr)
