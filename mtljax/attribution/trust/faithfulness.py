"""Faithfulness: does removing what a map calls important change the model's score?

Every function takes a score function `score(params, x [N, H, W, C]) -> [N]` (the explained
target already selected, other inputs held fixed), its `params`, the images `x [B, H, W, C]` and
the maps `[B, H, W]` (one value per pixel; a pixel's channels are removed together), and is pure
and jit-able (`static_argnames` for the integer options). The score is called on the batch
(N = B) and on several perturbed copies of it at once: N = k * B rows, row r a copy of example
r mod B (tile any per-example inputs such as the targets: `ops.tile_rows`). The perturbation
steps go to the model `chunk` at a time as one batch of `chunk * B` images (`ops.map_chunks`,
`ops.flat_scores`), which bounds memory. Conventions and their literature are in `docs/trust.md`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.sparse.linalg import cg

from mtljax.attribution.trust import ops


def _removal_curve(score, params, x, ranks, counts, base, *, insert: bool, chunk):
  """Scores `[B, S]` of `x` with the pixels of rank < counts[s] replaced by `base` (deletion) or
  of `base` with those pixels taken from `x` (insertion)."""
  b, h, w, _ = x.shape
  ranks = ranks.reshape(b, h, w, 1)

  def at(cs):  # cs [c]: c steps, one model call of c * B images
    removed = ranks < cs[:, None, None, None, None]
    xs = jnp.where(removed, x, base) if insert else jnp.where(removed, base, x)
    return ops.flat_scores(score, params, xs)

  return ops.map_chunks(at, counts, chunk).T


def pixel_flipping(
  score, params, x, maps, *, features_in_step: int = 1, baseline="min", chunk=None
):
  """Pixel flipping (Bach et al. 2015; Samek et al. 2017), Quantus's `PixelFlipping` convention.

  The pixels are replaced by the baseline in descending order of the map, `features_in_step` at
  a time; the curve holds the score after each step (`ceil(H*W / features_in_step)` points, the
  unperturbed score not included). Returns the curve `[B, S]`; its area is
  `ops.trapezoid(curve)` (dx = 1, as Quantus's `return_auc_per_sample`)."""
  ops.check_maps(x, maps)
  n = x.shape[1] * x.shape[2]
  counts = jnp.minimum(jnp.arange(1, math.ceil(n / features_in_step) + 1) * features_in_step, n)
  return _removal_curve(
    score,
    params,
    x,
    ops.descending_ranks(maps),
    counts,
    ops.baseline(x, baseline),
    insert=False,
    chunk=chunk,
  )


def deletion_insertion(
  score,
  params,
  x,
  maps,
  *,
  steps: int = 32,
  baseline="zero",
  insert_baseline="blur",
  blur_sigma: float = 5.0,
  chunk=None,
):
  """RISE's deletion and insertion curves (Petsiuk et al. 2018, §4.1).

  At `steps + 1` fractions `0, 1/steps, ..., 1` of the pixels (most important first), deletion
  scores `x` with those pixels replaced by `baseline`; insertion scores `insert_baseline` (a
  blurred copy by default) with those pixels restored from `x`. Returns `(deletion [B, S+1],
  insertion [B, S+1], deletion_auc [B], insertion_auc [B])`, the areas over the unit fraction axis
  (trapezoid): a faithful map has a low deletion AUC and a high insertion AUC."""
  ops.check_maps(x, maps)
  n = x.shape[1] * x.shape[2]
  counts = jnp.round(jnp.linspace(0.0, 1.0, steps + 1) * n).astype(jnp.int32)
  ranks = ops.descending_ranks(maps)
  dele = _removal_curve(
    score, params, x, ranks, counts, ops.baseline(x, baseline), insert=False, chunk=chunk
  )
  ins = _removal_curve(
    score,
    params,
    x,
    ranks,
    counts,
    ops.baseline(x, insert_baseline, blur_sigma),
    insert=True,
    chunk=chunk,
  )
  return dele, ins, ops.trapezoid(dele, 1.0 / steps), ops.trapezoid(ins, 1.0 / steps)


def region_perturbation(
  score, params, x, maps, *, patch: int = 4, regions: int | None = None, baseline="mean", chunk=None
):
  """Region perturbation (Samek et al. 2017, §III) on the grid of non-overlapping
  `patch x patch` regions: the regions are removed (set to `baseline`) one per step in descending
  order of their summed map value. Returns `(aopc [B], curve [B, K+1])`: `curve[:, k] =
  score(x) - score(x with the first k regions removed)` and AOPC its mean over k = 0..K (K =
  `regions`, default all). Larger AOPC = more faithful."""
  ops.check_maps(x, maps)
  b, h, w, _ = x.shape
  gh, gw = -(-h // patch), -(-w // patch)
  padded = jnp.pad(maps, ((0, 0), (0, gh * patch - h), (0, gw * patch - w)))
  region_sum = padded.reshape(b, gh, patch, gw, patch).sum((2, 4))
  rank = ops.descending_ranks(region_sum).reshape(b, gh, gw)
  pixel_rank = jnp.repeat(jnp.repeat(rank, patch, 1), patch, 2)[:, :h, :w]
  k = gh * gw if regions is None else min(int(regions), gh * gw)
  y = score(params, x)
  curve = _removal_curve(
    score,
    params,
    x,
    pixel_rank,
    jnp.arange(k + 1),
    ops.baseline(x, baseline),
    insert=False,
    chunk=chunk,
  )
  drop = y[:, None] - curve
  return drop.mean(-1), drop


def random_subsets(rng, batch: int, num_pixels: int, runs: int, subset: int):
  """Pixel indices `[B, runs, subset]` drawn without replacement (faithfulness correlation): the
  positions of the `subset` largest of `num_pixels` uniform draws, a uniformly random subset.
  `jax.random.permutation` per row costs two full sorts per row; XLA:CPU's top-k is 10x faster
  here (16 x 32 rows of 48x48 pixels), and that sort had cost as much as the metric's model calls.
  Ties between the float32 draws (2^-23 apart) are broken by index, a negligible bias."""
  u = jax.random.uniform(rng, (batch, runs, num_pixels))
  return jax.lax.top_k(u, subset)[1]


def faithfulness_correlation(score, params, x, maps, subsets, *, baseline="min", chunk=None):
  """Faithfulness correlation (Bhatt et al. 2020, Eq. 3), Quantus's `FaithfulnessCorrelation`.

  For each run r the pixels `subsets[:, r]` (`[B, R, K]` flat indices into H*W, e.g. from
  `random_subsets`) are replaced by `baseline`; the Pearson correlation over runs of the map's sum
  over the subset with the score drop `score(x) - score(x_r)`. Returns `[B]` in [-1, 1]."""
  ops.check_maps(x, maps)
  b, h, w, _ = x.shape
  r = subsets.shape[1]
  y = score(params, x)
  base = ops.baseline(x, baseline)
  rows = jnp.arange(b)[:, None, None]
  # Every run's pixels as one mask `[R, B, H, W, 1]` (one scatter, R*B*H*W bools) and the map's
  # sums over them, before the loop: the loop only selects pixels and runs the model.
  hit = jnp.zeros((b, r, h * w), bool).at[rows, jnp.arange(r)[None, :, None], subsets].set(True)
  hit = jnp.moveaxis(hit, 1, 0).reshape(r, b, h, w, 1)
  sums = maps.reshape(b, -1)[rows[..., 0], subsets.reshape(b, -1)].reshape(b, r, -1).sum(-1)

  def run(m):  # m [c, B, H, W, 1]: c runs, one model call of c * B images
    return ops.flat_scores(score, params, jnp.where(m, base, x))

  drops = y[:, None] - ops.map_chunks(run, hit, chunk).T  # [B, R]
  return ops.pearson(sums, drops)


_OFFSETS = (
  ((1, 1), 1 / 12),
  ((0, 1), 1 / 6),
  ((-1, 1), 1 / 12),
  ((1, -1), 1 / 12),
  ((0, -1), 1 / 6),
  ((-1, -1), 1 / 12),
  ((1, 0), 1 / 6),
  ((-1, 0), 1 / 6),
)


def _neighbour_sum(v):
  """`sum_o w_o v[p + o]` over the 8 neighbours of every pixel of `[B, H, W, C]` (0 outside)."""
  h, w = v.shape[1], v.shape[2]
  pad = jnp.pad(v, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(wt * pad[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for (dy, dx), wt in _OFFSETS)


def noisy_linear_imputation(
  x, removed, noise, *, noise_scale: float = 0.01, tol: float = 1e-10, maxiter: int = 2000
):
  """ROAD's imputation (Rong et al. 2022, §4): every removed pixel (`removed [B, H, W]` bool)
  takes the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal; removed neighbours are
  unknowns too), solved by conjugate gradients on the Laplacian system, then
  `noise_scale * noise` (`noise [B, H, W, C]`, standard normal) is added to the removed pixels."""
  m = removed[..., None].astype(x.dtype)
  weight = _neighbour_sum(jnp.ones_like(x))  # the valid neighbours' weight of every pixel

  def op(u):
    return m * (weight * u - _neighbour_sum(m * u))

  u, _ = cg(op, m * _neighbour_sum((1 - m) * x), tol=tol, atol=0.0, maxiter=maxiter)
  return jnp.where(m > 0, u + noise_scale * noise, x)


def road(
  score,
  params,
  x,
  maps,
  noise,
  *,
  percentages=tuple(range(1, 100, 2)),
  noise_scale: float = 0.01,
  order: str = "morf",
  chunk=None,
):
  """ROAD (Rong et al. 2022): the score after removing the top `p`% of pixels (`order` "morf":
  most relevant first; "lerf": least relevant first) by noisy linear imputation, for each p in
  `percentages`. `noise [B, H, W, C]` is the standard-normal draw (the same for every p).
  Returns `(curve [B, P], mean [B])`; MoRF: lower is more faithful."""
  ops.check_maps(x, maps)
  n = x.shape[1] * x.shape[2]
  ranks = ops.descending_ranks(maps if order == "morf" else -maps).reshape(maps.shape)
  counts = jnp.asarray([int(n * p / 100) for p in percentages])

  def at(cs):  # cs [c]: the imputations one by one (each its own solve), the model once
    imputed = jax.vmap(
      lambda count: noisy_linear_imputation(x, ranks < count, noise, noise_scale=noise_scale)
    )(cs)
    return ops.flat_scores(score, params, imputed)

  curve = ops.map_chunks(at, counts, chunk).T
  return curve, curve.mean(-1)
