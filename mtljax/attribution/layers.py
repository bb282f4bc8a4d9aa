"""Glue between linen models and the layer methods (Grad-CAM, Guided Grad-CAM, and Integrated
Gradients split after an affine first layer).

`flax_layer_fn` turns any score function that runs a linen model into the `layer_fn` contract of
`attributions.grad_cam`, by intercepting the `__call__` of the submodule at a path such as
"encoders_aerial/stage4_block2" (module names joined by "/", as in the params tree) with
`flax.linen.intercept_methods`. No change to the model is needed. `affine_split` uses the same
interception to replace a module's output (see `attributions.integrated_gradients(split=...)`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax


def _path(module: nn.Module) -> str:
  return "/".join(module.path)


def module_paths(score_fn: Callable[[Any, Any], jax.Array], params, inputs) -> list[str]:
  """Paths of the linen submodules whose `__call__` runs in `score_fn(params, inputs)`, in call
  order (shapes only: evaluated with `jax.eval_shape`)."""
  paths = []

  def record(next_fun, args, kwargs, context):
    path = _path(context.module)
    if context.method_name == "__call__" and path and path not in paths:
      paths.append(path)
    return next_fun(*args, **kwargs)

  def run(p, x):
    with nn.intercept_methods(record):
      return score_fn(p, x)

  jax.eval_shape(run, params, inputs)
  return paths


def _run_intercepted(score_fn, params, inputs, paths: tuple[str, ...], on_call):
  """`score_fn(params, inputs)` with the `__call__` of each module at `paths` replaced by
  `on_call(path, next_fun) -> output`; returns `(scores, {path: output})`.

  Raises ValueError when a path does not run (listing the paths that do), runs more than once, or
  returns something other than an array.
  """
  seen, captured = [], {}

  def intercept(next_fun, args, kwargs, context):
    path = _path(context.module)
    if context.method_name != "__call__" or not path:
      return next_fun(*args, **kwargs)
    if path not in seen:
      seen.append(path)
    if path not in paths:
      return next_fun(*args, **kwargs)
    if path in captured:
      raise ValueError(
        f"module {path!r} runs more than once in the forward pass; this needs a "
        "layer that runs once"
      )
    out = on_call(path, lambda: next_fun(*args, **kwargs))
    if not isinstance(out, jax.Array):
      raise ValueError(f"module {path!r} returns {type(out).__name__}, not an array")
    captured[path] = out
    return out

  with nn.intercept_methods(intercept):
    scores = score_fn(params, inputs)
  missing = [p for p in paths if p not in captured]
  if missing:
    raise ValueError(
      f"no module at path {missing[0]!r} runs in the forward pass; available "
      f"paths: {', '.join(seen)}"
    )
  return scores, captured


def flax_layer_fn(score_fn: Callable[[Any, Any], jax.Array], layer_path: str):
  """A `layer_fn(params, inputs, delta) -> (scores [B], activation)` for `grad_cam`.

  Args:
    score_fn: `(params, inputs) -> [B]` that applies a linen model, e.g. from
      `targets.make_score_fn`.
    layer_path: the submodule whose output is the Grad-CAM layer, e.g. "encoders_aerial/stage4".
      Its `__call__` must return one array (e.g. `[B, h, w, c]`) and run once per forward pass.

  Returns:
    `layer_fn`: runs `score_fn` with `delta` (None = nothing) added to the submodule's output, and
    returns the scores and that (shifted) output.

  Raises (when `layer_fn` runs or is traced):
    ValueError: the path is not called in the forward pass (the message lists the paths that are),
      is called more than once, or returns something other than an array.
  """

  def layer_fn(params, inputs, delta):
    def shifted(path, call):
      out = call()
      return out + delta if delta is not None and isinstance(out, jax.Array) else out

    scores, captured = _run_intercepted(score_fn, params, inputs, (layer_path,), shifted)
    return scores, captured[layer_path]

  return layer_fn


def affine_split(score_fn: Callable[[Any, Any], jax.Array], layer_paths):
  """`(prefix, rest)` for `attributions.integrated_gradients(split=...)`.

  `prefix(params, inputs)` is `{path: output}` of the modules at `layer_paths` (under `jit` only
  the part of the model that computes them runs); `rest(params, inputs, z)` runs `score_fn` with
  those modules' outputs replaced by `z[path]` (the modules themselves are skipped). Each module's
  output must be an affine function of the inputs — e.g. "encoders_s2/dense1", the first Dense of
  an `MLPEncoder`, whose input is the flattened modality, or "encoders_aerial/stem_conv", a
  `ResNet`'s first convolution — otherwise Integrated Gradients with this split is wrong;
  `tests/test_explain_methods.py` checks both against the plain computation.
  """
  paths = (layer_paths,) if isinstance(layer_paths, str) else tuple(layer_paths)

  def prefix(params, inputs):
    return _run_intercepted(score_fn, params, inputs, paths, lambda path, call: call())[1]

  def rest(params, inputs, z):
    return _run_intercepted(score_fn, params, inputs, paths, lambda path, call: z[path])[0]

  return prefix, rest
