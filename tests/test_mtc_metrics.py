"""MTC-LIM metrics (OA, Cohen's kappa, class-wise F1, Δm, co-occurrence) against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

from mtljax import metrics as metrics_lib
from mtljax.mtc import scores as mm


def _pair(seed, n=200, k=4):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, k, n)
  pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
  return y, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oa_kappa_f1_match_sklearn(seed):
  y, pred = _pair(seed)
  assert mm.overall_accuracy(y, pred, 4) == pytest.approx(accuracy_score(y, pred))
  assert mm.cohen_kappa(y, pred, 4) == pytest.approx(cohen_kappa_score(y, pred))
  np.testing.assert_allclose(
    mm.classwise_f1(y, pred, 4), f1_score(y, pred, average=None, labels=range(4), zero_division=0)
  )
  # The generic classification metrics carry kappa too (from probabilities' argmax).
  probs = np.eye(4)[pred]
  m = metrics_lib.classification_metrics(y, probs, 4)
  assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
  assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))


def test_mask_and_absent_class():
  y, pred = _pair(3, k=5)
  pred[pred == 4] = 0  # class 4 never predicted
  mask = (np.arange(len(y)) % 3 > 0).astype(np.float32)
  keep = mask > 0
  assert mm.cohen_kappa(y, pred, 5, mask) == pytest.approx(cohen_kappa_score(y[keep], pred[keep]))
  np.testing.assert_allclose(
    mm.classwise_f1(y, pred, 5, mask),
    f1_score(y[keep], pred[keep], average=None, labels=range(5), zero_division=0),
  )


def test_delta_m_eq15():
  base = {"a": 0.8, "b": 0.5}
  assert mm.delta_m({"a": 0.88, "b": 0.45}, base) == pytest.approx(0.1 - 0.1)
  assert mm.delta_m({"a": 0.88, "b": 0.55}, base) == pytest.approx(0.2)
  with pytest.raises(KeyError):
    mm.delta_m({"a": 0.9}, base)


def test_cooccurrence_conditional_and_asymmetric(tmp_path):
  rng = np.random.default_rng(0)
  a = rng.integers(0, 3, 500)
  b = np.where(a == 2, 0, rng.integers(0, 2, 500))  # P(b=0 | a=2) = 1, not the reverse
  labels = np.stack([a, b], 1)
  c = mm.cooccurrence(labels, [3, 2])
  for i in range(3):
    for j in range(2):
      expect = np.mean(b[a == i] == j)
      assert c[i, 3 + j] == pytest.approx(expect)
  assert c[2, 3] == pytest.approx(1.0)
  assert c[3, 2] < 0.9  # P(a=2 | b=0) is lower: asymmetric
  np.testing.assert_allclose(np.diag(c), 1.0)
  path = mm.plot_cooccurrence(c, ["a0", "a1", "a2", "b0", "b1"], str(tmp_path / "co.png"))
  from PIL import Image

  assert Image.open(path).size[0] > 100
