"""Figures of the intrinsic multitask analysis (PNG, matplotlib without pyplot, Agg canvas).

One function per kind of figure of the mtl-explainability paper: curves over epochs (Figs. 4, 6a,
12), stacked fractions (Fig. 6b), pie charts (Fig. 7), correct-vs-wrong strips (Fig. 2), per-group
scatter panels (Fig. 8) and error-map grids (Figs. 5, 10). Every writer creates the folder and
writes the PNG atomically (temporary file, then `os.replace`).
"""

from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mtljax import fileio

_COMBO_COLORS = {"CC": "tab:green", "CF": "tab:blue", "FC": "tab:orange", "FF": "tab:red"}


def _figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def save(fig: Figure, path: str) -> str:
  """Writes `fig` as PNG to `path` atomically; returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=fig.dpi, facecolor="white", bbox_inches="tight")
  return fileio.write_bytes(path, buf.getvalue())


def curves(
  path: str,
  epochs: Sequence[int],
  series: Mapping[str, Sequence[float]],
  *,
  title: str,
  ylabel: str,
  colors: Mapping[str, str] | None = None,
) -> str:
  """One line per series over epochs (Figs. 4, 6a, 12)."""
  fig = _figure(6.4, 3.8)
  ax = fig.add_subplot()
  for name, values in series.items():
    ax.plot(epochs, values, marker="o", label=name, color=(colors or {}).get(name))
  ax.set_xlabel("epoch")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save(fig, path)


def stacked_fractions(
  path: str, epochs: Sequence[int], fractions: Mapping[str, Sequence[float]], *, title: str
) -> str:
  """Stacked bars of fractions per epoch (Fig. 6b: what became of the first epoch's FF)."""
  fig = _figure(6.4, 3.8)
  ax = fig.add_subplot()
  bottom = np.zeros(len(epochs))
  for name, values in fractions.items():
    v = np.nan_to_num(np.asarray(values, np.float64))
    ax.bar([str(e) for e in epochs], v, bottom=bottom, label=name, color=_COMBO_COLORS.get(name))
    bottom += v
  ax.set_xlabel("epoch")
  ax.set_ylabel("fraction")
  ax.set_ylim(0, 1.05)
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  return save(fig, path)


def pies(path: str, panels: Mapping[str, Mapping[str, int]], *, title: str) -> str:
  """One pie chart per panel (e.g. per epoch) of counts per label (Fig. 7); empty labels are
  left out of a pie and named in its legend with 0."""
  n = max(1, len(panels))
  fig = _figure(4.2 * n, 4.4)
  for i, (name, counts) in enumerate(panels.items()):
    ax = fig.add_subplot(1, n, i + 1)
    labels = [k for k, v in counts.items() if v > 0]
    values = [counts[k] for k in labels]
    cmap = {f"{c}-{s}": col for c, col in _COMBO_COLORS.items() for s in ("in", "out")}
    colors = [cmap.get(k, None) for k in labels]
    hatches = ["//" if k.endswith("-out") else "" for k in labels]
    if values:
      wedges, *_ = ax.pie(
        values,
        labels=[f"{k}\n{counts[k]}" for k in labels],
        colors=colors,
        autopct="%1.0f%%",
        pctdistance=0.75,
        textprops={"fontsize": 7},
        wedgeprops={"edgecolor": "white"},
      )
      for w, h in zip(wedges, hatches):
        w.set_hatch(h)
    ax.set_title(name, fontsize=9)
  fig.suptitle(title, fontsize=10)
  return save(fig, path)


def correct_wrong_strips(
  path: str,
  epochs: Sequence[int],
  points: Sequence[tuple[np.ndarray, np.ndarray]],
  *,
  title: str,
  ylabel: str,
  seed: int = 0,
) -> str:
  """Per epoch, the main-task errors of examples whose auxiliary label is correct (blue) and
  wrong (orange), side by side with jitter (Fig. 2)."""
  rng = np.random.default_rng(seed)
  fig = _figure(max(6.4, 0.5 * len(epochs)), 3.8)
  ax = fig.add_subplot()
  for k, (e, (ok, bad)) in enumerate(zip(epochs, points)):
    for off, v, color, label in (
      (-0.18, ok, "tab:blue", "aux correct"),
      (0.18, bad, "tab:orange", "aux wrong"),
    ):
      if len(v):
        x = e + off + rng.uniform(-0.12, 0.12, len(v))
        ax.scatter(x, v, s=4, alpha=0.5, color=color, label=label if k == 0 else None)
  ax.set_xlabel("epoch")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8, markerscale=3)
  ax.grid(alpha=0.3)
  return save(fig, path)


def group_scatter(
  path: str,
  panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
  *,
  title: str,
  xlabel: str,
  ylabel: str,
) -> str:
  """One scatter panel per epoch: a point per group (x, y), coloured by a category (Fig. 8)."""
  n = max(1, len(panels))
  fig = _figure(4.0 * n, 3.6)
  for i, (name, (x, y, cat)) in enumerate(panels.items()):
    ax = fig.add_subplot(1, n, i + 1)
    for c in np.unique(cat):
      sel = cat == c
      ax.scatter(x[sel], y[sel], s=12, alpha=0.7, label=str(c))
    ax.set_title(name, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    if i == 0:
      ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(alpha=0.3)
    if len(np.unique(cat)) > 1:
      ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  return save(fig, path)


def map_grid(
  path: str, rows: Sequence[Sequence[tuple[np.ndarray, str, str]]], *, title: str
) -> str:
  """A grid of maps: each row a list of `(map [H, W], caption, colormap[, (vmin, vmax)])`, NaN
  drawn grey (Figs. 5, 10: target, prediction and error of each dense task side by side)."""
  ncols = max(len(r) for r in rows)
  fig = _figure(2.2 * ncols, 2.3 * len(rows) + 0.4)
  for i, row in enumerate(rows):
    for j, (m, caption, cmap, *lim) in enumerate(row):
      vmin, vmax = lim[0] if lim else (None, None)
      ax = fig.add_subplot(len(rows), ncols, i * ncols + j + 1)
      cm = matplotlib.colormaps[cmap].with_extremes(bad="lightgrey")
      im = ax.imshow(
        np.ma.masked_invalid(np.asarray(m, np.float64)),
        cmap=cm,
        interpolation="nearest",
        vmin=vmin,
        vmax=vmax,
      )
      ax.set_title(caption, fontsize=7)
      ax.set_axis_off()
      fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
  fig.suptitle(title, fontsize=10)
  return save(fig, path)
