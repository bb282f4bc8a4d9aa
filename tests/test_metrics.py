"""Task metrics against scikit-learn on random arrays, with masks."""

import numpy as np
import pytest
from sklearn import metrics as skm

from mtljax import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_against_sklearn(seed):
  rng = np.random.default_rng(seed)
  k = 7
  y = rng.integers(0, k - 1, 200)  # class k-1 never occurs in the truth
  probs = rng.random((200, k))
  mask = (rng.random(200) > 0.2).astype(np.float32)
  m = metrics.classification_metrics(y, probs, k, mask)
  keep = mask > 0
  pred = probs.argmax(-1)
  assert m["f1_micro"] == pytest.approx(skm.f1_score(y[keep], pred[keep], average="micro"))
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(y[keep], pred[keep]))
  assert m["f1_macro"] == pytest.approx(skm.f1_score(y[keep], pred[keep], average="macro"))
  assert m["count"] == keep.sum()
  np.testing.assert_array_equal(
    metrics.confusion_matrix(y, pred, k, mask),
    skm.confusion_matrix(y[keep], pred[keep], labels=range(k)),
  )


def test_multilabel_against_sklearn():
  rng = np.random.default_rng(3)
  y = (rng.random((150, 15)) > 0.8).astype(np.float32)
  probs = rng.random((150, 15))
  m = metrics.multilabel_metrics(y, probs)
  pred = probs >= 0.5
  assert m["f1_micro"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
  assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0.0))


def test_regression_against_sklearn():
  rng = np.random.default_rng(4)
  y = rng.normal(size=300)
  p = y + rng.normal(scale=0.5, size=300)
  mask = (rng.random(300) > 0.1).astype(np.float32)
  m = metrics.regression_metrics(y, p, mask)
  keep = mask > 0
  assert m["mae"] == pytest.approx(skm.mean_absolute_error(y[keep], p[keep]))
  assert m["r2"] == pytest.approx(skm.r2_score(y[keep], p[keep]))
  assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y[keep], p[keep])))
