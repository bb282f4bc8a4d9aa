"""BEN-GE (Mommert et al., IGARSS 2023): Sentinel-1/2 with land cover, elevation, climate zone,
season and weather.

``files``: vocabularies, CSV and raster reading; ``reader``: ``BenGeSource`` (its docstring has
the layout); ``synthetic``: the generator with planted truth. ``DATASET`` is its registry entry.
"""

from __future__ import annotations

from typing import Any

from mtljax.data import Dataset
from mtljax.data.benge.reader import BenGeSource
from mtljax.data.benge.synthetic import write_synthetic_benge


def _source_kwargs(config) -> dict[str, Any]:
  d = config.data
  return dict(
    prefix=d.prefix,
    image_size=d.image_size,
    weather_time=d.weather_time,
    climate_zones=tuple(d.climate_zones),
    split_fallback=d.split_fallback,
    split_seed=d.split_seed,
    stack_elevation=d.stack_elevation,
    # Only the rasters the run uses are opened.
    modalities=tuple(m for m in ("s1", "s2", "elevation") if m in config.inputs),
    dense_targets=tuple(t for t in ("lulc", "elevation") if t in config.tasks),
  )


def _synthetic_kwargs(config) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(num_patches=s.num_patches, seed=s.seed, size=s.size, prefix=config.data.prefix)


DATASET = Dataset(
  name="benge",
  source_cls=BenGeSource,
  write_synthetic=write_synthetic_benge,
  source_kwargs=_source_kwargs,
  synthetic_kwargs=_synthetic_kwargs,
)
