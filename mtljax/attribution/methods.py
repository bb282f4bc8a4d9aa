"""Attribution methods on score functions (PAIR `saliency` in spirit, Captum's method set): the
registry, and the one place that calls a method with the arguments it declares.

A *score function* `f(params, inputs) -> scores [B]` gives one scalar per example (the target is
already selected, see `targets.py`). `inputs` is a pytree, usually `{modality: array}` with a leading
batch axis B; images are NHWC `[B, H, W, C]`, tabular leaves `[B, D]`, time series
`{"values": [B, T, F], "days": [B, T], "mask": [B, T]}`. Unless stated otherwise a method returns
attributions with the same pytree structure and shapes as `inputs`.

Conventions shared by every method:
- A target axis: `f` may return `[B, K]` scores (K targets per example, padded targets scored 0:
  `targets.make_target_scores`); then every method returns its output with an axis K after the
  batch axis (`[B, K, ...]`), the gradient methods sharing one forward pass across the K targets
  and occlusion/LIME reading all K from each perturbed forward (`MethodSpec.target_axis`).
  `attribute_targets` chunks a long target axis (`config.explain.target_chunk`).
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

The methods live in `gradients.py` and `perturbations.py` and are re-exported here. To add one:
write `fn`, then `register("name", MethodSpec(fn, signed=..., options=...))` (or add an entry to
`METHODS` below), declaring what it needs; `attribute` calls it from the image explain run
(`run.py`) and, with `time_series=True`, from the time-series one (`timeseries.py`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from mtljax.attribution import controls, layers
from mtljax.attribution.base import (
  TARGET_FORMS,
  LayerFn,
  ScoreFn,
  num_targets,
  resolve_target_form,
)
from mtljax.attribution.blur_ig import blur_ig
from mtljax.attribution.gradients import (
  IG_METHODS,
  NOISE_KINDS,
  grad_cam,
  gradient_shap,
  guided_backprop,
  guided_grad_cam,
  guided_relu,
  input_x_gradient,
  integrated_gradients,
  integration_points,
  saliency,
  smoothgrad,
)
from mtljax.attribution.guided_ig import guided_ig
from mtljax.attribution.perturbations import grid_segments, lime, occlusion, superpixel_segments
from mtljax.attribution.spec import Context, MethodSpec
from mtljax.attribution.xrai import xrai
from mtljax.models import activations

__all__ = [
  "IG_METHODS",
  "NOISE_KINDS",
  "LayerFn",
  "ScoreFn",
  "Context",
  "MethodSpec",
  "METHODS",
  "attribute",
  "attribute_targets",
  "TARGET_FORMS",
  "resolve_target_form",
  "get_method",
  "register",
  "grad_cam",
  "gradient_shap",
  "grid_segments",
  "guided_backprop",
  "guided_grad_cam",
  "guided_relu",
  "input_x_gradient",
  "integrated_gradients",
  "integration_points",
  "lime",
  "occlusion",
  "saliency",
  "smoothgrad",
  "superpixel_segments",
]


def _ig_options(ctx, f):
  ex = ctx.explain
  split = layers.affine_split(f, list(ctx.affine_layers)) if ctx.affine_layers else None
  return {
    "steps": int(ex.ig_steps),
    "method": ex.ig_method,
    "batch_steps": ex.ig_batch_steps or None,
    "split": split,
  }


def _noise_options(ctx, f):
  return {"samples": int(ctx.explain.samples), "stdev": float(ctx.explain.noise)}


def _occlusion_options(ctx, f):
  w, s = int(ctx.explain.occlusion_window), int(ctx.explain.occlusion_stride)
  return {"window": (w, w), "stride": (s, s)}


def _steps_option(ctx, f):
  return {"steps": int(ctx.explain.ig_steps)}


def _ig_chunks(ctx):
  ex = ctx.explain
  return "batch_steps", int(ex.ig_batch_steps or ex.ig_steps)


def _sample_chunks(ctx):
  return "batch_samples", int(ctx.explain.samples)


_SELECTING = {"needs_modality": True, "options": _steps_option, "differentiable": False}
_CONTROL = {"signed": False, "needs_modality": True, "output": "image", "differentiable": False}

METHODS: dict[str, MethodSpec] = {
  # Unsigned with the default absolute=True.
  "saliency": MethodSpec(
    saliency,
    signed=False,
    time_series=True,
    target_axis="form",
    signed_options={"absolute": False},
  ),
  "input_x_gradient": MethodSpec(
    input_x_gradient, signed=True, time_series=True, target_axis="form"
  ),
  "integrated_gradients": MethodSpec(
    integrated_gradients,
    signed=True,
    options=_ig_options,
    time_series=True,
    target_axis="form",
    chunks=_ig_chunks,
  ),
  # Signedness follows the wrapped method; signed normalisation is also right for maps >= 0.
  "smoothgrad": MethodSpec(
    smoothgrad,
    signed=True,
    needs_rng=True,
    wraps="saliency",
    options=_noise_options,
    time_series=True,
    target_axis="form",
    chunks=_sample_chunks,
  ),
  "gradient_shap": MethodSpec(
    gradient_shap,
    signed=True,
    needs_rng=True,
    options=_noise_options,
    time_series=True,
    target_axis="form",
    chunks=_sample_chunks,
  ),
  "occlusion": MethodSpec(
    occlusion,
    signed=True,
    options=_occlusion_options,
    target_axis="native",
    chunks=lambda ctx: ("batch_windows", 32),
  ),
  "grad_cam": MethodSpec(
    grad_cam,
    signed=False,
    needs_layer_fn=True,
    options=lambda ctx, f: {"upsample_to": ctx.image_hw},
    output="map",
    target_axis="form",
    signed_options={"relu": False},
  ),
  "guided_backprop": MethodSpec(
    guided_backprop, signed=True, needs_guided_fn=True, target_axis="form"
  ),
  "guided_grad_cam": MethodSpec(
    guided_grad_cam,
    signed=True,
    needs_layer_fn=True,
    needs_guided_fn=True,
    needs_modality=True,
    output="image",
    target_axis="form",
  ),
  "lime": MethodSpec(
    lime,
    signed=True,
    needs_rng=True,
    needs_modality=True,
    needs_segments=True,
    options=lambda ctx, f: {
      "num_samples": int(ctx.explain.lime_samples),
      "num_segments": ctx.num_segments,
    },
    output="map",
    target_axis="native",
    chunks=lambda ctx: ("batch_size", min(64, int(ctx.explain.lime_samples))),
  ),
  # Blur IG (PAIR saliency's BlurIG, mtljax.attribution.blur_ig): ig_steps blur steps up to sigma 50.
  "blur_ig": MethodSpec(
    blur_ig,
    signed=True,
    needs_modality=True,
    options=lambda ctx, f: {
      "steps": int(ctx.explain.ig_steps),
      "batch_steps": ctx.explain.ig_batch_steps or None,
    },
    output="image",
    chunks=_ig_chunks,
  ),
  # Guided IG and XRAI (PAIR saliency's GuidedIG / XRAI; mtljax.attribution.guided_ig, .xrai):
  # they select features in a while loop (no gradient w.r.t. the params).
  "guided_ig": MethodSpec(guided_ig, signed=True, output="image", **_SELECTING),
  "xrai": MethodSpec(xrai, signed=True, output="map", **_SELECTING),
  # Controls that ignore the model (mtljax.attribution.controls): what a sanity check and a
  # faithfulness metric must tell apart from the methods above.
  "edges": MethodSpec(controls.edges, **_CONTROL),
  "random_map": MethodSpec(controls.random_map, needs_rng=True, **_CONTROL),
}


def register(name: str, spec: MethodSpec) -> MethodSpec:
  """Adds attribution method `name` (ValueError if the name is taken); returns `spec`."""
  if name in METHODS:
    raise ValueError(f"attribution method {name!r} is already registered")
  METHODS[name] = spec
  return spec


def get_method(name: str) -> MethodSpec:
  """The registry entry of attribution method `name`; ValueError listing the known ones."""
  if name not in METHODS:
    raise ValueError(f"unknown attribution method {name!r}; known: {', '.join(sorted(METHODS))}")
  return METHODS[name]


def _guided(f: ScoreFn) -> ScoreFn:
  """`f` with guided-backprop ReLUs: traced inside the context, so the models use them."""

  def guided_f(params, inputs):
    with activations.guided_relus():
      return f(params, inputs)

  return guided_f


def attribute(spec: MethodSpec | str, f: ScoreFn, params, inputs, ctx: Context):
  """Runs one method (a `MethodSpec` or a registered name) on score function `f`.

  The only place a method is called by the explain runs: the arguments come from what `spec`
  declares (see `MethodSpec`) and from `ctx`. Returns what the method returns (`spec.output`);
  when `f` returns `[B, K]` scores (K targets per example, e.g. `targets.make_target_scores`),
  with a target axis after the batch axis (`[B, K, ...]`), whatever the method's `target_axis`.
  """
  if isinstance(spec, str):
    spec = get_method(spec)
  if spec.target_axis == "loop":
    num = num_targets(jax.eval_shape(f, params, inputs))
    if num is not None:  # a method without a target axis: once per target
      outs = [_call(spec, lambda p, x, k=k: f(p, x)[:, k], params, inputs, ctx) for k in range(num)]
      return _zero_padded(f, jax.tree.map(lambda *a: jnp.stack(a, axis=1), *outs))
  return _call(spec, f, params, inputs, ctx)


def _zero_padded(f: ScoreFn, maps):
  """Zero maps `[B, K, ...]` of the targets `f` marks invalid (`f.valid`, set by
  `targets.make_target_scores`): a method that ignores the scores would otherwise draw a map for
  a padded target."""
  valid = getattr(f, "valid", None)
  if valid is None:
    return maps
  valid = jnp.asarray(valid, bool)

  def zero(m):
    v = valid.reshape(valid.shape + (1,) * (m.ndim - valid.ndim))
    return jnp.where(v, m, jnp.zeros((), m.dtype))

  return jax.tree.map(zero, maps)


def _call(spec: MethodSpec, f: ScoreFn, params, inputs, ctx: Context):
  options = dict(spec.options(ctx, f)) if spec.options is not None else {}
  if spec.target_axis == "form":
    options["target_form"] = ctx.target_form
  if spec.needs_modality:
    options["modality"] = ctx.modality
  if spec.needs_segments:
    options["segments"] = ctx.segments
  head = [get_method(spec.wraps).fn] if spec.wraps else []
  if spec.needs_guided_fn:
    head.append(_guided(f))
  if spec.needs_layer_fn:
    head.append(layers.flax_layer_fn(f, ctx.layer))
  if not (spec.needs_guided_fn or spec.needs_layer_fn):
    head.append(f)
  if ctx.chunk and spec.chunks is not None:
    keyword, configured = spec.chunks(ctx)
    if ctx.chunk < configured:
      options[keyword] = int(ctx.chunk)
  rng = [ctx.rng] if spec.needs_rng else []
  return spec.fn(*head, params, inputs, *rng, **options)


def attribute_targets(
  spec: MethodSpec | str,
  score_for: Callable[[Any, Any], ScoreFn],
  params,
  inputs,
  index,
  valid,
  ctx: Context,
):
  """`attribute` on K targets per example, `ctx.target_chunk` targets per compiled sub-call.

  Args:
    score_for: `(index [B, k], valid [B, k]) -> f` with `f(params, inputs) -> [B, k]` (e.g.
      `functools.partial(targets.make_target_scores, apply_fn, heads)`).
    index, valid: `[B, K]` targets and their validity (False = padding: zero maps).

  Returns:
    The method's output with a target axis `[B, K, ...]`. With `target_chunk = c < K` the targets
    run `c` at a time under `jax.lax.map` (padded with invalid targets to a multiple of c), so
    memory holds one chunk's backward passes; the maps are the same.
  """
  index, valid = jnp.asarray(index, jnp.int32), jnp.asarray(valid, bool)
  num, chunk = index.shape[1], ctx.target_chunk
  if not chunk or chunk >= num:
    return attribute(spec, score_for(index, valid), params, inputs, ctx)
  n = -(-num // chunk)
  pad = ((0, 0), (0, n * chunk - num))
  idx = jnp.pad(index, pad).reshape(-1, n, chunk).swapaxes(0, 1)  # [n, B, c]
  ok = jnp.pad(valid, pad).reshape(-1, n, chunk).swapaxes(0, 1)
  out = jax.lax.map(
    lambda ic: attribute(spec, score_for(ic[0], ic[1]), params, inputs, ctx), (idx, ok)
  )  # leaves [n, B, c, ...]
  return jax.tree.map(
    lambda a: jnp.moveaxis(a, 0, 1).reshape((a.shape[1], n * chunk) + a.shape[3:])[:, :num], out
  )
