"""Control "methods" that ignore the model, registered in `attributions.METHODS` so that the
explain run measures them beside the real ones: a sanity check must tell them apart.

- `edges`: the Sobel gradient magnitude of the input image (Adebayo et al. 2018's edge detector):
  model-independent, so the randomisation test must keep it at similarity 1.
- `random_map`: uniform noise from the run's key: the floor any faithful method must beat.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Plain Python floats, not a jnp array: a module must not touch the JAX backend at import (a
# multi-process run initialises jax.distributed first; tests/test_imports.py checks it).
_SOBEL = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_SOBEL_T = tuple(zip(*_SOBEL))


def edges(f, params, inputs, *, modality: str):
  """Sobel magnitude `[B, H, W, C]` of each channel of `inputs[modality]` (edge padding)."""
  x = inputs[modality]
  pad = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  h, w = x.shape[1], x.shape[2]

  def conv(k):
    return sum(k[i][j] * pad[:, i : i + h, j : j + w] for i in range(3) for j in range(3))

  return jnp.sqrt(conv(_SOBEL) ** 2 + conv(_SOBEL_T) ** 2)


def random_map(f, params, inputs, rng, *, modality: str):
  """Uniform [0, 1) noise shaped like `inputs[modality]` (the same for every member)."""
  x = inputs[modality]
  return jax.random.uniform(rng, x.shape, x.dtype)
