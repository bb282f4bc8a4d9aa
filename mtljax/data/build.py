"""Config → data sources: the one place that maps `config.data` onto a dataset's reader.

`make_sources(config, workdir)` returns `({split: source}, synthetic_root)`. With an empty
`config.data.root`, the dataset's synthetic generator writes its real on-disk layout first
(into `config.data.synthetic.dir`, default `<workdir>/synthetic_data`; skipped when already
there with the same parameters) and `synthetic_root` is that folder; otherwise it is None.
Each dataset contributes two small functions below: the reader's keyword arguments and the
generator's, both read from the config.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections

from mtljax.data import get_dataset


def _treesat_source_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
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
  )


def _treesat_synthetic_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(
    num_train=s.num_train, num_test=s.num_test, seed=s.seed, aerial_size=config.data.aerial_size
  )


def _attribute_source_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  d = config.data
  kwargs = dict(image_size=d.image_size, val_fraction=d.val_fraction, split_seed=d.split_seed)
  if d.attributes:
    kwargs["attributes"] = tuple(d.attributes)
  return kwargs


def _cub_synthetic_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(
    num_train=s.num_train, num_test=s.num_test, seed=s.seed, image_size=config.data.image_size
  )


def _isic_synthetic_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(
    num_train=s.num_train,
    num_val=s.num_val,
    num_test=s.num_test,
    seed=s.seed,
    image_size=config.data.image_size,
  )


def _cropyield_source_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  d = config.data
  return dict(
    s2_max_steps=d.s2_max_steps,
    weather_max_steps=d.weather_max_steps,
    day_reference=d.day_reference,
    crops=tuple(d.crops),
    fractions=tuple(d.fractions),
    split_seed=d.split_seed,
  )


def _cropyield_synthetic_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(num_fields=s.num_fields, years=tuple(s.years), num_farms=s.num_farms, seed=s.seed)


def _benge_source_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
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


def _benge_synthetic_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(num_patches=s.num_patches, seed=s.seed, size=s.size, prefix=config.data.prefix)


def _facades_source_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  d = config.data
  return dict(
    image_size=d.image_size,
    lprus_keep=d.lprus_keep,
    fractions=tuple(d.fractions),
    split_seed=d.split_seed,
  )


def _facades_synthetic_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(
    num_images=s.num_images,
    num_blocks=s.num_blocks,
    image_size=config.data.image_size,
    cue_noise=s.cue_noise,
    label_noise=s.label_noise,
    seed=s.seed,
  )


_ADAPTERS: dict[str, tuple[Callable, Callable]] = {
  "treesat": (_treesat_source_kwargs, _treesat_synthetic_kwargs),
  "cub": (_attribute_source_kwargs, _cub_synthetic_kwargs),
  "isic2018": (_attribute_source_kwargs, _isic_synthetic_kwargs),
  "cropyield": (_cropyield_source_kwargs, _cropyield_synthetic_kwargs),
  "benge": (_benge_source_kwargs, _benge_synthetic_kwargs),
  "facades": (_facades_source_kwargs, _facades_synthetic_kwargs),
}


def make_sources(config: ml_collections.ConfigDict, workdir: str):
  spec = get_dataset(config.data.name)
  source_kwargs, synthetic_kwargs = _ADAPTERS[spec.name]
  root, synthetic_root = config.data.root, None
  if not root:
    root = config.data.synthetic.dir or os.path.join(workdir, "synthetic_data")
    synthetic_root = str(spec.write_synthetic(root, **synthetic_kwargs(config)))
    root = synthetic_root
  kwargs = source_kwargs(config)
  return {split: spec.source_cls(root, split, **kwargs) for split in spec.splits}, synthetic_root
