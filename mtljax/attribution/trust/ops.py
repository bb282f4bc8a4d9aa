"""Shared pieces of the trust metrics: baselines, ranks, correlations and the chunked step loop.

Shapes: images `x [B, H, W, C]` (NHWC, as the models take them), maps `[B, H, W]` (one value per
pixel; a pixel's channels are perturbed together), masks `[B, H, W]` (bool). Everything is jnp and
jit-able; nothing here draws random numbers (the callers pass keys or the draws themselves).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

#: Perturbation baselines: the value a removed pixel takes, per image (Quantus's names in brackets).
BASELINES = ("zero", "min", "max", "mean", "blur")


def check_maps(x, maps, what: str = "maps") -> None:
  """ValueError unless `maps [..., B, H, W]` fits images `x [B, H, W, C]` (static shapes)."""
  if maps.ndim < 3 or tuple(maps.shape[-3:]) != tuple(x.shape[:3]):
    raise ValueError(
      f"{what} of shape {tuple(maps.shape)} do not fit inputs of shape {tuple(x.shape)}: "
      f"expected [B, H, W] = {tuple(x.shape[:3])}"
    )


def baseline(x, kind: str, blur_sigma: float = 5.0):
  """The replacement image `[B, H, W, C]` of `x` for a removed pixel.

  "zero": 0 (black in normalised units); "min"/"max"/"mean": the image's minimum / maximum / mean
  over all pixels and channels (Quantus's "black"/"white"/"mean"); "blur": `x` blurred by a
  Gaussian of `blur_sigma` pixels (RISE's insertion start, Petsiuk et al. 2018, §3.2)."""
  if kind == "zero":
    return jnp.zeros_like(x)
  if kind in ("min", "max", "mean"):
    red = {"min": jnp.min, "max": jnp.max, "mean": jnp.mean}[kind]
    return jnp.broadcast_to(red(x, axis=(1, 2, 3), keepdims=True), x.shape)
  if kind == "blur":
    return gaussian_blur(x, blur_sigma)
  raise ValueError(f"unknown perturbation baseline {kind!r}; known: {', '.join(BASELINES)}")


def gaussian_blur(x, sigma: float):
  """Separable Gaussian blur of `[B, H, W, C]` (reflect padding, radius 3 sigma)."""
  radius = max(1, int(3 * sigma + 0.5))
  t = jnp.arange(-radius, radius + 1, dtype=x.dtype)
  k = jnp.exp(-0.5 * (t / sigma) ** 2)
  k = k / k.sum()
  pad = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
  h, w = x.shape[1], x.shape[2]
  rows = sum(k[i] * pad[:, i : i + h] for i in range(2 * radius + 1))
  return sum(k[i] * rows[:, :, i : i + w] for i in range(2 * radius + 1))


def descending_ranks(maps):
  """Rank of every pixel `[B, H*W]` (0 = largest value), from a stable descending sort."""
  flat = maps.reshape(maps.shape[0], -1)
  order = jnp.argsort(-flat, axis=1, stable=True)
  ranks = jnp.argsort(order, axis=1, stable=True)
  return ranks


def rankdata(a, axis: int = -1):
  """Average ranks along `axis` (scipy.stats.rankdata's "average" method), ties included (NaNs
  tie with each other, after every number)."""
  a = jnp.moveaxis(a, axis, -1)
  n = a.shape[-1]
  order = jnp.argsort(a, axis=-1, stable=True)
  srt = jnp.take_along_axis(a, order, -1)
  pos = jnp.arange(n)
  # A tied run gets the mean of its first and last position in the sorted order: the runs' ends
  # by a running max/min over the sorted row (one sort in all; the sort is what costs here).
  same = (srt[..., 1:] == srt[..., :-1]) | (jnp.isnan(srt[..., 1:]) & jnp.isnan(srt[..., :-1]))
  edge = jnp.ones(srt.shape[:-1] + (1,), bool)
  first = jax.lax.cummax(jnp.where(jnp.concatenate([edge, ~same], -1), pos, 0), axis=a.ndim - 1)
  last = jax.lax.cummin(
    jnp.where(jnp.concatenate([~same, edge], -1), pos, n - 1), axis=a.ndim - 1, reverse=True
  )
  avg = (first + last).astype(jnp.result_type(a.dtype, jnp.float32)).reshape(-1, n) / 2 + 1
  rows = jnp.arange(avg.shape[0])[:, None]
  ranks = jnp.zeros_like(avg).at[rows, order.reshape(-1, n)].set(avg)
  return jnp.moveaxis(ranks.reshape(a.shape), -1, axis)


def pearson(a, b, axis: int = -1):
  """Pearson correlation along `axis`; NaN where either side is constant."""
  a = a - a.mean(axis=axis, keepdims=True)
  b = b - b.mean(axis=axis, keepdims=True)
  den = jnp.sqrt((a * a).sum(axis) * (b * b).sum(axis))
  return jnp.where(den > 0, (a * b).sum(axis) / jnp.where(den > 0, den, 1.0), jnp.nan)


def spearman(a, b, axis: int = -1):
  """Spearman rank correlation along `axis` (Pearson of average ranks, as scipy's)."""
  return pearson(rankdata(a, axis), rankdata(b, axis), axis)


def similarity(kind: str) -> Callable:
  """`sim(a [B, N], b [B, N]) -> [B]` by name: "spearman" or "pearson"."""
  if kind == "spearman":
    return spearman
  if kind == "pearson":
    return pearson
  raise ValueError(f"unknown similarity {kind!r}; known: spearman, pearson")


def similarity_to(kind: str, ref) -> Callable:
  """`sim(ref, b)` as a function of `b [..., N]` for a fixed `ref [..., N]`: `ref`'s ranks
  (Spearman) are computed once, for comparing many maps with one reference (MPRT's layers)."""
  if kind == "spearman":
    ref_ranks = rankdata(ref)
    return lambda b: pearson(ref_ranks, rankdata(b))
  if kind == "pearson":
    return lambda b: pearson(ref, b)
  raise ValueError(f"unknown similarity {kind!r}; known: spearman, pearson")


def map_steps(fn: Callable, steps, chunk: int | None):
  """`fn` over the leading axis of `steps` (a pytree): all at once (`chunk` None or ≥ the count,
  one vmap), else `jax.lax.map` with `batch_size=chunk` (vmap inside a chunk, a loop across
  chunks) to bound memory. Returns the stacked outputs."""
  n = jax.tree.leaves(steps)[0].shape[0]
  if chunk is None or chunk >= n:
    return jax.vmap(fn)(steps)
  return jax.lax.map(fn, steps, batch_size=int(chunk))


def unrolled_chunks(fn: Callable, steps, chunk: int | None):
  """`fn` over the leading axis of `steps` (a pytree), `chunk` steps vmapped together (all of
  them: `chunk` None or ≥ the count; 1: `fn` called on each step as it is), the chunks traced one
  after another into the program rather than looped. Returns the stacked outputs.

  Why unrolled: the robustness metrics re-run an explanation (a gradient) per step, and inside a
  `jax.lax.map` loop XLA:CPU gives the input gradient of a convolution an untransposed kernel
  layout that runs about 2x slower than the same gradient outside a loop; and a vmap of many
  steps makes one large batch whose gradient convolutions leave the cache (1.5x slower at 48 px
  than one step at a time on the benchmark's CNN). The price is compiling `fn` once per chunk."""
  n = jax.tree.leaves(steps)[0].shape[0]
  c = n if chunk is None else max(1, min(int(chunk), n))
  parts = []
  for start in range(0, n, c):
    part = jax.tree.map(lambda a, start=start: a[start : start + c], steps)
    if c == 1:
      parts.append(jax.tree.map(lambda o: o[None], fn(jax.tree.map(lambda a: a[0], part))))
    else:
      parts.append(jax.vmap(fn)(part))
  return jax.tree.map(lambda *o: jnp.concatenate(o, 0), *parts)


def map_chunks(fn: Callable, steps, chunk: int | None):
  """`fn` over the leading axis of `steps` (a pytree) a chunk at a time: `fn(steps [c, ...]) ->
  [c, ...]` gets `c` steps together (all of them: `chunk` None or ≥ the count), so that it can
  hand them to the model as one batch of `c * B` images (`flat_scores`) instead of vmapping it.
  Chunks are evened out (`ceil(n / ceil(n / chunk))` steps each) and the last is padded with
  copies of the last step, which are dropped; the chunks run in a `jax.lax.map` loop. Returns
  `fn`'s outputs for the `n` steps, stacked."""
  n = jax.tree.leaves(steps)[0].shape[0]
  if chunk is None or chunk >= n:
    return fn(steps)
  k = -(-n // int(chunk))
  c = -(-n // k)

  def split(a):
    a = jnp.concatenate([a, jnp.repeat(a[-1:], k * c - n, axis=0)], 0)
    return a.reshape(k, c, *a.shape[1:])

  out = jax.lax.map(fn, jax.tree.map(split, steps))
  return jax.tree.map(lambda o: o.reshape(k * c, *o.shape[2:])[:n], out)


def tile_rows(tree, rows: int):
  """Every leaf `[B, ...]` of `tree` repeated to `rows` (a multiple of B) rows, row r = row
  r mod B: the per-example inputs (targets, other modalities) of a score function called on
  several perturbed copies of the batch at once (`flat_scores`)."""

  def tile(a):
    a = jnp.asarray(a)
    return jnp.tile(a, (rows // a.shape[0],) + (1,) * (a.ndim - 1))

  return jax.tree.map(tile, tree)


def flat_scores(score: Callable, params, images):
  """`score` of `images [S, B, H, W, C]` (S perturbed copies of a batch) as one call on
  `[S * B, H, W, C]`, reshaped to `[S, B]`.

  Why not `jax.vmap(score)` over S: vmapping a model over a leading axis keeps that axis on every
  activation (`[S, B, H, W, F]`), and XLA:CPU's fused convolution chain (YNNPACK) runs such 5-d
  tensors slower than the same images as one 4-d batch (1.2-3.5x on the benchmark's CNN at 24
  and 48 px, measured in one process). So `score` must take any multiple of B rows (the score
  functions of the explain run and of the benchmarks tile their per-example inputs, `tile_rows`)."""
  s, b = images.shape[:2]
  return score(params, images.reshape(s * b, *images.shape[2:])).reshape(s, b)


def trapezoid(curve, dx: float = 1.0):
  """Trapezoidal area under `curve [..., S]` with spacing `dx` (np.trapz)."""
  return dx * (curve[..., 1:] + curve[..., :-1]).sum(-1) / 2
