"""Pictures of dense predictions: ground truth, prediction and error map per task, per example
(mtl-explainability Figs. 5, 10, 11: LULC and DEM predictions and errors beside the truth).

`write_dense_pictures(workdir, preds, config, ...)` reads an `evaluate` prediction dict (the
shared predictions contract: `target/<t>`, `pred/<t>`, `mask/<t>` `[N, H, W]`) and writes
`<workdir>/pictures/<split>/dense_<k>.png`, one figure per example with one row per segmentation
or dense-regression task, and the same figures as TensorBoard images.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from mtljax import tasks as tasks_lib


def _figure(rows, title):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
  for r, (task, kind, target, pred, mask, num_classes) in enumerate(rows):
    nodata = mask <= 0
    spec = tasks_lib.spec(kind)
    if spec.target == tasks_lib.CLASS:  # a class per pixel: categorical colours, 0/1 errors
      cmap = plt.get_cmap("tab20", max(num_classes, 2))
      show = lambda a: np.ma.array(a, mask=nodata)
      kw = dict(cmap=cmap, vmin=-0.5, vmax=max(num_classes, 2) - 0.5, interpolation="nearest")
      axes[r, 0].imshow(show(target), **kw)
      im = axes[r, 1].imshow(show(pred), **kw)
      err = np.ma.array((pred != target).astype(float), mask=nodata)
      axes[r, 2].imshow(err, cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
      acc = float((pred == target)[~nodata].mean()) if (~nodata).any() else float("nan")
      axes[r, 2].set_title(f"{task}: errors (accuracy {acc:.2f})")
      fig.colorbar(im, ax=axes[r, 1], fraction=0.046)
    else:
      valid = target[~nodata] if (~nodata).any() else target.ravel()
      lo, hi = float(np.min(valid)), float(np.max(valid))
      axes[r, 0].imshow(np.ma.array(target, mask=nodata), cmap="terrain", vmin=lo, vmax=hi)
      im = axes[r, 1].imshow(pred, cmap="terrain", vmin=lo, vmax=hi)
      fig.colorbar(im, ax=axes[r, 1], fraction=0.046)
      err = np.ma.array(pred - target, mask=nodata)
      lim = float(np.abs(err).max()) if err.count() else 1.0
      im = axes[r, 2].imshow(err, cmap="coolwarm", vmin=-lim, vmax=lim)
      fig.colorbar(im, ax=axes[r, 2], fraction=0.046)
      mae = float(np.abs(err).mean()) if err.count() else float("nan")
      axes[r, 2].set_title(f"{task}: error (MAE {mae:.3g})")
    axes[r, 0].set_title(f"{task}: ground truth")
    axes[r, 1].set_title(f"{task}: prediction")
    for a in axes[r]:
      a.set_xticks([])
      a.set_yticks([])
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def write_dense_pictures(
  workdir: str,
  preds: Mapping[str, np.ndarray],
  config,
  *,
  split: str = "test",
  names: Sequence[str] | None = None,
  num_examples: int = 4,
  tb_writer=None,
  step: int = 0,
) -> list[str]:
  """PNG (and TensorBoard) pictures of the first `num_examples` examples; returns the PNG paths.

  `tb_writer`: an object with `image(step, tag, img [H, W, 3] uint8)` (`MetricWriter`), or None.
  """
  tasks = [t for t, c in config.tasks.items() if tasks_lib.of(c).dense and f"pred/{t}" in preds]
  if not tasks:
    return []
  folder = os.path.join(workdir, "pictures", split)
  os.makedirs(folder, exist_ok=True)
  import matplotlib.pyplot as plt

  paths = []
  n = min(num_examples, len(preds["index"]))
  for k in range(n):
    rows = []
    for t in tasks:
      target, pred = np.asarray(preds[f"target/{t}"][k]), np.asarray(preds[f"pred/{t}"][k])
      mask, classes = (
        np.asarray(preds[f"mask/{t}"][k]),
        int(config.tasks[t].get("num_classes") or 0),
      )
      if target.ndim == 3:  # several values per pixel (a multi-band raster target): one row each
        mask = np.broadcast_to(mask[..., None] if mask.ndim == 2 else mask, target.shape)
        rows += [
          (f"{t}[{b}]", config.tasks[t].kind, target[..., b], pred[..., b], mask[..., b], classes)
          for b in range(target.shape[-1])
        ]
      else:
        rows.append((t, config.tasks[t].kind, target, pred, mask, classes))
    idx = int(preds["index"][k])
    name = str(names[idx]) if names is not None else str(idx)
    fig = _figure(rows, f"{split} example {name}")
    path = os.path.join(folder, f"dense_{k}.png")
    fig.savefig(path, dpi=80)
    if tb_writer is not None:
      fig.canvas.draw()
      img = np.asarray(fig.canvas.buffer_rgba())[..., :3]
      tb_writer.image(step, f"{split}_dense/{k}", img)
    plt.close(fig)
    paths.append(path)
  return paths
