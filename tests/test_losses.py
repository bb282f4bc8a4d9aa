"""Masked, weighted multitask loss against a hand computation in numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from mtljax import losses, objective


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_masked_weighted_multitask_loss_by_hand():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, 3, 1, 2, 99, 1])  # 99: a missing label holding garbage
  cls_mask = np.array([1, 1, 1, 1, 0, 1], np.float32)
  reg_pred = rng.normal(size=6).astype(np.float32)
  reg_true = rng.normal(size=6).astype(np.float32)
  reg_mask = np.array([1, 0, 1, 0, 1, 1], np.float32)
  ml_logits = rng.normal(size=(6, 3)).astype(np.float32)
  ml_true = (rng.random((6, 3)) > 0.5).astype(np.float32)
  ml_mask = np.ones(6, np.float32)

  weights = losses.normalized_weights({"l3": 4, "age": 1, "multi": 1})
  assert weights == pytest.approx({"l3": 4 / 6, "age": 1 / 6, "multi": 1 / 6})
  per_task = objective.task_losses(
    {"l3": jnp.asarray(logits), "age": jnp.asarray(reg_pred), "multi": jnp.asarray(ml_logits)},
    {"l3": jnp.asarray(labels), "age": jnp.asarray(reg_true), "multi": jnp.asarray(ml_true)},
    {"l3": jnp.asarray(cls_mask), "age": jnp.asarray(reg_mask), "multi": jnp.asarray(ml_mask)},
    {"l3": "classification", "age": "regression", "multi": "multilabel"},
  )
  total = sum(weights[t] * per_task[t] for t in per_task)  # the fixed weighting's tasks term

  keep = cls_mask > 0
  ce = -_np_log_softmax(logits)[keep, labels[keep]].mean()
  mse = ((reg_pred - reg_true) ** 2)[reg_mask > 0].mean()
  p = 1 / (1 + np.exp(-ml_logits))
  bce = -(ml_true * np.log(p) + (1 - ml_true) * np.log(1 - p)).mean()
  np.testing.assert_allclose(per_task["l3"], ce, rtol=1e-5)
  np.testing.assert_allclose(per_task["age"], mse, rtol=1e-5)
  np.testing.assert_allclose(per_task["multi"], bce, rtol=1e-5)
  np.testing.assert_allclose(total, (4 * ce + mse + bce) / 6, rtol=1e-5)


def test_all_missing_labels_give_zero_not_nan():
  out = losses.classification_loss(jnp.ones((3, 2)), jnp.array([5, 5, 5]), jnp.zeros(3))
  assert float(out) == 0.0


def test_weights_must_be_positive():
  with pytest.raises(ValueError, match="sum to a positive"):
    losses.normalized_weights({"a": 0.0})
