"""The convolution every conv module of mtljax's models goes through (`Conv`), and its backend.

`config.conv` picks the backend (one key for the whole model; every model `build_model` returns,
`MultitaskModel` and MTC-LIM's `LIMModel`, applies it around its call with `use`):

    "xla"     lax.conv_general_dilated (with the im2col matmul for tiny outputs below)
    "onednn"  oneDNN's kernels through jax.ffi (mtljax/models/onednn/), on CPU, float32, NHWC
    "auto"    "onednn" where it runs (the CPU backend, the library built and loaded), else "xla"

A conv that oneDNN cannot take (another dtype or layout, input dilation, negative padding, a GPU
or TPU backend) runs XLA's convolution whatever the setting; when the library cannot be built or
loaded, one line on stderr says why (mtljax/models/onednn/build.py) and XLA's runs. The setting is
read when the model is traced, so it holds inside jit, vmap and grad of the model's apply.
"""

from __future__ import annotations

import contextlib
import threading

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

BACKENDS = ("auto", "xla", "onednn")
_state = threading.local()


@contextlib.contextmanager
def use(backend: str):
  """Run the convolutions traced inside the block with `backend` (one of BACKENDS)."""
  if backend not in BACKENDS:
    raise ValueError(f"conv backend {backend!r} is not one of {BACKENDS}")
  before = getattr(_state, "backend", "xla")
  _state.backend = backend
  try:
    yield
  finally:
    _state.backend = before


def backend() -> str:
  """The backend in effect ("xla" outside any `use` block)."""
  return getattr(_state, "backend", "xla")


def runs_onednn() -> bool:
  """Whether the convolutions traced now run oneDNN's kernels (where oneDNN can take them): the
  backend in effect is "onednn" or "auto" and the library loads on this (CPU) backend."""
  if backend() == "xla":
    return False
  from mtljax.models import onednn

  return onednn.available()


def _onednn_cfg(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dn, groups, kw):
  """`ops.conv`'s cfg when oneDNN can run this convolution, else None."""
  if kw or lhs.ndim != 4 or rhs.ndim != 4 or dn is None:
    return None
  if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return None
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn) != nhwc:  # names or numbers
    return None
  if any(d not in (None, 1) for d in tuple(lhs_dilation or ())):
    return None
  dil = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):  # "SAME" / "VALID", resolved as lax does
    eff = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dil)]
    padding = lax.padtype_to_pads(lhs.shape[1:3], eff, window_strides, padding)
  padding = tuple((int(a), int(b)) for a, b in padding)
  if any(p < 0 for pair in padding for p in pair):
    return None
  return (tuple(window_strides), padding, dil, int(groups))


# Convolutions whose output has at most this many pixels run as one matmul over im2col patches.
SMALL_SPATIAL_PIXELS = 16


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  **kw,
):
  """`lax.conv_general_dilated`, except that a plain 2-D NHWC convolution with a tiny output
  (≤ `SMALL_SPATIAL_PIXELS` pixels, e.g. ResNet-18's last stage at 64×64 inputs: 2×2) runs as
  im2col patches @ kernel. XLA:CPU's convolution is pathologically slow there (measured 43 ms vs
  1.3 ms for a 3×3, 512→512 conv on 4×2×2 inputs; profiling/README.md); the result is the same
  up to float summation order, and the kernel keeps `nn.Conv`'s layout (checkpoints unchanged).
  With the "onednn" or "auto" backend (`use`) a convolution oneDNN can take runs there instead.
  """
  if backend() != "xla":
    from mtljax.models import onednn  # the library is built and loaded on first use only

    cfg = _onednn_cfg(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, kw,
    )  # fmt: skip
    if cfg is not None and onednn.available():
      return onednn.conv(lhs, rhs, cfg)
  plain = (
    lhs.ndim == 4
    and feature_group_count == 1
    and not kw
    and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
    and dimension_numbers is not None
    and tuple(dimension_numbers)
    == tuple(lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
  )
  if plain:
    kh, kw_, cin, cout = rhs.shape
    if isinstance(padding, str):  # "SAME" / "VALID"
      padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw_), window_strides, padding)
    (pt, pb), (pl, pr) = padding
    sh, sw = window_strides
    oh = (lhs.shape[1] + pt + pb - kh) // sh + 1
    ow = (lhs.shape[2] + pl + pr - kw_) // sw + 1
    plain = oh * ow <= SMALL_SPATIAL_PIXELS
  if not plain:
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
      **kw,
    )
  x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  cols = [
    x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
    for i in range(kh)
    for j in range(kw_)
  ]
  patches = jnp.concatenate(cols, axis=-1)  # [B, oh, ow, kh·kw·cin], (kh, kw, cin) order
  return jnp.matmul(patches, rhs.reshape(kh * kw_ * cin, cout), precision=precision)


def Conv(*args, **kwargs) -> nn.Conv:
  """`nn.Conv` with `conv_general_dilated` above (same parameters)."""
  return nn.Conv(*args, conv_general_dilated=conv_general_dilated, **kwargs)
