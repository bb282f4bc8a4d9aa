"""BEN-GE files: the vocabularies (bands, land cover codes, climate zones, table columns), CSV
reading with checks, the fallback split, and raster reading/resampling. The layout: ``reader``.

``read_input`` is the registry entry's hook for a table of new inputs (``mtljax.data.new_inputs``):
a Sentinel-1 or Sentinel-2 cell names a patch's folder in the archive's layout (``<name>/`` holding
``<name>_<band>.tif``, one file per band), an elevation cell its DEM file; each is read as the
reader reads its own (``read_bands``, ``read_dem``)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mtljax.data.source import DataError

SPLITS = ("train", "val", "test")
#: Sentinel-2 L2A bands in channel order (B10 is not in L2A products).
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S1_BANDS = ("VV", "VH")
#: ESA WorldCover codes → class index (position); any other code (0 = no data) is masked.
LULC_CODES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
LULC_NAMES = (
  "tree_cover",
  "shrubland",
  "grassland",
  "cropland",
  "built-up",
  "bare/sparse_vegetation",
  "snow_and_ice",
  "permanent_water_bodies",
  "herbaceous_wetland",
  "mangroves",
  "moss_and_lichen",
)
#: Köppen–Geiger codes of ben-ge-8k (Beck et al. 2018), 0 = water-only patch: 12 classes (paper).
CLIMATE_ZONES = (0, 7, 8, 9, 14, 15, 16, 18, 25, 26, 27, 29)
#: ERA-5 columns (``{t}`` = s2 or s1) of the weather input (5) and target (3, no wind).
WEATHER_INPUT = (
  "temperature_{t}",
  "wind-u_{t}",
  "wind-v_{t}",
  "relhumidity_{t}",
  "atmpressure_level",
)
WEATHER_TARGET = ("temperature_{t}", "relhumidity_{t}", "atmpressure_level")
META_COLUMNS = ("patch_id", "patch_id_s1", "season_s2", "season_s1", "climatezone")
DEM_NODATA = -32768


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
  if not path.is_file():
    raise DataError(f"BEN-GE table {path} does not exist")
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
      raise DataError(f"{path}: missing columns {missing} (header: {header})")
    rows = []
    for row in reader:
      rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None})
  return rows


def csv_float(path: Path, row: dict[str, str], col: str, line: int) -> float:
  try:
    return float(row[col])
  except (KeyError, ValueError):
    raise DataError(
      f"{path} line {line}: column {col!r} = {row.get(col)!r} is not a number"
    ) from None


def read_split(path: Path) -> list[str]:
  if not path.is_file():
    raise DataError(
      f"split file {path} does not exist (pass split_fallback=True to split the meta table 80/10/10)"
    )
  ids = []
  with open(path, encoding="utf-8-sig") as f:
    for line in f:
      s = line.strip().split(",")[-1].strip()  # tolerate an index column
      if s and s != "patch_id":
        ids.append(s)
  return ids


def fallback_split(ids: Sequence[str], seed: int) -> dict[str, list[str]]:
  """80/10/10 by the rank of a seeded hash of each id: deterministic and order-independent."""
  key = lambda s: hashlib.sha256(f"{seed}:{s}".encode()).digest()
  order = sorted(ids, key=key)
  n = len(order)
  a, b = int(round(0.8 * n)), int(round(0.9 * n))
  return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def read_raster(path: Path) -> np.ndarray:
  """A single-band GeoTIFF as a 2-D array (a trailing or leading singleton axis is dropped)."""
  import tifffile

  if not path.is_file():
    raise DataError(f"raster {path} does not exist")
  try:
    arr = np.asarray(tifffile.imread(path))
  except Exception as e:  # tifffile raises several types on a broken file
    raise DataError(f"raster {path} cannot be read: {e}") from e
  arr = np.squeeze(arr)
  if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
    raise DataError(f"raster {path} has shape {arr.shape}; expected one square band [H, W]")
  return arr


def resample(x: np.ndarray, size: int, *, categorical: bool = False) -> np.ndarray:
  """Square 2-D array → ``[size, size]``: repeat (nearest) to upsample by an integer factor,
  block mean (or the block's top-left value when ``categorical``) to downsample; otherwise
  bilinear (nearest for categorical) interpolation."""
  n = x.shape[0]
  if n == size:
    return x
  if size % n == 0:
    f = size // n
    return np.repeat(np.repeat(x, f, axis=0), f, axis=1)
  if n % size == 0:
    f = n // size
    if categorical:
      return x[f // 2 :: f, f // 2 :: f]
    return x.reshape(size, f, size, f).astype(np.float64).mean(axis=(1, 3)).astype(np.float32)
  from scipy import ndimage

  return ndimage.zoom(x, size / n, order=0 if categorical else 1, grid_mode=True, mode="nearest")


def check_raster(path: Path, *, integer: bool = False) -> None:
  """``read_raster``'s checks from the TIFF header only (no pixel decoding): one square band, a
  numeric dtype (an integer one where ``integer``, e.g. land cover codes), and every strip/tile
  inside the file (a truncated copy fails)."""
  import tifffile

  from mtljax.data.checks import tiff_data_end

  what = f"one square band [H, W] of {'integer codes' if integer else 'numbers'}"
  if not path.is_file():
    raise DataError(f"raster {path} does not exist (expected {what})")
  try:
    with tifffile.TiffFile(path) as tif:
      shape, dtype = tuple(s for s in tif.series[0].shape if s != 1), np.dtype(tif.series[0].dtype)
      end = tiff_data_end(tif)
  except Exception as e:  # tifffile raises several types on a broken file
    raise DataError(f"raster {path} cannot be read: {e}") from e
  kind_ok = dtype.kind in "iu" if integer else dtype.kind in "iuf"
  if len(shape) != 2 or shape[0] != shape[1] or not kind_ok:
    raise DataError(f"raster {path} is {shape} {dtype.name}; expected {what}")
  if end > path.stat().st_size:
    raise DataError(
      f"raster {path} is truncated ({path.stat().st_size} bytes, its header points to pixel data "
      f"up to byte {end})"
    )


def band_path(folder: Path, band: str) -> Path:
  """A band's file in a patch folder of the archive: ``<folder>/<folder name>_<band>.tif``."""
  return folder / f"{folder.name}_{band}.tif"


def read_bands(folder: Path, bands: Sequence[str], size: int) -> np.ndarray:
  """A patch folder's one-band files as float32 ``[size, size, len(bands)]``, each resampled to
  ``size``; non-finite pixels NaN."""
  out = []
  for b in bands:
    x = read_raster(band_path(Path(folder), b)).astype(np.float32)
    x[~np.isfinite(x)] = np.nan
    out.append(resample(x, size))
  return np.stack(out, axis=-1)


def read_dem(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Elevation in metres ``[size, size]`` and its mask (0 where nodata)."""
  x = read_raster(Path(path)).astype(np.float32)
  x[(x == DEM_NODATA) | ~np.isfinite(x)] = np.nan
  x = resample(x, size)
  ok = np.isfinite(x)
  return np.where(ok, x, 0.0).astype(np.float32), ok.astype(np.float32)


def read_input(modality: str, path, *, image_size: int = 120, stack_elevation=False, **_):
  """One new input (module docstring) as float32 ``[S, S, C]``, ``S = image_size``: ``s1``/``s2``
  from a patch folder, ``elevation`` from a DEM file (nodata NaN). ``**_``: the reader's other
  options. Raises DataError naming the file or folder."""
  path = Path(path)
  if modality == "elevation":
    dem, ok = read_dem(path, int(image_size))
    return np.where(ok > 0, dem, np.nan)[..., None].astype(np.float32)
  if modality not in ("s1", "s2"):
    raise DataError(f"{path}: BEN-GE reads no file for the input {modality!r}")
  if modality == "s2" and stack_elevation:
    raise DataError(
      f"{path}: a model with config.data.stack_elevation reads Sentinel-2 and the DEM as one "
      "input; a table of new inputs cannot give it (train with an `elevation` input instead)"
    )
  if not path.is_dir():
    raise DataError(f"{path}: expected a {modality} patch folder (<name>/<name>_<band>.tif)")
  return read_bands(path, S2_BANDS if modality == "s2" else S1_BANDS, int(image_size))
