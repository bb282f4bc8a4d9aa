"""The oneDNN FFI call with a partitioning rule: on a mesh each device convolves its own rows.

Without a rule XLA cannot split a custom call, so under `jit` on a mesh it gathered the operands
(the whole batch's activations on every device) and every device ran the whole convolution.
`call(target, a, b, shape, cfg)` is the FFI call of ops.py under
`jax.experimental.custom_partitioning`: the batch dimension N of the image operands and any
leading (vmapped) dimension keep the sharding they come with, everything else is replicated (the
kernel is small, and a convolution's spatial dimensions need halos), so each device runs the
kernel on its local rows. The kernel gradient sums over N: each device sums its rows and a `psum`
over N's mesh axes adds the devices' partial sums.

Shapes of the operands and the result, with `...` the vmapped dimensions (ops.py; size 1 where an
operand is broadcast):
    fwd          x [..., N, H, W, C],    w [..., KH, KW, C/G, O]  ->  y [..., N, OH, OW, O]
    bwd_data     dy [..., N, OH, OW, O], w                        ->  dx [..., N, H, W, C]
    bwd_weights  x,                      dy                       ->  dw [..., KH, KW, C/G, O]

vmap: custom_partitioning has no batching rule, so a `custom_vmap` around it adds each vmapped
axis as a leading dimension (an unbatched operand gets size 1 there, as `vmap_method=
"expand_dims"` did) and calls the same partitioned op one rank higher.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

BWD_WEIGHTS = "mtljax_onednn_conv_bwd_weights"


def _ffi(target: str, a, b, shape, cfg):
  (sh, sw), ((pt, pb), (pl, pr)), (dh, dw), groups = cfg
  params = np.array([sh, sw, pt, pb, pl, pr, dh, dw, groups], np.int64)
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32))(a, b, params=params)


def _batch_dims(target: str, rank: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
  """The dimensions of (a, b, result) that may stay sharded: the leading ones, and N where the
  array has it."""
  lead = tuple(range(rank - 4))
  n = (rank - 4,)
  if target == BWD_WEIGHTS:
    return lead + n, lead + n, lead
  return lead + n, lead, lead + n


def _spec_of(sharding, rank: int) -> tuple:
  spec = tuple(getattr(sharding, "spec", ()) or ())
  return spec + (None,) * (rank - len(spec))


def _partition(target, shape, cfg, mesh, arg_shapes, result_shape):
  a, b = arg_shapes
  rank = len(shape)
  keep_a, keep_b, keep_out = _batch_dims(target, rank)
  spec_a, spec_b = _spec_of(a.sharding, rank), _spec_of(b.sharding, rank)
  # Each batch dimension takes the mesh axes of the first operand that is sharded there and not
  # broadcast (size 1) there.
  axes = [None] * rank
  for d in range(rank - 3):
    for spec, keep, arr in ((spec_a, keep_a, a), (spec_b, keep_b, b)):
      if axes[d] is None and d in keep and arr.shape[d] > 1 and spec[d] is not None:
        axes[d] = spec[d]
  used = [ax for ax in axes if ax is not None]
  flat = [x for ax in used for x in (ax if isinstance(ax, tuple) else (ax,))]
  if len(flat) != len(set(flat)):  # the same mesh axis on two dimensions: replicate instead
    axes = [None] * rank

  def spec_for(keep, arr_shape):
    return P(*(axes[d] if d in keep and arr_shape[d] > 1 else None for d in range(rank)))

  arg_shardings = (
    NamedSharding(mesh, spec_for(keep_a, a.shape)),
    NamedSharding(mesh, spec_for(keep_b, b.shape)),
  )
  out_sharding = NamedSharding(mesh, spec_for(keep_out, shape))
  reduce_over = axes[rank - 4] if target == BWD_WEIGHTS else None

  def lower(a_local, b_local):
    local = list(shape)
    for d in range(rank - 4):  # leading dimensions split like the operand that carries them
      local[d] = max(a_local.shape[d], b_local.shape[d])
    if target != BWD_WEIGHTS:
      local[rank - 4] = a_local.shape[rank - 4]
    out = _ffi(target, a_local, b_local, tuple(local), cfg)
    return out if reduce_over is None else jax.lax.psum(out, reduce_over)

  return mesh, lower, out_sharding, arg_shardings


def _rule(target, shape, cfg, mesh, operand_types, result_types):
  """Shardy's sharding rule: the leading dimensions and N shared by name, every other dimension
  a factor of its own that must stay replicated; N is summed over for the kernel gradient."""
  rank = len(shape)
  a_shape, b_shape = (tuple(t.shape) for t in operand_types)
  lead = [f"l{d}" for d in range(rank - 4)]

  def dims(arr_shape, tail, prefix):
    names = [
      name if arr_shape[d] == shape[d] or shape[d] == 1 else f"{prefix}b{d}"
      for d, name in enumerate(lead)
    ]
    return " ".join(names + [f"{prefix}{t}" if t != "n" else "n" for t in tail])

  image, out_image, kernel = ("n", "h", "w", "c"), ("n", "oh", "ow", "o"), ("kh", "kw", "ci", "o")
  if target == BWD_WEIGHTS:
    operands, result = (image, out_image), kernel
  elif target.endswith("bwd_data"):
    operands, result = (out_image, kernel), image
  else:
    operands, result = (image, kernel), out_image
  rule = (
    f"{dims(a_shape, operands[0], 'a')}, {dims(b_shape, operands[1], 'b')} -> "
    f"{' '.join(lead + [f'r{t}' if t != 'n' else 'n' for t in result])}"
  )
  factors = dict.fromkeys(rule.replace(",", " ").replace("->", " ").split())  # in rule order
  replicated = tuple(f for f in factors if f != "n" and not f.startswith("l"))
  kw = {"need_replication_factors": replicated}
  if target == BWD_WEIGHTS:
    kw["reduction_factors"] = ("n",)
  return rule, kw


@functools.partial(custom_partitioning, static_argnums=(2, 3, 4))
def _partitioned(a, b, target, shape, cfg):
  return _ffi(target, a, b, shape, cfg)


_partitioned.def_partition(partition=_partition, sharding_rule=_rule)


@functools.cache
def _op(target: str, shape: tuple, cfg):
  """The partitioned call for results of `shape`, batched by `custom_vmap` one rank up."""

  @jax.custom_batching.custom_vmap
  def op(a, b):
    return _partitioned(a, b, target, shape, cfg)

  @op.def_vmap
  def _(axis_size, in_batched, a, b):
    a = a if in_batched[0] else a[None]
    b = b if in_batched[1] else b[None]
    return _op(target, (axis_size, *shape), cfg)(a, b), True

  return op


def call(target: str, a, b, shape, cfg):
  """The FFI kernel `target` of operands `a`, `b` with result `shape` (unbatched), partitioned."""
  return _op(target, tuple(int(s) for s in shape), cfg)(a, b)
