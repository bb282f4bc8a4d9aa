"""Statistics of the intrinsic analysis, against scipy and hand-built arrays."""

import numpy as np
import pytest
from scipy import stats as sps

from mtljax.analysis import stats as st


def test_task_errors_per_kind():
  prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.5, 0.0]])
  a = {
    "target/c": np.array([0, 1, 2]),
    "mask/c": np.array([1.0, 1.0, 0.0]),
    "prob/c": prob,
    "pred/c": prob.argmax(-1),
  }
  err, valid = st.task_error("classification", a, "c")
  np.testing.assert_allclose(err, [0.3, 0.7, 1.0])
  np.testing.assert_array_equal(valid, [True, True, False])
  err, _ = st.task_error("classification", a, "c", classification_error="zero_one")
  np.testing.assert_array_equal(err, [0, 1, 1])

  r = {
    "target/y": np.array([2.0, -4.0, 0.0]),
    "pred/y": np.array([3.0, -3.0, 1.0]),
    "mask/y": np.ones(3),
  }
  np.testing.assert_allclose(st.task_error("regression", r, "y")[0], [1, 1, 1])
  rel, _ = st.task_error("regression", r, "y", regression_error="relative")
  np.testing.assert_allclose(rel[:2], [0.5, 0.25])

  seg = {
    "target/s": np.array([[[0, 1], [2, 2]]]),
    "pred/s": np.array([[[0, 2], [2, 1]]]),
    "mask/s": np.array([[[1, 1], [0, 1]]]),
  }
  err, valid = st.task_error("segmentation", seg, "s")
  np.testing.assert_array_equal(err, [[[0, 1], [0, 1]]])
  np.testing.assert_array_equal(valid, [[[True, True], [False, True]]])
  dr = {
    "target/d": np.full((1, 2, 2), 2.0),
    "pred/d": np.array([[[1.0, 2.0], [4.0, 2.5]]]),
    "mask/d": np.ones((1, 2, 2)),
  }
  np.testing.assert_allclose(st.task_error("dense_regression", dr, "d")[0], [[[1, 0], [2, 0.5]]])

  ml = {
    "target/m": np.array([[1.0, 0.0]]),
    "prob/m": np.array([[0.8, 0.4]]),
    "mask/m": np.array([1.0]),
  }
  np.testing.assert_allclose(st.task_error("multilabel", ml, "m")[0], [0.3])
  with pytest.raises(ValueError, match="kind 'ranking'"):
    st.task_error("ranking", r, "y")


def test_pearson_and_error_correlation_match_scipy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=40)
  y = 0.5 * x + rng.normal(size=40)
  r, p, n = st.pearson(x, y)
  ref = sps.pearsonr(x, y)
  assert (r, p, n) == pytest.approx((ref.statistic, ref.pvalue, 40))
  assert np.isnan(st.pearson(x, np.ones(40))[0])  # constant: undefined, not an exception

  # Per example, over examples valid in both.
  vm, va = rng.random(40) > 0.2, rng.random(40) > 0.2
  r, p, n = st.error_correlation((x, vm), (y, va))
  ref = sps.pearsonr(x[vm & va], y[vm & va])
  assert (r, p, n) == pytest.approx((ref.statistic, ref.pvalue, int((vm & va).sum())))

  # Two dense errors of one shape: pixel-wise over the pixels valid in both.
  em, ea = rng.random((3, 4, 5)), rng.random((3, 4, 5))
  ea = ea + em
  pm, pa = rng.random((3, 4, 5)) > 0.3, rng.random((3, 4, 5)) > 0.3
  r, p, n = st.error_correlation((em, pm), (ea, pa))
  ref = sps.pearsonr(em[pm & pa], ea[pm & pa])
  assert (r, p, n) == pytest.approx((ref.statistic, ref.pvalue, int((pm & pa).sum())))

  # Dense with per-example: the dense error is averaged over each example's valid pixels.
  per = rng.random(5)
  em5, pm5 = rng.random((5, 2, 2)), np.ones((5, 2, 2), bool)
  pm5[0, 0, 0] = False
  means = np.array([em5[i][pm5[i]].mean() for i in range(5)])
  r, p, n = st.error_correlation((em5, pm5), (per, np.ones(5, bool)))
  ref = sps.pearsonr(means, per)
  assert (r, p, n) == pytest.approx((ref.statistic, ref.pvalue, 5))


def test_combinations_transitions_and_hierarchy_by_hand():
  first_ok = np.array([1, 1, 0, 0, 0, 0, 1], bool)
  second_ok = np.array([1, 0, 1, 0, 0, 0, 1], bool)
  labels = st.combinations(first_ok, second_ok)
  assert labels.tolist() == ["CC", "CF", "FC", "FF", "FF", "FF", "CC"]
  assert st.combination_counts(labels) == {"CC": 2, "CF": 1, "FC": 1, "FF": 3}
  later = np.array(["CC", "CC", "FC", "CC", "CF", "FF", "CC"])
  frac = st.transition_fractions(labels, later)
  assert frac == pytest.approx({"CC": 1 / 3, "CF": 1 / 3, "FC": 0.0, "FF": 1 / 3})
  assert all(
    np.isnan(v) for v in st.transition_fractions(np.array(["CC"]), np.array(["CC"])).values()
  )

  # child -> parent: children 0,1 in parent 0; child 2 in parent 1.
  c2p = np.array([0, 0, 1])
  pred_child = np.array([1, 2, 0, 2, 1])
  pred_parent = np.array([0, 0, 0, 1, 1])
  hl = st.hierarchy_labels(np.array(["CC", "CF", "FC", "FF", "FF"]), pred_child, pred_parent, c2p)
  assert hl.tolist() == ["CC-in", "CF-out", "FC-in", "FF-in", "FF-out"]
  counts = st.hierarchy_counts(hl)
  assert counts["FF-in"] == 1 and counts["FF-out"] == 1 and counts["CF-out"] == 1
  assert sum(counts.values()) == 5
  # True child 0 has one sibling (1) of 2 other classes; child 2 has none.
  assert st.sibling_chance(np.array([0, 0, 2]), c2p) == pytest.approx((0.5 + 0.5 + 0) / 3)
  assert np.isnan(st.sibling_chance(np.array([], int), c2p))


def test_group_means_split_and_per_group_match_numpy_and_scipy():
  vals = np.array([1.0, 3.0, 2.0, 10.0, 4.0])
  labels = np.array(["CC", "CC", "CF", "FF", "CF"])
  m = st.group_means(vals, labels)
  assert m["CC"] == (2.0, 2) and m["CF"] == (3.0, 2) and m["FF"] == (10.0, 1)
  assert np.isnan(m["FC"][0]) and m["FC"][1] == 0

  rng = np.random.default_rng(1)
  err = rng.random(30)
  ok = rng.random(30) > 0.4
  s = st.split_by_correct(err, ok)
  assert s["correct_mean"] == pytest.approx(err[ok].mean())
  assert s["wrong_median"] == pytest.approx(np.median(err[~ok]))
  assert s["correct_n"] + s["wrong_n"] == 30
  assert s["t_pvalue"] == pytest.approx(sps.ttest_ind(err[ok], err[~ok], equal_var=False).pvalue)
  assert s["u_pvalue"] == pytest.approx(sps.mannwhitneyu(err[ok], err[~ok]).pvalue)

  ids, means, counts = st.per_group(np.array([1.0, 2.0, 3.0, 5.0]), np.array([7, 3, 7, 3]))
  assert ids.tolist() == [3, 7] and means.tolist() == [3.5, 2.0] and counts.tolist() == [2, 2]
