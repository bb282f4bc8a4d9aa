"""Figures for explanations: heatmap overlays, member/ensemble panels, labelled arrows, size curves.

Renders the figures of the ensembles-and-multitask-explanations paper:

* `overlay`: a saliency map blended over its image (the building block of every panel).
* `save_member_panels` (Fig. 2): the image, each ensemble member's explanation, and the ensemble's
  (mean) explanation last.
* `save_labelled_arrows` (Figs. 4 and 14, §7): one labelled arrow per present attribute whose head
  sits at the centre of mass of that attribute's saliency (red: the ensemble's), optionally with
  small black arrows at each member's centre of mass.
* `save_heatmap_grid`: overlays of many examples.
* `save_size_curve` (Fig. 5): explanation metric of the ensemble-averaged explanation (blue) and the
  average individual's (red) against ensemble size.
* `tensorboard_images` / `png_to_array`: figures and overlays into TensorBoard.

Conventions: images are `[H, W, 3]` floats in [0, 1] or uint8 (`[H, W]` and `[H, W, 1]` grey and
`[H, W, 4]` RGBA are accepted too); maps are `[H, W]` normalised to [0, 1] (unsigned) or [-1, 1]
(signed); points are `(y, x)` in image pixel coordinates, pixel centres at integers.

Matplotlib is used without pyplot: every figure is a `matplotlib.figure.Figure` on its own
`FigureCanvasAgg`, so nothing is registered globally, no backend is switched and no GUI is needed.
Every writer creates the parent folders and writes atomically (rendered in memory, written to a
temporary file beside the target, fsynced, then `os.replace`d), so a crash never leaves a
truncated PNG.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import uuid
from typing import Any, BinaryIO, Iterator, Mapping, Sequence

import matplotlib
import matplotlib.image as mpimg
import numpy as np
from matplotlib import patheffects, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

# A map is treated as signed when its minimum is below this (tolerates float noise around 0).
_SIGNED_TOL = -1e-6
# Height of a panel's caption band and of a figure's title band, in inches.
_CAPTION_IN = 0.45
_TITLE_IN = 0.5
_ENSEMBLE_COLOR = "tab:blue"
_INDIVIDUAL_COLOR = "tab:red"


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


# ----------------------------------------------------------------------------- panels and grids


def save_member_panels(
  path: str | os.PathLike,
  image: Any,
  member_maps: Any,
  ensemble_map: Any,
  *,
  title: str = "",
  member_scores: Sequence[float] | None = None,
  ensemble_score: float | None = None,
  signed: bool | None = None,
  score_name: str = "score",
  alpha: float = 0.5,
  ncols: int | None = None,
  panel_size: float = 2.5,
  dpi: float = 100,
  fontsize: float = 10,
) -> str:
  """Fig. 2: the image, each member's explanation, and the ensemble's explanation last.

  Panels are "image", "member 0" … "member E-1" and "ensemble (mean of E)", laid out row-major on
  `ncols` columns (default: all `E + 2` in one row, at most 7 per row). One colormap for all
  panels: signed when any map has negative values (unless `signed` is given).

  The PNG is `round(ncols * panel_size * dpi)` pixels wide and
  `round((nrows * (panel_size + 0.45) + (0.5 if title else 0)) * dpi)` pixels high.

  Args:
    path: PNG to write.
    image: `[H, W, 3]` float in [0, 1] or uint8.
    member_maps: `[E, H, W]` each member's normalised saliency.
    ensemble_map: `[H, W]` the ensemble's (mean) saliency.
    title: figure title.
    member_scores: `[E]` optional per-member explanation scores, shown in the captions.
    ensemble_score: optional ensemble explanation score, shown in its caption.
    signed: colormap choice (see `overlay`); `None` decides from all maps together.
    score_name: name printed before the scores, e.g. "IoU".
    alpha: heatmap opacity.
    ncols: panels per row.
    panel_size: panel width in inches.
    dpi: pixels per inch.
    fontsize: caption font size (points).

  Returns:
    `path` as a string.
  """
  members = np.asarray(member_maps, dtype=np.float32)
  ens = np.asarray(ensemble_map, dtype=np.float32)
  if members.ndim != 3:
    raise ValueError(f"member_maps must be [E,H,W], got {members.shape}")
  e = members.shape[0]
  if member_scores is not None and len(member_scores) != e:
    raise ValueError(f"{len(member_scores)} member_scores for {e} members")
  if signed is None:
    signed = _is_signed(members, ens)
  img = _as_float_rgb(image)

  def caption(name: str, score: float | None) -> str:
    return name if score is None else f"{name}\n{score_name} {float(score):.3f}"

  two_lines = member_scores is not None or ensemble_score is not None
  panels = [(_to_uint8(img), "image\n" if two_lines else "image")]
  for i in range(e):
    score = None if member_scores is None else member_scores[i]
    panels.append(
      (overlay(img, members[i], alpha=alpha, signed=signed), caption(f"member {i}", score))
    )
  panels.append(
    (
      overlay(img, ens, alpha=alpha, signed=signed),
      caption(f"ensemble (mean of {e})", ensemble_score),
    )
  )
  _render_grid(
    path,
    panels,
    ncols=ncols or min(len(panels), 7),
    title=title,
    panel_size=panel_size,
    dpi=dpi,
    fontsize=fontsize,
  )
  return os.fspath(path)


def save_heatmap_grid(
  path: str | os.PathLike,
  images: Any,
  maps: Any,
  *,
  titles: Sequence[str] | None = None,
  ncols: int = 4,
  signed: bool | None = None,
  alpha: float = 0.5,
  panel_size: float = 2.5,
  dpi: float = 100,
  fontsize: float = 10,
) -> str:
  """Overlays of many examples on a grid, row-major.

  The PNG is `round(min(ncols, N) * panel_size * dpi)` pixels wide and
  `round(nrows * (panel_size + 0.45) * dpi)` pixels high, `nrows = ceil(N / ncols)`.

  Args:
    path: PNG to write.
    images: `[N, H, W, 3]` float in [0, 1] or uint8.
    maps: `[N, H, W]` normalised saliency maps.
    titles: `N` optional captions.
    ncols: panels per row.
    signed: colormap choice (see `overlay`); `None` decides from all maps together.
    alpha: heatmap opacity.
    panel_size: panel width in inches.
    dpi: pixels per inch.
    fontsize: caption font size (points).

  Returns:
    `path` as a string.
  """
  maps = np.asarray(maps, dtype=np.float32)
  n = len(images)
  if n == 0 or len(maps) != n:
    raise ValueError(f"need as many maps as images (>0), got {len(maps)} and {n}")
  if titles is not None and len(titles) != n:
    raise ValueError(f"{len(titles)} titles for {n} images")
  if signed is None:
    signed = _is_signed(maps)
  panels = [
    (
      overlay(images[i], maps[i], alpha=alpha, signed=signed),
      "" if titles is None else str(titles[i]),
    )
    for i in range(n)
  ]
  _render_grid(
    path, panels, ncols=ncols, title="", panel_size=panel_size, dpi=dpi, fontsize=fontsize
  )
  return os.fspath(path)


# ----------------------------------------------------------------------------- labelled arrows


def _spread(ys: np.ndarray, ties: np.ndarray, lo: float, hi: float, gap: float) -> np.ndarray:
  """Moves 1-D positions `[n]` simply so they are `gap` apart inside [lo, hi], keeping order.

  Sorted by desired position (then by `ties [n]`, then input order), pushed down to clear their
  predecessors, then pulled up to fit under `hi`. When `n` positions cannot fit at `gap`, they
  are spaced evenly on [lo, hi].
  """
  n = len(ys)
  if n == 0:
    return ys
  order = np.lexsort((np.arange(n), ties, np.clip(ys, lo, hi)))
  y = np.clip(ys[order].astype(np.float64), lo, hi)
  if n > 1 and (n - 1) * gap > hi - lo:
    y = np.linspace(lo, hi, n)
  else:
    for i in range(1, n):
      y[i] = max(y[i], y[i - 1] + gap)
    y[-1] = min(y[-1], hi)
    for i in range(n - 2, -1, -1):
      y[i] = min(y[i], y[i + 1] - gap)
  out = np.empty(n, dtype=np.float64)
  out[order] = y
  return out


def _text_px(text: str, fontsize: float, dpi: float) -> tuple[float, float]:
  """(width, height) in display pixels of one text at `fontsize` points and `dpi`."""
  w, h, _ = RendererAgg(1, 1, dpi).get_text_width_height_descent(
    text, FontProperties(size=fontsize), ismath=False
  )
  return float(w), float(h)


def save_labelled_arrows(
  path: str | os.PathLike,
  image: Any,
  arrows: Sequence[tuple[str, Sequence[float]]] | Mapping[str, Sequence[float]],
  *,
  member_points: Mapping[str, Any] | None = None,
  title: str = "",
  scale: float | None = None,
  margin: tuple[float, float] | None = None,
  dpi: float = 100,
  fontsize: float = 11,
) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
  """Fig. 14 / Fig. 4: labelled arrows whose heads sit at each attribute's centre of mass.

  Layout (deterministic): the image is drawn at `scale` display pixels per image pixel inside a
  white margin. Each label sits in the left or right margin column (the side its head lies on,
  seen from the image centre); its desired height is where the ray from the image centre through
  the head leaves the image frame grown by the arrow's horizontal run (radial push-out), clipped
  to the canvas; labels in a column are then moved apart vertically to one text line and a bit.
  The text is anchored at the tail (right-aligned on the left, left-aligned on the right), so
  labels never cover the image or the heads.
  Arrows are red with a white outline; members' centres of mass are small black arrows parallel to
  their label's arrow (or pointing inwards when the label has no ensemble arrow).

  Geometry: the point `(y, x)` of the image (pixel centres at integers) lands at PNG position
  `(row, col) = ((y + 0.5 + margin[0]) * scale, (x + 0.5 + margin[1]) * scale)` (floor it for the
  pixel index); the PNG is
  `ceil((H + 2 * margin[0]) * scale)` × `ceil((W + 2 * margin[1]) * scale)` pixels.

  Args:
    path: PNG to write.
    image: `[H, W, 3]` float in [0, 1] or uint8.
    arrows: `(label, (y, x))` pairs (or a mapping label → (y, x)): one per present attribute, the
      head at the (ensemble's) centre of mass in image pixels. Points with a NaN are skipped.
    member_points: optional mapping label → `[E, 2]` members' centres of mass `(y, x)`; NaN rows
      are skipped.
    title: figure title, in the top margin.
    scale: display pixels per image pixel; default fits the long side of the image to 512 pixels.
    margin: `(vertical, horizontal)` margin in image pixels on each side; default fits the labels
      (and the title). Labels longer than an explicit margin are cut at the canvas border.
    dpi: dots per inch of the PNG (sets the font size in pixels).
    fontsize: label font size (points).

  Returns:
    `[(label, (head_y, head_x), (tail_y, tail_x))]` for the arrows drawn, in input order, in image
    pixel coordinates (the tail is the text anchor).
  """
  img = _as_float_rgb(image)
  h, w = img.shape[:2]
  items = list(arrows.items()) if isinstance(arrows, Mapping) else list(arrows)
  drawn = []
  for label, point in items:
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    if point.shape != (2,):
      raise ValueError(f"arrow point for {label!r} must be (y, x), got {point.shape}")
    if np.all(np.isfinite(point)):
      drawn.append((str(label), (float(point[0]), float(point[1]))))

  # Sizes in display pixels, then in image pixels.
  if scale is None:
    scale = 512.0 / max(h, w)
  scale = float(scale)
  sizes = [_text_px(label, fontsize, dpi) for label, _ in drawn]
  line_px = _text_px("Ag", fontsize, dpi)[1]
  title_px = _text_px(title, fontsize + 2, dpi)[1] * 1.6 if title else 0.0
  gap_px = max(24.0, 0.08 * max(h, w) * scale)  # horizontal run of an arrow out of the image
  if margin is None:
    label_px = max((s[0] for s in sizes), default=0.0)
    mx = (gap_px + label_px + 8.0) / scale
    my = max(1.5 * line_px, title_px + 0.5 * line_px) / scale
  else:
    my, mx = (float(m) for m in margin)
  width_px = math.ceil((w + 2 * mx) * scale)
  height_px = math.ceil((h + 2 * my) * scale)
  x0, y0 = -0.5 - mx, -0.5 - my  # data coordinates of the canvas's top-left corner
  x1, y1 = x0 + width_px / scale, y0 + height_px / scale

  # Tails: side columns, radial push-out, vertical collision resolution.
  gap = min(gap_px / scale, mx)
  x_left, x_right = -0.5 - gap, w - 0.5 + gap
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  half_line = 0.6 * line_px / scale
  lo, hi = y0 + title_px / scale + half_line, y1 - half_line
  if lo > hi:
    lo = hi = (y0 + y1) / 2.0
  # The ray from the centre through the head leaves the image frame grown by `gap` at height
  # `ty`; the label goes to the column on the head's side at that height.
  ey, ex = h / 2.0 + gap, w / 2.0 + gap
  tails = np.zeros((len(drawn), 2))
  for i, (_, (hy, hx)) in enumerate(drawn):
    dy, dx = hy - cy, hx - cx
    t = min(
      ex / abs(dx) if abs(dx) > 1e-9 else math.inf, ey / abs(dy) if abs(dy) > 1e-9 else math.inf
    )
    ty = cy + t * dy if math.isfinite(t) else cy
    tails[i] = (np.clip(ty, lo, hi), x_left if dx < 0 else x_right)
  heads_y = np.array([hy for _, (hy, _) in drawn], dtype=np.float64)
  line_gap = 1.15 * line_px / scale
  for side_x in (x_left, x_right):
    idx = np.flatnonzero(tails[:, 1] == side_x)
    tails[idx, 0] = _spread(tails[idx, 0], heads_y[idx], lo, hi, line_gap)

  outline = [patheffects.withStroke(linewidth=3.5, foreground="white")]
  member_len = 0.07 * max(h, w)
  with _figure(width_px, height_px, dpi) as fig:
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.imshow(
      img,
      extent=(-0.5, w - 0.5, h - 0.5, -0.5),
      aspect="auto",
      interpolation="nearest" if scale >= 1 else "antialiased",
    )
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)  # y grows downwards, as in the image
    ax.set_autoscale_on(False)
    if title:
      fig.text(
        0.5, 1.0 - 0.2 * title_px / height_px, title, ha="center", va="top", fontsize=fontsize + 2
      )

    tail_of = {label: tails[i] for i, (label, _) in enumerate(drawn)}
    for label, pts in (member_points or {}).items():
      pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
      tail = tail_of.get(str(label))
      for py, px in pts[np.all(np.isfinite(pts), axis=1)]:
        away = tail - (py, px) if tail is not None else np.array((py - cy, px - cx))
        norm = float(np.hypot(*away))
        away = away / norm if norm > 1e-9 else np.array((-1.0, -1.0)) / math.sqrt(2.0)
        sy, sx = np.array((py, px)) + member_len * away
        ax.annotate(
          "",
          xy=(px, py),
          xytext=(sx, sy),
          zorder=3,
          arrowprops=dict(
            arrowstyle="-|>", color="black", lw=1.0, mutation_scale=8, shrinkA=0, shrinkB=0
          ),
        )

    result = []
    for (label, (hy, hx)), (ty, tx) in zip(drawn, tails):
      ann = ax.annotate(
        label,
        xy=(hx, hy),
        xytext=(tx, ty),
        ha="right" if tx < cx else "left",
        va="center",
        fontsize=fontsize,
        zorder=4,
        arrowprops=dict(
          arrowstyle="-|>", color="red", lw=2.0, mutation_scale=16, shrinkA=3, shrinkB=0
        ),
      )
      ann.arrow_patch.set_path_effects(outline)
      result.append((label, (hy, hx), (float(ty), float(tx))))
    _save_png(fig, path)
  return result


# ----------------------------------------------------------------------------- ensemble size curve


def save_size_curve(
  path: str | os.PathLike,
  sizes: Any,
  ens: Any,
  ind: Any,
  *,
  metric: str = "IoU",
  title: str = "",
  ens_std: Any = None,
  ind_std: Any = None,
  figsize: tuple[float, float] = (5.0, 3.5),
  dpi: float = 100,
) -> str:
  """Fig. 5: explanation metric against ensemble size.

  Blue: the metric of the ensemble-averaged explanation; red: the average of the individual
  members' metrics. Error bars when the standard deviations are given. The PNG is
  `round(figsize[0] * dpi)` × `round(figsize[1] * dpi)` pixels (width × height).

  Args:
    path: PNG to write.
    sizes: `[K]` ensemble sizes.
    ens: `[K]` metric of the averaged explanation per size.
    ind: `[K]` average individual metric per size.
    metric: metric name, the y label.
    title: axes title.
    ens_std: optional `[K]` standard deviations of `ens`.
    ind_std: optional `[K]` standard deviations of `ind`.
    figsize: (width, height) in inches.
    dpi: pixels per inch.

  Returns:
    `path` as a string.
  """
  sizes = np.asarray(sizes, dtype=np.float64)
  curves = [
    np.asarray(v, dtype=np.float64) if v is not None else None for v in (ens, ind, ens_std, ind_std)
  ]
  for v in curves:
    if v is not None and v.shape != sizes.shape:
      raise ValueError(f"curves must match sizes {sizes.shape}, got {v.shape}")
  ens, ind, ens_std, ind_std = curves
  with _figure(round(figsize[0] * dpi), round(figsize[1] * dpi), dpi, layout="constrained") as fig:
    ax = fig.add_subplot()
    ax.errorbar(
      sizes,
      ens,
      yerr=ens_std,
      color=_ENSEMBLE_COLOR,
      marker="o",
      ms=4,
      capsize=3,
      label="averaged explanation (ensemble)",
    )
    ax.errorbar(
      sizes,
      ind,
      yerr=ind_std,
      color=_INDIVIDUAL_COLOR,
      marker="s",
      ms=4,
      capsize=3,
      label="average of individuals",
    )
    ax.set_xlabel("ensemble size")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
      ax.set_title(title)
    _save_png(fig, path)
  return os.fspath(path)


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
