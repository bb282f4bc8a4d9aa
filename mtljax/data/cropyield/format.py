"""CropYield: pixel-wise yield regression from Sentinel-2, weather and DEM (this project's format).

The real CropYield dataset (mtl-explainability paper, §3 and Appendix A: about 500 corn,
soybean and wheat fields in Northern Argentina, 2017-2023) is confidential, so this module
defines a plain on-disk format that a field user can produce with numpy alone (this module: the
format, its checks and the grouped/stratified split), a strict reader for it (``reader``) and a
generator of synthetic data with planted truth in exactly that format (``synthetic``).

On-disk format::

    ROOT/
      fields.csv                 one row per field (header required; extra columns are ignored):
                                   field_id      unique name, also the folder name under fields/
                                   farm_id       farm the field belongs to
                                   year          crop season (year of seeding), e.g. 2021
                                   crop          corn | soybean | wheat
                                   seeding_date  YYYY-MM-DD
                                   harvest_date  YYYY-MM-DD (after seeding_date)
      fields/<field_id>/         one folder of .npy files per field (P pixels of 10 m):
        xy.npy                   int32   [P, 2]    pixel column x and row y inside the field grid
        s2.npy                   float32 [P, T, 25] Sentinel-2 L2A per observation: 12 bands
                                                   (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12,
                                                   reflectance) then 13 scene-classification
                                                   indicator channels (0/1); NaN = no value
        s2_dates.npy             datetime64[D] [T] observation dates, strictly increasing
        weather.npy              float32 [D, 4]    daily field weather: tmin, tmax, tmean (deg C),
                                                   precipitation (mm)
        weather_dates.npy        datetime64[D] [D] the days, strictly increasing
        dem.npy                  float32 [P, 5]    elevation (m), aspect (deg), curvature, slope (deg),
                                                   topographic wetness index
        yield.npy                float32 [P]       harvester yield in t/ha, NaN = no yield value

T (observations) and D (days) differ between fields; S2 dates are the field's scenes from seeding
to harvest (irregular: cloudy scenes may be dropped), weather spans seeding to harvest.

Why .npy folders rather than one .npz per field or parquet: every array opens memory-mapped
(``np.load(mmap_mode="r")``), so a shuffled pixel stream over millions of pixels reads one pixel's
rows without loading a field (an .npz member is read whole), the arrays keep their natural
ragged-per-field shapes (parquet would need list columns), dates are plain ``datetime64[D]`` and
writing a field is ``np.save`` per array, with no dependency beyond numpy.

One example is one pixel with a valid yield (pixels whose yield is NaN are skipped)::

    inputs:  s2      {"values": float32 [T_s2, 25], "days": int32 [T_s2], "mask": int32 [T_s2]}
             weather {"values": float32 [T_w, 4],   "days": int32 [T_w],  "mask": int32 [T_w]}
             dem     float32 [5]
             crop    float32 [3] (one-hot, corn/soybean/wheat)
    targets: yield float32 [] (t/ha), crop int32 [] (class), dem float32 [5]
    mask:    1.0 per task
    meta:    index, field (position in fields.csv), year, crop (int32 [])

Time series are padded to ``s2_max_steps`` / ``weather_max_steps`` (``mask`` 1 = real step,
padded values 0); ``days`` is each step's day counted from seeding (``day_reference="seeding"``)
or to harvest (``"harvest"``, the paper's choice, Appendix B.1). A field longer than the maximum
is an error naming the field and the config key to raise.

Split (Appendix A): 60/20/20 of the *fields* (no field in two splits), stratified by year: the
fields of every year are dealt into train/val/test in those proportions by a seeded permutation.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtljax.data.source import DataError, inside_root

CROPS: tuple[str, ...] = ("corn", "soybean", "wheat")
S2_BANDS: tuple[str, ...] = (
  "B01",
  "B02",
  "B03",
  "B04",
  "B05",
  "B06",
  "B07",
  "B08",
  "B8A",
  "B09",
  "B11",
  "B12",
)
S2_FEATURES: tuple[str, ...] = S2_BANDS + tuple(f"scl_{i}" for i in range(13))
WEATHER_FEATURES: tuple[str, ...] = ("tmin", "tmax", "tmean", "precipitation")
DEM_FEATURES: tuple[str, ...] = ("elevation", "aspect", "curvature", "slope", "twi")
FIELDS_CSV = "fields.csv"
COLUMNS = ("field_id", "farm_id", "year", "crop", "seeding_date", "harvest_date")
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------------
def split_fields(
  years: Sequence[int], fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> np.ndarray:
  """Assign each field to a split, stratified by year: int [F] with 0 train, 1 val, 2 test.

  The fields of each year are permuted (seeded by ``seed`` and the year) and cut at the
  cumulative fractions; a year with at least three fields puts at least one in every split.
  """
  years = np.asarray(years)
  frac = np.asarray(fractions, np.float64)
  if frac.shape != (3,) or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
    raise ValueError(
      f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
    )
  out = np.zeros(len(years), np.int32)
  for year in np.unique(years):
    idx = np.flatnonzero(years == year)
    idx = idx[np.random.default_rng([int(seed), int(year)]).permutation(len(idx))]
    n = len(idx)
    n_val, n_test = int(round(frac[1] * n)), int(round(frac[2] * n))
    if n >= 3:
      n_val, n_test = max(n_val, 1 if frac[1] > 0 else 0), max(n_test, 1 if frac[2] > 0 else 0)
    n_train = max(n - n_val - n_test, 0)
    out[idx[n_train : n_train + n_val]] = 1
    out[idx[n_train + n_val :]] = 2
  return out


# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------
def _date(text: str, where: str) -> np.datetime64:
  try:
    return np.datetime64(dt.date.fromisoformat(text.strip()), "D")
  except ValueError:
    raise DataError(f"{where}: {text!r} is not a date YYYY-MM-DD") from None


def read_fields_csv(root: Path) -> list[dict[str, Any]]:
  """The rows of ``fields.csv``, checked (types, crops, dates, unique ids)."""
  path = root / FIELDS_CSV
  if not path.is_file():
    raise DataError(
      f"{path}: not found; a CropYield root holds fields.csv and fields/<field_id>/ "
      "(see mtljax/data/cropyield/format.py)"
    )
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = set(COLUMNS) - set(reader.fieldnames or ())
    if missing:
      raise DataError(f"{path}: header lacks columns {sorted(missing)} (found {reader.fieldnames})")
    rows = []
    for line, r in enumerate(reader, start=2):
      where = f"{path}:{line} (field {r['field_id']!r})"
      crop = r["crop"].strip().lower()
      if crop not in CROPS:
        raise DataError(f"{where}: unknown crop {r['crop']!r}; expected one of {CROPS}")
      try:
        year = int(r["year"])
      except ValueError:
        raise DataError(f"{where}: year {r['year']!r} is not an integer") from None
      seeding = _date(r["seeding_date"], f"{where} seeding_date")
      harvest = _date(r["harvest_date"], f"{where} harvest_date")
      inside_root(root, root / "fields", r["field_id"].strip(), f"{path}:{line}")
      if harvest <= seeding:
        raise DataError(f"{where}: harvest_date {harvest} is not after seeding_date {seeding}")
      rows.append(
        {
          "field_id": r["field_id"].strip(),
          "farm_id": r["farm_id"].strip(),
          "year": year,
          "crop": crop,
          "seeding": seeding,
          "harvest": harvest,
        }
      )
  ids = [r["field_id"] for r in rows]
  dup = sorted({i for i in ids if ids.count(i) > 1})
  if dup:
    raise DataError(f"{path}: field ids occur more than once: {dup[:5]}")
  if not rows:
    raise DataError(f"{path}: no fields")
  return rows


def _load(folder: Path, name: str) -> np.ndarray:
  path = folder / f"{name}.npy"
  if not path.is_file():
    raise DataError(
      f"{path}: missing (every field folder holds xy, s2, s2_dates, weather, "
      "weather_dates, dem and yield .npy files)"
    )
  try:
    return np.load(path, mmap_mode="r", allow_pickle=False)
  except ValueError as e:
    raise DataError(f"{path}: not a plain .npy array ({e})") from None


def check_field(folder: Path, row: dict[str, Any]) -> dict[str, np.ndarray]:
  """Open one field's arrays (memory-mapped) and check their shapes, dtypes and dates."""
  a = {
    k: _load(folder, k)
    for k in ("xy", "s2", "s2_dates", "weather", "weather_dates", "dem", "yield")
  }
  fid = row["field_id"]

  def bad(name, msg):
    return DataError(f"{folder / (name + '.npy')} (field {fid!r}): {msg}")

  p = a["yield"].shape[0] if a["yield"].ndim == 1 else -1
  if p < 0:
    raise bad("yield", f"shape {a['yield'].shape}, expected [P]")
  expected = {"xy": (p, 2), "dem": (p, len(DEM_FEATURES))}
  for k, shape in expected.items():
    if a[k].shape != shape:
      raise bad(k, f"shape {a[k].shape}, expected {shape} (P={p} pixels from yield.npy)")
  if a["s2"].ndim != 3 or a["s2"].shape[0] != p or a["s2"].shape[2] != len(S2_FEATURES):
    raise bad(
      "s2",
      f"shape {a['s2'].shape}, expected [P={p}, T, {len(S2_FEATURES)}] "
      f"(12 bands + 13 scene-classification indicators)",
    )
  if a["weather"].ndim != 2 or a["weather"].shape[1] != len(WEATHER_FEATURES):
    raise bad(
      "weather",
      f"shape {a['weather'].shape}, expected [D, {len(WEATHER_FEATURES)}] "
      f"({', '.join(WEATHER_FEATURES)})",
    )
  for k, n in (("s2_dates", a["s2"].shape[1]), ("weather_dates", a["weather"].shape[0])):
    d = a[k]
    if d.dtype != np.dtype("datetime64[D]"):
      raise bad(k, f"dtype {d.dtype}, expected datetime64[D]")
    if d.shape != (n,):
      raise bad(k, f"shape {d.shape}, expected ({n},) (one date per step)")
    if n == 0:
      raise bad(k, "no dates")
    if np.any(np.diff(d.astype(np.int64)) <= 0):
      raise bad(k, "dates are not strictly increasing")
  return a
