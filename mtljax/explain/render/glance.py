"""The picture a person reads at a glance (`render.py`): the image beside its explanation, each
with a colour bar that says what the colours mean, and the sentence under them.

An attribution map normalised by its maximum is near 0 almost everywhere (a few pixels hold the
peak), so a plain blend over the image looks washed out. `stretch` maps the map's `percentile`
of |value| to full colour and clips above it; `glance_overlay` then lets the colour cover the
image only as much as the stretched value is high, so where the model does not look the image
stays as it is. Signed maps keep their sign (blue against the target, red for it).
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

import matplotlib
import numpy as np

from mtljax.explain.render.base import _as_float_rgb, _figure, _is_signed, _save_png, _to_uint8

#: Colour maps of the stretched overlay (unsigned, signed) and of the members' disagreement.
_CMAP, _SIGNED_CMAP, _SPREAD_CMAP = "inferno", "bwr", "viridis"


def stretch(heatmap: Any, *, percentile: float = 99.0, signed: bool = False) -> np.ndarray:
  """`heatmap [H, W]` scaled so its `percentile` of |value| is 1, clipped to [0, 1] ([-1, 1]
  signed); NaN as 0. A map that is 0 everywhere stays 0."""
  m = np.nan_to_num(np.asarray(heatmap, np.float32))
  if not signed:
    m = np.maximum(m, 0.0)
  top = float(np.percentile(np.abs(m), percentile)) if m.size else 0.0
  if top <= 0:
    top = float(np.abs(m).max()) or 1.0
  return np.clip(m / top, -1.0 if signed else 0.0, 1.0)


def glance_overlay(image: Any, stretched: Any, *, signed: bool = False, alpha: float = 0.85):
  """uint8 `[H, W, 3]`: the colour of `stretched` (from `stretch`) over the image in grey with
  an opacity of `alpha * |value|`: the image shows through where the map is low, and the map's
  colours never mix with the image's own (the input is drawn in colour beside it)."""
  img = _as_float_rgb(image).mean(-1, keepdims=True) * np.ones(3, np.float32)
  v = np.asarray(stretched, np.float32)
  cmap = matplotlib.colormaps.get_cmap(_SIGNED_CMAP if signed else _CMAP)
  colour = cmap((v + 1.0) / 2.0 if signed else v)[..., :3]
  a = alpha * np.abs(v)[..., None]
  return _to_uint8((1.0 - a) * img + a * colour)


def save_glance(
  path: str | os.PathLike,
  image: Any,
  heatmap: Any,
  *,
  sentence: str,
  title: str = "",
  spread: Any = None,
  signed: bool | None = None,
  percentile: float = 99.0,
  panel_size: float = 2.6,
  dpi: float = 100,
  fontsize: float = 9,
) -> str:
  """One explained input: the image, the stretched overlay with its colour bar, optionally the
  members' disagreement (`spread [H, W]`, e.g. their per-pixel std, stretched the same way) with
  its own, and `sentence` wrapped under the panels. Returns the path."""
  hm = np.asarray(heatmap, np.float32)
  if signed is None:
    signed = _is_signed(hm)
  img = _as_float_rgb(image)
  if hm.shape != img.shape[:2]:
    raise ValueError(f"heatmap {hm.shape} does not match image {img.shape[:2]}")
  panels = 2 + (spread is not None)
  gap = 1.15  # room for a colour bar and its labels
  width = panels * panel_size + (panels - 1) * gap + 0.2 + gap
  chars = max(40, int((width - 0.3) * 72 / (fontsize * 0.56)))  # a sans-serif character's width
  lines = textwrap.wrap(sentence, chars) or [""]
  text_in = 0.2 + len(lines) * fontsize * 1.45 / 72
  title_in = 0.35 if title else 0.05
  height = panel_size + 0.35 + title_in + 0.3 + text_in
  with _figure(round(width * dpi), round(height * dpi), dpi) as fig:
    bottom = text_in / height
    ax_w = panel_size / width
    bar_w = 0.12 / width
    x = 0.1 / width

    def axes(left, w):
      return fig.add_axes((left, bottom + 0.3 / height, w, panel_size / height))

    ax = axes(x, ax_w)
    ax.imshow(img, interpolation="antialiased")
    ax.set_title("input", fontsize=fontsize)
    ax.set_axis_off()
    x += ax_w + gap / width
    shown = [
      (
        hm,
        signed,
        _SIGNED_CMAP if signed else _CMAP,
        "explanation",
        ("against", "for the target") if signed else ("not used", "most used"),
      )
    ]
    if spread is not None:
      shown.append(
        (
          np.asarray(spread, np.float32),
          False,
          _SPREAD_CMAP,
          "members disagree",
          ("agree", "disagree most"),
        )  # fmt: skip
      )
    for m, sgn, cmap, caption, (lo, hi) in shown:
      v = stretch(m, percentile=percentile, signed=sgn)
      ax = axes(x, ax_w)
      if cmap == _SPREAD_CMAP:
        ax.imshow(v, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
      else:
        ax.imshow(glance_overlay(img, v, signed=sgn), interpolation="antialiased")
      ax.set_title(caption, fontsize=fontsize)
      ax.set_axis_off()
      cax = fig.add_axes(
        (x + ax_w + 0.04 / width, bottom + 0.3 / height, bar_w, panel_size / height)
      )
      norm = matplotlib.colors.Normalize(-1 if sgn else 0, 1)
      bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), cax=cax)
      bar.set_ticks([-1 if sgn else 0, 1])
      bar.set_ticklabels([lo, hi], fontsize=fontsize - 1)
      x += ax_w + gap / width
    fig.text(
      0.1 / width,
      bottom + 0.08 / height,
      f"colours stretched to each map's {percentile:g}th percentile",
      fontsize=fontsize - 2,
      color="0.4",
      va="bottom",
    )
    if title:
      fig.text(0.5, 1 - 0.2 / height, title, fontsize=fontsize + 1, ha="center", va="center")
    fig.text(0.1 / width, bottom - 0.05 / height, "\n".join(lines), fontsize=fontsize, va="top")
    _save_png(fig, path)
  return os.fspath(path)
