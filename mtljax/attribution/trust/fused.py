"""All the map-only trust metrics of a batch in one pass: `map_metrics(maps, masks)`.

The same numbers as `simple.sparseness / entropy / pointing_game / relevance_mass /
relevance_rank` (tested), computed for a whole batch with one stable descending argsort per map
shared by the Gini index (which needs the values in order) and the relevance rank (which needs the
top-K positions), so one jitted program does the five metrics at once: no per-example Python, one
dispatch per batch. Maps must be non-negative (pass |map|, as the explain run does for these
metrics); masks bool `[B, H, W]` or None (then only the two map metrics).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def map_metrics(maps, masks=None, *, eps_gini: float = 1e-7, eps_log: float = 1e-12):
  """`{metric: [B]}` for non-negative maps `[B, H, W]` (and masks `[B, H, W]` if given)."""
  a = maps.reshape(maps.shape[0], -1)
  n = a.shape[-1]
  order = jnp.argsort(-a, axis=1, stable=True)
  desc = jnp.take_along_axis(a, order, axis=1)
  # Gini of a + eps: ascending values = the descending ones reversed (ties have equal values).
  k = jnp.arange(n, 0, -1, dtype=a.dtype)
  total = a.sum(-1)
  out = {"sparseness": ((2 * k - n - 1) * (desc + eps_gini)).sum(-1) / (n * (total + n * eps_gini))}
  p = a / jnp.abs(a).sum(-1, keepdims=True)
  out["entropy"] = -(p * jnp.log(p + eps_log)).sum(-1)
  if masks is None:
    return out
  s = masks.reshape(masks.shape[0], -1).astype(bool)
  cnt = s.sum(-1)
  empty = cnt == 0
  nan_if_empty = lambda v: jnp.where(empty, jnp.nan, v)  # noqa: E731
  out["pointing_game"] = nan_if_empty(jnp.any((a == desc[:, :1]) & s, -1).astype(a.dtype))
  out["relevance_mass"] = nan_if_empty(jnp.where(s, a, 0.0).sum(-1) / total)
  s_desc = jnp.take_along_axis(s, order, axis=1)
  hit = (s_desc & (jnp.arange(n) < cnt[:, None])).sum(-1)
  out["relevance_rank"] = nan_if_empty(hit / jnp.maximum(cnt, 1))
  return out


map_metrics_jit = jax.jit(map_metrics)
