"""CropYield pictures: per-field yield maps with crop misclassifications (paper Figs. 3 and 9).

Each picture shows one field, its pixels placed at their (x, y) inside the field grid: target
yield, predicted yield (same colour scale), relative error (prediction − target) / target, and
the pixels whose crop was misclassified (when crop classification is a task). Called at the end
of training through its registry entry's ``pictures_fn`` (``train.write_pictures``) on the test split,
into ``<workdir>/pictures/test/``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from mtljax.data.cropyield.format import CROPS


def field_grid(x: np.ndarray, y: np.ndarray, values: np.ndarray, fill=np.nan) -> np.ndarray:
  """Pixels at ``(x, y)`` → a ``[max y + 1, max x + 1]`` raster, ``fill`` where no pixel is."""
  x, y = np.asarray(x, np.int64), np.asarray(y, np.int64)
  grid = np.full((int(y.max()) + 1, int(x.max()) + 1), fill, np.float64)
  grid[y, x] = values
  return grid


def _figure_to_array(fig) -> np.ndarray:
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def draw_field(field_id: str, crop: str, x, y, target, pred, crop_wrong=None, title: str = ""):
  """One field's panels as an RGB uint8 array ``[H, W, 3]``."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  target, pred = np.asarray(target, np.float64), np.asarray(pred, np.float64)
  rel = (pred - target) / np.maximum(np.abs(target), 1e-6)
  panels = [
    ("target yield (t/ha)", field_grid(x, y, target), "viridis"),
    ("predicted yield (t/ha)", field_grid(x, y, pred), "viridis"),
    ("relative error", field_grid(x, y, rel), "RdBu"),
  ]
  if crop_wrong is not None:
    panels.append(
      (
        f"crop misclassified ({int(np.sum(crop_wrong))} px)",
        field_grid(x, y, np.asarray(crop_wrong, np.float64)),
        "Reds",
      )
    )
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), dpi=80)
  lo, hi = np.nanpercentile(np.concatenate([target, pred]), [2, 98])
  for ax, (name, grid, cmap) in zip(axes, panels):
    if cmap == "viridis":
      kw = dict(vmin=lo, vmax=hi)
    elif cmap == "RdBu":
      r = max(
        float(np.nanpercentile(np.abs(grid), 98)), 1e-3
      )  # one outlier pixel would wash it out
      kw = dict(vmin=-r, vmax=r)
    else:
      kw = dict(vmin=0, vmax=1)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, interpolation="nearest", **kw)
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if cmap != "Reds":
      fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.suptitle(title or f"field {field_id} ({crop})", fontsize=10)
  fig.tight_layout()
  image = _figure_to_array(fig)
  plt.close(fig)
  return image


def yield_maps(
  preds: Mapping[str, np.ndarray], source: Any, out_dir: str, *, max_fields: int = 6
) -> list[tuple[str, np.ndarray]]:
  """Yield maps of the split's fields (those with the most misclassified pixels first, then by
  id), saved as ``<out_dir>/yield_map_<field_id>.png``; returns ``[(tag, image)]``."""
  from PIL import Image

  if "pred/yield" not in preds:
    return []
  os.makedirs(out_dir, exist_ok=True)
  index = np.asarray(preds["index"])
  field = np.asarray(source.field_index)[index]
  xy = (
    np.stack(
      [
        np.asarray(source._arrays[f]["xy"][p])
        for f, p in zip(field, np.asarray(source.pixel)[index])
      ]
    )
    if len(index)
    else np.zeros((0, 2))
  )
  wrong = None
  if "pred/crop" in preds and "target/crop" in preds:
    wrong = np.asarray(preds["pred/crop"]) != np.asarray(preds["target/crop"])
  fields = np.unique(field)
  order = sorted(
    fields,
    key=lambda f: (
      -(int(wrong[field == f].sum()) if wrong is not None else 0),
      source.fields[f]["field_id"],
    ),
  )
  out = []
  for f in order[:max_fields]:
    sel = field == f
    row = source.fields[f]
    image = draw_field(
      row["field_id"],
      row["crop"],
      xy[sel, 0],
      xy[sel, 1],
      preds["target/yield"][sel],
      preds["pred/yield"][sel],
      None if wrong is None else wrong[sel],
      title=f"field {row['field_id']} ({row['crop']}, {row['year']})",
    )
    Image.fromarray(image).save(os.path.join(out_dir, f"yield_map_{row['field_id']}.png"))
    out.append((f"yield_map/{row['field_id']}", image))
  return out


__all__ = ["CROPS", "draw_field", "field_grid", "yield_maps"]
