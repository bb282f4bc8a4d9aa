"""The CropYield reader: one split's pixel examples (the format: ``mtljax.data.cropyield.format``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtljax.data.cropyield.format import (
  CROPS,
  DEM_FEATURES,
  FIELDS_CSV,
  S2_FEATURES,
  SPLITS,
  WEATHER_FEATURES,
  check_field,
  read_fields_csv,
  split_fields,
)
from mtljax.data.source import DataError, check_option, example_index


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
    check_option("split", split, SPLITS)
    check_option("day_reference", day_reference, ("seeding", "harvest"))
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
      a = check_field(folder, row)
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

  def planted_truth(self) -> dict[str, Any] | None:
    """What the synthetic generator planted (``truth.json`` in the root, written by
    ``synthetic.write_synthetic_cropyield``), or None for a real root (it has no such file)."""
    path = self.root / "truth.json"
    return json.loads(path.read_text()) if path.is_file() else None

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
