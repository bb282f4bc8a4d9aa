"""BEN-GE (Mommert et al., IGARSS 2023): Sentinel-1/2 with land cover, elevation, climate zone,
season and weather.

``files``: vocabularies, CSV and raster reading; ``reader``: ``BenGeSource`` (its docstring has
the layout); ``synthetic``: the generator with planted truth. ``DATASET`` is its registry entry.
"""

from __future__ import annotations

from mtljax.data import Dataset
from mtljax.data.benge.files import read_input
from mtljax.data.benge.reader import BenGeSource
from mtljax.data.benge.synthetic import write_synthetic_benge

DATASET = Dataset(
  "benge", BenGeSource, write_synthetic_benge,
  source_keys=("prefix", "image_size", "weather_time", "climate_zones", "split_fallback",
               "split_seed", "stack_elevation"),
  # Only the rasters the run uses are opened.
  used={"modalities": ("inputs", ("s1", "s2", "elevation")),
        "dense_targets": ("tasks", ("lulc", "elevation"))},
  synthetic_keys=("num_patches", "seed", "size"), synthetic_data_keys=("prefix",),
  read_input=read_input,  # a table of new inputs: patch folders and DEM files, read as here
)  # fmt: skip
