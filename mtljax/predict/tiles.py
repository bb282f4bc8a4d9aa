"""Large rasters predicted in overlapping tiles and blended back into one map (`config.predict.raster`).

A scene `[H, W, C]` larger than the model's image input (`t × t`) is cut into tiles every
`stride` pixels along each axis (`tile_starts`: the last tile flush with the border, so every
pixel is covered); each tile is predicted alone (a batch of tiles at a time), and every output is
written back as one map: a dense output (`[t, t, ...]` per tile) pixel by pixel, a per-tile output
(a class probability, an uncertainty) spread over its tile's pixels. Where tiles overlap, the map
is their average weighted by `blend_weights`, a separable tent that is largest at a tile's centre
and small (never zero) at its border, so seams fade and a pixel covered by one tile keeps exactly
that tile's value. GeoTIFF tags of the scene (pixel scale, tie point, geokeys, nodata) are copied
to the maps written (`read_raster`, `write_raster`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mtljax import fileio
from mtljax.data.source import DataError

# GeoTIFF tags that carry the georeferencing: ModelPixelScale, ModelTiepoint, ModelTransformation,
# GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams, GDAL_NODATA.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42113)


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
  """Top-left offsets along one axis of length `size`: every `stride`, the last flush at the end."""
  if size < tile:
    raise DataError(f"the raster side {size} is smaller than the model's input {tile}")
  starts = list(range(0, size - tile + 1, stride))
  if starts[-1] != size - tile:
    starts.append(size - tile)
  return starts


def blend_weights(tile: int) -> np.ndarray:
  """`[t, t]` float64: the outer product of a tent `min(i + 1, t - i)` (1 at the border)."""
  ramp = np.minimum(np.arange(1, tile + 1), np.arange(tile, 0, -1)).astype(np.float64)
  return np.outer(ramp, ramp)


def predict_tiled(
  scene: np.ndarray, tile: int, stride: int, fn: Callable, batch_size: int = 16, progress=None
) -> tuple[dict, dict, np.ndarray]:
  """`fn(tiles [N, t, t, C]) -> {key: [N, ...]}` over the tiles of `scene` `[H, W, C]`.

  Returns `(maps, per_tile, corners)`: `maps[key]` `[H, W, ...]` the blended map of each output
  (`[N, t, t, ...]` outputs pixel by pixel, others spread over their tile), `per_tile[key]`
  `[N, ...]` the tiles' own outputs and `corners` `[N, 2]` each tile's (y, x)."""
  h, w = scene.shape[:2]
  corners = np.asarray(
    [(y, x) for y in tile_starts(h, tile, stride) for x in tile_starts(w, tile, stride)]
  )
  weight = blend_weights(tile)
  per_tile: dict[str, list] = {}
  for a in range(0, len(corners), batch_size):
    batch = np.stack([scene[y : y + tile, x : x + tile] for y, x in corners[a : a + batch_size]])
    for k, v in fn(batch).items():
      per_tile.setdefault(k, []).append(np.asarray(v))
    if progress is not None:
      progress.update(len(batch))
  per_tile = {k: np.concatenate(v) for k, v in per_tile.items()}
  total = np.zeros((h, w))
  for y, x in corners:
    total[y : y + tile, x : x + tile] += weight
  maps = {}
  for k, v in per_tile.items():
    dense = v.ndim >= 3 and v.shape[1:3] == (tile, tile)
    extra = v.shape[3:] if dense else v.shape[1:]
    acc = np.zeros((h, w, *extra))
    wk = weight.reshape(tile, tile, *([1] * len(extra)))
    for i, (y, x) in enumerate(corners):
      acc[y : y + tile, x : x + tile] += wk * (v[i] if dense else v[i][None, None])
    maps[k] = (acc / total.reshape(h, w, *([1] * len(extra)))).astype(np.float32)
  return maps, per_tile, corners


def read_raster(path: str) -> tuple[np.ndarray, list[tuple]]:
  """A GeoTIFF's pixels `[H, W, C]` (a single band as C = 1) and its georeferencing tags in
  `tifffile.imwrite(extratags=...)` form."""
  import tifffile

  try:
    with tifffile.TiffFile(path) as f:
      page = f.pages[0]
      data = page.asarray()
      tags = [
        (t.code, t.dtype, t.count, t.value, True) for t in page.tags.values() if t.code in GEO_TAGS
      ]
      planar_separate = page.planarconfig == 2 and data.ndim == 3
  except (OSError, ValueError, tifffile.TiffFileError) as e:
    raise DataError(f"config.predict.raster={path!r}: not a readable GeoTIFF ({e})") from e
  if data.ndim == 2:
    data = data[..., None]
  elif planar_separate:
    data = np.moveaxis(data, 0, -1)
  return data, tags


def write_raster(path: str, data: np.ndarray, tags: list[tuple]) -> None:
  """`data` `[H, W]` or `[H, W, C]` as a GeoTIFF with the scene's `tags`, atomically."""
  import tifffile

  with fileio.atomic_path(path) as tmp:
    tifffile.imwrite(
      tmp, np.asarray(data), photometric="minisblack", planarconfig="contig" if data.ndim == 3
      else None, metadata=None, extratags=tags,
    )  # fmt: skip
