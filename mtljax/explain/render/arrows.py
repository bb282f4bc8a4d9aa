"""Labelled arrows (`render.py`, Figs. 4 and 14): one arrow per present attribute at the
centre of mass of its map."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.font_manager import FontProperties

from mtljax.explain.render.base import _as_float_rgb, _figure, _save_png

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
