"""Raster files of a manifest: GeoTIFF (tifffile), PNG/JPEG (Pillow) and ``.npy`` (numpy, no
pickle), each read as ``[H, W, C]`` in its stored type (a one-band image gets ``C = 1``; a 1-D
``.npy`` stays ``[D]``: a vector).

``header(path)`` reads only what a file says about itself (shape, bands, type) — the cheap check
every row gets; ``read(path)`` decodes it; ``read(path, values=True)`` (what a run reads) gives
float32 with the pixels of the GeoTIFF's GDAL nodata value (tag 42113, as GDAL and rasterio
write it) and non-finite pixels as NaN, so a sensor's nodata does not enter the normalisation
statistics or the model as a number (the pipeline's statistics ignore NaN and standardised
NaN pixels become 0, as with the built-in readers). ``resize(x, size, nearest)`` resamples a raster to a
square grid (area means for values, nearest pixels for classes) when a run has dense targets and
its rasters differ in size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mtljax.errors import DataError

TIFF, IMAGE, NPY = (".tif", ".tiff"), (".png", ".jpg", ".jpeg"), (".npy",)
EXTENSIONS = TIFF + IMAGE + NPY

# Pillow mode -> (bands, stored type).
_MODES = {
  "1": (1, "uint8"),
  "L": (1, "uint8"),
  "P": (1, "uint8"),
  "LA": (2, "uint8"),
  "RGB": (3, "uint8"),
  "RGBA": (4, "uint8"),
  "CMYK": (4, "uint8"),
  "I;16": (1, "uint16"),
  "I;16B": (1, "uint16"),
  "I": (1, "int32"),
  "F": (1, "float32"),
}


def is_raster(cell: str) -> bool:
  """A cell naming a raster file (by its extension)."""
  return cell.lower().endswith(EXTENSIONS)


def _tiff_layout(shape: tuple, axes: str) -> tuple[tuple, bool]:
  """(``[H, W, C]`` shape, whether the stored array is bands-first)."""
  if len(shape) == 2:
    return (shape[0], shape[1], 1), False
  if len(shape) == 3:
    if axes.endswith(("S", "C")) or axes[0] not in "SCQI":
      return tuple(shape), False
    return (shape[1], shape[2], shape[0]), True
  raise DataError(f"a {len(shape)}-D TIFF (axes {axes!r}); expected [H, W] or [H, W, C]")


def header(path: str | os.PathLike) -> tuple[tuple[int, ...], str]:
  """``(shape, dtype)`` of a raster as ``read`` returns it, from the file's header only.

  Raises:
    DataError: missing, unreadable, or an unsupported layout (the message says which).
  """
  path = Path(path)
  ext = path.suffix.lower()
  if not path.is_file():
    raise DataError("missing file")
  try:
    if ext in TIFF:
      import tifffile

      from mtljax.data.checks import tiff_data_end

      with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, _ = _tiff_layout(tuple(series.shape), series.axes)
        if tiff_data_end(tif) > path.stat().st_size:
          raise DataError("truncated TIFF (its pixel data ends past the end of the file)")
        return shape, np.dtype(series.dtype).name
    if ext in IMAGE:
      from PIL import Image

      with Image.open(path) as im:
        if im.mode not in _MODES:
          raise DataError(f"unsupported image mode {im.mode!r}")
        bands, dtype = _MODES[im.mode]
        return (im.height, im.width, bands), dtype
    if ext in NPY:
      with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
          np.lib.format.read_array_header_1_0
          if version == (1, 0)
          else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(f)
      if dtype.hasobject:
        raise DataError("an object array (pickled data is not read)")
      if len(shape) == 2:
        shape = (*shape, 1)
      if len(shape) not in (1, 3):
        raise DataError(f"a {len(shape)}-D array; expected [D], [H, W] or [H, W, C]")
      return tuple(int(s) for s in shape), dtype.name
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 (any decoder's complaint is an unreadable file)
    raise DataError(f"unreadable ({type(e).__name__}: {e})") from e
  raise DataError(f"unsupported file type {ext!r} (expected one of {EXTENSIONS})")


GDAL_NODATA = 42113


def _nodata(tif) -> float | None:
  """The GDAL nodata value of a TIFF (an ASCII tag), or None."""
  tag = tif.pages[0].tags.get(GDAL_NODATA)
  try:
    return float(str(tag.value).strip("\x00 ")) if tag is not None else None
  except ValueError:
    return None


def read(path: str | os.PathLike, values: bool = False) -> np.ndarray:
  """The raster decoded: ``[H, W, C]`` (or ``[D]`` for a 1-D ``.npy``) in its stored type, or
  with ``values`` float32 with nodata and non-finite pixels NaN (module docstring)."""
  path = Path(path)
  ext = path.suffix.lower()
  nodata = None
  try:
    if ext in TIFF:
      import tifffile

      with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        arr = series.asarray()
        _, first = _tiff_layout(tuple(series.shape), series.axes)
        nodata = _nodata(tif) if values else None
      arr = np.moveaxis(arr, 0, -1) if first else arr
    elif ext in IMAGE:
      from PIL import Image

      with Image.open(path) as im:
        arr = np.asarray(im.convert("L") if im.mode == "1" else im)
    elif ext in NPY:
      arr = np.load(path, allow_pickle=False)
    else:
      raise DataError(f"unsupported file type {ext!r}")
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001
    raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
  arr = arr[..., None] if arr.ndim == 2 else arr
  if not values:
    return arr
  out = arr.astype(np.float32)
  bad = ~np.isfinite(out)
  if nodata is not None:
    bad |= arr == nodata
  out[bad] = np.nan
  return out


def resize(x: np.ndarray, size: int, nearest: bool) -> np.ndarray:
  """``x [H, W, ...]`` resampled to ``[size, size, ...]``: the nearest pixel (classes) or the
  overlap-weighted mean of the pixels each output pixel covers (values; exact block means for an
  integer factor, and pixel replication when enlarging by one)."""
  h, w = x.shape[:2]
  if (h, w) == (size, size):
    return x
  if nearest:
    rows = np.minimum((np.arange(size) + 0.5) * h / size, h - 1).astype(int)
    cols = np.minimum((np.arange(size) + 0.5) * w / size, w - 1).astype(int)
    return x[rows][:, cols]

  def weights(n):
    edges = np.arange(size + 1) * (n / size)
    lo, hi, j = edges[:-1, None], edges[1:, None], np.arange(n)[None, :]
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None) * (size / n)

  flat = x.reshape(h, w, -1).astype(np.float64)
  out = np.einsum("ih,hwc,jw->ijc", weights(h), flat, weights(w))
  return out.reshape((size, size) + x.shape[2:]).astype(np.float32)
