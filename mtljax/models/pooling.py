"""Max pooling whose derivative is a few fused elementwise passes instead of XLA's scatter.

`max_pool(x, window, strides, padding)` is `flax.linen.max_pool` (NHWC, `[..., H, W, C]`; the
forward is the same `lax.reduce_window`). Its derivative is defined here (`custom_jvp`): the
output's tangent is the tangent of the window element that holds the maximum, the FIRST one in
row-major window order when several tie (as PyTorch's `max_pool2d` picks it). Reverse mode
transposes that rule: the index of each window's maximum is computed once (one int8 per output)
and the input gradient is one fused pass of selects and pads over it.

Why: jax differentiates `reduce_window(max)` on CPU through a variadic reduce-window that carries
one s32 index array per dimension (four iotas the size of the padded input, built on every call)
and a scatter of the cotangent. In a Saliency call on ResNet-18 at 224 px (batch 8) that was
about a sixth of the whole call, single-threaded, several times PyTorch's max pool forward and
backward (profiling/benchmarks/attribution_profile.py shows the per-op shares); the rule here
takes a small fraction of that. The rule here is also an
ordinary jax function, so every order of differentiation and forward mode work.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def _pads(shape, window, strides, padding) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):  # "SAME" / "VALID", resolved as lax does
    return tuple(lax.padtype_to_pads(shape, window, strides, padding))
  return tuple((int(a), int(b)) for a, b in padding)


def max_pool(x, window: Sequence[int], strides: Sequence[int] | None = None, padding="VALID"):
  """`flax.linen.max_pool(x, window, strides, padding)` for `x [..., H, W, C]` (2-D windows)."""
  window = tuple(int(w) for w in window)
  strides = tuple(int(s) for s in strides) if strides is not None else (1,) * len(window)
  if len(window) != 2 or x.ndim < 3:
    raise ValueError(f"max_pool takes 2-D windows of [..., H, W, C]; got {window}, {x.shape}")
  lead = x.shape[:-3]
  x4 = x.reshape((-1, *x.shape[-3:]))
  pads = _pads(x.shape[-3:-1], window, strides, padding)
  if any(p < 0 for pair in pads for p in pair):
    raise ValueError(f"max_pool takes no negative padding; got {pads}")
  with jax.named_scope("max_pool"):  # names its ops and their derivatives in profiles
    y = _max_pool(x4, window, strides, pads)
  return y.reshape((*lead, *y.shape[1:]))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
  return lax.reduce_window(
    x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0))
  )


@_max_pool.defjvp
def _max_pool_jvp(window, strides, pads, primals, tangents):
  (x,), (t,) = primals, tangents
  y = _max_pool(x, window, strides, pads)
  xb = _blocks(x, -jnp.inf, y.shape, window, strides, pads)
  tb = _blocks(t, 0, y.shape, window, strides, pads)
  offsets = [(i, j) for i in range(window[0]) for j in range(window[1])]
  # Which window offset holds the maximum (the first one that does; -1 for a NaN maximum): one
  # small index per output, so each tangent element is one select per offset. The max over a
  # broadcast axis of 2 changes nothing but makes it a reduction, which XLA computes once into a
  # buffer: as a plain elementwise chain XLA fused it into the gradient, where every element of
  # the input gradient re-ran the comparisons of every window it is in (8x slower; XLA:CPU drops
  # optimization barriers before fusing, and a batched `lax.cond` would become a select).
  which = jnp.full(y.shape, -1, jnp.int8 if len(offsets) < 128 else jnp.int32)
  for k in reversed(range(len(offsets))):
    which = jnp.where(xb(*offsets[k]) == y, k, which)
  which = jnp.max(jnp.broadcast_to(which[..., None], (*which.shape, 2)), axis=-1)
  # A sum of masked terms (one of them nonzero), not a chain of selects: its transpose masks the
  # cotangent once per offset, where a chain's re-tests every earlier offset for each one.
  out = sum(jnp.where(which == k, tb(i, j), 0) for k, (i, j) in enumerate(offsets))
  return y, out


def _blocks(a, fill, out_shape, window, strides, pads):
  """`at(i, j)`: the elements of `a` at window offset (i, j) of every output, `[B, OH, OW, C]`.

  The padded input is cut into blocks of strides × strides (`[B, Hb, sh, Wb, sw, C]`), so the
  offset (i, j) = (sh·u + r, sw·v + q) is the contiguous slice `[:, u:u+OH, r, v:v+OW, q]`: its
  transpose (the gradient) is a plain pad, where a strided slice's is an interior pad that XLA:CPU
  runs an index test per element for.
  """
  b, oh, ow, c = out_shape
  (sh, sw), (kh, kw) = strides, window
  hb, wb = oh + -(-kh // sh) - 1, ow + -(-kw // sw) - 1  # blocks the windows reach
  (pt, pb), (pl, pr) = pads
  a = jnp.pad(a, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
  a = a[:, : hb * sh, : wb * sw]  # rows and columns no window reaches
  a = jnp.pad(
    a,
    ((0, 0), (0, hb * sh - a.shape[1]), (0, wb * sw - a.shape[2]), (0, 0)),
    constant_values=fill,
  )
  a = a.reshape(b, hb, sh, wb, sw, c)

  def at(i, j):
    (u, r), (v, q) = divmod(i, sh), divmod(j, sw)
    return a[:, u : u + oh, r, v : v + ow, q]

  return at
