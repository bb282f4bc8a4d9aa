"""CropYield (this project's format): pixel-wise yield and crop from Sentinel-2, weather and DEM.

``format``: the on-disk format (its docstring is the reference), its checks and the field split;
``reader``: ``CropYieldSource``; ``synthetic``: the generator with planted truth; ``maps``: the
yield-map pictures of a split's predictions. ``DATASET`` is its registry entry.
"""

from __future__ import annotations

from typing import Any

from mtljax.data import Dataset
from mtljax.data.cropyield.maps import yield_maps
from mtljax.data.cropyield.reader import CropYieldSource
from mtljax.data.cropyield.synthetic import write_synthetic_cropyield


def _source_kwargs(config) -> dict[str, Any]:
  d = config.data
  return dict(
    s2_max_steps=d.s2_max_steps,
    weather_max_steps=d.weather_max_steps,
    day_reference=d.day_reference,
    crops=tuple(d.crops),
    fractions=tuple(d.fractions),
    split_seed=d.split_seed,
  )


def _synthetic_kwargs(config) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(num_fields=s.num_fields, years=tuple(s.years), num_farms=s.num_farms, seed=s.seed)


DATASET = Dataset(
  name="cropyield",
  source_cls=CropYieldSource,
  write_synthetic=write_synthetic_cropyield,
  source_kwargs=_source_kwargs,
  synthetic_kwargs=_synthetic_kwargs,
  pictures_fn=yield_maps,
)
