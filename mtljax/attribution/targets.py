"""Score functions `f(params, inputs) -> [B]` that select one target from a model's outputs.

`apply_fn(params, inputs) -> {task: output}` is the model (eval mode, examples independent). The
score is what attribution methods explain:

| kind               | output shape             | score per example                              |
| ------------------ | ------------------------ | ---------------------------------------------- |
| `classification`   | `[B, C]` logits          | logit of class `index`                          |
| `multilabel`       | `[B, A]` logits          | logit of attribute `index`                      |
| `regression`       | `[B]` or `[B, K]`        | output `index` (0 for `[B]`)                    |
| `segmentation`     | `[B, H, W, C]` logits    | class-`index` logit summed over `region` pixels |
| `dense_regression` | `[B, H, W]` or `[B,H,W,K]` | output `index` summed over `region` pixels    |

`make_target_scores` gives K targets per example at once (`[B, K]` scores, padded targets masked
out), across several task heads if asked, from one forward pass.

`region` is a pixel weight mask `[B, H, W]` or `[H, W]` (bool or float); None = the whole image.
Which row applies follows from the kind's declaration in `mtljax.tasks`: a dense kind has a
spatial output and a summed score, and a VALUE kind's single output may come without its last
axis (its head squeezes it).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import tasks


def make_score_fn(
  apply_fn: Callable[[Any, Any], Mapping[str, jax.Array]],
  task: str,
  kind: str,
  index: int,
  *,
  num_outputs: int,
  region=None,
) -> Callable[[Any, Any], jax.Array]:
  """Score function of target `index` of `task` (see the module docstring for the kinds).

  Args:
    apply_fn: `(params, inputs) -> {task: output}`.
    task: the task's name in the output dict.
    kind: a registered task kind (`mtljax.tasks.KINDS`).
    index: class / attribute / output channel, in `[0, num_outputs)`; or an integer array `[B]`,
      one index per example (checked by the caller: it may be traced).
    num_outputs: the task's number of classes or outputs (1 for `[B]` or `[B, H, W]` outputs).
    region: for dense kinds, pixel weights `[B, H, W]` or `[H, W]`; None = all pixels.

  Returns:
    `f(params, inputs) -> scores [B]`.

  Raises:
    ValueError: unknown kind, `index` outside `[0, num_outputs)`, a region for a non-dense kind;
      when `f` is called (traced): an unknown task, or an output whose shape does not fit.
  """
  if kind not in tasks.KINDS:
    raise ValueError(f"task {task!r}: unknown kind {kind!r}; known: {', '.join(tasks.KINDS)}")
  spec = tasks.spec(kind)
  per_example = not isinstance(index, (int, np.integer))
  if not per_example and not 0 <= index < num_outputs:
    raise ValueError(
      f"task {task!r}: target index {index} is outside the valid range "
      f"[0, {num_outputs - 1}] ({num_outputs} outputs)"
    )
  if region is not None and not spec.dense:
    dense = [name for name, k in tasks.KINDS.items() if k.dense]
    raise ValueError(f"task {task!r}: a region applies only to {' and '.join(dense)}, not {kind}")

  def bad_shape(shape, expected):
    return ValueError(
      f"task {task!r} ({kind}, index {index}, valid range [0, {num_outputs - 1}]): "
      f"output shape {tuple(shape)} is not {expected}"
    )

  def select(out):
    """The `[B]` (dense: `[B, H, W]`) output channel `index`."""
    channel_ndim = 4 if spec.dense else 2
    # A single value per example / pixel may come squeezed (`TaskKind.squeeze`).
    if out.ndim == channel_ndim - 1 and spec.target == tasks.VALUE:
      if num_outputs != 1:
        raise bad_shape(out.shape, f"[B, ..., {num_outputs}]")
      return out
    if out.ndim != channel_ndim or out.shape[-1] != num_outputs:
      dims = "B, H, W" if spec.dense else "B"
      raise bad_shape(out.shape, f"[{dims}, {num_outputs}]")
    if not per_example:
      return out[..., index]
    idx = jnp.asarray(index, jnp.int32).reshape((-1,) + (1,) * (out.ndim - 1))
    return jnp.take_along_axis(out, jnp.broadcast_to(idx, out.shape[:-1] + (1,)), axis=-1)[..., 0]

  def score_fn(params, inputs):
    return select_scores(apply_fn(params, inputs))

  def select_scores(outputs):
    if task not in outputs:
      raise ValueError(
        f"unknown task {task!r} (target index {index}, valid range "
        f"[0, {num_outputs - 1}]); the model outputs {sorted(outputs)}"
      )
    out = select(outputs[task])
    if not spec.dense:
      return out
    if region is None:
      return jnp.sum(out, axis=(1, 2))
    weights = jnp.asarray(region, out.dtype)
    if weights.shape[-2:] != out.shape[1:3] or weights.ndim not in (2, 3):
      raise ValueError(
        f"task {task!r}: region shape {weights.shape} does not match the output's "
        f"spatial shape {out.shape[1:3]} (expected [B, H, W] or [H, W])"
      )
    return jnp.sum(out * weights, axis=(1, 2))

  score_fn.select = select_scores  # `{task: output} -> [B]`, for `make_target_scores`
  return score_fn


def head_offsets(heads: Sequence[tuple[str, str, int]]) -> dict[str, int]:
  """Where each head's outputs start in the concatenated target space of `make_target_scores`."""
  offsets = np.cumsum([0] + [int(n) for _, _, n in heads])
  return {task: int(o) for (task, _, _), o in zip(heads, offsets)}


def make_target_scores(
  apply_fn: Callable[[Any, Any], Mapping[str, jax.Array]],
  heads: Sequence[tuple[str, str, int]],
  index,
  valid=None,
  *,
  region=None,
) -> Callable[[Any, Any], jax.Array]:
  """Score function of K targets per example, across one or several task heads: `[B, K]`.

  All heads share one forward pass (`apply_fn` runs once); the attribution methods give maps with
  a target axis `[B, K, ...]` from it (see `attributions.py`).

  Args:
    apply_fn: `(params, inputs) -> {task: output}`.
    heads: `(task, kind, num_outputs)` per head; the targets index the concatenation of the heads'
      outputs in this order (head h's output i is target `head_offsets(heads)[task_h] + i`).
    index: `[B, K]` int, each example's targets (padded: see `valid`).
    valid: `[B, K]` bool, False for padding; an invalid target's score is 0, so its maps are 0.
      None = all valid.
    region: pixel weights for the dense heads, as in `make_score_fn`.

  Returns:
    `f(params, inputs) -> scores [B, K]`.
  """
  heads = [(t, k, int(n)) for t, k, n in heads]
  if not heads:
    raise ValueError("make_target_scores needs at least one (task, kind, num_outputs) head")
  offsets = head_offsets(heads)

  def score_fn(params, inputs):
    outputs = apply_fn(params, inputs)
    idx = jnp.asarray(index, jnp.int32)
    cols = []
    for k in range(idx.shape[1]):
      score = 0.0
      for task, kind, n in heads:
        local = idx[:, k] - offsets[task]
        inside = (local >= 0) & (local < n)
        head_fn = make_score_fn(
          apply_fn,
          task,
          kind,
          jnp.clip(local, 0, n - 1),
          num_outputs=n,
          region=region if tasks.spec(kind).dense else None,
        )
        picked = head_fn.select(outputs)
        score = picked if len(heads) == 1 else score + jnp.where(inside, picked, 0.0)
      cols.append(score)
    scores = jnp.stack(cols, axis=1)
    if valid is None:
      return scores
    return jnp.where(jnp.asarray(valid, bool), scores, jnp.zeros((), scores.dtype))

  # What the attribution dispatch reads to zero the maps of padded targets also for methods whose
  # maps do not go through the scores (the model-independent controls, e.g. `edges`).
  score_fn.valid = valid
  return score_fn


def make_pair_scores(
  apply_fn: Callable[[Any, Any], Mapping[str, jax.Array]],
  heads: Sequence[tuple[str, str, int]],
  index,
) -> Callable[[Any, Any], jax.Array]:
  """Score function of one target per example `[B]` (`index`: `[B]` or one int) in the target
  space of `heads` (as `make_target_scores`); one head = `make_score_fn` of that head."""
  heads = [(t, k, int(n)) for t, k, n in heads]
  if len(heads) == 1:
    task, kind, n = heads[0]
    return make_score_fn(apply_fn, task, kind, index, num_outputs=n)
  column = make_target_scores(apply_fn, heads, jnp.reshape(jnp.asarray(index, jnp.int32), (-1, 1)))
  return lambda params, inputs: column(params, inputs)[:, 0]
