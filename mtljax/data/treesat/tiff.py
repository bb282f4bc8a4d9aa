"""GeoTIFF reading for the TreeSatAI archive (square multi-band patches, checked); ``read_input``:
one patch file of a modality as the reader gives it (the registry entry's ``read_input``, which
reads a table of new inputs, ``mtljax.data.new_inputs``, as the archive is read)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data.checks import tiff_data_end
from mtljax.data.source import DataError
from mtljax.data.treesat.archive import AERIAL_SIZES, MODALITIES, S1_NODATA, S_SIZES
from mtljax.data.values import DEFAULT_MAX_IMAGE_SIDE


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


def square_size(shape: tuple, bands: int) -> int:
  """The side of a square ``bands``-band array of ``shape`` ([S, S, C], [C, S, S] or [S, S] for one
  band), or -1 when it is not one."""
  shape = tuple(shape)
  if len(shape) == 2:
    return shape[0] if bands == 1 and shape[0] == shape[1] else -1
  if len(shape) == 3 and shape[2] == bands and shape[0] == shape[1]:
    return shape[0]
  if len(shape) == 3 and shape[0] == bands and shape[1] == shape[2]:
    return shape[1]
  return -1


def area_resize(arr: np.ndarray, size: int) -> np.ndarray:
  """A square [S, S, C] image resampled to [size, size, C] float32 by area averaging (each output
  pixel the overlap-weighted mean of the input pixels it covers; exact block means when S is a
  multiple of size)."""
  n = arr.shape[0]
  if n == size:
    return arr.astype(np.float32)
  edges = np.arange(size + 1) * (n / size)
  lo, hi = edges[:-1, None], edges[1:, None]
  j = np.arange(n)[None, :]
  weights = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None) * (size / n)
  out = np.einsum("ih,hwc,jw->ijc", weights, arr.astype(np.float64), weights)
  return out.astype(np.float32)


def _check_side(path: Path, shape: tuple, bands: int, max_side: int | None) -> None:
  """Refuse, before any pixel is decoded, an image whose side exceeds ``max_side``: a file of any
  size is accepted when it is resampled (``size=None``), so a huge one would otherwise be
  decoded whole."""
  side = max(shape[1:] if len(shape) == 3 and shape[0] == bands else shape[:2], default=0)
  if max_side is not None and side > max_side:
    raise DataError(
      f"{path}: image of {'×'.join(map(str, shape))} pixels, larger than the bound of {max_side} "
      "per side (raise config.data.max_image_side to read it)"
    )


def read_image(
  path: str | os.PathLike,
  *,
  bands: int,
  size: int | None,
  dtype: Any,
  max_side: int | None = None,
) -> np.ndarray:
  """Read a square multi-band GeoTIFF as [H, W, C] with checks.

  Handles pixel-interleaved (H, W, C), band-interleaved (C, H, W) and one-page-per-band files;
  when C == H == W the TIFF's planar configuration decides. Only the first series is read (GeoTIFF
  overviews are ignored).

  Args:
    path: the file.
    bands: expected band count C.
    size: expected side length (H = W = size); None = any square size.
    dtype: expected on-disk dtype.
    max_side: with ``size=None``, the largest side read (checked from the header, before the
      pixels are decoded); None = no bound.

  Returns:
    array [size, size, bands] of the file's dtype.

  Raises:
    DataError: file missing or unreadable, or band count / size / dtype not as expected.
  """
  import tifffile  # local import: keeps `import mtljax.data` light

  path = Path(path)
  dtype = np.dtype(dtype)
  side = "S×S (any S)" if size is None else f"{size}×{size}"
  expected = f"expected {bands} bands of {side} {dtype.name}"
  if not path.is_file():
    raise DataError(f"{path}: image file missing ({expected})")
  try:
    with tifffile.TiffFile(path) as tif:
      series = tif.series[0]
      axes = series.axes
      _check_side(path, tuple(series.shape), bands, max_side)
      arr = series.asarray()
      if arr.ndim == 2 and bands > 1:  # one page per band: stack same-shape pages (not overviews)
        pages = [p for p in tif.pages if p.shape == arr.shape]
        if len(pages) == bands:
          arr, axes = np.stack([p.asarray() for p in pages]), "Q" + axes
  except DataError:
    raise
  except KeyError as e:  # tifffile signals a missing codec with KeyError
    raise DataError(
      f"{path}: cannot decode ({e}); compressed GeoTIFFs (e.g. LZW) need `pip install imagecodecs`"
    ) from e
  except Exception as e:  # noqa: BLE001 - any reader failure becomes a DataError naming the file
    raise DataError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from e
  out = _to_hwc(arr, axes, bands, square_size(arr.shape, bands) if size is None else size)
  if out is None or arr.dtype != dtype:
    raise DataError(f"{path}: {expected}, found {tuple(arr.shape)} {arr.dtype.name}")
  return out


def check_image(
  path: str | os.PathLike,
  *,
  bands: int,
  size: int | None,
  dtype: Any,
  max_side: int | None = None,
) -> None:
  """``read_image``'s checks from the TIFF header only (no pixel decoding): the file exists and
  parses, its first series is ``bands`` × ``size`` × ``size`` of ``dtype`` (or one page per band;
  ``size=None``: any square size up to ``max_side``), and every strip/tile the header points to
  lies inside the file (a truncated copy fails).

  Raises:
    DataError: naming the file and what was expected.
  """
  import tifffile

  path = Path(path)
  dtype = np.dtype(dtype)
  side = "S×S (any S)" if size is None else f"{size}×{size}"
  expected = f"expected {bands} bands of {side} {dtype.name}"
  if not path.is_file():
    raise DataError(f"{path}: image file missing ({expected})")
  try:
    with tifffile.TiffFile(path) as tif:
      series = tif.series[0]
      shape, found = tuple(series.shape), np.dtype(series.dtype)
      if len(shape) == 2 and bands > 1:
        pages = [p for p in tif.pages if tuple(p.shape) == shape]
        if len(pages) == bands:
          shape = (bands, *shape)
      end = tiff_data_end(tif)
  except Exception as e:  # noqa: BLE001 - any reader failure becomes a DataError naming the file
    raise DataError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from e
  _check_side(path, shape, bands, max_side)
  found_size = square_size(shape, bands)
  if found_size < 1 or (size is not None and found_size != size) or found != dtype:
    raise DataError(f"{path}: {expected}, found {shape} {found.name}")
  file_size = path.stat().st_size
  if end > file_size:
    raise DataError(
      f"{path}: truncated TIFF ({file_size} bytes, its header points to pixel data up to byte "
      f"{end}; {expected})"
    )


def band_means(image: np.ndarray) -> tuple[np.ndarray, np.float32]:
  """A patch's mean per band (float32 [C], in the file's units) and its mask: 1 when every mean
  is finite; otherwise the means are 0 with mask 0 (a target the loss skips)."""
  means = image.reshape(-1, image.shape[-1]).astype(np.float64).mean(0).astype(np.float32)
  ok = bool(np.isfinite(means).all())
  return (means if ok else np.zeros_like(means)), np.float32(ok)


def patch_side(modality: str, resolution: str, aerial_size=None, s_size=None) -> int | None:
  """The side of ``modality``'s patches: ``aerial_size`` / ``s_size`` when given, else the
  resolution's (``AERIAL_SIZES``, ``S_SIZES``); None when unknown."""
  if modality == "aerial":
    return int(aerial_size) if aerial_size is not None else AERIAL_SIZES.get(resolution)
  return int(s_size) if s_size is not None else S_SIZES.get(resolution)


def read_input(
  modality: str,
  path: str | os.PathLike,
  *,
  resolution: str = "60m",
  aerial_size: int | None = None,
  s_size: int | None = None,
  aerial_resize: bool = False,
  max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
  **_,
) -> np.ndarray:
  """One patch file of ``modality`` (``aerial``, ``s1``, ``s2``) as float32 [H, W, C], read as the
  source reads its own: band count, on-disk dtype and side (``patch_side``) checked, an aerial
  file of any square size area-averaged to ``aerial_size`` with ``aerial_resize`` (up to
  ``max_image_side``), S1 nodata (-9999, NaN, inf) NaN. ``**_``: the reader's other options,
  unused here (the registry entry's ``read_input`` is given them all).

  Raises:
    DataError: naming the file: missing, unreadable, or other bands / side / dtype.
  """
  if modality not in MODALITIES:
    raise DataError(f"{path}: TreeSatAI has no image modality {modality!r} ({tuple(MODALITIES)})")
  spec = MODALITIES[modality]
  size = patch_side(modality, resolution, aerial_size, s_size)
  if size is None:
    raise DataError(f"unknown {modality} patch size for resolution {resolution!r}: set its size")
  any_size = modality == "aerial" and bool(aerial_resize)
  kw = dict(bands=len(spec["bands"]), dtype=spec["dtype"], max_side=int(max_image_side))
  arr = read_image(path, size=None if any_size else size, **kw)
  arr = area_resize(arr, size) if any_size else arr.astype(np.float32)
  if modality == "s1":
    arr[(arr == S1_NODATA) | ~np.isfinite(arr)] = np.nan
  return arr
