"""Ensemble explanations: one attribution per member, averaged (Eq. 1 of the ensembles paper).

`stacked_params` is the ensemble: the params pytree with a leading member axis E on every leaf.
Every member gets the same inputs and the same rng, so members differ only in their weights.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.models import convolution

STRATEGIES = ("auto", "vmap", "loop", "map", "tune")
REDUCTIONS = ("abs_sum", "sum", "max_abs")


def to_heatmap(attr, *, reduce: str = "abs_sum", batch_dims: int = 1):
  """Collapse the channels of an image attribution `[*batch, H, W, C]` to a map `[*batch, H, W]`.

  Args:
    attr: attribution with `batch_dims` leading axes (1 for `[B, H, W, C]`, 2 for
      `[E, B, H, W, C]`); maps without a channel axis (`[*batch, H, W]`) pass through.
    reduce: "abs_sum" (sum of |a| over channels, ≥ 0), "sum" (signed) or "max_abs" (≥ 0).
  """
  if reduce not in REDUCTIONS:
    raise ValueError(f"unknown channel reduction {reduce!r}; known: {', '.join(REDUCTIONS)}")
  attr = jnp.asarray(attr)
  if attr.ndim == batch_dims + 2:
    return attr
  if attr.ndim != batch_dims + 3:
    raise ValueError(f"expected [*batch, H, W(, C)] with {batch_dims} batch axes, got {attr.shape}")
  if reduce == "abs_sum":
    return jnp.sum(jnp.abs(attr), axis=-1)
  if reduce == "sum":
    return jnp.sum(attr, axis=-1)
  return jnp.max(jnp.abs(attr), axis=-1)


def normalize(maps, *, signed: bool, eps: float = 1e-12):
  """Normalise each map `[..., H, W]` over its last two axes (Section 3.2 of the paper).

  Unsigned maps (≥ 0) are divided by their maximum → [0, 1]; signed maps by their maximum absolute
  value → [-1, 1], so zero stays zero and the sign is kept. An all-zero map stays zero (the divisor
  is at least `eps`). For maps ≥ 0 both modes give the same result. numpy in → numpy out (float64
  kept, for the metrics); anything else goes through jnp.
  """
  xp = np if isinstance(maps, np.ndarray) else jnp
  scale = xp.abs(maps) if signed else maps
  return maps / xp.maximum(xp.max(scale, axis=(-2, -1), keepdims=True), eps)


def _has_conv(stacked_params) -> bool:
  """Whether any member's parameter leaf is a conv kernel (ndim ≥ 4, so ≥ 5 when stacked)."""
  return any(jnp.ndim(p) >= 5 for p in jax.tree.leaves(stacked_params))


def resolve_strategy(strategy: str, stacked_params, backend: str | None = None) -> str:
  """The strategy "auto" stands for on `backend` (default: JAX's default backend).

  Measured (profiling/benchmarks/attribution_bench.py): on CPU, vmapped conv weights become grouped
  convolutions that XLA:CPU runs several times slower than E ordinary ones, so conv models loop
  over members there; dense models (MLPs) run `lax.map` over members inside one program on CPU
  (measured 1.0-1.1x the loop and 1.03-1.1x vmap, whose batched matmuls touch E times the memory at
  once). On GPU and TPU the vectorised program fills the device better than E small ones. With
  oneDNN's convolutions in effect (`convolution.use`, as the explain run sets from `config.conv`)
  conv models vmap on CPU too: the kernels take the member axis in one call, where a loop copies
  each member's kernels out of the stack on every call (as long as the convolutions themselves in
  a ResNet-18 Saliency call at 64 px: profiling/benchmarks/attribution_profile.py).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown ensemble strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
  if strategy != "auto":
    return strategy
  backend = backend or jax.default_backend()
  if backend == "cpu":
    if not _has_conv(stacked_params):
      return "map"
    return "vmap" if convolution.runs_onednn() else "loop"
  return "vmap"


# Compiled programs per attribution function, so that repeated calls (one per batch) reuse them
# instead of re-tracing a fresh `jax.vmap` / `jax.jit` wrapper each time. Weak keys: a closure that
# goes away takes its programs with it.
_COMPILED: "weakref.WeakKeyDictionary[Callable, dict]" = weakref.WeakKeyDictionary()


def _program(attribute_fn: Callable, strategy: str, member_chunk: int | None) -> Callable:
  """`(stacked_params, inputs[, member]) -> per-member attributions` for a resolved strategy."""
  cache = _COMPILED.setdefault(attribute_fn, {})
  key = (strategy, member_chunk)
  if key not in cache:
    if strategy == "loop":
      # One dispatch per member: the member is sliced inside the jitted program (a traced index,
      # so one compilation serves every member).
      cache[key] = jax.jit(
        lambda ps, x, i: attribute_fn(
          jax.tree.map(lambda p: jax.lax.dynamic_index_in_dim(p, i, keepdims=False), ps), x
        )
      )
    elif strategy == "map" or member_chunk is not None:
      batch_size = member_chunk if strategy == "vmap" else None
      cache[key] = jax.jit(
        lambda ps, x: jax.lax.map(lambda p: attribute_fn(p, x), ps, batch_size=batch_size)
      )
    else:
      cache[key] = jax.jit(jax.vmap(attribute_fn, in_axes=(0, None)))
  return cache[key]


def _run(attribute_fn, strategy, member_chunk, stacked_params, inputs):
  program = _program(attribute_fn, strategy, member_chunk)
  if strategy != "loop":
    return program(stacked_params, inputs)
  num = jax.tree.leaves(stacked_params)[0].shape[0]
  members = [program(stacked_params, inputs, np.int32(i)) for i in range(num)]
  return jax.tree.map(lambda *a: jnp.stack(a), *members)


def ensemble_attribute(
  attribute_fn: Callable[[Any, Any], Any],
  stacked_params,
  inputs,
  *,
  strategy: str = "auto",
  member_chunk: int | None = None,
):
  """Attribute with every member and average the attributions (Eq. 1).

  Args:
    attribute_fn: `(params, inputs) -> pytree`, a method closed over its options and rng (e.g.
      `lambda p, x: integrated_gradients(f, p, x, steps=16)`); jit-able. Keep the same function
      object across calls: its compiled programs are cached on it.
    stacked_params: params with a leading member axis E on every leaf.
    inputs: the inputs pytree (shared by all members).
    strategy: "vmap" (`jax.vmap` over members; with `member_chunk`, `jax.lax.map` over chunks of
      that many vmapped members, bounding memory), "map" (`jax.lax.map`, one member at a time inside
      one program), "loop" (a Python loop over a jitted single-member function), "auto" (the
      backend's best, see `resolve_strategy`) or "tune" (time vmap and loop once on these shapes
      and keep the faster: never slower than the loop, at the cost of one extra run per shape).
      Inside an outer `jax.jit` the choice still applies ("loop" unrolls into one program).
    member_chunk: members per vectorised call for "vmap"; None = all.

  Returns:
    `(per_member, mean)`: per_member has a leading axis E on every leaf; mean is the average over
    members, shaped like one member's attribution.
  """
  if strategy == "tune":
    strategy = _tuned(attribute_fn, stacked_params, inputs, member_chunk)
  else:
    strategy = resolve_strategy(strategy, stacked_params)
  per_member = _run(attribute_fn, strategy, member_chunk, stacked_params, inputs)
  return per_member, jax.tree.map(lambda a: jnp.mean(a, axis=0), per_member)


def _signature(tree) -> tuple:
  return tuple((tuple(jnp.shape(x)), str(jnp.result_type(x))) for x in jax.tree.leaves(tree))


def _tuned(attribute_fn, stacked_params, inputs, member_chunk) -> str:
  cache = _COMPILED.setdefault(attribute_fn, {})
  key = ("tuned", _signature(stacked_params), _signature(inputs), member_chunk)
  if key not in cache:
    if isinstance(jax.tree.leaves(inputs)[0], jax.core.Tracer):
      return resolve_strategy("auto", stacked_params)  # cannot time inside a trace
    seconds = {}
    for s in ("loop", "vmap"):
      jax.block_until_ready(_run(attribute_fn, s, member_chunk, stacked_params, inputs))
      t0 = time.perf_counter()
      jax.block_until_ready(_run(attribute_fn, s, member_chunk, stacked_params, inputs))
      seconds[s] = time.perf_counter() - t0
    cache[key] = min(seconds, key=seconds.get)
  return cache[key]


def ensemble_heatmaps(per_member_attr, *, reduce: str = "abs_sum", signed: bool = False):
  """Normalised per-member maps and their renormalised mean.

  Args:
    per_member_attr: one image leaf of the per-member attributions `[E, B, H, W, C]`, or maps
      `[E, B, H, W]` (Grad-CAM, LIME).
    reduce: channel reduction, see `to_heatmap`.
    signed: normalise to [-1, 1] (True) or [0, 1] (False), see `normalize`. Use True with
      reduce="sum" on signed methods.

  Returns:
    `(member_maps [E, B, H, W], ensemble_map [B, H, W])`: each member's normalised map, and the
    mean of those normalised maps normalised again (Eq. 1 on comparable scales).
  """
  maps = normalize(to_heatmap(per_member_attr, reduce=reduce, batch_dims=2), signed=signed)
  return maps, normalize(jnp.mean(maps, axis=0), signed=signed)
