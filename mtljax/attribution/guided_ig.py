"""Guided Integrated Gradients (Kapishnikov et al. 2021, "Guided Integrated Gradients: an adaptive
path method for removing noise"), as PAIR `saliency` 0.2.1's `GuidedIG`.

The path starts at the baseline and, at each of `steps` steps, moves only the features whose
|gradient| is smallest (the lowest `fraction`, by the "lower" quantile of |gradient|) towards the
input until the L1 distance to the input has shrunk by `1/steps` of the total; no feature may
run more than `max_dist` (in alpha units) ahead of or behind the straight line. The attribution
sums `(x_new - x_old) * grad f(x_old)` over every move. `max_dist = 0` is plain IG on the straight
line, `max_dist = 1` the unbounded Guided IG.

Written batch-wise with fixed shapes: the outer steps are a `lax.fori_loop` (one gradient of the
whole batch per step) and the inner "select the lowest-|gradient| fraction, move it" loop is a
`lax.while_loop` that runs until every example of the batch reached its step's L1 target (finished
examples are frozen by masks), so the method jits and vmaps over members.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-9  # PAIR's math.isclose tolerance (relative and absolute)


def _per_example(a):
  """Sum over every axis but the first: `[B, ...] -> [B]`."""
  return a.reshape(a.shape[0], -1).sum(-1)


def _bcast(v, like):
  return v.reshape((-1,) + (1,) * (like.ndim - 1))


def guided_ig(
  f,
  params,
  inputs,
  *,
  modality: str,
  steps: int = 200,
  fraction: float = 0.25,
  max_dist: float = 0.02,
  baseline=None,
  max_inner: int = 1000,
):
  """Guided IG of `f` w.r.t. `inputs[modality]` `[B, ...]` from `baseline` (zeros by default),
  other inputs held fixed. Returns attributions shaped like the image."""
  x_in = inputs[modality]
  x_base = jnp.zeros_like(x_in) if baseline is None else jnp.broadcast_to(baseline, x_in.shape)
  n = int(np.prod(x_in.shape[1:]))
  # np.quantile(..., method="lower") of n values = the sorted value at this index.
  q_idx = int(np.quantile(np.arange(n), fraction, method="lower"))
  diff = x_in - x_base
  l1_total = _per_example(jnp.abs(diff))
  safe = jnp.where(diff != 0, diff, 1.0)

  def grad_f(x):
    return jax.grad(lambda im: f(params, {**inputs, modality: im}).sum())(x)

  def step(i, carry):
    x, attr = carry
    g_actual = grad_f(x)
    alpha = (i + 1.0) / steps
    a_min, a_max = jnp.maximum(alpha - max_dist, 0.0), jnp.minimum(alpha + max_dist, 1.0)
    x_min, x_max = x_base + diff * a_min, x_base + diff * a_max
    l1_target = l1_total * (1.0 - (i + 1.0) / steps)

    def inner(c):
      x, attr, grad, active, it = c
      x_old = x
      x_alpha = jnp.where(diff != 0, (x - x_base) / safe, a_max)
      x = jnp.where(x_alpha < a_min, x_min, x)
      l1_cur = _per_example(jnp.abs(x - x_in))
      close = jnp.abs(l1_target - l1_cur) <= jnp.maximum(
        _EPS * jnp.maximum(jnp.abs(l1_target), jnp.abs(l1_cur)), _EPS
      )
      grad = jnp.where(x == x_max, jnp.inf, grad)
      ag = jnp.abs(grad).reshape(grad.shape[0], -1)
      thr = jnp.sort(ag, axis=-1)[:, q_idx]
      sel = (jnp.abs(grad) <= _bcast(thr, grad)) & (grad != jnp.inf)
      l1_s = _per_example(jnp.abs(x - x_max) * sel)
      gamma = jnp.where(l1_s > 0, (l1_cur - l1_target) / jnp.where(l1_s > 0, l1_s, 1.0), jnp.inf)
      gb = _bcast(gamma, x)
      moved = jnp.where(gb > 1.0, x_max, x + (x_max - x) * gb)
      move = _bcast(~close, x)
      x = jnp.where(move & sel, moved, x)
      # Examples done before this pass keep their state (x_old); the rest add their move.
      keep = _bcast(active, x)
      x = jnp.where(keep, x, x_old)
      attr = attr + jnp.where(keep, (x - x_old) * g_actual, 0.0)
      active = active & ~close & (gamma > 1.0)
      return x, attr, grad, active, it + 1

    def cond(c):
      return jnp.any(c[3]) & (c[4] < max_inner)

    active = jnp.ones(x.shape[0], bool)
    x, attr, _, _, _ = jax.lax.while_loop(cond, inner, (x, attr, g_actual, active, 0))
    return x, attr

  _, attr = jax.lax.fori_loop(0, steps, step, (x_base, jnp.zeros_like(x_in)))
  return attr
