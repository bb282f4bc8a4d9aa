"""Perturbation attribution methods: occlusion and LIME (with grid and SLIC segments).
Conventions: `attributions.py`."""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.attribution.base import ScoreFn, _baseline_tree, _is_float, _weighted_sum


def _window_starts(size: int, window: int, stride: int) -> np.ndarray:
  """Captum's window positions: `ceil((size - window) / stride) + 1` starts, the last one clipped."""
  if window > size:
    raise ValueError(f"occlusion window {window} exceeds the input size {size}")
  return np.arange(math.ceil((size - window) / stride) + 1) * stride


def _coverage(size: int, window: int, stride: int) -> np.ndarray:
  """How many windows cover each position `[size]`."""
  starts = _window_starts(size, window, stride)
  pos = np.arange(size)
  return ((pos[None] >= starts[:, None]) & (pos[None] < starts[:, None] + window)).sum(0)


def _occlude_image(score_with, reference, x, b, window, stride, batch):
  """Captum occlusion of an image leaf `x [B, H, W, C]`; `score_with(occluded) -> [B]` or
  `[B, K]` (all targets read from each occluded forward) → `[B, (K,) H, W, C]`."""
  _, height, width, _ = x.shape
  (wy, wx), (sy, sx) = window, stride
  starts_y = jnp.asarray(_window_starts(height, wy, sy))
  starts_x = jnp.asarray(_window_starts(width, wx, sx))
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]

  def diff_at(p):
    y0, x0 = starts_y[p // starts_x.shape[0]], starts_x[p % starts_x.shape[0]]
    mask = (rows >= y0) & (rows < y0 + wy) & (cols >= x0) & (cols < x0 + wx)  # [H, W]
    occluded = jnp.where(mask[None, :, :, None], b, x)
    return (reference - score_with(occluded))[..., None, None] * mask

  num = starts_y.shape[0] * starts_x.shape[0]
  total = _weighted_sum(diff_at, jnp.ones((num,), x.dtype), batch)  # [B, (K,) H, W]
  counts = np.outer(_coverage(height, wy, sy), _coverage(width, wx, sx))
  return jnp.broadcast_to((total / counts)[..., None], reference.shape + x.shape[1:])


def _occlude_features(score_with, reference, x, b, batch):
  """Element-wise occlusion of a leaf `x [B, ...]`; `score_with(occluded) -> [B]`."""
  flat_x, flat_b = x.reshape(x.shape[0], -1), b.reshape(x.shape[0], -1)
  num = flat_x.shape[1]

  def diff_at(p):
    occluded = flat_x.at[:, p].set(flat_b[:, p]).reshape(x.shape)
    return (reference - score_with(occluded))[..., None] * jax.nn.one_hot(p, num, dtype=x.dtype)

  total = _weighted_sum(diff_at, jnp.ones((num,), x.dtype), batch)  # [B, (K,) num]
  return total.reshape(reference.shape + x.shape[1:])


def occlusion(
  f: ScoreFn,
  params,
  inputs,
  *,
  window=(8, 8),
  stride=(4, 4),
  baseline=0.0,
  batch_windows: int | None = 32,
):
  """Occlusion (Zeiler & Fergus) with Captum's `Occlusion` semantics.

  Each leaf is occluded on its own (the other leaves fixed). Image leaves `[B, H, W, C]`: a
  `window` slides over H, W with `stride` (all channels at once; windows that would pass the border
  are clipped to it, as Captum does), the occluded pixels are set to `baseline`, and
  `f(x) - f(occluded)` is added to every pixel of the window; each pixel's sum is divided by the
  number of windows covering it. Other floating leaves are occluded one element at a time.

  Args:
    baseline: occlusion value: a scalar or a pytree broadcastable to `inputs`.
    batch_windows: occluded inputs evaluated per vectorised call; None = all at once.

  Returns:
    A pytree shaped like `inputs`; with `[B, K]` scores (a target axis), `[B, K, ...]` leaves, all
    K targets read from each occluded forward pass.
  """
  baselines = _baseline_tree(inputs, baseline)
  reference = f(params, inputs)
  leaves, treedef = jax.tree.flatten(inputs)
  out = []
  for j, (x, b) in enumerate(zip(leaves, treedef.flatten_up_to(baselines))):

    def score_with(value, j=j):
      return f(params, jax.tree.unflatten(treedef, leaves[:j] + [value] + leaves[j + 1 :]))

    if not _is_float(x):
      out.append(jnp.zeros(reference.shape + x.shape[1:]))
    elif x.ndim == 4:
      out.append(_occlude_image(score_with, reference, x, b, window, stride, batch_windows))
    else:
      out.append(_occlude_features(score_with, reference, x, b, batch_windows))
  return jax.tree.unflatten(treedef, out)


def grid_segments(height: int, width: int, grid=(8, 8)) -> np.ndarray:
  """Labels `[H, W]` (int32, row-major) of a `grid = (rows, cols)` of near-equal cells."""
  rows = np.arange(height) * grid[0] // height
  cols = np.arange(width) * grid[1] // width
  return (rows[:, None] * grid[1] + cols[None, :]).astype(np.int32)


def superpixel_segments(images, n_segments: int = 50, *, compactness: float = 10.0) -> np.ndarray:
  """SLIC superpixels (scikit-image) of `images [B, H, W, C]` → labels `[B, H, W]` int32.

  Runs in numpy, outside jit: compute segments once, then pass them to `lime`. Each image is
  min-max scaled to [0, 1] per channel first (SLIC assumes that range); labels are renumbered
  0..S_b-1 per image.
  """
  from skimage.segmentation import slic  # pylint: disable=g-import-not-at-top

  images = np.asarray(images, np.float64)
  low = images.min(axis=(1, 2), keepdims=True)
  span = np.maximum(images.max(axis=(1, 2), keepdims=True) - low, 1e-12)
  scaled = (images - low) / span
  out = []
  for image in scaled:
    labels = slic(
      image,
      n_segments=n_segments,
      compactness=compactness,
      start_label=0,
      channel_axis=-1,
      convert2lab=image.shape[-1] == 3,
    )
    out.append(np.unique(labels, return_inverse=True)[1].reshape(labels.shape))
  return np.stack(out).astype(np.int32)


def lime(
  f: ScoreFn,
  params,
  inputs: Mapping[str, Any],
  rng,
  *,
  modality: str,
  segments=None,
  num_segments: int | None = None,
  grid=(8, 8),
  num_samples: int = 256,
  kernel_width: float = 0.25,
  baseline=0.0,
  ridge: float = 1.0,
  batch_size: int = 64,
):
  """LIME (Ribeiro et al.) over the segments of one image modality; other modalities fixed.

  Draws `num_samples` binary masks `z [N, S]` over the S segments (the first one all ones, the
  unperturbed image, as lime does); masked-out segments are set to `baseline`. Each sample is
  weighted by the exponential kernel `exp(-d² / (2 w²))` on the cosine distance `d` between `z` and
  the all-ones mask (equal to lime's `sqrt(exp(-d² / w²))` and to Captum's
  `get_exp_kernel_similarity_function`; `w = kernel_width`, lime's image default 0.25). The scores
  are regressed on `z` by weighted ridge regression with an unpenalised intercept (lime's Ridge,
  alpha `ridge`), solved in jnp so the method stays jit/vmap-able given the segments. The same
  masks serve all examples of the batch.

  Args:
    inputs: dict of modalities; `inputs[modality]` is `[B, H, W, C]`.
    segments: labels `[B, H, W]` or `[H, W]` in `[0, S)`; None = `grid_segments(H, W, grid)`.
    num_segments: S; needed when `segments` is traced (under jit), else inferred from them.
    batch_size: perturbed inputs per vectorised call.

  Returns:
    `[B, H, W]`: each pixel gets its segment's regression coefficient; with `[B, K]` scores (a
    target axis) `[B, K, H, W]`, every target regressed on the same perturbed forward passes.
  """
  x = inputs[modality]
  batch, height, width = x.shape[:3]
  if segments is None:
    segments, num_segments = grid_segments(height, width, grid), grid[0] * grid[1]
  elif num_segments is None:
    num_segments = int(np.max(segments)) + 1
  segments = jnp.broadcast_to(jnp.asarray(segments), (batch, height, width))
  base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)

  masks = jax.random.bernoulli(rng, 0.5, (num_samples, num_segments)).astype(x.dtype)
  masks = masks.at[0].set(1.0)

  def score_at(n):
    keep = masks[n][segments][..., None]  # [B, H, W, 1]
    return f(params, {**inputs, modality: keep * x + (1 - keep) * base})

  scores = jax.lax.map(score_at, jnp.arange(num_samples), batch_size=batch_size)  # [N, B(, K)]
  target_shape = scores.shape[1:]
  scores = scores.reshape(num_samples, -1)  # [N, B·K]
  distance = 1.0 - jnp.sqrt(masks.sum(1) / num_segments)
  weights = jnp.exp(-(distance**2) / (2 * kernel_width**2))  # [N]
  w_norm = weights / weights.sum()
  masks_c = masks - w_norm @ masks
  scores_c = scores - w_norm @ scores
  gram = masks_c.T @ (weights[:, None] * masks_c) + ridge * jnp.eye(num_segments, dtype=x.dtype)
  coef = jnp.linalg.solve(gram, masks_c.T @ (weights[:, None] * scores_c))  # [S, B·K]
  coef = coef.T.reshape(batch, -1, num_segments)  # [B, K, S]
  pixels = jnp.broadcast_to(segments.reshape(batch, 1, -1), (batch, coef.shape[1], height * width))
  return jnp.take_along_axis(coef, pixels, axis=2).reshape(target_shape + (height, width))
