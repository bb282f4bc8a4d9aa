"""TreeSatAI Benchmark Archive (Ahlswede et al., ESSD 2023): tree genera from aerial, S1 and S2.

``archive``: vocabularies, the L1 > L2 > L3 label hierarchy, bands and layout; ``labels``: the
labels JSON and side CSV; ``tiff``: checked GeoTIFF reading; ``reader``: ``TreeSatAISource``;
``synthetic`` (drawing in ``planted``): the synthetic archive with planted truth. ``DATASET`` is
its registry entry.
"""

from __future__ import annotations

from typing import Any

from mtljax.data import Dataset
from mtljax.data.treesat.archive import label_hierarchy
from mtljax.data.treesat.reader import TreeSatAISource
from mtljax.data.treesat.synthetic import write_synthetic_treesat


def _source_kwargs(config) -> dict[str, Any]:
  d = config.data
  return dict(
    resolution=d.resolution,
    l2_source=d.l2_source,
    age_source=d.age_source,
    side_csv=d.side_csv,
    multi_threshold=d.multi_threshold,
    val_fraction=d.val_fraction,
    split_seed=d.split_seed,
    # Only the image modalities the model uses are opened.
    modalities=tuple(m for m in ("aerial", "s1", "s2") if m in config.inputs),
    aerial_size=d.aerial_size,
    aerial_resize=d.get("aerial_resize", False),
  )


def _synthetic_kwargs(config) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(
    num_train=s.num_train, num_test=s.num_test, seed=s.seed, aerial_size=config.data.aerial_size
  )


DATASET = Dataset(
  name="treesat",
  source_cls=TreeSatAISource,
  write_synthetic=write_synthetic_treesat,
  source_kwargs=_source_kwargs,
  synthetic_kwargs=_synthetic_kwargs,
  label_hierarchy=label_hierarchy,
)
