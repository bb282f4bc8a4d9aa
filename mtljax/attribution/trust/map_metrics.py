"""Metrics of the maps alone (complexity), against masks (localisation), and the members' spread
(uncertainty). Maps `[B, H, W]`, masks `[B, H, W]` (bool); pure jnp, jit-able. NaN where a
metric is undefined (an empty mask)."""

from __future__ import annotations

import jax.numpy as jnp

from mtljax.attribution.trust import ops


def _flat(a):
  return a.reshape(a.shape[0], -1)


def sparseness(maps, *, eps: float = 1e-7):
  """Gini index of the map's values (Chalasani et al. 2020; Quantus's `Sparseness`, which adds
  `eps` before sorting). Pass |maps| for signed maps (`absolute` in the registry). 1 = all the mass
  on one pixel, 0 = uniform."""
  a = jnp.sort(_flat(maps) + eps, axis=-1)
  n = a.shape[-1]
  k = jnp.arange(1, n + 1, dtype=a.dtype)
  return ((2 * k - n - 1) * a).sum(-1) / (n * a.sum(-1))


def entropy(maps, *, eps: float = 1e-12):
  """Entropy of the map as a distribution (Bhatt et al. 2020, "complexity"; Quantus's
  `Complexity`): `p = a / sum|a|`, `-sum p log(p + eps)`. Lower = simpler."""
  a = _flat(maps)
  p = a / jnp.abs(a).sum(-1, keepdims=True)
  return -(p * jnp.log(p + eps)).sum(-1)


def _nan_if_empty(value, masks):
  return jnp.where(_flat(masks).sum(-1) > 0, value, jnp.nan)


def pointing_game(maps, masks):
  """1 where a pixel of the map's maximum lies inside the mask (Zhang et al. 2018; Quantus's
  `PointingGame`: any of tied maxima counts), else 0."""
  a, s = _flat(maps), _flat(masks).astype(bool)
  top = a == a.max(-1, keepdims=True)
  return _nan_if_empty(jnp.any(top & s, -1).astype(a.dtype), masks)


def relevance_mass(maps, masks):
  """Share of the map's mass inside the mask (Arras et al. 2022, Eq. 1; Quantus's
  `RelevanceMassAccuracy`, without |.|: pass non-negative maps)."""
  a, s = _flat(maps), _flat(masks).astype(maps.dtype)
  return _nan_if_empty((a * s).sum(-1) / a.sum(-1), masks)


def relevance_rank(maps, masks):
  """Share of the mask's K pixels among the map's K largest (Arras et al. 2022, Eq. 2; Quantus's
  `RelevanceRankAccuracy`; ties broken by position)."""
  s = _flat(masks).astype(bool)
  k = s.sum(-1, keepdims=True)
  # One stable descending argsort: the mask's pixels among the first K positions.
  order = jnp.argsort(-_flat(maps), axis=1, stable=True)
  hit = jnp.take_along_axis(s, order, axis=1) & (jnp.arange(s.shape[-1]) < k)
  return _nan_if_empty(hit.sum(-1) / jnp.maximum(k[:, 0], 1), masks)


def strongest_region_center(maps, top: float = 0.1):
  """(y, x) `[B, 2]` centre of mass of the pixels holding the top `top` fraction of the map's
  mass (weights max(map, 0)): the arrow point of `config.explain.arrow_at = "top_mass"`, which on
  a diffuse map stays on its peak where the whole-map centre of mass drifts to the middle."""
  w = jnp.maximum(_flat(maps), 0.0)
  srt = -jnp.sort(-w, axis=-1)
  cum = jnp.cumsum(srt, -1)
  need = top * cum[:, -1:]
  # The smallest value still inside the top mass; pixels at or above it form the region.
  idx = jnp.argmax(cum >= need, axis=-1)
  thr = jnp.take_along_axis(srt, idx[:, None], -1)
  region = jnp.where(w >= thr, w, 0.0).reshape(maps.shape)
  h, wd = maps.shape[-2:]
  mass = region.sum((-2, -1))
  cy = (region * jnp.arange(h)[:, None]).sum((-2, -1)) / mass
  cx = (region * jnp.arange(wd)[None, :]).sum((-2, -1)) / mass
  return jnp.where((mass > 0)[:, None], jnp.stack([cy, cx], -1), jnp.nan)


def member_spread(member_maps):
  """Uncertainty of an ensemble explanation from its members' normalised maps `[E, B, H, W]`:
  `(std [B, H, W], agreement [B])`, the per-pixel standard deviation over members and the mean
  pairwise Spearman correlation of the members' maps (1 = all members rank pixels alike; NaN for
  one member)."""
  e, b = member_maps.shape[:2]
  std = member_maps.std(0)
  flat = ops.rankdata(member_maps.reshape(e, b, -1), -1)
  pairs = [(i, j) for i in range(e) for j in range(i + 1, e)]
  if not pairs:
    return std, jnp.full((b,), jnp.nan)
  agree = jnp.stack([ops.pearson(flat[i], flat[j]) for i, j in pairs]).mean(0)
  return std, agree
