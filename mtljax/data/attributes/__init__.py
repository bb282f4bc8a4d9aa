"""Attribute datasets of the ensembles paper: CUB-200-2011 (bird attributes) and ISIC 2018 Task 2
(lesion attributes), images with multi-label attribute targets and evaluation-only masks/keypoints.

``common``: the shared image source and image/mask reading; ``cub``, ``isic``: the readers;
``synthetic`` (drawing), ``synthetic_cub``, ``synthetic_isic``: the generators with planted
attributes. ``CUB`` and ``ISIC`` are their registry entries.
"""

from __future__ import annotations

from mtljax.data import Dataset
from mtljax.data.attributes.cub import CUB200Source
from mtljax.data.attributes.isic import ISIC2018Source
from mtljax.data.attributes.synthetic_cub import write_synthetic_cub
from mtljax.data.attributes.synthetic_isic import write_synthetic_isic


def _entry(name: str, source_cls, write_synthetic, synthetic_keys: tuple[str, ...]) -> Dataset:
  """The two attribute datasets' readers take the same arguments."""
  return Dataset(
    name, source_cls, write_synthetic,
    source_keys=("image_size", "val_fraction", "split_seed"), source_keys_if_set=("attributes",),
    synthetic_keys=synthetic_keys, synthetic_data_keys=("image_size",),
  )  # fmt: skip


CUB = _entry("cub", CUB200Source, write_synthetic_cub, ("num_train", "num_test", "seed"))
ISIC = _entry(
  "isic2018", ISIC2018Source, write_synthetic_isic, ("num_train", "num_val", "num_test", "seed")
)
