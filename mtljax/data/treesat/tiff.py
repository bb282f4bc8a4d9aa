"""GeoTIFF reading for the TreeSatAI archive (square multi-band patches, checked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

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
