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

The figures live in `panels.py` (panels, grids, size curves), `arrows.py` (labelled arrows) and
`base.py` (overlay, figure and PNG helpers, TensorBoard); this module is their one front.
"""

import os  # noqa: F401  (`render.os`: tests patch `os.replace` to crash an atomic write)

from mtljax.explain.render.arrows import save_labelled_arrows
from mtljax.explain.render.base import overlay, png_to_array, tensorboard_images
from mtljax.explain.render.panels import (
  save_heatmap_grid,
  save_member_panels,
  save_method_size_curve,
  save_size_curve,
)

__all__ = [
  "overlay",
  "png_to_array",
  "save_heatmap_grid",
  "save_labelled_arrows",
  "save_member_panels",
  "save_method_size_curve",
  "save_size_curve",
  "tensorboard_images",
]
