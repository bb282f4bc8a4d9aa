"""GeoTIFF reading for the TreeSatAI archive (square multi-band patches, checked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data.checks import tiff_data_end
from mtljax.data.source import DataError


def _to_hwc(arr: np.ndarray, axes: str, bands: int, size: int) -> np.ndarray | None:
  """Return ``arr`` as [H, W, C] if it is a (bands, size, size) or (size, size, bands) array."""
  if arr.ndim == 2 and bands == 1 and arr.shape == (size, size):
    return arr[:, :, None]
  if arr.ndim != 3:
    return None
  hwc = arr.shape == (size, size, bands)
  chw = arr.shape == (bands, size, size)
  if hwc and chw:  # bands == size: let the TIFF layout decide ('YXS' = pixel-interleaved).
    hwc = axes.endswith("S")
    chw = not hwc
  if hwc:
    return arr
  if chw:
    return np.moveaxis(arr, 0, -1)
  return None


def read_image(path: str | os.PathLike, *, bands: int, size: int, dtype: Any) -> np.ndarray:
  """Read a square multi-band GeoTIFF as [H, W, C] with checks.

  Handles pixel-interleaved (H, W, C), band-interleaved (C, H, W) and one-page-per-band files;
  when C == H == W the TIFF's planar configuration decides. Only the first series is read (GeoTIFF
  overviews are ignored).

  Args:
    path: the file.
    bands: expected band count C.
    size: expected side length (H = W = size).
    dtype: expected on-disk dtype.

  Returns:
    array [size, size, bands] of the file's dtype.

  Raises:
    DataError: file missing or unreadable, or band count / size / dtype not as expected.
  """
  import tifffile  # local import: keeps `import mtljax.data` light

  path = Path(path)
  dtype = np.dtype(dtype)
  expected = f"expected {bands} bands of {size}×{size} {dtype.name}"
  if not path.is_file():
    raise DataError(f"{path}: image file missing ({expected})")
  try:
    with tifffile.TiffFile(path) as tif:
      series = tif.series[0]
      axes = series.axes
      arr = series.asarray()
      if arr.ndim == 2 and bands > 1:  # one page per band: stack same-shape pages (not overviews)
        pages = [p for p in tif.pages if p.shape == arr.shape]
        if len(pages) == bands:
          arr, axes = np.stack([p.asarray() for p in pages]), "Q" + axes
  except KeyError as e:  # tifffile signals a missing codec with KeyError
    raise DataError(
      f"{path}: cannot decode ({e}); compressed GeoTIFFs (e.g. LZW) need `pip install imagecodecs`"
    ) from e
  except Exception as e:  # noqa: BLE001 - any reader failure becomes a DataError naming the file
    raise DataError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from e
  out = _to_hwc(arr, axes, bands, size)
  if out is None or arr.dtype != dtype:
    raise DataError(f"{path}: {expected}, found {tuple(arr.shape)} {arr.dtype.name}")
  return out


def _shape_hwc(shape: tuple, axes: str, bands: int, size: int) -> bool:
  """Whether an array of ``shape`` reads as [size, size, bands] (as ``_to_hwc`` decides)."""
  if len(shape) == 2:
    return bands == 1 and tuple(shape) == (size, size)
  return tuple(shape) in ((size, size, bands), (bands, size, size))


def check_image(path: str | os.PathLike, *, bands: int, size: int, dtype: Any) -> None:
  """``read_image``'s checks from the TIFF header only (no pixel decoding): the file exists and
  parses, its first series is ``bands`` × ``size`` × ``size`` of ``dtype`` (or one page per band),
  and every strip/tile the header points to lies inside the file (a truncated copy fails).

  Raises:
    DataError: naming the file and what was expected.
  """
  import tifffile

  path = Path(path)
  dtype = np.dtype(dtype)
  expected = f"expected {bands} bands of {size}×{size} {dtype.name}"
  if not path.is_file():
    raise DataError(f"{path}: image file missing ({expected})")
  try:
    with tifffile.TiffFile(path) as tif:
      series = tif.series[0]
      shape, axes, found = tuple(series.shape), series.axes, np.dtype(series.dtype)
      if len(shape) == 2 and bands > 1:
        pages = [p for p in tif.pages if tuple(p.shape) == shape]
        if len(pages) == bands:
          shape = (bands, *shape)
      end = tiff_data_end(tif)
  except Exception as e:  # noqa: BLE001 - any reader failure becomes a DataError naming the file
    raise DataError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from e
  if not _shape_hwc(shape, axes, bands, size) or found != dtype:
    raise DataError(f"{path}: {expected}, found {shape} {found.name}")
  file_size = path.stat().st_size
  if end > file_size:
    raise DataError(
      f"{path}: truncated TIFF ({file_size} bytes, its header points to pixel data up to byte "
      f"{end}; {expected})"
    )
