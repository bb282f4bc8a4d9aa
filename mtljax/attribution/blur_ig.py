"""Blur Integrated Gradients (Xu et al. 2020, "Attribution in scale and space"), as PAIR `saliency`
0.2.1's `BlurIG`: integrate the gradient along the path from a fully blurred image to the image.

For `sigma_0 = 0 < sigma_1 < ... < sigma_S = max_sigma` (linear), with `x_i` the image blurred by
`sigma_i` (Gaussian over H and W, zero padding, truncated at 4 sigma: `scipy.ndimage.
gaussian_filter(mode="constant")`) and `dx_i/dsigma` by the forward difference `grad_step`:

    attribution = - sum_i (sigma_{i+1} - sigma_i) * dx_i/dsigma * grad f(x_i)

Blurring is a pair of `[H, H]` and `[W, W]` matrices per sigma (exact, jit-able); the S gradient
evaluations run in chunks of `batch_steps`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def blur_matrix(n: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
  """`[n, n]` Gaussian blur along one axis with zero padding (scipy's 1-D kernel and radius)."""
  if sigma == 0:
    return np.eye(n)
  radius = int(truncate * float(sigma) + 0.5)
  t = np.arange(-radius, radius + 1)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  k /= k.sum()
  d = np.arange(n)[:, None] - np.arange(n)[None, :]
  return np.where(np.abs(d) <= radius, k[np.clip(d + radius, 0, 2 * radius)], 0.0)


def _blur(x, mh, mw):
  return jnp.einsum("hi,bijc,wj->bhwc", mh, x, mw)


def blur_ig(
  f,
  params,
  inputs,
  *,
  modality: str,
  steps: int = 32,
  max_sigma: float = 50.0,
  grad_step: float = 0.01,
  batch_steps: int | None = None,
):
  """Blur IG of `f` w.r.t. `inputs[modality]` `[B, H, W, C]` (other inputs held fixed).
  Returns attributions shaped like the image."""
  x = inputs[modality]
  h, w = x.shape[1], x.shape[2]
  sigmas = [i * max_sigma / steps for i in range(steps + 1)]
  mats = [
    (
      blur_matrix(h, s),
      blur_matrix(w, s),
      blur_matrix(h, s + grad_step),
      blur_matrix(w, s + grad_step),
    )
    for s in sigmas[:-1]
  ]
  stack = lambda k: jnp.asarray(np.stack([m[k] for m in mats]), x.dtype)  # noqa: E731
  mh, mw, gh, gw = stack(0), stack(1), stack(2), stack(3)
  dsig = jnp.asarray(np.diff(sigmas), x.dtype)

  def grad_f(img):
    return jax.grad(lambda im: f(params, {**inputs, modality: im}).sum())(img)

  def term(a):
    bh, bw, ch, cw, ds = a
    xi = _blur(x, bh, bw)
    dx = (_blur(x, ch, cw) - xi) / grad_step
    return ds * dx * grad_f(xi)

  args = (mh, mw, gh, gw, dsig)
  if batch_steps is None or batch_steps >= steps:
    terms = jax.vmap(term)(args)
  else:
    terms = jax.lax.map(term, args, batch_size=int(batch_steps))
  return -terms.sum(0)
