"""Task metrics against scikit-learn on random arrays, with masks."""

import numpy as np
import pytest
from sklearn import metrics as skm

from mtljax import metrics, tasks


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


def test_multioutput_regression_r2_per_output_matches_sklearn():
  """Mixed units (K, %, hPa): R² per output around each output's own mean and their uniform
  average, as scikit-learn's r2_score(multioutput=...); one pooled mean would give ~0.9998."""
  rng = np.random.default_rng(5)
  n = 200
  y = np.stack([rng.normal(290, 5, n), rng.normal(70, 10, n), rng.normal(1000, 8, n)], axis=1)
  p = y + rng.normal(0, 1, (n, 3)) * np.array([4.0, 8.0, 6.0])
  mask = (rng.random(n) > 0.1).astype(np.float32)
  keep = mask > 0
  m = metrics.regression_metrics(y, p, mask)
  yk, pk = y[keep], p[keep]
  assert m["r2"] == pytest.approx(skm.r2_score(yk, pk, multioutput="uniform_average"))
  np.testing.assert_allclose(
    [m[f"r2/{k}"] for k in range(3)], skm.r2_score(yk, pk, multioutput="raw_values")
  )
  assert m["mae"] == pytest.approx(skm.mean_absolute_error(yk, pk))
  np.testing.assert_allclose(
    [m[f"mae/{k}"] for k in range(3)], skm.mean_absolute_error(yk, pk, multioutput="raw_values")
  )
  rmse = np.sqrt(skm.mean_squared_error(yk, pk, multioutput="raw_values"))
  np.testing.assert_allclose([m[f"rmse/{k}"] for k in range(3)], rmse)
  assert m["rmse"] == pytest.approx(rmse.mean())
  assert m["count"] == keep.sum() * 3
  pooled = 1 - ((pk - yk) ** 2).sum() / ((yk - yk.mean()) ** 2).sum()  # the old definition
  assert pooled > 0.999 and m["r2"] < 0.7
  # A per-output mask [N, D]: each output scored on its own labelled rows.
  mask2 = (rng.random((n, 3)) > 0.2).astype(np.float32)
  m2 = metrics.regression_metrics(y, p, mask2)
  for k in range(3):
    sel = mask2[:, k] > 0
    assert m2[f"r2/{k}"] == pytest.approx(skm.r2_score(y[sel, k], p[sel, k]))
  # The task kind: a per-example vector is per output, a dense target is pooled.
  assert tasks.spec("regression").metrics(y, p, mask)["r2"] == pytest.approx(m["r2"])
  dense = tasks.spec("dense_regression").metrics(y[:, None, :], p[:, None, :], mask[:, None])
  assert "r2/0" not in dense and dense["r2"] == pytest.approx(pooled)
