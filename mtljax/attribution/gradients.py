"""Gradient attribution methods: saliency, input × gradient, Integrated Gradients, the noise
tunnel (SmoothGrad), Gradient SHAP, and the layer and guided methods (Grad-CAM, guided backprop,
guided Grad-CAM). Conventions: `attributions.py`."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.attribution.base import (
  LayerFn,
  ScoreFn,
  _add_noise,
  _baseline_tree,
  _grad_targets,
  _input_grad,
  _interpolate,
  _is_float,
  _is_zero,
  _map_float,
  _mean_over_samples,
  _times_delta,
  _weighted_sum,
  _with_targets,
  num_targets,
)
from mtljax.models import activations

IG_METHODS = (
  "riemann_left",
  "riemann_right",
  "riemann_middle",
  "riemann_trapezoid",
  "gausslegendre",
)
NOISE_KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def saliency(f: ScoreFn, params, inputs, *, absolute: bool = True, target_form: str = "auto"):
  """Vanilla gradient `d f / d x` (Simonyan et al.); its magnitude `|d f / d x|` when `absolute`.

  Returns a pytree shaped like `inputs` (with a target axis `[B, K, ...]` when `f` returns
  `[B, K]`; `target_form`: see `base.resolve_target_form`).
  """
  grads = _input_grad(f, params, inputs, target_form)
  return jax.tree.map(jnp.abs, grads) if absolute else grads


def input_x_gradient(f: ScoreFn, params, inputs, *, target_form: str = "auto"):
  """`x * d f / d x` (signed), a pytree shaped like `inputs` (`[B, K, ...]` for `[B, K]` scores)."""
  grads = _input_grad(f, params, inputs, target_form)
  return _times_delta(inputs, _baseline_tree(inputs, 0.0), grads)


def integration_points(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Quadrature nodes `alphas [steps]` in [0, 1] and weights `[steps]` for the path integral.

  The Riemann rules use Captum's nodes and weights `1/steps`: left `k/n`, right `(k+1)/n`, middle
  `(k+0.5)/n`. `riemann_trapezoid` is the true trapezoid rule on `linspace(0, 1, n)` (weights
  `1/(n-1)`, halved at the ends) so that the weights sum to 1; Captum keeps `1/n` there, whose sum is
  `1 - 1/n`. `gausslegendre` maps `numpy.polynomial.legendre.leggauss` from [-1, 1] to [0, 1].
  """
  if method not in IG_METHODS:
    raise ValueError(f"unknown integration method {method!r}; known: {', '.join(IG_METHODS)}")
  min_steps = 2 if method == "riemann_trapezoid" else 1
  if steps < min_steps:
    raise ValueError(f"{method} needs at least {min_steps} steps, got {steps}")
  n = steps
  if method == "gausslegendre":
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (nodes + 1.0), 0.5 * weights
  if method == "riemann_trapezoid":
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, n), weights
  offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
  return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)


def integrated_gradients(
  f: ScoreFn,
  params,
  inputs,
  *,
  baseline=None,
  steps: int = 32,
  method: str = "riemann_middle",
  batch_steps: int | None = None,
  split: tuple[Callable, Callable] | None = None,
  target_form: str = "auto",
):
  """Integrated Gradients (Sundararajan et al.): `(x - x') * ∫_0^1 ∇f(x' + α (x - x')) dα`.

  Args:
    f: score function `(params, inputs) -> [B]`.
    params: model parameters.
    inputs: pytree of `[B, ...]` arrays.
    baseline: `x'`: None (zeros), a scalar, or a pytree broadcastable to `inputs`.
    steps: number of quadrature nodes.
    method: quadrature rule, see `integration_points`.
    batch_steps: nodes evaluated per vectorised call (memory bound); None = all at once.
    split: optional `(prefix, rest)` that computes the same attributions with less work when the
      model starts with an affine layer (e.g. an MLP encoder's first Dense):
      `prefix(params, inputs) -> z` (a pytree) must be affine in the inputs, and
      `rest(params, inputs, z) -> [B]` must equal `f(params, inputs)` when
      `z = prefix(params, inputs)`. Along the straight path `z` moves on a straight line too,
      `z(α) = z(x') + α (z(x) - z(x'))`, so the prefix runs twice (at x and x') instead of once
      per node, and its backward runs once, on the averaged gradient (the transpose of an affine
      map commutes with the average). Exact up to float rounding; see `flax_utils.affine_split`.

    target_form: how `[B, K]` scores share the forward, see `base.resolve_target_form`.

  Returns:
    A pytree shaped like `inputs` (`[B, K, ...]` for `[B, K]` scores); its sum per example
    approximates `f(x) - f(x')` (completeness).
  """
  alphas, weights = integration_points(method, steps)
  alphas = jnp.asarray(alphas)
  baselines = _baseline_tree(inputs, baseline)

  if split is None:

    def grad_at(i):
      return _input_grad(f, params, _interpolate(inputs, baselines, alphas[i]), target_form)

    avg_grads = _weighted_sum(grad_at, jnp.asarray(weights), batch_steps)
    return _times_delta(inputs, baselines, avg_grads)

  prefix, rest = split
  z_x, z_base = prefix(params, inputs), prefix(params, baselines)

  def grads_at(i):
    a = alphas[i]
    z = jax.tree.map(lambda u, v: v + a.astype(u.dtype) * (u - v), z_x, z_base)
    return _input_grad(
      lambda p, xz: rest(p, xz[0], xz[1]),
      params,
      (_interpolate(inputs, baselines, a), z),
      target_form,
    )

  avg_x, avg_z = _weighted_sum(grads_at, jnp.asarray(weights), batch_steps)

  # d/dx of <prefix(x), avg_z>: the prefix's transpose applied to the averaged z-gradient.
  # With a target axis this is one score per (example, target): `[B, K]`.
  def paired(p, x):
    return sum(
      jnp.sum(_with_targets(z, g) * g, axis=tuple(range(1 if z.ndim == g.ndim else 2, g.ndim)))
      for z, g in zip(jax.tree.leaves(prefix(p, x)), jax.tree.leaves(avg_z))
    )

  through_prefix = _input_grad(paired, params, inputs, target_form)
  return _times_delta(inputs, baselines, jax.tree.map(jnp.add, avg_x, through_prefix))


def smoothgrad(
  method_fn: Callable,
  f: ScoreFn,
  params,
  inputs,
  rng,
  *,
  samples: int = 16,
  stdev: float = 0.15,
  kind: str = "smoothgrad",
  batch_samples: int | None = None,
  **method_kwargs,
):
  """Noise tunnel (SmoothGrad, Smilkov et al.) around a deterministic gradient method.

  `method_fn(f, params, noisy_inputs, **method_kwargs)` (e.g. `saliency`, `input_x_gradient`,
  `integrated_gradients`, `guided_backprop`) is averaged over `samples` copies of the inputs with
  Gaussian noise added to every floating leaf.

  The noise level follows PAIR `saliency` (`stdev_spread`), not Captum's absolute `stdevs`: the
  standard deviation is `stdev * (max(x_b) - min(x_b))`, the range of each example's leaf, so one
  setting suits leaves of different units (reflectances, elevations in metres).

  Args:
    kind: "smoothgrad" (mean of attributions), "smoothgrad_sq" (mean of squares) or "vargrad"
      (variance, `E[a²] - E[a]²`), as Captum's NoiseTunnel.
    batch_samples: noise samples per vectorised call; None = all at once.

  Returns:
    A pytree shaped like `inputs` (or like the wrapped method's output).
  """
  if kind not in NOISE_KINDS:
    raise ValueError(f"unknown noise tunnel kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
  scales = jax.tree.map(
    lambda x: (
      stdev * (jnp.max(x, axis=tuple(range(1, x.ndim))) - jnp.min(x, axis=tuple(range(1, x.ndim))))
      if _is_float(x)
      else None
    ),
    inputs,
  )

  def attr_at(i):
    noisy = inputs if _is_zero(stdev) else _add_noise(inputs, jax.random.fold_in(rng, i), scales)
    attr = method_fn(f, params, noisy, **method_kwargs)
    return attr, jax.tree.map(jnp.square, attr)

  mean, mean_sq = _mean_over_samples(attr_at, samples, batch_samples)
  if kind == "smoothgrad":
    return mean
  if kind == "smoothgrad_sq":
    return mean_sq
  return jax.tree.map(lambda m, m2: m2 - m**2, mean, mean_sq)


def gradient_shap(
  f: ScoreFn,
  params,
  inputs,
  rng,
  *,
  baselines=None,
  samples: int = 16,
  stdev: float = 0.0,
  batch_samples: int | None = None,
  target_form: str = "auto",
):
  """Gradient SHAP (Lundberg & Lee) with Captum's `GradientShap` semantics.

  For each of `samples` draws and each example: pick a baseline example uniformly from `baselines`,
  add Gaussian noise of *absolute* standard deviation `stdev` to the input (Captum's `stdevs`),
  draw `α ~ U[0, 1]` and take `(x_noisy - baseline) * ∇f(baseline + α (x_noisy - baseline))`; the
  attribution is the mean over draws (an estimate of Integrated Gradients averaged over baselines).

  Args:
    baselines: pytree like `inputs` whose leaves have a leading axis of K baseline examples
      `[K, ...]` (one index is drawn for all leaves jointly); None = a single all-zero baseline.
    batch_samples: draws per vectorised call; None = all at once.

  Returns:
    A pytree shaped like `inputs`.
  """
  if baselines is None:
    baselines = jax.tree.map(lambda x: jnp.zeros_like(x[:1]), inputs)
  num_baselines = jax.tree.leaves(baselines)[0].shape[0]
  batch = jax.tree.leaves(inputs)[0].shape[0]
  scales = jax.tree.map(lambda x: jnp.full((batch,), stdev) if _is_float(x) else None, inputs)

  def attr_at(i):
    k_idx, k_alpha, k_noise = jax.random.split(jax.random.fold_in(rng, i), 3)
    idx = jax.random.randint(k_idx, (batch,), 0, num_baselines)
    alpha = jax.random.uniform(k_alpha, (batch,))
    base = _map_float(lambda x, b: jnp.asarray(b)[idx].astype(x.dtype), inputs, baselines)
    noisy = inputs if _is_zero(stdev) else _add_noise(inputs, k_noise, scales)
    grads = _input_grad(f, params, _interpolate(noisy, base, alpha), target_form)
    return _times_delta(noisy, base, grads)

  return _mean_over_samples(attr_at, samples, batch_samples)


# ---------------------------------------------------------------------------------------------
# Layer and guided methods.


def grad_cam(
  layer_fn: LayerFn, params, inputs, *, upsample_to=None, target_form: str = "auto", relu=True
):
  """Grad-CAM (Selvaraju et al.) on one layer's activation.

  `layer_fn(params, inputs, delta) -> (scores [B], activation [B, h, w, c])` must add `delta`
  (shaped like the activation; None = no addition) to the chosen layer's output inside the forward
  pass, so the gradient w.r.t. `delta` at zero is the gradient w.r.t. the activation.

  Returns:
    `[B, h, w]` = ReLU(sum_c α_c A_c), α_c the spatial mean of `d score / d A_c` (without the ReLU
    when `relu` is False: evidence against the score too, Captum's `relu_attributions=False`); bilinearly resized
    to `upsample_to = (H, W)` when given (half-pixel centres, as torch's `align_corners=False`).
    With `[B, K]` scores: `[B, K, h, w]`, one backward pass per target from the layer on (the
    forward is shared; `target_form`: see `base.resolve_target_form`).
  """
  score_shape, act_shape = jax.eval_shape(layer_fn, params, inputs, None)
  num = num_targets(score_shape)
  zero = jnp.zeros(act_shape.shape, act_shape.dtype)
  grads, act = _grad_targets(
    lambda delta: layer_fn(params, inputs, delta), zero, num, target_form, has_aux=True
  )
  alpha = jnp.mean(grads, axis=(-3, -2))  # [B, (K,) c]
  if num is None:
    cam = jnp.einsum("bhwc,bc->bhw", act, alpha)
  else:
    cam = jnp.einsum("bhwc,bkc->bkhw", act, alpha)
  if relu:
    cam = jax.nn.relu(cam)
  if upsample_to is not None:
    cam = jax.image.resize(cam, (*cam.shape[:-2], *upsample_to), method="bilinear")
  return cam


# ReLU whose backward pass is guided backpropagation's (`g` only where `x > 0` and `g > 0`); the
# models' switchable ReLU lives in `mtljax.models.activations`.
guided_relu = activations.guided_relu


def guided_backprop(guided_f: ScoreFn, params, inputs, *, target_form: str = "auto"):
  """Guided backpropagation (Springenberg et al.): the gradient of a score function whose ReLUs
  are `guided_relu` (the same model and weights, built with `guided_relu` as its activation).

  Returns a pytree shaped like `inputs` (signed; `[B, K, ...]` for `[B, K]` scores).
  """
  return _input_grad(guided_f, params, inputs, target_form)


def guided_grad_cam(
  guided_f: ScoreFn, layer_fn: LayerFn, params, inputs, *, modality: str, target_form: str = "auto"
):
  """Guided Grad-CAM: guided backprop of image `inputs[modality]` `[B, H, W, C]` times the
  Grad-CAM map upsampled to `(H, W)` (broadcast over channels). Returns `[B, H, W, C]`
  (`[B, K, H, W, C]` for `[B, K]` scores)."""
  guided = guided_backprop(guided_f, params, inputs, target_form=target_form)[modality]
  cam = grad_cam(layer_fn, params, inputs, upsample_to=guided.shape[-3:-1], target_form=target_form)
  return guided * cam[..., None]
