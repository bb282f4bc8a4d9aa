"""Datasets (readers, synthetic generators) and the grain input pipeline.

``get_dataset(name)`` returns a small record with the dataset's source class, its synthetic
generator and its splits; readers are imported lazily so ``import mtljax.data`` stays light.
(``mtljax.data.build`` maps a run's config onto these.)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class DatasetSpec:
  """Where a dataset's pieces live (``module:attribute`` strings, resolved on access)."""

  name: str
  source: str  # "module:Class", called as Class(root, split, **kwargs)
  synthetic: str  # "module:function", called as function(root, **kwargs) -> Path
  splits: tuple[str, ...]
  # Optional "module:function" drawing a split's predictions at the end of training, called as
  # function(preds, source, out_dir) -> [(tag, image [H, W, 3])] (written as PNGs in out_dir).
  pictures: str = ""

  @staticmethod
  def _load(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)

  @property
  def source_cls(self) -> Callable[..., Any]:
    return self._load(self.source)

  @property
  def write_synthetic(self) -> Callable[..., Any]:
    return self._load(self.synthetic)

  @property
  def pictures_fn(self) -> Callable[..., Any] | None:
    return self._load(self.pictures) if self.pictures else None


DATASETS: dict[str, DatasetSpec] = {
  "treesat": DatasetSpec(
    name="treesat",
    source="mtljax.data.treesat:TreeSatAISource",
    synthetic="mtljax.data.synthetic:write_synthetic_treesat",
    splits=("train", "val", "test"),
  ),
  "cub": DatasetSpec(
    name="cub",
    source="mtljax.data.cub:CUB200Source",
    synthetic="mtljax.data.synthetic_attributes:write_synthetic_cub",
    splits=("train", "val", "test"),
  ),
  "isic2018": DatasetSpec(
    name="isic2018",
    source="mtljax.data.isic:ISIC2018Source",
    synthetic="mtljax.data.synthetic_attributes:write_synthetic_isic",
    splits=("train", "val", "test"),
  ),
  "cropyield": DatasetSpec(
    name="cropyield",
    source="mtljax.data.cropyield:CropYieldSource",
    synthetic="mtljax.data.cropyield:write_synthetic_cropyield",
    splits=("train", "val", "test"),
    pictures="mtljax.data.cropyield_maps:yield_maps",
  ),
  "benge": DatasetSpec(
    name="benge",
    source="mtljax.data.benge:BenGeSource",
    synthetic="mtljax.data.synthetic_benge:write_synthetic_benge",
    splits=("train", "val", "test"),
  ),
  # Street-level façades, five interdependent classification tasks (MTC-LIM paper).
  "facades": DatasetSpec(
    name="facades",
    source="mtljax.data.facades:FacadesSource",
    synthetic="mtljax.data.facades:write_synthetic_facades",
    splits=("train", "val", "test"),
  ),
}


def get_dataset(name: str) -> DatasetSpec:
  """The registered dataset ``name`` (see ``DATASETS``)."""
  try:
    return DATASETS[name]
  except KeyError:
    raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}") from None
