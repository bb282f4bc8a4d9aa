"""The oneDNN convolution as a JAX function: three FFI kernels (conv.cc) under `custom_vjp`.

    conv(x [B, H, W, C], w [KH, KW, C/G, O], cfg) -> y [B, OH, OW, O]     (float32, NHWC / HWIO)

is `lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)` with
`cfg = (strides, padding, dilation, groups)` and explicit `padding = ((top, bottom), (left,
right))`. The forward kernel and the two gradient kernels (input gradient `bwd_data`, kernel
gradient `bwd_weights`) are each bilinear in their two operands, and the VJP of each is made of
the same three kernels:

    y  = F(x, w)       x̄ = D(ȳ, w)        w̄ = W(x, ȳ)
    D(dy, w):  d̄y = F(c, w),   w̄ = W(c, dy)      (c: the cotangent of D's output, x-shaped)
    W(x, dy):  x̄ = D(dy, c),   d̄y = F(x, c)      (c: w-shaped)

so every order of reverse differentiation works (the explanation-guided losses differentiate an
input gradient with respect to the parameters). Forward mode (`jax.jvp`) is not defined, as for
any `custom_vjp`. Under `vmap` the FFI call gets the batch as leading dimensions (an unbatched
operand with size 1 there) and conv.cc loops over them in one call, or folds them into B when the
kernel is not batched. Under `jit` on a mesh each device runs the kernels on its own rows of the
batch (and its own members of a sharded ensemble): the partitioning rule of partition.py.
"""

from __future__ import annotations

import functools

import jax

from mtljax.models.onednn import build, partition


def out_shape(x_shape, w_shape, cfg) -> tuple[int, ...]:
  """The output shape `[B, OH, OW, O]` of `conv` (floor division, as lax)."""
  (sh, sw), ((pt, pb), (pl, pr)), (dh, dw), _ = cfg
  b, h, w, _ = x_shape
  kh, kw, _, o = w_shape
  oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
  ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
  return (b, oh, ow, o)


def _call(target: str, a, b, shape, cfg):
  return partition.call(target, a, b, shape, cfg)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x, w, cfg):
  return _call("mtljax_onednn_conv_fwd", x, w, out_shape(x.shape, w.shape, cfg), cfg)


def _conv_fwd(x, w, cfg):
  return conv(x, w, cfg), (x, w)


def _conv_bwd(cfg, res, g):
  x, w = res
  return bwd_data(g, w, x.shape, cfg), bwd_weights(x, g, w.shape, cfg)


conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def bwd_data(dy, w, x_shape, cfg):
  """The input gradient `[B, H, W, C]` of `conv` for the output cotangent `dy`."""
  return _call("mtljax_onednn_conv_bwd_data", dy, w, tuple(x_shape), cfg)


def _bwd_data_fwd(dy, w, x_shape, cfg):
  return bwd_data(dy, w, x_shape, cfg), (dy, w)


def _bwd_data_bwd(x_shape, cfg, res, c):
  dy, w = res
  return conv(c, w, cfg), bwd_weights(c, dy, w.shape, cfg)


bwd_data.defvjp(_bwd_data_fwd, _bwd_data_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def bwd_weights(x, dy, w_shape, cfg):
  """The kernel gradient `[KH, KW, C/G, O]` of `conv` for the output cotangent `dy`."""
  return _call("mtljax_onednn_conv_bwd_weights", x, dy, tuple(w_shape), cfg)


def _bwd_weights_fwd(x, dy, w_shape, cfg):
  return bwd_weights(x, dy, w_shape, cfg), (x, dy)


def _bwd_weights_bwd(w_shape, cfg, res, c):
  x, dy = res
  return bwd_data(dy, c, x.shape, cfg), conv(x, c, cfg)


bwd_weights.defvjp(_bwd_weights_fwd, _bwd_weights_bwd)


def available() -> bool:
  """Whether the oneDNN kernels run here: the library loads and jax's default backend is the CPU."""
  return jax.default_backend() == "cpu" and build.load()
