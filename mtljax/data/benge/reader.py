"""BEN-GE reader (Mommert et al., IGARSS 2023): Sentinel-1/2 patches with land cover, elevation,
climate zone, season and weather (mtl-explainability paper §3.1, Table 5, Appendix A and B.2).

On-disk layout (``ben-ge-8k`` release; the prefix is ``prefix``, a config value)::

    ROOT/<prefix>_meta.csv            patch_id, patch_id_s1, timestamp_s2, timestamp_s1,
                                      season_s2, season_s1, lon, lat, climatezone
    ROOT/<prefix>_era-5.csv           patch_id, patch_id_s1, atmpressure_level, temperature_s1/_s2,
                                      wind-u_s1/_s2, wind-v_s1/_s2, relhumidity_s1/_s2
    ROOT/splits/<prefix>_{train,val,test}.csv     one patch_id per line, no header
    ROOT/sentinel-2/<patch_id>/<patch_id>_<band>.tif      uint16; 10 m bands 120x120, 20 m 60x60,
                                                          60 m 20x20 (upsampled to the 10 m grid)
    ROOT/sentinel-1/<patch_id_s1>/<patch_id_s1>_{VV,VH}.tif   float32 dB, 120x120
    ROOT/esaworldcover/<patch_id>_esaworldcover.tif       uint8 ESA WorldCover codes
    ROOT/dem/<patch_id>_dem.tif                            int16 metres

CSV parsing is tolerant: extra columns and a leading unnamed index column (pandas' ``to_csv``)
are ignored, whitespace is stripped, a split file may have a ``patch_id`` header line. Without the
split files, ``split_fallback=True`` deals the meta rows into 80/10/10 by a seeded hash of the
patch id (deterministic, independent of row order).

One example (``__getitem__``), every field present (the config chooses inputs and targets)::

    inputs:  s1 float32 [S, S, 2] (VV, VH dB; NaN nodata), s2 float32 [S, S, 12] (reflectance x 1e4,
             bands B01..B12 with B8A after B08), elevation float32 [S, S, 1] (m; NaN nodata),
             climate_zone float32 [1] (class index, for an embedding), season float32 [1] (0..1),
             weather float32 [5] (temperature K, wind-u, wind-v m/s, relative humidity %,
             pressure level)
    targets: lulc int32 [S, S] (class index of ``LULC_CODES``), elevation float32 [S, S] (m),
             climate_zone int32 [] (index of ``climate_zones``), season float32 [],
             weather float32 [3] (temperature, relative humidity, pressure: wind dropped, App. A)
    mask:    lulc / elevation float32 [S, S] (1 = labelled pixel), the others float32 []
    meta:    index int32 []

``S`` is ``image_size`` (default 120, the 10 m grid); every raster is resampled to it (means for
continuous values, nearest for the land cover codes).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtljax.data.annotations import Owner
from mtljax.data.benge.files import (
  CLIMATE_ZONES,
  LULC_CODES,
  LULC_NAMES,
  META_COLUMNS,
  S1_BANDS,
  S2_BANDS,
  SPLITS,
  WEATHER_INPUT,
  WEATHER_TARGET,
  band_path,
  check_raster,
  csv_float,
  fallback_split,
  read_bands,
  read_csv,
  read_dem,
  read_raster,
  read_split,
  resample,
)
from mtljax.data.source import DataError, check_option, example_index

log = logging.getLogger(__name__)


class BenGeSource:
  """Random-access BEN-GE split (usable by ``grain.MapDataset.source``; picklable).

  Args:
    root: dataset root.
    split: ``"train"``, ``"val"`` or ``"test"``.
    prefix: release name used in the file names (``"ben-ge-8k"``, ``"ben-ge"``, ...).
    image_size: side of every returned raster (120 = the native 10 m grid).
    weather_time: ``"s2"`` or ``"s1"``: which acquisition's ERA-5 columns and season to use.
    climate_zones: the climate zone codes, in class order; another code raises ``DataError``.
    split_fallback: without ``splits/`` files, split the meta table 80/10/10 by ``split_seed``.
    modalities: image inputs read by ``__getitem__`` (``s1``, ``s2``, ``elevation``); the land
      cover map and DEM targets are read when ``dense_targets`` names them.
    dense_targets: dense targets read by ``__getitem__`` (``lulc``, ``elevation``).
    stack_elevation: append the elevation (m) to ``s2`` as a 13th channel, so one U-Net sees
      both (the alternative to a second U-Net on the ``elevation`` input).

  Raises:
    DataError: a missing file or column, a bad number, an unknown climate zone (the message
      names the file, line and field).
  """

  def __init__(
    self,
    root: str | os.PathLike,
    split: str,
    *,
    prefix: str = "ben-ge-8k",
    image_size: int = 120,
    weather_time: str = "s2",
    climate_zones: Sequence[int] = CLIMATE_ZONES,
    split_fallback: bool = False,
    split_seed: int = 0,
    stack_elevation: bool = False,
    modalities: Sequence[str] = ("s1", "s2", "elevation"),
    dense_targets: Sequence[str] = ("lulc", "elevation"),
  ):
    self.root = Path(root).expanduser()
    check_option("split", split, SPLITS)
    check_option("weather_time", weather_time, ("s1", "s2"))
    unknown = set(modalities) - {"s1", "s2", "elevation", "climate_zone", "season", "weather"}
    if unknown:
      raise ValueError(f"unknown BEN-GE modalities {sorted(unknown)}")
    if not self.root.is_dir():
      raise DataError(f"BEN-GE root {self.root} does not exist or is not a directory")
    self.split, self.prefix, self.image_size = split, prefix, int(image_size)
    self.weather_time = weather_time
    self.climate_zones = tuple(int(c) for c in climate_zones)
    self.modalities = tuple(m for m in modalities if m in ("s1", "s2", "elevation"))
    self.dense_targets = tuple(dense_targets)
    self.stack_elevation = bool(stack_elevation)

    meta_path = self.root / f"{prefix}_meta.csv"
    meta = read_csv(meta_path, META_COLUMNS)
    by_id = {r["patch_id"]: (i + 2, r) for i, r in enumerate(meta)}
    split_dir = self.root / "splits"
    split_path = split_dir / f"{prefix}_{split}.csv"
    if split_path.is_file() or not split_fallback:
      ids = read_split(split_path)
    else:
      ids = fallback_split(list(by_id), split_seed)[split]
    missing = [p for p in ids if p not in by_id]
    if missing:
      raise DataError(
        f"{split_path}: {len(missing)} patch ids are not in {meta_path}, e.g. {missing[:3]}"
      )
    self.names: list[str] = ids
    self.s1_names = [by_id[p][1]["patch_id_s1"] for p in ids]

    t = weather_time
    zone_index = {c: k for k, c in enumerate(self.climate_zones)}
    n = len(ids)
    self._zone = np.zeros(n, np.int32)
    self._season = np.zeros(n, np.float32)
    for i, p in enumerate(ids):
      line, row = by_id[p]
      code = int(round(csv_float(meta_path, row, "climatezone", line)))
      if code not in zone_index:
        raise DataError(
          f"{meta_path} line {line}: climatezone {code} is not one of the "
          f"configured zones {self.climate_zones} (config.data.climate_zones)"
        )
      self._zone[i] = zone_index[code]
      self._season[i] = csv_float(meta_path, row, f"season_{t}", line)

    era_path = self.root / f"{prefix}_era-5.csv"
    cols_in = [c.format(t=t) for c in WEATHER_INPUT]
    cols_out = [c.format(t=t) for c in WEATHER_TARGET]
    era = read_csv(era_path, ["patch_id"] + cols_in)
    era_by_id = {r["patch_id"]: (i + 2, r) for i, r in enumerate(era)}
    self._weather_in = np.zeros((n, len(cols_in)), np.float32)
    self._weather_out = np.zeros((n, len(cols_out)), np.float32)
    absent = [p for p in ids if p not in era_by_id]
    if absent:
      raise DataError(
        f"{era_path}: no row for {len(absent)} patch ids of the {split} split, e.g. {absent[:3]}"
      )
    for i, p in enumerate(ids):
      line, row = era_by_id[p]
      self._weather_in[i] = [csv_float(era_path, row, c, line) for c in cols_in]
      self._weather_out[i] = [csv_float(era_path, row, c, line) for c in cols_out]
    for m in self.modalities:
      folder = self.root / {"s1": "sentinel-1", "s2": "sentinel-2", "elevation": "dem"}[m]
      if not folder.is_dir():
        raise DataError(f"image folder {folder} for modality {m!r} does not exist")

  # ------------------------------------------------------------------------------------ files
  def s2_path(self, i: int, band: str) -> Path:
    return band_path(self.root / "sentinel-2" / self.names[i], band)

  def s1_path(self, i: int, band: str) -> Path:
    return band_path(self.root / "sentinel-1" / self.s1_names[i], band)

  def lulc_path(self, i: int) -> Path:
    return self.root / "esaworldcover" / f"{self.names[i]}_esaworldcover.tif"

  def dem_path(self, i: int) -> Path:
    return self.root / "dem" / f"{self.names[i]}_dem.tif"

  def read_s2(self, i: int) -> np.ndarray:
    return read_bands(self.root / "sentinel-2" / self.names[i], S2_BANDS, self.image_size)

  def read_s1(self, i: int) -> np.ndarray:
    return read_bands(self.root / "sentinel-1" / self.s1_names[i], S1_BANDS, self.image_size)

  def read_dem(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Elevation in metres ``[S, S]`` and its mask (0 where nodata)."""
    return read_dem(self.dem_path(i), self.image_size)

  def read_lulc(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Class indices ``[S, S]`` int32 and mask (0 where the code is not a WorldCover class)."""
    codes = resample(read_raster(self.lulc_path(i)), self.image_size, categorical=True).astype(
      np.int64
    )
    lut = np.full(256, -1, np.int64)
    lut[list(LULC_CODES)] = np.arange(len(LULC_CODES))
    cls = lut[np.clip(codes, 0, 255)]
    cls[(codes < 0) | (codes > 255)] = -1
    ok = cls >= 0
    return np.where(ok, cls, 0).astype(np.int32), ok.astype(np.float32)

  def check_files(self, *, progress: bool = True, full: bool = False) -> int:
    """Check every raster an example of the split reads, from its header (``check_raster``) or
    decoded (``full``); returns the count. Raises DataError naming the first bad file."""
    it = range(len(self))
    if progress and len(self) > 200:
      from tqdm.auto import tqdm

      it = tqdm(it, desc=f"checking BEN-GE {self.split} files", unit="patch", mininterval=1.0)
    dem = "elevation" in self.modalities + self.dense_targets or self.stack_elevation
    for i in it:
      if full:
        self[i]
        continue
      files = [(self.s2_path(i, b), False) for b in S2_BANDS if "s2" in self.modalities]
      files += [(self.s1_path(i, b), False) for b in S1_BANDS if "s1" in self.modalities]
      files += [(self.dem_path(i), False)] if dem else []
      files += [(self.lulc_path(i), True)] if "lulc" in self.dense_targets else []
      for path, integer in files:
        check_raster(path, integer=integer)
    return len(self)

  def read_target(self, task: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    """One target and its mask without reading the images (regression target statistics)."""
    if task == "lulc":
      return self.read_lulc(i)
    if task == "elevation":
      return self.read_dem(i)
    ex_t, ex_m = self._scalar_targets(i)
    return ex_t[task], ex_m[task]

  def explain_annotations(self, index: int) -> dict[str, dict[str, np.ndarray]]:
    """Each land cover class's pixels (bool ``[S, S]``) and centroid, by class name: the regions
    an attribution of that class's score is compared with (``--mode=explain``)."""
    cls, ok = self.read_lulc(int(index))
    yy, xx = np.mgrid[0 : self.image_size, 0 : self.image_size]
    masks, keypoints = {}, {}
    for k in np.unique(cls[ok > 0]):
      m = (cls == k) & (ok > 0)
      masks[LULC_NAMES[k]] = m
      keypoints[LULC_NAMES[k]] = np.array([yy[m].mean(), xx[m].mean()], np.float32)
    return {"masks": masks, "keypoints": keypoints}

  def annotation_owners(self) -> dict[str, tuple[Owner, ...]]:
    """A land cover class's pixels belong to that class of the task ``lulc``."""
    return {name: (Owner("lulc", k),) for k, name in enumerate(LULC_NAMES)}

  # ------------------------------------------------------------------------------------ contract
  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    s = self.image_size
    return {
      "s1": {"kind": "image", "shape": (s, s, 2), "dtype": "float32", "channels": S1_BANDS},
      "s2": {
        "kind": "image",
        "shape": (s, s, 12 + self.stack_elevation),
        "dtype": "float32",
        "channels": S2_BANDS + (("dem",) if self.stack_elevation else ()),
      },
      "elevation": {"kind": "image", "shape": (s, s, 1), "dtype": "float32", "channels": ("dem",)},
      "climate_zone": {
        "kind": "categorical",
        "shape": (1,),
        "dtype": "float32",
        "num_classes": len(self.climate_zones),
      },
      "season": {"kind": "tabular", "shape": (1,), "dtype": "float32", "channels": ("season",)},
      "weather": {
        "kind": "tabular",
        "shape": (5,),
        "dtype": "float32",
        "channels": tuple(c.format(t=self.weather_time) for c in WEATHER_INPUT),
      },
    }

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    s = self.image_size
    return {
      "lulc": {
        "kind": "segmentation",
        "shape": (s, s),
        "dtype": "int32",
        "num_classes": len(LULC_CODES),
        "class_names": LULC_NAMES,
      },
      "elevation": {
        "kind": "dense_regression",
        "shape": (s, s),
        "dtype": "float32",
        "num_outputs": 1,
      },
      "climate_zone": {
        "kind": "classification",
        "shape": (),
        "dtype": "int32",
        "num_classes": len(self.climate_zones),
        "class_names": tuple(str(c) for c in self.climate_zones),
      },
      "season": {"kind": "regression", "shape": (), "dtype": "float32", "num_outputs": 1},
      "weather": {
        "kind": "regression",
        "shape": (3,),
        "dtype": "float32",
        "num_outputs": 3,
        "channels": tuple(c.format(t=self.weather_time) for c in WEATHER_TARGET),
      },
    }

  def label_arrays(self) -> dict[str, dict[str, np.ndarray]]:
    """The scalar (per-patch) labels of the split without reading rasters."""
    ones = np.ones(len(self.names), np.float32)
    return {
      "targets": {
        "climate_zone": self._zone.copy(),
        "season": self._season.copy(),
        "weather": self._weather_out.copy(),
      },
      "mask": {"climate_zone": ones, "season": ones.copy(), "weather": ones.copy()},
    }

  def _scalar_targets(self, i: int):
    targets = {
      "climate_zone": np.asarray(self._zone[i], np.int32),
      "season": np.asarray(self._season[i], np.float32),
      "weather": self._weather_out[i].copy(),
    }
    return targets, {k: np.float32(1.0) for k in targets}

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, index: int) -> dict[str, dict[str, np.ndarray]]:
    i = example_index(index, len(self.names))
    inputs: dict[str, np.ndarray] = {}
    targets, mask = self._scalar_targets(i)
    if "s1" in self.modalities:
      inputs["s1"] = self.read_s1(i)
    if "s2" in self.modalities:
      inputs["s2"] = self.read_s2(i)
    stack = self.stack_elevation and "s2" in inputs
    if "elevation" in self.modalities or "elevation" in self.dense_targets or stack:
      dem, ok = self.read_dem(i)
      inputs["elevation"] = np.where(ok > 0, dem, np.nan)[..., None].astype(np.float32)
      targets["elevation"], mask["elevation"] = dem, ok
      if stack:
        inputs["s2"] = np.concatenate([inputs["s2"], inputs["elevation"]], axis=-1)
    if "lulc" in self.dense_targets:
      targets["lulc"], mask["lulc"] = self.read_lulc(i)
    inputs["climate_zone"] = np.array([self._zone[i]], np.float32)
    inputs["season"] = np.array([self._season[i]], np.float32)
    inputs["weather"] = self._weather_in[i].copy()
    return {
      "inputs": inputs,
      "targets": targets,
      "mask": mask,
      "meta": {"index": np.asarray(i, np.int32)},
    }

  def __repr__(self) -> str:
    return (
      f"BenGeSource(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
      f"prefix={self.prefix!r}, image_size={self.image_size})"
    )
