"""Attribute datasets of the ensembles paper: CUB-200-2011 (bird attributes) and ISIC 2018 Task 2
(lesion attributes), images with multi-label attribute targets and evaluation-only masks/keypoints.

``common``: the shared image source and image/mask reading; ``cub``, ``isic``: the readers;
``synthetic`` (drawing), ``synthetic_cub``, ``synthetic_isic``: the generators with planted
attributes. ``CUB`` and ``ISIC`` are their registry entries.
"""

from __future__ import annotations

from typing import Any

from mtljax.data import Dataset
from mtljax.data.attributes.cub import CUB200Source
from mtljax.data.attributes.isic import ISIC2018Source
from mtljax.data.attributes.synthetic_cub import write_synthetic_cub
from mtljax.data.attributes.synthetic_isic import write_synthetic_isic


def _source_kwargs(config) -> dict[str, Any]:
  d = config.data
  kwargs = dict(image_size=d.image_size, val_fraction=d.val_fraction, split_seed=d.split_seed)
  if d.attributes:
    kwargs["attributes"] = tuple(d.attributes)
  return kwargs


def _cub_synthetic_kwargs(config) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(
    num_train=s.num_train, num_test=s.num_test, seed=s.seed, image_size=config.data.image_size
  )


def _isic_synthetic_kwargs(config) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(
    num_train=s.num_train,
    num_val=s.num_val,
    num_test=s.num_test,
    seed=s.seed,
    image_size=config.data.image_size,
  )


CUB = Dataset(
  name="cub",
  source_cls=CUB200Source,
  write_synthetic=write_synthetic_cub,
  source_kwargs=_source_kwargs,
  synthetic_kwargs=_cub_synthetic_kwargs,
)
ISIC = Dataset(
  name="isic2018",
  source_cls=ISIC2018Source,
  write_synthetic=write_synthetic_isic,
  source_kwargs=_source_kwargs,
  synthetic_kwargs=_isic_synthetic_kwargs,
)
