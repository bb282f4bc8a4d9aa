"""The maps explanation losses train through, taken from the attribution registry.

`config.explanation_loss.saliency` names a method of `mtljax.attribution.methods.METHODS`,
`"<method>"` or `"<method>@<layer>"` for a method that needs a layer (a module path, e.g.
`grad_cam@encoders_image/conv2`); `input_gradient` and `gradcam` are the older spellings of
`saliency` and `grad_cam`. The method is called through `methods.attribute` with a score function
of the params, so differentiating the loss w.r.t. the params differentiates *through* the map
(second order): no stop-gradient, no Python loop over examples; the whole batch in one program,
vmappable over ensemble members. A method added to the registry reaches training unchanged; one
that declares `differentiable=False` (feature selection in a loop, controls that ignore the model)
or needs segments (LIME) is a config error. A method's settings come from `config.explain`.

  `score(params, x) -> [B, K]`  the explained task's logits with image input x [B, H, W, C]

  class_map      the non-negative map `[B, H, W]` of each example's own class logit: Σ_c of the
                 attributions of an unsigned method (saliency: Σ_c |∂ s_y / ∂x|), |Σ_c| of a
                 signed one (input × gradient: |Σ_c x ⊙ ∂ s_y / ∂x|); a map method's map as it is
                 (Grad-CAM: ReLU(Σ_c α_c A_c) bilinearly resized to (H, W)), |·| when signed
  signed_maps    the method's attributions before |·| or ReLU (`MethodSpec.signed_options`) of
                 any scores, `[N, B, H, W, C]` (C = 1 for a map method), N the scores' targets
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mtljax.attribution import methods

#: Older spellings of `config.explanation_loss.saliency`, kept working.
SPELLINGS = {"input_gradient": "saliency", "gradcam": "grad_cam"}

#: Up to this many targets the K input gradients of one set of scores are K backward passes of
#: one program ("grads": measured 1.7× faster than one vmapped VJP at K = 10 on XLA:CPU, lax.map
#: 4× slower); beyond, one vmapped VJP (one program whatever K).
UNROLL_CLASSES = 32


def parse(name: str) -> tuple[methods.MethodSpec, str]:
  """`"gradcam@encoders_image/conv2"` -> (the `grad_cam` entry, "encoders_image/conv2");
  ValueError naming what cannot work (unknown method, layer missing or extra, a method a loss
  cannot train through)."""
  spelled, _, layer = str(name).partition("@")
  method = SPELLINGS.get(spelled, spelled)
  if method not in methods.METHODS:
    known = sorted(methods.METHODS) + sorted(SPELLINGS)
    raise ValueError(f"{spelled!r} is not an attribution method (known: {', '.join(known)})")
  spec = methods.METHODS[method]
  if spec.needs_layer_fn and not layer:
    raise ValueError(
      f"{spelled} needs @<layer> (a module path, e.g. {spelled}@encoders_image/conv2)"
    )
  if layer and not spec.needs_layer_fn:
    raise ValueError(f"{spelled} takes no @<layer> (only layer methods such as grad_cam do)")
  trainable = sorted(
    n for n, s in methods.METHODS.items() if s.differentiable and not s.needs_segments
  )
  if not spec.differentiable:
    raise ValueError(
      f"{spelled}'s attributions are not differentiable w.r.t. the params, so no loss trains "
      f"through them (differentiable: {', '.join(trainable)})"
    )
  if spec.needs_segments:
    raise ValueError(
      f"{spelled} needs segments, which the training step does not make (methods without: "
      f"{', '.join(trainable)})"
    )
  return spec, layer


def picked(scores, index):
  """`scores [B, K]` at each example's `index [B]` -> `[B]`."""
  return jnp.take_along_axis(scores, index[:, None].astype(jnp.int32), axis=1)[:, 0]


@dataclasses.dataclass(frozen=True)
class Maps:
  """The configured method, called on the image input `modality` (module docstring).

  Attributes:
    spec: the method's registry entry; layer: its layer ("" = none).
    modality: the image input's name (methods that need it get `inputs[modality]`).
    explain: the method's settings (`config.explain`: ig_steps, samples, noise, ...).
    rng: the key of a random method (this step's rng).
  """

  spec: methods.MethodSpec
  layer: str
  modality: str
  explain: Any
  rng: Any = None

  def _attribute(self, spec, score: Callable, params, x, target_form: str = "auto"):
    ctx = methods.Context(
      explain=self.explain,
      rng=self.rng,
      modality=self.modality,
      layer=self.layer or None,
      image_hw=tuple(x.shape[1:3]),
      target_form=target_form,
    )
    m = self.modality
    out = methods.attribute(spec, lambda p, inputs: score(p, inputs[m]), params, {m: x}, ctx)
    return out[m] if spec.output == "inputs" else out

  def class_map(self, score: Callable, params, x, index):
    """Non-negative `[B, H, W]` map of logit `index [B]` of `score(params, x) -> [B, K]`."""
    a = self._attribute(self.spec, lambda p, xx: picked(score(p, xx), index), params, x)
    if self.spec.output != "map":
      a = jnp.sum(a, axis=-1)  # over channels
    return jnp.abs(a) if self.spec.signed else a

  def signed_maps(self, scores: Callable, params, x):
    """The attributions before |·| / ReLU of `scores(params, x) -> [B]` or `[B, N]`, target
    first: `[N, B, H, W, C]` (N = 1 for `[B]`; C = 1 for a map method)."""
    spec = self.spec
    if spec.signed_options:
      base = spec.options
      extra = dict(spec.signed_options)
      spec = dataclasses.replace(
        spec, options=lambda ctx, f: {**(base(ctx, f) if base else {}), **extra}
      )
    shape = jax.eval_shape(scores, params, x).shape
    form = "grads" if len(shape) == 1 or shape[1] <= UNROLL_CLASSES else "vjp"
    a = self._attribute(spec, scores, params, x, form)
    if spec.output == "map":
      a = a[..., None]
    return a[None] if len(shape) == 1 else jnp.moveaxis(a, 1, 0)


def default_maps(saliency: str, modality: str = "image") -> Maps:
  """Method `saliency` ("<method>[@<layer>]") on the default settings of `config.explain`."""
  from mtljax import config_blocks  # the defaults only

  spec, layer = parse(saliency)
  explain = config_blocks.explain_config(task="", modality=modality, layer=layer)
  return Maps(spec, layer, modality, explain)


def class_map(score: Callable, params, x, index, saliency: str):
  """`Maps.class_map` of method `saliency` on the default settings: `[B, H, W]`."""
  return default_maps(saliency).class_map(score, params, x, index)


def centred_gradcam(score: Callable, params, x, layer: str):
  """K signed Grad-CAM maps `[K, B, H, W]`, one per centred log-probability log p_k − mean_j
  log p_j (= z_k − z̄): Σ_c α_kc A_c with α_k the spatial mean of its gradient w.r.t. the
  activation A of `layer`, no ReLU, bilinearly resized to (H, W). The true class's ReLU map
  shows only the evidence *for* it; these show where the input moves how any two classes
  compare, for or against (RRR's centred form at a layer)."""

  centred = lambda p, xx: centred_log_probs(score(p, xx))  # noqa: E731
  return default_maps(f"grad_cam@{layer}").signed_maps(centred, params, x)[..., 0]


def centred_log_probs(logits):
  """log p_k − mean_j log p_j of `logits [B, K]` (= z_k − z̄: the softmax's normaliser
  cancels), `[B, K]`."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return logp - jnp.mean(logp, axis=-1, keepdims=True)


def normalise(s, eps: float = 1e-8):
  """Each map divided by its maximum (GRADIA's [0, 1] scaling of a non-negative map)."""
  return s / (jnp.max(s, axis=(1, 2), keepdims=True) + eps)


def distribution(s, eps: float = 1e-8):
  """Each map as a spatial distribution (sums to 1)."""
  s = s + eps
  return s / jnp.sum(s, axis=(1, 2), keepdims=True)
