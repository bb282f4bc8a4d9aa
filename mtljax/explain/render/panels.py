"""Panels and curves (`render.py`): member/ensemble panels (Fig. 2), heatmap grids, and the
ensemble-size curve (Fig. 5)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from matplotlib import ticker

from mtljax.explain.render.base import (
  _as_float_rgb,
  _figure,
  _is_signed,
  _render_grid,
  _save_png,
  _to_uint8,
  overlay,
)

_ENSEMBLE_COLOR = "tab:blue"
_INDIVIDUAL_COLOR = "tab:red"

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
    path: PNG to write; returned as a string.
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
    path: PNG to write; returned as a string.
    images: `[N, H, W, 3]` float in [0, 1] or uint8.
    maps: `[N, H, W]` normalised saliency maps.
    titles: `N` optional captions.
    ncols, signed, alpha, panel_size, dpi, fontsize: as in `save_member_panels`.
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
    path: PNG to write; returned as a string.
    sizes: `[K]` ensemble sizes.
    ens: `[K]` metric of the averaged explanation per size.
    ind: `[K]` average individual metric per size.
    metric: metric name, the y label.
    title: axes title.
    ens_std: optional `[K]` standard deviations of `ens`.
    ind_std: optional `[K]` standard deviations of `ind`.
    figsize: (width, height) in inches.
    dpi: pixels per inch.
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


def save_method_size_curve(out_dir: str, name: str, metric: str, curve: Any) -> str:
  """`<out_dir>/size_curve_<name>_<metric>.png`: method `name`'s Ens-Avg and Ind-Avg `metric` vs
  ensemble size (`curve` as `metrics.size_curve` returns it: `k`, `ens_avg`, `ind_avg`)."""
  return save_size_curve(
    os.path.join(out_dir, f"size_curve_{name}_{metric}.png"),
    curve["k"],
    curve["ens_avg"],
    curve["ind_avg"],
    metric=metric,
    title=f"{name}: {metric} vs ensemble size",
  )
