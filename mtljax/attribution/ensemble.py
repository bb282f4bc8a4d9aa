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


# Below this many parameter bytes per byte a member's program writes, the member loop beats vmap
# for a conv model with oneDNN's convolutions on CPU (measured: profiling/benchmarks/
# attribution_crossover.py; loop faster at ≤ 0.0064, vmap faster at ≥ 0.04).
LOOP_BELOW_PARAM_SHARE = 0.015


def _written_bytes(jaxpr) -> float:
  """Bytes every operation of `jaxpr` writes, sub-programs included (a scan's body times its
  length, the larger branch of a cond): how much work a member's call moves through memory."""
  total = 0.0
  for eqn in jaxpr.eqns:
    subs = []
    for value in eqn.params.values():
      for v in value if isinstance(value, (list, tuple)) else (value,):
        inner = getattr(v, "jaxpr", v)  # a ClosedJaxpr holds its Jaxpr as `.jaxpr`
        if hasattr(inner, "eqns"):
          subs.append(_written_bytes(inner))
    if subs:
      total += (max(subs) if eqn.primitive.name == "cond" else sum(subs)) * (
        eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
      )
    for out in eqn.outvars:
      aval = getattr(out, "aval", None)
      if hasattr(aval, "shape") and hasattr(aval, "dtype"):
        total += float(np.prod(aval.shape)) * np.dtype(aval.dtype).itemsize
  return total


def param_share(attribute_fn: Callable, stacked_params, inputs) -> float:
  """One member's parameter bytes per byte its attribution program writes (traced, not run)."""
  member = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape[1:], p.dtype), stacked_params)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), inputs)
  written = _written_bytes(jax.make_jaxpr(attribute_fn)(member, abstract).jaxpr)
  params = sum(float(np.prod(p.shape)) * p.dtype.itemsize for p in jax.tree.leaves(member))
  return params / max(written, 1.0)


def resolve_strategy(
  strategy: str,
  stacked_params,
  backend: str | None = None,
  *,
  attribute_fn: Callable | None = None,
  inputs=None,
) -> str:
  """The strategy "auto" stands for on `backend` (default: JAX's default backend).

  Measured (profiling/benchmarks/attribution_bench.py): on CPU, vmapped conv weights become grouped
  convolutions that XLA:CPU runs several times slower than E ordinary ones, so conv models loop
  over members there; dense models (MLPs) run `lax.map` over members inside one program on CPU
  (measured 1.0-1.1x the loop and 1.03-1.1x vmap, whose batched matmuls touch E times the memory at
  once). On GPU and TPU the vectorised program fills the device better than E small ones.

  With oneDNN's convolutions in effect (`convolution.use`, as the explain run sets from
  `config.conv`) the kernels take a vmapped member axis in one call, where a loop copies each
  member's parameters out of the stack on every call. Which costs more depends on the size of
  that copy against the member's work (`param_share`, given `attribute_fn` and `inputs`): a
  ResNet-18's Saliency or Grad-CAM of a few images is mostly that copy (vmap 1.8-2.9x the loop),
  its Integrated Gradients (32 steps) is mostly convolutions over activations that vmap holds for
  every member at once (the loop 1.7x vmap), and a small CNN's kernels cost nothing to copy. So
  "auto" vmaps when the parameters are at least `LOOP_BELOW_PARAM_SHARE` of the bytes a member's
  program writes, and loops otherwise; without the function it vmaps.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown ensemble strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
  if strategy != "auto":
    return strategy
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "vmap"
  if not _has_conv(stacked_params):
    return "map"
  if not convolution.runs_onednn():
    return "loop"
  if attribute_fn is None:
    return "vmap"
  return (
    "vmap"
    if param_share(attribute_fn, stacked_params, inputs) >= LOOP_BELOW_PARAM_SHARE
    else "loop"
  )


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
  elif strategy == "auto":
    strategy = _auto(attribute_fn, stacked_params, inputs)
  else:
    strategy = resolve_strategy(strategy, stacked_params)
  per_member = _run(attribute_fn, strategy, member_chunk, stacked_params, inputs)
  return per_member, jax.tree.map(lambda a: jnp.mean(a, axis=0), per_member)


def _signature(tree) -> tuple:
  return tuple((tuple(jnp.shape(x)), str(jnp.result_type(x))) for x in jax.tree.leaves(tree))


def _auto(attribute_fn, stacked_params, inputs) -> str:
  """`resolve_strategy("auto", ...)` for these shapes, traced once per shape. Inside an outer
  trace (the explain run jits its whole batch) the member loop becomes `lax.map`: one member at a
  time as well, without compiling E unrolled copies of the member's program."""
  cache = _COMPILED.setdefault(attribute_fn, {})
  key = ("auto", _signature(stacked_params), _signature(inputs), convolution.runs_onednn())
  if key not in cache:
    cache[key] = resolve_strategy("auto", stacked_params, attribute_fn=attribute_fn, inputs=inputs)
  traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(inputs))
  return "map" if traced and cache[key] == "loop" else cache[key]


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
