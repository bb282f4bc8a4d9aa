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


TARGET_FORMS = ("auto", "grads", "vjp")


def resolve_target_form(form: str, backend: str | None = None) -> str:
  """The form "auto" stands for on `backend` (default: JAX's default backend).

  Measured (profiling/benchmarks/multitarget_bench.py, 2-core CPU): on CPU, K `jax.grad` calls of
  the K target scores in one program ("grads": XLA shares the identical forward, each backward runs
  at batch B) beats one `jax.vjp` with its pullback vmapped over K one-hot cotangents ("vjp": the
  backward runs at batch K·B) and the per-row form of the explain run before (K forward passes). On
  GPU/TPU the vmapped pullback fills the device better than K small backward passes.
  """
  if form not in TARGET_FORMS:
    raise ValueError(f"unknown target form {form!r}; known: {', '.join(TARGET_FORMS)}")
  if form != "auto":
    return form
  return "grads" if (backend or jax.default_backend()) == "cpu" else "vjp"


def num_targets(scores_shape) -> int | None:
  """K of a score function's output `[B, K]`; None for a single target `[B]`."""
  shape = tuple(scores_shape.shape if hasattr(scores_shape, "shape") else scores_shape)
  if len(shape) == 1:
    return None
  if len(shape) != 2:
    raise ValueError(f"a score function returns [B] or [B, K] scores, got shape {shape}")
  return shape[1]


def _grad_targets(total, args, num: int | None, form: str, has_aux: bool = False):
  """Gradients of the scores `total(args) -> [B]` or `[B, K]`, each summed over the batch, w.r.t.
  the pytree `args`: like `args` for `[B]`; with a target axis after the batch axis `[B, K, ...]`
  for `[B, K]` (one backward pass per target, sharing the forward; see `resolve_target_form`).
  `has_aux`: `total` returns `(scores, aux)` and this returns `(grads, aux)`."""
  fn = total if has_aux else (lambda a: (total(a), None))
  if num is None:
    grads, aux = jax.grad(lambda a: _sum_first(fn(a)), has_aux=True)(args)
  elif resolve_target_form(form) == "grads":
    per_k = [jax.grad(lambda a, k=k: _sum_first(fn(a), k), has_aux=True)(args) for k in range(num)]
    grads = jax.tree.map(lambda *g: jnp.stack(g, axis=1), *[g for g, _ in per_k])
    aux = per_k[0][1]
  else:  # "vjp"
    scores, pull, aux = jax.vjp(fn, args, has_aux=True)
    cot = jnp.broadcast_to(jnp.eye(num, dtype=scores.dtype)[:, None, :], (num,) + scores.shape)
    grads = jax.tree.map(lambda g: jnp.moveaxis(g, 0, 1), jax.vmap(pull)(cot)[0])  # cot [K, B, K]
  return (grads, aux) if has_aux else grads


def _sum_first(scores_aux, k=None):
  scores, aux = scores_aux
  return jnp.sum(scores if k is None else scores[:, k]), aux


def _input_grad(f: ScoreFn, params, inputs, target_form: str = "auto"):
  """Gradient of `sum_b f(params, inputs)[b]` w.r.t. each floating leaf; zeros for the others.

  With a target axis (`f` returns `[B, K]`), each leaf's gradient is `[B, K, ...]`: the gradient of
  target k's score in `[:, k]`, computed in `target_form` (see `resolve_target_form`).
  """
  leaves, treedef = jax.tree.flatten(inputs)
  is_float = [_is_float(x) for x in leaves]

  def scores(float_leaves):
    it = iter(float_leaves)
    merged = [next(it) if fl else x for x, fl in zip(leaves, is_float)]
    return f(params, jax.tree.unflatten(treedef, merged))

  floats = [x for x, fl in zip(leaves, is_float) if fl]
  num = num_targets(jax.eval_shape(scores, floats))
  grads = iter(_grad_targets(scores, floats, num, target_form))
  extra = () if num is None else (num,)
  return jax.tree.unflatten(
    treedef,
    [
      next(grads) if fl else jnp.zeros(jnp.shape(x)[:1] + extra + jnp.shape(x)[1:])
      for x, fl in zip(leaves, is_float)
    ],
  )


def _with_targets(x, g):
  """`x [B, ...]` broadcastable against `g` `[B, ...]` or `[B, K, ...]` (a target axis)."""
  return jnp.expand_dims(x, 1) if jnp.ndim(g) == jnp.ndim(x) + 1 else x


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
  """`(x - baseline) * grad` per leaf (zero for integer leaves, whose grad is zero); `grad` may
  carry a target axis `[B, K, ...]`."""
  return jax.tree.map(
    lambda x, b, g: _with_targets(x - b, g).astype(g.dtype) * g, inputs, baselines, grads
  )


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
