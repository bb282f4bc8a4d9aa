"""Attribution methods on score functions, in the spirit of PAIR `saliency` with Captum's method set.

A *score function* `f(params, inputs) -> scores [B]` gives one scalar per example (the target is
already selected, see `targets.py`). `inputs` is a pytree, usually `{modality: array}` with a leading
batch axis B; images are NHWC `[B, H, W, C]`, tabular leaves `[B, D]`. Unless stated otherwise a
method returns attributions with the same pytree structure and shapes as `inputs`.

Conventions shared by every method:
- Examples must be independent under `f` (no batch statistics): gradients are taken of
  `sum_b f(params, inputs)[b]`, which gives each example its own gradient.
- Integer leaves (categorical indices) cannot be differentiated or interpolated: they are held fixed
  and get zero attributions (float, same shape).
- Everything is a pure, jit-able function of `(params, inputs[, rng])`, so an ensemble can `jax.vmap`
  a method over a leading member axis of `params` (see `ensemble.py`). Random methods derive all
  their randomness from `rng`.
- Loops over integration steps, noise samples, occlusion windows and LIME samples are vectorised
  in chunks (`batch_*` options: `jax.vmap` inside a chunk, `jax.lax.scan`/`map` across chunks) to
  bound memory; `None` evaluates all of them in one vectorised call.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.models import activations

ScoreFn = Callable[[Any, Any], jax.Array]
LayerFn = Callable[[Any, Any, Any], tuple[jax.Array, jax.Array]]

IG_METHODS = (
  "riemann_left",
  "riemann_right",
  "riemann_middle",
  "riemann_trapezoid",
  "gausslegendre",
)
NOISE_KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


# ---------------------------------------------------------------------------------------------
# Helpers.


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _map_float(fn, tree, *rest):
  """`fn(leaf, *rest_leaves)` on floating leaves of `tree`; other leaves are returned unchanged."""
  return jax.tree.map(lambda x, *r: fn(x, *r) if _is_float(x) else x, tree, *rest)


def _per_example(v, x):
  """Reshape a per-example vector `[B]` so that it broadcasts against `x` `[B, ...]`."""
  return jnp.reshape(v, (-1,) + (1,) * (jnp.ndim(x) - 1))


def _input_grad(f: ScoreFn, params, inputs):
  """Gradient of `sum_b f(params, inputs)[b]` w.r.t. each floating leaf; zeros for the others."""
  leaves, treedef = jax.tree.flatten(inputs)
  is_float = [_is_float(x) for x in leaves]

  def total(float_leaves):
    it = iter(float_leaves)
    merged = [next(it) if fl else x for x, fl in zip(leaves, is_float)]
    return jnp.sum(f(params, jax.tree.unflatten(treedef, merged)))

  grads = iter(jax.grad(total)([x for x, fl in zip(leaves, is_float) if fl]))
  return jax.tree.unflatten(
    treedef, [next(grads) if fl else jnp.zeros(jnp.shape(x)) for x, fl in zip(leaves, is_float)]
  )


def _baseline_tree(inputs, baseline):
  """A baseline pytree shaped like `inputs`: None → zeros, scalar → constant, pytree → broadcast.

  Integer leaves get themselves as baseline (they are never perturbed).
  """
  if baseline is None:
    baseline = 0.0
  if not isinstance(baseline, (Mapping, list, tuple)) and jnp.ndim(baseline) == 0:
    return _map_float(lambda x: jnp.full(jnp.shape(x), baseline, jnp.result_type(x)), inputs)
  return jax.tree.map(
    lambda x, b: (
      jnp.broadcast_to(jnp.asarray(b, jnp.result_type(x)), jnp.shape(x)) if _is_float(x) else x
    ),
    inputs,
    baseline,
  )


def _interpolate(inputs, baselines, alpha):
  """`baseline + alpha * (x - baseline)` on floating leaves; `alpha` is a scalar or `[B]`."""
  return _map_float(
    lambda x, b: b + _per_example(alpha, x).astype(x.dtype) * (x - b), inputs, baselines
  )


def _times_delta(inputs, baselines, grads):
  """`(x - baseline) * grad` per leaf (zero for integer leaves, whose grad is zero)."""
  return jax.tree.map(lambda x, b, g: (x - b).astype(g.dtype) * g, inputs, baselines, grads)


def _add_noise(inputs, key, scales):
  """Gaussian noise with per-example standard deviation `scales` (pytree of `[B]`)."""
  leaves, treedef = jax.tree.flatten(inputs)
  scale_leaves = treedef.flatten_up_to(scales)
  noisy = [
    x
    + _per_example(s, x).astype(x.dtype)
    * jax.random.normal(jax.random.fold_in(key, i), jnp.shape(x), jnp.result_type(x))
    if _is_float(x)
    else x
    for i, (x, s) in enumerate(zip(leaves, scale_leaves))
  ]
  return jax.tree.unflatten(treedef, noisy)


def _is_zero(stdev) -> bool:
  """Whether a noise level is statically zero (then no noise is drawn at all)."""
  return isinstance(stdev, (int, float)) and stdev == 0


def _weighted_sum(fn, weights, batch=None):
  """`sum_i weights[i] * fn(i)` for `i < n` (fn returns a pytree of arrays).

  Evaluated `batch` indices at a time (`jax.vmap` inside a chunk, `jax.lax.scan` accumulating
  across chunks, so memory holds one chunk); `None` vectorises all n at once. Padding indices of the
  last chunk are clamped to n - 1 and weighted 0.
  """
  n = weights.shape[0]

  def chunk_sum(idx, w):
    return jax.tree.map(lambda o: jnp.tensordot(w.astype(o.dtype), o, axes=1), jax.vmap(fn)(idx))

  if batch is None or batch >= n:
    return chunk_sum(jnp.arange(n), weights)
  num_chunks = -(-n // batch)
  idx = jnp.minimum(jnp.arange(num_chunks * batch), n - 1).reshape(num_chunks, batch)
  w = jnp.pad(weights, (0, num_chunks * batch - n)).reshape(num_chunks, batch)
  init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, 0))

  def step(acc, chunk):
    return jax.tree.map(jnp.add, acc, chunk_sum(*chunk)), None

  return jax.lax.scan(step, init, (idx, w))[0]


def _mean_over_samples(fn, samples, batch):
  return _weighted_sum(fn, jnp.full((samples,), 1.0 / samples), batch)


# ---------------------------------------------------------------------------------------------
# Gradient methods.


def saliency(f: ScoreFn, params, inputs, *, absolute: bool = True):
  """Vanilla gradient `d f / d x` (Simonyan et al.); its magnitude `|d f / d x|` when `absolute`.

  Returns a pytree shaped like `inputs`.
  """
  grads = _input_grad(f, params, inputs)
  return jax.tree.map(jnp.abs, grads) if absolute else grads


def input_x_gradient(f: ScoreFn, params, inputs):
  """`x * d f / d x` (signed), a pytree shaped like `inputs`."""
  return _times_delta(inputs, _baseline_tree(inputs, 0.0), _input_grad(f, params, inputs))


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

  Returns:
    A pytree shaped like `inputs`; its sum per example approximates `f(x) - f(x')` (completeness).
  """
  alphas, weights = integration_points(method, steps)
  alphas = jnp.asarray(alphas)
  baselines = _baseline_tree(inputs, baseline)

  if split is None:

    def grad_at(i):
      return _input_grad(f, params, _interpolate(inputs, baselines, alphas[i]))

    avg_grads = _weighted_sum(grad_at, jnp.asarray(weights), batch_steps)
    return _times_delta(inputs, baselines, avg_grads)

  prefix, rest = split
  z_x, z_base = prefix(params, inputs), prefix(params, baselines)

  def grads_at(i):
    a = alphas[i]
    z = jax.tree.map(lambda u, v: v + a.astype(u.dtype) * (u - v), z_x, z_base)
    return _input_grad(
      lambda p, xz: rest(p, xz[0], xz[1]), params, (_interpolate(inputs, baselines, a), z)
    )

  avg_x, avg_z = _weighted_sum(grads_at, jnp.asarray(weights), batch_steps)
  # d/dx of <prefix(x), avg_z>: the prefix's transpose applied to the averaged z-gradient.
  through_prefix = _input_grad(
    lambda p, x: sum(
      jnp.sum(z * g) for z, g in zip(jax.tree.leaves(prefix(p, x)), jax.tree.leaves(avg_z))
    ),
    params,
    inputs,
  )
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
    grads = _input_grad(f, params, _interpolate(noisy, base, alpha))
    return _times_delta(noisy, base, grads)

  return _mean_over_samples(attr_at, samples, batch_samples)


# ---------------------------------------------------------------------------------------------
# Perturbation methods.


def _window_starts(size: int, window: int, stride: int) -> np.ndarray:
  """Captum's window positions: `ceil((size - window) / stride) + 1` starts, the last one clipped."""
  if window > size:
    raise ValueError(f"occlusion window {window} exceeds the input size {size}")
  return np.arange(math.ceil((size - window) / stride) + 1) * stride


def _coverage(size: int, window: int, stride: int) -> np.ndarray:
  """How many windows cover each position `[size]`."""
  starts = _window_starts(size, window, stride)
  pos = np.arange(size)
  return ((pos[None] >= starts[:, None]) & (pos[None] < starts[:, None] + window)).sum(0)


def _occlude_image(score_with, reference, x, b, window, stride, batch):
  """Captum occlusion of an image leaf `x [B, H, W, C]`; `score_with(occluded) -> [B]`."""
  _, height, width, _ = x.shape
  (wy, wx), (sy, sx) = window, stride
  starts_y = jnp.asarray(_window_starts(height, wy, sy))
  starts_x = jnp.asarray(_window_starts(width, wx, sx))
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]

  def diff_at(p):
    y0, x0 = starts_y[p // starts_x.shape[0]], starts_x[p % starts_x.shape[0]]
    mask = (rows >= y0) & (rows < y0 + wy) & (cols >= x0) & (cols < x0 + wx)  # [H, W]
    occluded = jnp.where(mask[None, :, :, None], b, x)
    return (reference - score_with(occluded))[:, None, None] * mask

  num = starts_y.shape[0] * starts_x.shape[0]
  total = _weighted_sum(diff_at, jnp.ones((num,), x.dtype), batch)  # [B, H, W]
  counts = np.outer(_coverage(height, wy, sy), _coverage(width, wx, sx))
  return jnp.broadcast_to((total / counts)[..., None], x.shape)


def _occlude_features(score_with, reference, x, b, batch):
  """Element-wise occlusion of a leaf `x [B, ...]`; `score_with(occluded) -> [B]`."""
  flat_x, flat_b = x.reshape(x.shape[0], -1), b.reshape(x.shape[0], -1)
  num = flat_x.shape[1]

  def diff_at(p):
    occluded = flat_x.at[:, p].set(flat_b[:, p]).reshape(x.shape)
    return (reference - score_with(occluded))[:, None] * jax.nn.one_hot(p, num, dtype=x.dtype)

  return _weighted_sum(diff_at, jnp.ones((num,), x.dtype), batch).reshape(x.shape)


def occlusion(
  f: ScoreFn,
  params,
  inputs,
  *,
  window=(8, 8),
  stride=(4, 4),
  baseline=0.0,
  batch_windows: int | None = 32,
):
  """Occlusion (Zeiler & Fergus) with Captum's `Occlusion` semantics.

  Each leaf is occluded on its own (the other leaves fixed). Image leaves `[B, H, W, C]`: a
  `window` slides over H, W with `stride` (all channels at once; windows that would pass the border
  are clipped to it, as Captum does), the occluded pixels are set to `baseline`, and
  `f(x) - f(occluded)` is added to every pixel of the window; each pixel's sum is divided by the
  number of windows covering it. Other floating leaves are occluded one element at a time.

  Args:
    baseline: occlusion value: a scalar or a pytree broadcastable to `inputs`.
    batch_windows: occluded inputs evaluated per vectorised call; None = all at once.

  Returns:
    A pytree shaped like `inputs`.
  """
  baselines = _baseline_tree(inputs, baseline)
  reference = f(params, inputs)
  leaves, treedef = jax.tree.flatten(inputs)
  out = []
  for j, (x, b) in enumerate(zip(leaves, treedef.flatten_up_to(baselines))):

    def score_with(value, j=j):
      return f(params, jax.tree.unflatten(treedef, leaves[:j] + [value] + leaves[j + 1 :]))

    if not _is_float(x):
      out.append(jnp.zeros(x.shape))
    elif x.ndim == 4:
      out.append(_occlude_image(score_with, reference, x, b, window, stride, batch_windows))
    else:
      out.append(_occlude_features(score_with, reference, x, b, batch_windows))
  return jax.tree.unflatten(treedef, out)


def grid_segments(height: int, width: int, grid=(8, 8)) -> np.ndarray:
  """Labels `[H, W]` (int32, row-major) of a `grid = (rows, cols)` of near-equal cells."""
  rows = np.arange(height) * grid[0] // height
  cols = np.arange(width) * grid[1] // width
  return (rows[:, None] * grid[1] + cols[None, :]).astype(np.int32)


def superpixel_segments(images, n_segments: int = 50, *, compactness: float = 10.0) -> np.ndarray:
  """SLIC superpixels (scikit-image) of `images [B, H, W, C]` → labels `[B, H, W]` int32.

  Runs in numpy, outside jit: compute segments once, then pass them to `lime`. Each image is
  min-max scaled to [0, 1] per channel first (SLIC assumes that range); labels are renumbered
  0..S_b-1 per image.
  """
  from skimage.segmentation import slic  # pylint: disable=g-import-not-at-top

  images = np.asarray(images, np.float64)
  low = images.min(axis=(1, 2), keepdims=True)
  span = np.maximum(images.max(axis=(1, 2), keepdims=True) - low, 1e-12)
  scaled = (images - low) / span
  out = []
  for image in scaled:
    labels = slic(
      image,
      n_segments=n_segments,
      compactness=compactness,
      start_label=0,
      channel_axis=-1,
      convert2lab=image.shape[-1] == 3,
    )
    out.append(np.unique(labels, return_inverse=True)[1].reshape(labels.shape))
  return np.stack(out).astype(np.int32)


def lime(
  f: ScoreFn,
  params,
  inputs: Mapping[str, Any],
  rng,
  *,
  modality: str,
  segments=None,
  num_segments: int | None = None,
  grid=(8, 8),
  num_samples: int = 256,
  kernel_width: float = 0.25,
  baseline=0.0,
  ridge: float = 1.0,
  batch_size: int = 64,
):
  """LIME (Ribeiro et al.) over the segments of one image modality; other modalities fixed.

  Draws `num_samples` binary masks `z [N, S]` over the S segments (the first one all ones, the
  unperturbed image, as lime does); masked-out segments are set to `baseline`. Each sample is
  weighted by the exponential kernel `exp(-d² / (2 w²))` on the cosine distance `d` between `z` and
  the all-ones mask (equal to lime's `sqrt(exp(-d² / w²))` and to Captum's
  `get_exp_kernel_similarity_function`; `w = kernel_width`, lime's image default 0.25). The scores
  are regressed on `z` by weighted ridge regression with an unpenalised intercept (lime's Ridge,
  alpha `ridge`), solved in jnp so the method stays jit/vmap-able given the segments. The same
  masks serve all examples of the batch.

  Args:
    inputs: dict of modalities; `inputs[modality]` is `[B, H, W, C]`.
    segments: labels `[B, H, W]` or `[H, W]` in `[0, S)`; None = `grid_segments(H, W, grid)`.
    num_segments: S; needed when `segments` is traced (under jit), else inferred from them.
    batch_size: perturbed inputs per vectorised call.

  Returns:
    `[B, H, W]`: each pixel gets its segment's regression coefficient.
  """
  x = inputs[modality]
  batch, height, width = x.shape[:3]
  if segments is None:
    segments, num_segments = grid_segments(height, width, grid), grid[0] * grid[1]
  elif num_segments is None:
    num_segments = int(np.max(segments)) + 1
  segments = jnp.broadcast_to(jnp.asarray(segments), (batch, height, width))
  base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)

  masks = jax.random.bernoulli(rng, 0.5, (num_samples, num_segments)).astype(x.dtype)
  masks = masks.at[0].set(1.0)

  def score_at(n):
    keep = masks[n][segments][..., None]  # [B, H, W, 1]
    return f(params, {**inputs, modality: keep * x + (1 - keep) * base})

  scores = jax.lax.map(score_at, jnp.arange(num_samples), batch_size=batch_size)  # [N, B]
  distance = 1.0 - jnp.sqrt(masks.sum(1) / num_segments)
  weights = jnp.exp(-(distance**2) / (2 * kernel_width**2))  # [N]
  w_norm = weights / weights.sum()
  masks_c = masks - w_norm @ masks
  scores_c = scores - w_norm @ scores
  gram = masks_c.T @ (weights[:, None] * masks_c) + ridge * jnp.eye(num_segments, dtype=x.dtype)
  coef = jnp.linalg.solve(gram, masks_c.T @ (weights[:, None] * scores_c))  # [S, B]
  return jnp.take_along_axis(coef.T, segments.reshape(batch, -1), axis=1).reshape(segments.shape)


# ---------------------------------------------------------------------------------------------
# Layer and guided methods.


def grad_cam(layer_fn: LayerFn, params, inputs, *, upsample_to=None):
  """Grad-CAM (Selvaraju et al.) on one layer's activation.

  `layer_fn(params, inputs, delta) -> (scores [B], activation [B, h, w, c])` must add `delta`
  (shaped like the activation; None = no addition) to the chosen layer's output inside the forward
  pass, so the gradient w.r.t. `delta` at zero is the gradient w.r.t. the activation.

  Returns:
    `[B, h, w]` = ReLU(sum_c α_c A_c), α_c the spatial mean of `d score / d A_c`; bilinearly resized
    to `upsample_to = (H, W)` when given (half-pixel centres, as torch's `align_corners=False`).
  """
  _, act_shape = jax.eval_shape(layer_fn, params, inputs, None)

  def total(delta):
    scores, act = layer_fn(params, inputs, delta)
    return jnp.sum(scores), act

  grads, act = jax.grad(total, has_aux=True)(jnp.zeros(act_shape.shape, act_shape.dtype))
  alpha = jnp.mean(grads, axis=(1, 2))  # [B, c]
  cam = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", act, alpha))
  if upsample_to is not None:
    cam = jax.image.resize(cam, (cam.shape[0], *upsample_to), method="bilinear")
  return cam


# ReLU whose backward pass is guided backpropagation's (`g` only where `x > 0` and `g > 0`); the
# models' switchable ReLU lives in `mtljax.models.activations`.
guided_relu = activations.guided_relu


def guided_backprop(guided_f: ScoreFn, params, inputs):
  """Guided backpropagation (Springenberg et al.): the gradient of a score function whose ReLUs
  are `guided_relu` (the same model and weights, built with `guided_relu` as its activation).

  Returns a pytree shaped like `inputs` (signed).
  """
  return _input_grad(guided_f, params, inputs)


def guided_grad_cam(guided_f: ScoreFn, layer_fn: LayerFn, params, inputs, *, modality: str):
  """Guided Grad-CAM: guided backprop of image `inputs[modality]` `[B, H, W, C]` times the
  Grad-CAM map upsampled to `(H, W)` (broadcast over channels). Returns `[B, H, W, C]`."""
  guided = guided_backprop(guided_f, params, inputs)[modality]
  cam = grad_cam(layer_fn, params, inputs, upsample_to=guided.shape[1:3])
  return guided * cam[..., None]


# ---------------------------------------------------------------------------------------------
# Registry.


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """How to call an attribution method and read its output.

  Calling conventions (keyword options after these): plain `fn(f, params, inputs)`; `needs_rng`:
  `fn(f, params, inputs, rng)`; `needs_layer_fn`: `fn(layer_fn, params, inputs)`;
  `needs_guided_fn`: `fn(guided_f, params, inputs)`; both: `fn(guided_f, layer_fn, params,
  inputs)`; smoothgrad takes the wrapped method first. `needs_modality`: a `modality=` option.
  `output` is "inputs" (a pytree shaped like the inputs), "map" (`[B, h, w]`, or `[B, H, W]` with
  `upsample_to`) or "image" (shaped like `inputs[modality]`). `signed` says whether attributions
  can be negative (normalise them to [-1, 1]; unsigned ones to [0, 1]).
  """

  fn: Callable
  signed: bool
  needs_rng: bool = False
  needs_layer_fn: bool = False
  needs_guided_fn: bool = False
  needs_modality: bool = False
  output: str = "inputs"


METHODS: dict[str, MethodSpec] = {
  # Unsigned with the default absolute=True.
  "saliency": MethodSpec(saliency, signed=False),
  "input_x_gradient": MethodSpec(input_x_gradient, signed=True),
  "integrated_gradients": MethodSpec(integrated_gradients, signed=True),
  # Signedness follows the wrapped method; signed normalisation is also right for maps >= 0.
  "smoothgrad": MethodSpec(smoothgrad, signed=True, needs_rng=True),
  "gradient_shap": MethodSpec(gradient_shap, signed=True, needs_rng=True),
  "occlusion": MethodSpec(occlusion, signed=True),
  "grad_cam": MethodSpec(grad_cam, signed=False, needs_layer_fn=True, output="map"),
  "guided_backprop": MethodSpec(guided_backprop, signed=True, needs_guided_fn=True),
  "guided_grad_cam": MethodSpec(
    guided_grad_cam,
    signed=True,
    needs_layer_fn=True,
    needs_guided_fn=True,
    needs_modality=True,
    output="image",
  ),
  "lime": MethodSpec(lime, signed=True, needs_rng=True, needs_modality=True, output="map"),
}


def get_method(name: str) -> MethodSpec:
  """The registry entry of attribution method `name`; ValueError listing the known ones."""
  if name not in METHODS:
    raise ValueError(f"unknown attribution method {name!r}; known: {', '.join(sorted(METHODS))}")
  return METHODS[name]
