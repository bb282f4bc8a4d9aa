"""Saliency maps as differentiable functions of the parameters (for explanation losses).

Every map here is built from `jax.grad` inside the loss, so differentiating the loss w.r.t. the
parameters differentiates *through* the saliency map (second order): no stop-gradient, no Python
loop over examples; the whole batch in one program, vmappable over ensemble members.

  `score(params, x) -> [B, K]`  the explained task's logits with image input x [B, H, W, C]

  input_gradient    Σ_c |∂ s_y / ∂x|                 [B, H, W]
  input_x_gradient  |Σ_c x ⊙ ∂ s_y / ∂x|             [B, H, W]
  gradcam@<layer>   ReLU(Σ_c α_c A_c), α = spatial mean of ∂ s_y / ∂A, bilinearly resized to
                    (H, W) (Selvaraju et al.); <layer> a module path, e.g. encoders_image/conv2

s_y is the logit of the example's own class (`targets`), or of `targets` given per example.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mtljax.attribution.layers import flax_layer_fn

KINDS = ("input_gradient", "input_x_gradient", "gradcam")


def parse(name: str) -> tuple[str, str]:
  """`"gradcam@encoders_image/conv2"` -> ("gradcam", "encoders_image/conv2"); others (kind, "")."""
  kind, _, layer = name.partition("@")
  if kind not in KINDS:
    raise ValueError(f"unknown saliency {name!r}; expected one of {KINDS} (gradcam@<layer>)")
  if (kind == "gradcam") != bool(layer):
    raise ValueError(f"saliency {name!r}: gradcam needs @<layer>, the others take no layer")
  return kind, layer


def _picked(logits, index):
  return jnp.take_along_axis(logits, index[:, None].astype(jnp.int32), axis=1)[:, 0]


#: Up to this many classes the K input gradients of RRR's centred form are an unrolled loop
#: (measured 1.7× faster than one vmapped VJP at K = 10 on XLA:CPU, lax.map 4× slower); beyond,
#: vmapped (one program whatever K).
UNROLL_CLASSES = 32


def log_prob_gradient(score: Callable, params, x, index=None, output: str = "sum_log_probs"):
  """RRR's input gradients ∂/∂x of `output`, `[B, H, W, C]` (`[K, B, H, W, C]` for
  "centred_log_probs"):

    sum_log_probs      Σ_b Σ_k log p_k(x_b)  (Ross et al. 2017)
    true_log_prob      Σ_b log p_{index_b}(x_b)  (each example's own class)
    centred_log_probs  for each class k, Σ_b (log p_k − mean_j log p_j)(x_b) = Σ_b (z_k − z̄)(x_b)

  The published sum is Σ_k ∇z_k − K Σ_j p_j ∇z_j: it vanishes at uniform p whatever the logits
  depend on, so a model can silence it by staying unconfident while the argmax still follows a
  shortcut. The own class's ∇ log p_y = (1 − p_y) ∇z_y − Σ_{j≠y} p_j ∇z_j vanishes as p_y → 1
  instead, which the task loss drives towards. The centred log-probabilities (the logits minus
  their mean: the softmax's normaliser cancels) vanish with neither: their gradients are 0 only
  where the input does not change how the classes compare. One forward pass and K backward
  passes (vector-Jacobian products)."""

  def logp(xx):
    return jax.nn.log_softmax(score(params, xx), axis=-1)

  if output == "centred_log_probs":  # one forward pass, K vector-Jacobian products
    out, vjp = jax.vjp(logp, x)
    k = out.shape[-1]
    cotangents = jnp.eye(k, dtype=out.dtype) - 1.0 / k  # row c: ∂(log p_c − mean_j log p_j)
    # Unrolled: 1.7× faster than vmap on XLA:CPU (profiling/benchmarks/egl_bench.py).
    if k <= UNROLL_CLASSES:
      return jnp.stack([vjp(jnp.broadcast_to(cotangents[c], out.shape))[0] for c in range(k)])
    (g,) = jax.vmap(vjp)(jnp.broadcast_to(cotangents[:, None, :], (k, *out.shape)))
    return g
  if output == "sum_log_probs":
    return jax.grad(lambda xx: jnp.sum(logp(xx)))(x)
  if output == "true_log_prob":
    return jax.grad(lambda xx: jnp.sum(_picked(logp(xx), index)))(x)
  raise ValueError(f"unknown RRR output {output!r}")


def class_map(score: Callable, params, x, index, saliency: str, wrap: Callable | None = None):
  """The saliency map of logit `index [B]`, non-negative `[B, H, W]` (module docstring).

  `wrap(score_fn_of_params_x) -> fn(params, inputs)` is used by Grad-CAM: the layer is found by
  intercepting the model run inside `score`.
  """
  kind, layer = parse(saliency)
  if kind == "gradcam":
    layer_fn = flax_layer_fn(lambda p, xx: _picked(score(p, xx), index), layer)
    _, act = jax.eval_shape(layer_fn, params, x, None)

    def total(delta):
      s, a = layer_fn(params, x, delta)
      return jnp.sum(s), a

    grads, act = jax.grad(total, has_aux=True)(jnp.zeros(act.shape, act.dtype))
    if act.ndim != 4:
      raise ValueError(f"gradcam@{layer}: the layer's output is {act.shape}, not [B, h, w, c]")
    cam = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", act, jnp.mean(grads, axis=(1, 2))))
    return jax.image.resize(cam, (cam.shape[0], *x.shape[1:3]), method="bilinear")
  g = jax.grad(lambda xx: jnp.sum(_picked(score(params, xx), index)))(x)
  if kind == "input_gradient":
    return jnp.sum(jnp.abs(g), axis=-1)
  return jnp.abs(jnp.sum(x * g, axis=-1))


def centred_gradcam(score: Callable, params, x, layer: str):
  """K signed Grad-CAM maps `[K, B, H, W]`, one per centred logit z_k − mean_j z_j (= log p_k −
  mean_j log p_j): Σ_c α_kc A_c with α_k the spatial mean of ∂(z_k − z̄)/∂A, no ReLU, bilinearly
  resized to (H, W). The true class's ReLU map (`class_map`) shows only the evidence *for* it;
  these show where the input moves how any two classes compare, for or against (RRR's centred
  form at a layer: `losses.rrr`). One forward pass and K vector-Jacobian products."""
  layer_fn = flax_layer_fn(score, layer)
  _, act = jax.eval_shape(layer_fn, params, x, None)
  if len(act.shape) != 4:
    raise ValueError(f"gradcam@{layer}: the layer's output is {act.shape}, not [B, h, w, c]")
  out, vjp, act = jax.vjp(
    lambda d: layer_fn(params, x, d), jnp.zeros(act.shape, act.dtype), has_aux=True
  )
  k = out.shape[-1]
  cotangents = jnp.eye(k, dtype=out.dtype) - 1.0 / k
  grads = jnp.stack([vjp(jnp.broadcast_to(cotangents[c], out.shape))[0] for c in range(k)])
  cam = jnp.einsum("bhwc,kbc->kbhw", act, jnp.mean(grads, axis=(2, 3)))
  return jax.image.resize(cam, (*cam.shape[:2], *x.shape[1:3]), method="bilinear")


def normalise(s, eps: float = 1e-8):
  """Each map divided by its maximum (GRADIA's [0, 1] scaling of a non-negative map)."""
  return s / (jnp.max(s, axis=(1, 2), keepdims=True) + eps)


def distribution(s, eps: float = 1e-8):
  """Each map as a spatial distribution (sums to 1)."""
  s = s + eps
  return s / jnp.sum(s, axis=(1, 2), keepdims=True)
