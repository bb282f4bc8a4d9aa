"""Synthetic CropYield data with planted truth, in this project's format (``format``)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data.cropyield.format import (
  COLUMNS,
  FIELDS_CSV,
  S2_BANDS,
  S2_FEATURES,
)
from mtljax.data.synthetic import Generator

GENERATOR_VERSION = 1

#: Planted truth. Per crop: share of fields, seeding day of year (and spread), season length,
#: green-up / senescence days since seeding, the critical window (days since seeding) in which
#: the pixel's vigour shows in the near-infrared bands, mean yield and its scale (t/ha), and an
#: offset of the SWIR bands.
_TRUTH_KEYS = ("share", "seeding_doy", "season", "up", "down", "window", "base", "scale", "swir")
_CROP_TRUTH = {
  crop: dict(zip(_TRUTH_KEYS, row))
  for crop, row in (
    ("corn", (0.28, 275, 150, 35, 120, (60, 95), 9.0, 1.8, 0.04)),
    ("soybean", (0.58, 320, 135, 30, 110, (70, 105), 3.2, 0.7, 0.0)),
    ("wheat", (0.14, 160, 165, 45, 140, (85, 120), 4.0, 0.9, -0.04)),
  )
}
#: Bands through which the pixel's vigour (hence the yield) shows: red edge and near infrared.
_VIGOUR_BANDS = ("B07", "B08", "B8A")
_SOIL = np.array(
  [0.06, 0.08, 0.11, 0.14, 0.17, 0.19, 0.20, 0.22, 0.23, 0.22, 0.30, 0.26], np.float32
)
_VEG = np.array(
  [0.03, 0.04, 0.07, 0.04, 0.10, 0.25, 0.33, 0.38, 0.40, 0.38, 0.20, 0.10], np.float32
)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


#: The generator: the synthetic CropYield root's parameters and their defaults.
SYNTHETIC = Generator(
  # The generator's name before data/ had packages: a cache key in SYNTHETIC.txt, kept so
  # folders written before stay valid (and the written files byte-identical).
  key="mtljax.data.cropyield.write_synthetic_cropyield",
  version=GENERATOR_VERSION,
  defaults=dict(
    num_fields=60, years=(2019, 2020, 2021, 2022), num_farms=12, min_side=8, max_side=14, seed=0
  ),
  description="Synthetic CropYield dataset (mtljax format, planted truth)",
)


def write_synthetic_cropyield(
  root: str | os.PathLike, *, overwrite: bool = False, **params
) -> Path:
  """Write a synthetic CropYield root (the format of the module docstring) with planted truth.

  Planted structure (also in ``truth.json``): each field has one crop (shares as in Table 4 of
  the paper) whose phenology (green-up, senescence, season length, a SWIR offset) shapes all
  12 bands over the season. Each pixel has a vigour = field level + smooth within-field pattern
  + DEM terms (wetness index up, slope down); the vigour shows *only* in the bands B07, B08, B8A
  and *only* inside the crop's critical window of days after seeding. Yield = crop base + crop
  scale × (0.65 × vigour + 0.25 × weather + 0.1 × DEM) + noise, where the weather term is the
  precipitation in the critical window minus heat stress (tmax > 32 deg C) there, per farm and
  year. Cloudy scenes (scene class 8/9, bright flat spectra) occur at random.

  Args:
    root: target folder; absent, empty, or written by a generator before (see ``write_once``).
    overwrite: regenerate even when the parameters match.
    **params: (defaults in ``SYNTHETIC.defaults``) num_fields (at least 3), years, num_farms,
      min_side and max_side (a field's bounding box, pixels), seed.

  Returns:
    ``Path(root)``.
  """
  args = SYNTHETIC.arguments(params)
  if args["num_fields"] < 3:
    raise ValueError("num_fields must be >= 3 (one per split)")
  return SYNTHETIC.write(root, args, _generate, overwrite=overwrite)


def _generate(out: Path, params: dict[str, Any]) -> None:
  rng = np.random.default_rng(params["seed"])
  out.mkdir(parents=True)
  (out / "fields").mkdir()
  years = params["years"]
  crops = list(_CROP_TRUTH)
  shares = np.array([_CROP_TRUTH[c]["share"] for c in crops])
  farm_elev = rng.uniform(80, 300, params["num_farms"])
  # Weather per (farm, year, crop season): daily series with a seasonal cycle and random storms.
  rows = []
  for k in range(params["num_fields"]):
    crop = crops[int(rng.choice(len(crops), p=shares / shares.sum()))]
    ct = _CROP_TRUTH[crop]
    year = int(years[k % len(years)])
    farm = int(rng.integers(params["num_farms"]))
    seeding = np.datetime64(f"{year}-01-01") + int(ct["seeding_doy"] + rng.integers(-12, 13) - 1)
    season = int(ct["season"] + rng.integers(-10, 11))
    harvest = seeding + season
    fid = f"F{k:04d}"
    rows.append((fid, f"farm{farm:02d}", year, crop, str(seeding), str(harvest)))
    _write_field(
      out / "fields" / fid,
      rng,
      ct,
      seeding,
      season,
      farm_elev[farm],
      np.random.default_rng([params["seed"], farm, year, crops.index(crop)]),
      params,
    )
  with open(out / FIELDS_CSV, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(COLUMNS)
    w.writerows(rows)
  truth = {
    "s2_relevant_features": list(_VIGOUR_BANDS),
    "s2_relevant_indices": [S2_FEATURES.index(b) for b in _VIGOUR_BANDS],
    # The crop (hence the crop's base yield) shows in the phenology of all bands and in a
    # crop-specific SWIR offset: these bands matter for the yield through the crop.
    "s2_crop_features": ["B11", "B12"],
    "critical_window_days_since_seeding": {c: list(v["window"]) for c, v in _CROP_TRUTH.items()},
    "weather_relevant_features": ["tmax", "precipitation"],
    "dem_relevant_features": ["slope", "twi"],
    "yield_model": "base_crop + scale_crop * (0.65 vigour + 0.25 weather + 0.1 dem) + noise",
    "crops": {c: {k: v for k, v in t.items()} for c, t in _CROP_TRUTH.items()},
  }
  (out / "truth.json").write_text(json.dumps(truth, indent=1))


def _write_field(folder: Path, rng, ct, seeding, season, elev0, wrng, params) -> None:
  folder.mkdir()
  h, w = (int(v) for v in rng.integers(params["min_side"], params["max_side"] + 1, size=2))
  yy, xx = np.mgrid[0:h, 0:w]
  # An irregular outline: drop a random corner region.
  cut = (xx / w + yy / h) > rng.uniform(1.3, 2.2)
  xs, ys = xx[~cut].astype(np.int32), yy[~cut].astype(np.int32)
  p = len(xs)
  # DEM: a tilted plane with a bump; slope, aspect, curvature, TWI derived from it.
  gx, gy = rng.normal(0, 0.15, 2)
  bump = rng.normal(0, 1.5) * np.exp(
    -((xs - rng.uniform(0, w)) ** 2 + (ys - rng.uniform(0, h)) ** 2) / (0.3 * h * w)
  )
  elev = elev0 + gx * xs + gy * ys + bump
  slope = np.degrees(np.arctan(np.hypot(gx, gy) + np.abs(bump) * 0.05 + rng.gamma(2, 0.05, p)))
  aspect = (np.degrees(np.arctan2(gy, gx)) + rng.normal(0, 20, p)) % 360
  curvature = -bump * 0.1 + rng.normal(0, 0.05, p)
  twi = 8 - 0.8 * (slope - slope.mean()) + 0.5 * curvature * 10 + rng.normal(0, 0.5, p)
  dem = np.stack([elev, aspect, curvature, slope, twi], -1).astype(np.float32)
  dem_term = 0.5 * (twi - 8) / 1.0 - 0.5 * (slope - 7) / 3
  # Vigour: field level + a smooth within-field pattern + DEM.
  pattern = sum(
    rng.normal(0, 0.5)
    * np.cos(
      2 * np.pi * (rng.uniform(0.05, 0.2) * xs + rng.uniform(0.05, 0.2) * ys) + rng.uniform(0, 6.3)
    )
    for _ in range(3)
  )
  vigour = rng.normal(0, 0.6) + pattern + 0.5 * dem_term + rng.normal(0, 0.2, p)
  # Weather: daily, seeding to harvest.
  days = np.arange(season + 1)
  doy = ((seeding.astype(np.int64) - np.datetime64("1970-01-01").astype(np.int64)) + days) % 365
  tmean = 18 + 9 * np.cos(2 * np.pi * (doy - 15) / 365) + wrng.normal(0, 2.5, len(days))
  tmax = tmean + 6 + wrng.normal(0, 1.5, len(days))
  tmin = tmean - 6 + wrng.normal(0, 1.5, len(days))
  precip = np.where(
    wrng.random(len(days)) < 0.2, wrng.gamma(1.5, 8, len(days)), 0.0
  ) * wrng.uniform(0.4, 1.6)
  w0, w1 = ct["window"]
  win = (days >= w0) & (days <= w1)
  weather_term = (precip[win].sum() - 80) / 40 - 0.5 * np.mean(np.maximum(tmax[win] - 32, 0))
  weather = np.stack([tmin, tmax, tmean, precip], -1).astype(np.float32)
  # Sentinel-2: a scene every 5 days, some missing (irregular), some cloudy.
  s2_days = np.arange(int(rng.integers(0, 5)), season + 1, 5)
  s2_days = s2_days[rng.random(len(s2_days)) > 0.2]
  t = len(s2_days)
  veg = ct["up"], ct["down"]
  f_veg = 0.85 * (_sigmoid((s2_days - veg[0]) / 6) - _sigmoid((s2_days - veg[1]) / 8))  # [T]
  bump_t = np.exp(-0.5 * ((s2_days - 0.5 * (w0 + w1)) / (0.3 * (w1 - w0))) ** 2)  # [T]
  s2 = np.zeros((p, t, 25), np.float32)
  bands = (1 - f_veg)[None, :, None] * _SOIL + f_veg[None, :, None] * _VEG
  bands = np.broadcast_to(bands, (p, t, 12)).copy()
  bands[..., 10:12] += ct["swir"] * f_veg[None, :, None]
  vig_idx = [S2_BANDS.index(b) for b in _VIGOUR_BANDS]
  bands[..., vig_idx] += (0.06 * vigour[:, None] * bump_t[None, :])[..., None]
  bands += rng.normal(0, 0.01, bands.shape)
  scl = np.where(f_veg > 0.2, 4, 5)[None, :].repeat(p, 0)
  cloudy = rng.random(t) < 0.12
  for j in np.flatnonzero(cloudy):
    cover = rng.random(p) < rng.uniform(0.3, 1.0)
    bands[cover, j] = rng.uniform(0.3, 0.5) + rng.normal(0, 0.02, (cover.sum(), 12))
    scl[cover, j] = rng.choice([8, 9], cover.sum())
  s2[..., :12] = bands
  s2[..., 12:] = np.eye(13, dtype=np.float32)[scl]
  yld = (
    ct["base"]
    + ct["scale"] * (0.65 * vigour + 0.25 * weather_term + 0.1 * dem_term)
    + rng.normal(0, 0.1 * ct["scale"], p)
  )
  yld = np.maximum(yld, 0.2).astype(np.float32)
  yld[rng.random(p) < 0.03] = np.nan  # harvester gaps
  dates = lambda d: (seeding + d).astype("datetime64[D]")
  np.save(folder / "xy.npy", np.stack([xs, ys], -1).astype(np.int32))
  np.save(folder / "s2.npy", s2)
  np.save(folder / "s2_dates.npy", dates(s2_days))
  np.save(folder / "weather.npy", weather)
  np.save(folder / "weather_dates.npy", dates(days))
  np.save(folder / "dem.npy", dem)
  np.save(folder / "yield.npy", yld)
