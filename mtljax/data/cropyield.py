"""CropYield: pixel-wise yield regression from Sentinel-2, weather and DEM (this project's format).

The real CropYield dataset (mtl-explainability paper, §3 and Appendix A: about 500 corn,
soybean and wheat fields in Northern Argentina, 2017-2023) is confidential, so this module
defines a plain on-disk format that a field user can produce with numpy alone, a strict reader
for it, the grouped/stratified split, and a generator of synthetic data with planted truth in
exactly that format (``write_synthetic_cropyield``).

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
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtljax.data.treesat import DataError, example_index

__all__ = [
  "CROPS",
  "DEM_FEATURES",
  "S2_FEATURES",
  "WEATHER_FEATURES",
  "CropYieldSource",
  "split_fields",
  "write_synthetic_cropyield",
]

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
_COLUMNS = ("field_id", "farm_id", "year", "crop", "seeding_date", "harvest_date")
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
      "(see mtljax/data/cropyield.py)"
    )
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = set(_COLUMNS) - set(reader.fieldnames or ())
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


def _check_field(folder: Path, row: dict[str, Any]) -> dict[str, np.ndarray]:
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


class CropYieldSource:
  """Random-access pixel examples of one split of a CropYield root (format: module docstring).

  Args:
    root: the folder holding ``fields.csv`` and ``fields/``.
    split: ``"train"``, ``"val"`` or ``"test"`` (``split_fields``, 60/20/20 by default).
    s2_max_steps, weather_max_steps: padded lengths of the time series.
    day_reference: ``"seeding"`` (days since seeding) or ``"harvest"`` (days to harvest).
    crops: keep only fields of these crops (empty = all; the split is made first, so a
      single-crop run sees the same fields as the all-crop one: Table 6, rows 1.a-1.c).
    fractions, split_seed: the split (see ``split_fields``).

  Attributes:
    names: one name per example, ``<field_id>/<x>_<y>``.
    groups: the field id of each example (str [N]); written as ``group`` with the predictions.
    fields: the split's fields (rows of ``fields.csv``), ``field_index`` [N] into it.
  """

  def __init__(
    self,
    root: str | os.PathLike,
    split: str,
    *,
    s2_max_steps: int = 48,
    weather_max_steps: int = 200,
    day_reference: str = "harvest",
    crops: Sequence[str] = (),
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    split_seed: int = 0,
  ):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if day_reference not in ("seeding", "harvest"):
      raise ValueError(f"day_reference must be 'seeding' or 'harvest', got {day_reference!r}")
    unknown = [c for c in crops if c not in CROPS]
    if unknown:
      raise DataError(f"config.data.crops: unknown crops {unknown}; expected some of {CROPS}")
    self.root, self.split = Path(root).expanduser(), split
    self.s2_max_steps, self.weather_max_steps = int(s2_max_steps), int(weather_max_steps)
    self.day_reference = day_reference
    rows = read_fields_csv(self.root)
    assign = split_fields([r["year"] for r in rows], fractions, split_seed)
    keep = [
      i
      for i, r in enumerate(rows)
      if assign[i] == SPLITS.index(split) and (not crops or r["crop"] in crops)
    ]
    self.fields = [rows[i] for i in keep]
    self._arrays, field_index, pixel, names = [], [], [], []
    for f, row in enumerate(self.fields):
      folder = self.root / "fields" / row["field_id"]
      if not folder.is_dir():
        raise DataError(
          f"{folder}: missing folder of field {row['field_id']!r} listed in "
          f"{self.root / FIELDS_CSV}"
        )
      a = _check_field(folder, row)
      for key, limit, cfg in (
        ("s2", self.s2_max_steps, "s2_max_steps"),
        ("weather", self.weather_max_steps, "weather_max_steps"),
      ):
        steps = a[key].shape[1] if key == "s2" else a[key].shape[0]
        if steps > limit:
          raise DataError(
            f"{folder / (key + '.npy')} (field {row['field_id']!r}): {steps} "
            f"time steps, more than config.data.{cfg}={limit}; raise it"
          )
      self._arrays.append(a)
      ok = np.flatnonzero(np.isfinite(np.asarray(a["yield"])))
      xy = np.asarray(a["xy"])
      field_index.append(np.full(len(ok), f, np.int32))
      pixel.append(ok.astype(np.int64))
      names += [f"{row['field_id']}/{xy[p, 0]}_{xy[p, 1]}" for p in ok]
    self.field_index = np.concatenate(field_index) if field_index else np.zeros(0, np.int32)
    self.pixel = np.concatenate(pixel) if pixel else np.zeros(0, np.int64)
    self.names = names
    self.groups = np.asarray([self.fields[f]["field_id"] for f in self.field_index], dtype=str)
    self._crop = np.asarray(
      [CROPS.index(self.fields[f]["crop"]) for f in self.field_index], np.int32
    )
    self._year = np.asarray([self.fields[f]["year"] for f in self.field_index], np.int32)
    self._series_cache: dict[int, dict[str, np.ndarray]] = {}

  # -------------------------------------------------------------------------------- contract
  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    """Inputs an example carries: name -> {kind, shape, dtype, channels}."""
    return {
      "s2": {
        "kind": "time_series",
        "shape": (self.s2_max_steps, len(S2_FEATURES)),
        "dtype": "float32",
        "channels": S2_FEATURES,
      },
      "weather": {
        "kind": "time_series",
        "shape": (self.weather_max_steps, len(WEATHER_FEATURES)),
        "dtype": "float32",
        "channels": WEATHER_FEATURES,
      },
      "dem": {
        "kind": "tabular",
        "shape": (len(DEM_FEATURES),),
        "dtype": "float32",
        "channels": DEM_FEATURES,
      },
      "crop": {"kind": "tabular", "shape": (len(CROPS),), "dtype": "float32", "channels": CROPS},
    }

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    """Targets an example carries: name -> {kind, shape, dtype, num_classes, class_names}."""
    return {
      "yield": {
        "kind": "regression",
        "shape": (),
        "dtype": "float32",
        "num_outputs": 1,
        "units": "t/ha",
      },
      "crop": {
        "kind": "classification",
        "shape": (),
        "dtype": "int32",
        "num_classes": len(CROPS),
        "class_names": CROPS,
      },
      "dem": {
        "kind": "regression",
        "shape": (len(DEM_FEATURES),),
        "dtype": "float32",
        "num_outputs": len(DEM_FEATURES),
        "channels": DEM_FEATURES,
      },
    }

  def label_arrays(self) -> dict[str, dict[str, np.ndarray]]:
    """All labels of the split: ``{"targets": {task: [N, ...]}, "mask": {task: [N]}}``."""
    y = np.empty(len(self), np.float32)
    dem = np.empty((len(self), len(DEM_FEATURES)), np.float32)
    for f, a in enumerate(self._arrays):
      sel = self.field_index == f
      y[sel] = np.asarray(a["yield"])[self.pixel[sel]]
      dem[sel] = np.asarray(a["dem"])[self.pixel[sel]]
    ones = np.ones(len(self), np.float32)
    return {
      "targets": {"yield": y, "crop": self._crop.copy(), "dem": dem},
      "mask": {"yield": ones, "crop": ones.copy(), "dem": ones.copy()},
    }

  def prediction_meta(self) -> dict[str, np.ndarray]:
    """Per-example context saved beside the predictions as ``meta/<key>``."""
    return {
      "year": self._year,
      "crop": self._crop,
      "x": np.asarray(
        [self._arrays[f]["xy"][p, 0] for f, p in zip(self.field_index, self.pixel)], np.int32
      ),
      "y": np.asarray(
        [self._arrays[f]["xy"][p, 1] for f, p in zip(self.field_index, self.pixel)], np.int32
      ),
    }

  def metric_strata(self) -> dict[str, np.ndarray]:
    """Regression metrics are also reported per crop (Table 6): ``yield/r2_corn`` etc."""
    return {"": np.asarray(CROPS)[self._crop]}

  # -------------------------------------------------------------------------------- examples
  def _days(self, dates: np.ndarray, row: dict[str, Any]) -> np.ndarray:
    d = dates.astype(np.int64)
    if self.day_reference == "seeding":
      return (d - row["seeding"].astype(np.int64)).astype(np.int32)
    return (row["harvest"].astype(np.int64) - d).astype(np.int32)

  @staticmethod
  def _pad(values: np.ndarray, days: np.ndarray, length: int) -> dict[str, np.ndarray]:
    t, f = values.shape
    out = {
      "values": np.zeros((length, f), np.float32),
      "days": np.zeros(length, np.int32),
      "mask": np.zeros(length, np.int32),
    }
    out["values"][:t] = values
    out["days"][:t] = days
    out["mask"][:t] = 1
    return out

  def _field_series(self, f: int) -> dict[str, np.ndarray]:
    """Field-level parts of an example (dates, weather), computed once per field."""
    cached = self._series_cache.get(f)
    if cached is None:
      a, row = self._arrays[f], self.fields[f]
      cached = {
        "s2_days": self._days(np.asarray(a["s2_dates"]), row),
        "weather": self._pad(
          np.asarray(a["weather"], np.float32),
          self._days(np.asarray(a["weather_dates"]), row),
          self.weather_max_steps,
        ),
      }
      self._series_cache[f] = cached
    return cached

  def __len__(self) -> int:
    return len(self.pixel)

  def __getitem__(self, index: int) -> dict[str, dict[str, Any]]:
    i = example_index(index, len(self))
    f, p = int(self.field_index[i]), int(self.pixel[i])
    a, series = self._arrays[f], self._field_series(f)
    crop = int(self._crop[i])
    onehot = np.zeros(len(CROPS), np.float32)
    onehot[crop] = 1.0
    dem = np.asarray(a["dem"][p], np.float32)
    weather = series["weather"]
    return {
      "inputs": {
        "s2": self._pad(np.asarray(a["s2"][p], np.float32), series["s2_days"], self.s2_max_steps),
        "weather": {k: v.copy() for k, v in weather.items()},
        "dem": dem,
        "crop": onehot,
      },
      "targets": {"yield": np.float32(a["yield"][p]), "crop": np.int32(crop), "dem": dem.copy()},
      "mask": {"yield": np.float32(1.0), "crop": np.float32(1.0), "dem": np.float32(1.0)},
      "meta": {
        "index": np.asarray(i, np.int32),
        "field": np.asarray(f, np.int32),
        "year": np.asarray(self._year[i], np.int32),
        "crop": np.asarray(crop, np.int32),
      },
    }

  def field_pixels(self, f: int) -> np.ndarray:
    """Example indices of field ``f`` of this split."""
    return np.flatnonzero(self.field_index == f)

  def __repr__(self) -> str:
    return (
      f"CropYieldSource(root={str(self.root)!r}, split={self.split!r}, fields={len(self.fields)}, "
      f"pixels={len(self)})"
    )


# --------------------------------------------------------------------------------------------------
# Synthetic data with planted truth
# --------------------------------------------------------------------------------------------------
GENERATOR_VERSION = 1

#: Planted truth. Per crop: share of fields, seeding day of year (and spread), season length,
#: green-up / senescence days since seeding, the critical window (days since seeding) in which
#: the pixel's vigour shows in the near-infrared bands, mean yield and its scale (t/ha).
_CROP_TRUTH = {
  "corn": dict(
    share=0.28,
    seeding_doy=275,
    season=150,
    up=35,
    down=120,
    window=(60, 95),
    base=9.0,
    scale=1.8,
    swir=0.04,
  ),
  "soybean": dict(
    share=0.58,
    seeding_doy=320,
    season=135,
    up=30,
    down=110,
    window=(70, 105),
    base=3.2,
    scale=0.7,
    swir=0.0,
  ),
  "wheat": dict(
    share=0.14,
    seeding_doy=160,
    season=165,
    up=45,
    down=140,
    window=(85, 120),
    base=4.0,
    scale=0.9,
    swir=-0.04,
  ),
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


def write_synthetic_cropyield(
  root: str | os.PathLike,
  *,
  num_fields: int = 60,
  years: Sequence[int] = (2019, 2020, 2021, 2022),
  num_farms: int = 12,
  min_side: int = 8,
  max_side: int = 14,
  seed: int = 0,
  overwrite: bool = False,
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

  Returns:
    ``Path(root)``.
  """
  from mtljax.data.synthetic import write_once

  if num_fields < 3:
    raise ValueError("num_fields must be >= 3 (one per split)")
  params = {
    "generator": "mtljax.data.cropyield.write_synthetic_cropyield",
    "version": GENERATOR_VERSION,
    "num_fields": int(num_fields),
    "years": [int(y) for y in years],
    "num_farms": int(num_farms),
    "min_side": int(min_side),
    "max_side": int(max_side),
    "seed": int(seed),
  }
  return write_once(Path(root).expanduser(), params, _generate, overwrite=overwrite)


def _generate(out: Path, params: dict[str, Any]) -> None:
  from mtljax.data.synthetic import MARKER, marker_text

  t0 = time.perf_counter()
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
    w.writerow(_COLUMNS)
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
  (out / MARKER).write_text(
    marker_text(
      "Synthetic CropYield dataset (mtljax format, planted truth)", params, time.perf_counter() - t0
    )
  )


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


def load_truth(root: str | os.PathLike) -> dict[str, Any]:
  """The planted truth of a synthetic root (``truth.json``)."""
  return json.loads((Path(root) / "truth.json").read_text())
