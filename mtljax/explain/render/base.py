"""Shared pieces of the explanation figures (`render.py`): image and map conversion, the
heatmap `overlay`, figures without pyplot, atomic PNG writes, panel grids, TensorBoard images."""

from __future__ import annotations

import contextlib
import io
import math
import os
import uuid
from typing import Any, BinaryIO, Iterator, Sequence

import matplotlib
import matplotlib.image as mpimg
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# A map is treated as signed when its minimum is below this (tolerates float noise around 0).
_SIGNED_TOL = -1e-6
# Height of a panel's caption band and of a figure's title band, in inches.
_CAPTION_IN = 0.45
_TITLE_IN = 0.5


# ----------------------------------------------------------------------------- array helpers


def _as_float_rgb(image: Any) -> np.ndarray:
  """Any supported image as float32 `[H, W, 3]` in [0, 1]."""
  img = np.asarray(image)
  if img.ndim == 2:
    img = img[..., None]
  if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image must be [H,W], [H,W,1], [H,W,3] or [H,W,4], got {img.shape}")
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  img = img[..., :3]
  if img.dtype == np.bool_:
    img = img.astype(np.float32)
  elif np.issubdtype(img.dtype, np.integer):
    img = img.astype(np.float32) / 255.0
  img = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
  return np.clip(img, 0.0, 1.0)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
  """Float `[..., 3]` in [0, 1] → uint8 (rounded); uint8 passes through."""
  rgb = np.asarray(rgb)
  if rgb.dtype == np.uint8:
    return rgb
  return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _is_signed(*maps: Any) -> bool:
  """True when any finite value of the maps is negative (beyond float noise)."""
  for m in maps:
    m = np.asarray(m, dtype=np.float32)
    finite = m[np.isfinite(m)]
    if finite.size and float(finite.min()) < _SIGNED_TOL:
      return True
  return False


def _colormap(cmap: Any) -> matplotlib.colors.Colormap:
  return matplotlib.colormaps.get_cmap(cmap)


def overlay(
  image: Any, heatmap: Any, *, alpha: float = 0.5, cmap: Any = None, signed: bool | None = None
) -> np.ndarray:
  """Blends a colour-mapped saliency map over its image.

  `out = (1 - alpha) * image + alpha * cmap(heatmap)` everywhere (the usual Grad-CAM look).
  Unsigned maps are clipped to [0, 1] and coloured with "jet"; signed maps are clipped to [-1, 1]
  and coloured with "bwr" (0 is the colormap's middle). NaNs in the map count as 0.

  Args:
    image: `[H, W, 3]` float in [0, 1] or uint8 (grey `[H, W]`/`[H, W, 1]` and RGBA accepted).
    heatmap: `[H, W]` saliency, normalised to [0, 1] or [-1, 1].
    alpha: opacity of the heatmap colour, in [0, 1].
    cmap: colormap name or `Colormap`; default "jet" (unsigned) or "bwr" (signed).
    signed: whether the map is signed; `None` means "has negative values".

  Returns:
    uint8 `[H, W, 3]`.
  """
  img = _as_float_rgb(image)
  hm = np.asarray(heatmap, dtype=np.float32)
  if hm.ndim == 3 and hm.shape[-1] == 1:
    hm = hm[..., 0]
  if hm.shape != img.shape[:2]:
    raise ValueError(f"heatmap {hm.shape} does not match image {img.shape[:2]}")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  if signed is None:
    signed = _is_signed(hm)
  hm = np.nan_to_num(hm, nan=0.0, posinf=1.0, neginf=-1.0 if signed else 0.0)
  if signed:
    unit = (np.clip(hm, -1.0, 1.0) + 1.0) / 2.0
  else:
    unit = np.clip(hm, 0.0, 1.0)
  if cmap is None:
    cmap = "bwr" if signed else "jet"
  colour = _colormap(cmap)(unit)[..., :3].astype(np.float32)
  return _to_uint8((1.0 - alpha) * img + alpha * colour)


# ----------------------------------------------------------------------------- figure helpers


@contextlib.contextmanager
def _figure(width_px: int, height_px: int, dpi: float, **kwargs) -> Iterator[Figure]:
  """A pyplot-free Agg figure of `width_px × height_px` pixels at `dpi`; cleared on exit."""
  # Agg truncates `inches * dpi` to an int and `29 / 100 * 100 == 28.999...`: pad by a hair.
  fig = Figure(figsize=((width_px + 0.01) / dpi, (height_px + 0.01) / dpi), dpi=dpi, **kwargs)
  FigureCanvasAgg(fig)
  try:
    yield fig
  finally:
    fig.clear()


def _atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file in the same folder and `os.replace`."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    with open(tmp, "xb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def _save_png(fig: Figure, path: str | os.PathLike) -> None:
  """Renders `fig` to PNG at its own size and dpi (no bbox cropping) and writes it atomically."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=fig.dpi, facecolor="white")
  _atomic_write_bytes(path, buf.getvalue())


def _grid_px(nrows: int, ncols: int, panel_size: float, dpi: float, title: str) -> tuple[int, int]:
  """(width, height) in pixels of a grid of captioned square panels, plus a title band."""
  width = round(ncols * panel_size * dpi)
  height = round(nrows * (panel_size + _CAPTION_IN) * dpi + (_TITLE_IN * dpi if title else 0))
  return width, height


def _show(ax, rgb: np.ndarray, caption: str, fontsize: float) -> None:
  ax.imshow(rgb, interpolation="antialiased")
  ax.set_title(caption, fontsize=fontsize)
  ax.set_axis_off()


def _render_grid(
  path,
  panels: Sequence[tuple[np.ndarray, str]],
  *,
  ncols: int,
  title: str,
  panel_size: float,
  dpi: float,
  fontsize: float,
) -> None:
  """Saves `panels` (uint8 `[H, W, 3]`, caption) row-major on an `ncols`-wide grid."""
  ncols = max(1, min(ncols, len(panels)))
  nrows = math.ceil(len(panels) / ncols)
  width, height = _grid_px(nrows, ncols, panel_size, dpi, title)
  with _figure(width, height, dpi, layout="constrained") as fig:
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
      if i < len(panels):
        _show(ax, *panels[i], fontsize=fontsize)
      else:
        ax.set_axis_off()
    if title:
      fig.suptitle(title, fontsize=fontsize + 2)
    _save_png(fig, path)


# ----------------------------------------------------------------------------- TensorBoard


def tensorboard_images(writer: Any, tag: str, images: Any, step: int) -> None:
  """Writes a batch of images to a tensorboardX `SummaryWriter` (one grid image under `tag`).

  Args:
    writer: `tensorboardX.SummaryWriter`.
    tag: TensorBoard tag.
    images: uint8 `[N, H, W, 3]` (a single `[H, W, 3]` and floats in [0, 1] are accepted).
    step: global step.
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [N,H,W,3], got {images.shape}")
  if images.dtype != np.uint8:
    images = np.stack([_to_uint8(_as_float_rgb(im)) for im in images])
  writer.add_images(tag, images, global_step=int(step), dataformats="NHWC")
  writer.flush()


def png_to_array(path: str | os.PathLike | BinaryIO) -> np.ndarray:
  """Reads a PNG (path or binary file) as uint8 `[H, W, 3]` (alpha dropped, grey expanded)."""
  source = path if hasattr(path, "read") else os.fspath(path)
  return _to_uint8(_as_float_rgb(mpimg.imread(source, format="png")))
