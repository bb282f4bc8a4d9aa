"""The registry's records: `Context` (what the explain runs give a method besides `(f, params,
inputs)`) and `MethodSpec` (how to call a method and read its output). `methods.py` holds the
registry and re-exports both."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from mtljax.attribution.base import ScoreFn


@dataclasses.dataclass(frozen=True)
class Context:
  """What a method may need besides `(f, params, inputs)`, given by the explain run.

  Attributes:
    explain: `config.explain` (ig_steps, samples, noise, occlusion_window, lime_samples, ...).
    rng: the key random methods (`needs_rng`) draw from.
    modality: the image input of `needs_modality` methods.
    layer: module path of the layer of `needs_layer_fn` methods (e.g. "encoders_image/stage4").
    image_hw: `(H, W)` that layer maps are resized to; None = their own size.
    affine_layers: module paths of the encoders' affine first layers: Integrated Gradients runs
      them twice instead of once per step (exact, `integrated_gradients(split=...)`); () = no split.
    segments: this batch's segment labels `[B, H, W]` (int) for `needs_segments` methods (LIME).
    num_segments: how many labels `segments` may hold (static: under jit the segments are traced);
      None = read from `segments` (only outside jit).
    target_form: how gradient methods share the forward across the K targets of `[B, K]` scores
      ("auto", "grads", "vjp"; see `base.resolve_target_form`).
    target_chunk: targets per compiled sub-call of `attribute_targets` (memory bound); None = all.
    chunk: steps / samples / perturbations a method with `MethodSpec.chunks` evaluates together
      (memory bound; the result is the same up to float rounding); None = as configured.
  """

  explain: Any
  rng: Any = None
  modality: str | None = None
  layer: str | None = None
  image_hw: tuple[int, int] | None = None
  affine_layers: tuple[str, ...] = ()
  segments: Any = None
  num_segments: int | None = None
  target_form: str = "auto"
  target_chunk: int | None = None
  chunk: int | None = None


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """How to call an attribution method and read its output.

  Calling conventions (keyword options after these): plain `fn(f, params, inputs)`; `needs_rng`:
  `fn(f, params, inputs, rng)`; `needs_layer_fn`: `fn(layer_fn, params, inputs)`;
  `needs_guided_fn`: `fn(guided_f, params, inputs)`; both: `fn(guided_f, layer_fn, params,
  inputs)`; `wraps` (a registered method's name): that method's `fn` comes first (the noise
  tunnel). `needs_modality`: a `modality=` option; `needs_segments`: a `segments=` option.
  `options(ctx, f) -> {keyword: value}` reads the method's settings from `ctx.explain`.
  `output` is "inputs" (a pytree shaped like the inputs), "map" (`[B, h, w]`, or `[B, H, W]` with
  `upsample_to`) or "image" (shaped like `inputs[modality]`). `target_axis` says how the method
  treats a score function with a target axis (`[B, K]` scores; outputs gain an axis K after B):
  "form" (it does, sharing the forward, and takes a `target_form=` option: the gradient methods),
  "native" (it does: occlusion, LIME) or "loop" (it does not: `attribute` calls it once per
  target; the default for newly registered methods). `signed` says whether attributions
  can be negative (normalise them to [-1, 1]; unsigned ones to [0, 1]). `time_series`: the method
  attributes any pytree of float leaves (time series too), not only images. `chunks(ctx) ->
  (keyword, n)`: the option that sets how many of its steps / samples / perturbations run in one
  vectorised call and how many do as configured (`ctx.chunk` overrides it: the explain run sizes
  it to the memory at hand); None = nothing to chunk. `signed_options`: keywords giving an
  unsigned method's attributions before |·| or ReLU (RRR squares sums of signed ones).
  `differentiable`: a loss on the attributions trains the params (second order); False for
  feature selection in a loop and for controls that ignore the model.
  """

  fn: Callable
  signed: bool
  needs_rng: bool = False
  needs_layer_fn: bool = False
  needs_guided_fn: bool = False
  needs_modality: bool = False
  needs_segments: bool = False
  wraps: str | None = None
  options: Callable[[Context, ScoreFn], Mapping[str, Any]] | None = None
  output: str = "inputs"
  time_series: bool = False
  target_axis: str = "loop"
  chunks: Callable[[Context], tuple[str, int]] | None = None
  signed_options: Mapping[str, Any] | None = None
  differentiable: bool = True
