"""Shared pieces of the attribution methods: pytree helpers, baselines and chunked sums.

The conventions every method follows are in `attributions.py` (the registry); this module holds
what the gradient methods (`gradients.py`) and the perturbation methods (`perturbations.py`) share.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

ScoreFn = Callable[[Any, Any], jax.Array]
LayerFn = Callable[[Any, Any, Any], tuple[jax.Array, jax.Array]]


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _map_float(fn, tree, *rest):
  """`fn(leaf, *rest_leaves)` on floating leaves of `tree`; other leaves are returned unchanged."""
  return jax.tree.map(lambda x, *r: fn(x, *r) if _is_float(x) else x, tree, *rest)


def _per_example(v, x):
  """Reshape a per-example vector `[B]` so that it broadcasts against `x` `[B, ...]`."""
  return jnp.reshape(v, (-1,) + (1,) * (jnp.ndim(x) - 1))


def _input_grad(f: ScoreFn, params, inputs):
  """Gradient of `sum_b f(params, inputs)[b]` w.r.t. each floating leaf; zeros for the others."""
  leaves, treedef = jax.tree.flatten(inputs)
  is_float = [_is_float(x) for x in leaves]

  def total(float_leaves):
    it = iter(float_leaves)
    merged = [next(it) if fl else x for x, fl in zip(leaves, is_float)]
    return jnp.sum(f(params, jax.tree.unflatten(treedef, merged)))

  grads = iter(jax.grad(total)([x for x, fl in zip(leaves, is_float) if fl]))
  return jax.tree.unflatten(
    treedef, [next(grads) if fl else jnp.zeros(jnp.shape(x)) for x, fl in zip(leaves, is_float)]
  )


def _baseline_tree(inputs, baseline):
  """A baseline pytree shaped like `inputs`: None → zeros, scalar → constant, pytree → broadcast.

  Integer leaves get themselves as baseline (they are never perturbed).
  """
  if baseline is None:
    baseline = 0.0
  if not isinstance(baseline, (Mapping, list, tuple)) and jnp.ndim(baseline) == 0:
    return _map_float(lambda x: jnp.full(jnp.shape(x), baseline, jnp.result_type(x)), inputs)
  return jax.tree.map(
    lambda x, b: (
      jnp.broadcast_to(jnp.asarray(b, jnp.result_type(x)), jnp.shape(x)) if _is_float(x) else x
    ),
    inputs,
    baseline,
  )


def _interpolate(inputs, baselines, alpha):
  """`baseline + alpha * (x - baseline)` on floating leaves; `alpha` is a scalar or `[B]`."""
  return _map_float(
    lambda x, b: b + _per_example(alpha, x).astype(x.dtype) * (x - b), inputs, baselines
  )


def _times_delta(inputs, baselines, grads):
  """`(x - baseline) * grad` per leaf (zero for integer leaves, whose grad is zero)."""
  return jax.tree.map(lambda x, b, g: (x - b).astype(g.dtype) * g, inputs, baselines, grads)


def _add_noise(inputs, key, scales):
  """Gaussian noise with per-example standard deviation `scales` (pytree of `[B]`)."""
  leaves, treedef = jax.tree.flatten(inputs)
  scale_leaves = treedef.flatten_up_to(scales)
  noisy = [
    x
    + _per_example(s, x).astype(x.dtype)
    * jax.random.normal(jax.random.fold_in(key, i), jnp.shape(x), jnp.result_type(x))
    if _is_float(x)
    else x
    for i, (x, s) in enumerate(zip(leaves, scale_leaves))
  ]
  return jax.tree.unflatten(treedef, noisy)


def _is_zero(stdev) -> bool:
  """Whether a noise level is statically zero (then no noise is drawn at all)."""
  return isinstance(stdev, (int, float)) and stdev == 0


def _weighted_sum(fn, weights, batch=None):
  """`sum_i weights[i] * fn(i)` for `i < n` (fn returns a pytree of arrays).

  Evaluated `batch` indices at a time (`jax.vmap` inside a chunk, `jax.lax.scan` accumulating
  across chunks, so memory holds one chunk); `None` vectorises all n at once. Padding indices of the
  last chunk are clamped to n - 1 and weighted 0.
  """
  n = weights.shape[0]

  def chunk_sum(idx, w):
    return jax.tree.map(lambda o: jnp.tensordot(w.astype(o.dtype), o, axes=1), jax.vmap(fn)(idx))

  if batch is None or batch >= n:
    return chunk_sum(jnp.arange(n), weights)
  num_chunks = -(-n // batch)
  idx = jnp.minimum(jnp.arange(num_chunks * batch), n - 1).reshape(num_chunks, batch)
  w = jnp.pad(weights, (0, num_chunks * batch - n)).reshape(num_chunks, batch)
  init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, 0))

  def step(acc, chunk):
    return jax.tree.map(jnp.add, acc, chunk_sum(*chunk)), None

  return jax.lax.scan(step, init, (idx, w))[0]


def _mean_over_samples(fn, samples, batch):
  return _weighted_sum(fn, jnp.full((samples,), 1.0 / samples), batch)
