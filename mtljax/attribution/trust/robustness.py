"""Robustness: does a tiny change of the input change the map? (Yeh et al. 2019; Alvarez-Melis and
Jaakkola 2018). `explain(params, x [B, H, W, C]) -> maps [B, H, W]`; the perturbations are passed
in (`noise [S, B, H, W, C]`, e.g. `uniform_noise`), so that the same draws can go to a reference
implementation. Pure and jit-able; the samples run in chunks of `chunk` (vmapped together; the
chunks traced one after another, `ops.unrolled_chunks`: 1 is the fastest on CPU at larger images,
None = all in one vmap)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mtljax.attribution.trust import ops


def uniform_noise(rng, samples: int, shape, radius: float, dtype=jnp.float32):
  """`[samples, *shape]` uniform in [-radius, radius] (Quantus's `batch_uniform_noise`)."""
  return jax.random.uniform(rng, (samples, *shape), dtype, -radius, radius)


def gaussian_noise(rng, samples: int, shape, std: float, dtype=jnp.float32):
  """`[samples, *shape]` normal with standard deviation `std` (Quantus's `batch_gaussian_noise`)."""
  return std * jax.random.normal(rng, (samples, *shape), dtype)


def _flat(a, lead: int = 0):
  """`[..., H, W]` → `[..., H*W]`; with `lead`, `[B, H, W, C]` → `[B, H*W*C]`."""
  return a.reshape(a.shape[0], -1) if lead else a.reshape(*a.shape[:-2], -1)


def max_sensitivity(explain: Callable, params, x, maps, noise, *, chunk=None):
  """Max-sensitivity (Yeh et al. 2019, Def. 3.1, Quantus's `MaxSensitivity` defaults): over the
  samples, `max ||explain(x + noise_s) - maps||_F / ||maps||_F`. `maps` may have leading axes
  (`[..., B, H, W]`, e.g. members), which `explain` then returns too. Returns `[..., B]`; lower =
  more robust."""
  ops.check_maps(x, maps)
  ref = _flat(maps)
  den = jnp.linalg.norm(ref, axis=-1)

  def at(d):
    return jnp.linalg.norm(_flat(explain(params, x + d)) - ref, axis=-1) / den

  return jnp.max(ops.unrolled_chunks(at, noise, chunk), axis=0)


def local_lipschitz(explain: Callable, params, x, maps, noise, *, chunk=None, eps: float = 1e-10):
  """Local Lipschitz estimate (Alvarez-Melis and Jaakkola 2018, Eq. 5, Quantus's
  `LocalLipschitzEstimate`): over the samples, `max ||explain(x + d) - maps||_2 / (||d||_2 +
  eps)`. Returns `[B]`; lower = more robust."""
  ops.check_maps(x, maps)
  ref = _flat(maps)

  def at(d):
    num = jnp.linalg.norm(_flat(explain(params, x + d)) - ref, axis=-1)
    return num / (jnp.linalg.norm(_flat(d, 1), axis=-1) + eps)

  return jnp.max(ops.unrolled_chunks(at, noise, chunk), axis=0)
