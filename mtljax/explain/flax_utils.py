"""Glue between linen models and the layer methods (Grad-CAM, Guided Grad-CAM).

`flax_layer_fn` turns any score function that runs a linen model into the `layer_fn` contract of
`attributions.grad_cam`, by intercepting the `__call__` of the submodule at a path such as
"encoders_aerial/stage4_block2" (module names joined by "/", as in the params tree) with
`flax.linen.intercept_methods`. No change to the model is needed.
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
    seen, captured = [], []

    def intercept(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      path = _path(context.module)
      if context.method_name != "__call__" or not path:
        return out
      if path not in seen:
        seen.append(path)
      if path != layer_path:
        return out
      if not isinstance(out, jax.Array):
        raise ValueError(f"module {layer_path!r} returns {type(out).__name__}, not an array")
      if delta is not None:
        out = out + delta
      captured.append(out)
      return out

    with nn.intercept_methods(intercept):
      scores = score_fn(params, inputs)
    if not captured:
      raise ValueError(f"no module at path {layer_path!r} runs in the forward pass; available "
                       f"paths: {', '.join(seen)}")
    if len(captured) > 1:
      raise ValueError(f"module {layer_path!r} runs {len(captured)} times in the forward pass; "
                       "Grad-CAM needs a layer that runs once")
    return scores, captured[0]

  return layer_fn
