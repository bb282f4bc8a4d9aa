"""Per-task masked losses (their weighted sum is in mtljax/objective.py) (mtl-explainability §3.3 "Loss and Metrics").

Every loss is a mean over the examples whose label is present: `mask` is 1 where the task's label
exists (and the example is real, not eval padding), 0 elsewhere. The multitask loss is
`Σ_t w_t · L_t` with the weights normalised to sum to 1 (Appendix B.3: L3:L2:age = 4:1:1).
Under `jit` with a data-sharded batch, the sums below are global sums, so the loss is the same
on 1 device or N.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax


def _masked_mean(per_example: jax.Array, mask: jax.Array) -> jax.Array:
  mask = mask.astype(per_example.dtype)
  return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def classification_loss(logits, labels, mask):
  """Softmax cross entropy; `logits [B, K]`, integer `labels [B]`."""
  labels = jnp.where(mask > 0, labels, 0).astype(jnp.int32)  # missing labels may hold garbage
  per_example = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
  return _masked_mean(per_example, mask)


def multilabel_loss(logits, labels, mask):
  """Sigmoid binary cross entropy averaged over the K labels; `labels [B, K]` in {0, 1}."""
  per_example = jnp.mean(optax.losses.sigmoid_binary_cross_entropy(logits, labels), axis=-1)
  return _masked_mean(per_example, mask)


def regression_loss(pred, target, mask):
  """Mean squared error; `pred`/`target` `[B]` or `[B, D]` (averaged over D)."""
  err = jnp.square(
    pred - jnp.where(mask.reshape(mask.shape + (1,) * (target.ndim - 1)) > 0, target, 0.0)
  )
  per_example = err.reshape(err.shape[0], -1).mean(axis=-1)
  return _masked_mean(per_example, mask)


def segmentation_loss(logits, labels, mask):
  """Per-pixel softmax cross entropy; `logits [B, H, W, K]`, integer `labels [B, H, W]`, `mask
  [B, H, W]` (0 = no-data pixel or padding). The mean over every labelled pixel of the batch."""
  labels = jnp.where(mask > 0, labels, 0).astype(jnp.int32)
  per_pixel = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
  return _masked_mean(per_pixel, mask)


def dense_regression_loss(pred, target, mask):
  """Per-pixel squared error; `pred`/`target`/`mask` `[B, H, W]`; mean over labelled pixels."""
  return _masked_mean(jnp.square(pred - jnp.where(mask > 0, target, 0.0)), mask)


def normalized_weights(weights: Mapping[str, float]) -> dict[str, float]:
  total = float(sum(weights.values()))
  if total <= 0:
    raise ValueError(f"task loss weights must sum to a positive number, got {dict(weights)}")
  return {k: float(v) / total for k, v in weights.items()}
