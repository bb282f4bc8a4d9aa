"""CropYield (this project's format): pixel-wise yield and crop from Sentinel-2, weather and DEM.

``format``: the on-disk format (its docstring is the reference), its checks and the field split;
``reader``: ``CropYieldSource``; ``synthetic``: the generator with planted truth; ``maps``: the
yield-map pictures of a split's predictions. ``DATASET`` is its registry entry.
"""

from __future__ import annotations

from mtljax.data import Dataset
from mtljax.data.cropyield.maps import yield_maps
from mtljax.data.cropyield.reader import CropYieldSource
from mtljax.data.cropyield.synthetic import write_synthetic_cropyield

DATASET = Dataset(
  "cropyield", CropYieldSource, write_synthetic_cropyield,
  source_keys=("s2_max_steps", "weather_max_steps", "day_reference", "crops", "fractions",
               "split_seed"),
  synthetic_keys=("num_fields", "years", "num_farms", "seed"),
  pictures_fn=yield_maps,
)  # fmt: skip
