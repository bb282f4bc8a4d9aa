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
  """Average ranks along `axis` (scipy.stats.rankdata's "average" method), ties included."""
  a = jnp.moveaxis(a, axis, -1)
  n = a.shape[-1]
  order = jnp.argsort(a, axis=-1, stable=True)
  srt = jnp.take_along_axis(a, order, -1)
  pos = jnp.arange(n, dtype=jnp.result_type(a.dtype, jnp.float32))
  # Tied runs get the mean position: first and last index of each value's run.
  first = jax.vmap(lambda s: jnp.searchsorted(s, s, side="left"))(srt.reshape(-1, n))
  last = jax.vmap(lambda s: jnp.searchsorted(s, s, side="right"))(srt.reshape(-1, n))
  avg = (first + last - 1).astype(pos.dtype) / 2 + 1
  ranks = jnp.zeros_like(avg).at[jnp.arange(avg.shape[0])[:, None], order.reshape(-1, n)].set(avg)
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


def map_steps(fn: Callable, steps, chunk: int | None):
  """`fn` over the leading axis of `steps` (a pytree): all at once (`chunk` None or ≥ the count,
  one vmap), else `jax.lax.map` with `batch_size=chunk` (vmap inside a chunk, a loop across
  chunks) to bound memory. Returns the stacked outputs."""
  n = jax.tree.leaves(steps)[0].shape[0]
  if chunk is None or chunk >= n:
    return jax.vmap(fn)(steps)
  return jax.lax.map(fn, steps, batch_size=int(chunk))


def trapezoid(curve, dx: float = 1.0):
  """Trapezoidal area under `curve [..., S]` with spacing `dx` (np.trapz)."""
  return dx * (curve[..., 1:] + curve[..., :-1]).sum(-1) / 2
