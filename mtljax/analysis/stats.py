"""Statistics of the intrinsic multitask analysis (mtl-explainability paper, §4.2 and Appendix C).

Pure numpy functions of prediction arrays (the per-epoch predictions contract, see
`mtljax.analysis.predictions`); no files, no figures. Each is checked against scipy or against
hand-built arrays in tests/test_analysis_stats.py.

Per-example errors (`task_error`), by task kind (each kind declares its own in `mtljax.tasks`):

* classification: `1 - p(true class)` from `prob/<t>` (`classification_error="prob"`), or the 0/1
  error `pred != target` (`"zero_one"`, also used when no probabilities were saved).
* multilabel: mean over labels of `|p - y|`.
* regression: `|pred - target|` (`regression_error="absolute"`) or the relative error
  `|pred - target| / max(|target|, eps)` (`"relative"`, Fig. 2 of the paper); a regression with
  several outputs (`[N, K]`, e.g. BEN-GE's weather) gets the mean over its valid outputs.
* segmentation: per pixel 0/1 error `pred != target`, `[N, H, W]`.
* dense_regression: per pixel `|pred - target|` (or relative), `[N, H, W]`.

Each comes with a validity mask of the same shape (label present, pixel labelled).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from mtljax import tasks

#: The four correct/false combinations of two classification tasks (first task's letter first).
COMBINATIONS = ("CC", "CF", "FC", "FF")


def task_error(
  kind: str,
  arrays: Mapping[str, np.ndarray],
  task: str,
  *,
  classification_error: str = "prob",
  regression_error: str = "absolute",
) -> tuple[np.ndarray, np.ndarray]:
  """(error, valid) of `task` per example (`[N]`) or per pixel (`[N, H, W]`): the kind's
  declared error (`mtljax.tasks.TaskKind.error`, see the module doc); a ValueError names an
  unknown kind."""
  return tasks.spec(kind).error(
    arrays, task, classification_error=classification_error, regression_error=regression_error
  )


def per_example(err: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A per-pixel error `[N, H, W]` as its mean over the valid pixels of each example (`[N]`;
  invalid when an example has none); a per-example error is returned unchanged."""
  if err.ndim == 1:
    return err, valid
  e, v = err.reshape(len(err), -1), valid.reshape(len(valid), -1)
  n = v.sum(-1)
  mean = np.where(n > 0, (e * v).sum(-1) / np.maximum(n, 1), np.nan)
  return mean, n > 0


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
  """(r, two-sided p-value, n) of scipy's Pearson correlation; NaN when n < 3 or an input is
  constant (no correlation is defined)."""
  x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
  n = len(x)
  if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return float("nan"), float("nan"), n
  res = sps.pearsonr(x, y)
  return float(res.statistic), float(res.pvalue), n


def error_correlation(
  main: tuple[np.ndarray, np.ndarray], aux: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float, int]:
  """Pearson correlation of two tasks' errors (Fig. 4), over what both have valid.

  `main`/`aux` are `(error, valid)` from `task_error`. Two dense errors of the same `[N, H, W]`
  shape are correlated pixel-wise; otherwise a dense error is first averaged per example.
  """
  (em, vm), (ea, va) = main, aux
  if em.shape != ea.shape:
    em, vm = per_example(em, vm)
    ea, va = per_example(ea, va)
  both = vm & va
  return pearson(em[both], ea[both])


def combinations(correct_first: np.ndarray, correct_second: np.ndarray) -> np.ndarray:
  """ "CC", "CF", "FC" or "FF" per example: the first letter is the first task's correctness."""
  first = np.where(np.asarray(correct_first, bool), "C", "F")
  second = np.where(np.asarray(correct_second, bool), "C", "F")
  return np.char.add(first, second)


def combination_counts(labels: np.ndarray) -> dict[str, int]:
  """How many examples fall into each of `COMBINATIONS`."""
  labels = np.asarray(labels)
  return {c: int((labels == c).sum()) for c in COMBINATIONS}


def transition_fractions(
  start: np.ndarray, now: np.ndarray, source: str = "FF"
) -> dict[str, float]:
  """Of the examples labelled `source` in `start`, the fraction in each combination in `now`
  (Fig. 6b; NaN when there are none)."""
  sel = np.asarray(start) == source
  n = int(sel.sum())
  counts = combination_counts(np.asarray(now)[sel])
  return {c: (counts[c] / n if n else float("nan")) for c in COMBINATIONS}


def hierarchy_labels(
  labels: np.ndarray, pred_child: np.ndarray, pred_parent: np.ndarray, child_to_parent: np.ndarray
) -> np.ndarray:
  """Each combination label suffixed "-in" when the predicted child class belongs to the
  predicted parent class (`child_to_parent[pred_child] == pred_parent`), else "-out" (Fig. 7)."""
  inside = np.asarray(child_to_parent)[np.asarray(pred_child, np.int64)] == np.asarray(pred_parent)
  return np.char.add(np.asarray(labels).astype(str), np.where(inside, "-in", "-out"))


def sibling_chance(true_child: np.ndarray, child_to_parent: np.ndarray) -> float:
  """Expected fraction of "-in" among CF examples if the wrong child class were drawn uniformly
  from the other classes: the mean over examples of (siblings of the true child) / (K - 1).
  The baseline that CF-in / (CF-in + CF-out) is compared with (NaN without examples)."""
  c2p = np.asarray(child_to_parent)
  true_child = np.asarray(true_child, np.int64)
  if not len(true_child) or len(c2p) < 2:
    return float("nan")
  siblings = np.bincount(c2p)[c2p[true_child]] - 1
  return float(np.mean(siblings / (len(c2p) - 1)))


def hierarchy_counts(labels: np.ndarray) -> dict[str, int]:
  """Counts of the eight `<combination>-in|out` labels."""
  labels = np.asarray(labels)
  return {
    f"{c}-{s}": int((labels == f"{c}-{s}").sum()) for c in COMBINATIONS for s in ("in", "out")
  }


def group_means(
  values: np.ndarray, labels: np.ndarray, groups: Sequence[str] = COMBINATIONS
) -> dict[str, tuple[float, int]]:
  """(mean of `values`, count) per label in `groups` (NaN mean when empty), e.g. the age MAE per
  L2-L3 combination (Fig. 12)."""
  values, labels = np.asarray(values, np.float64), np.asarray(labels)
  out = {}
  for g in groups:
    sel = labels == g
    out[g] = (float(values[sel].mean()) if sel.any() else float("nan"), int(sel.sum()))
  return out


def split_by_correct(error: np.ndarray, correct: np.ndarray) -> dict[str, float]:
  """The main task's error for examples whose auxiliary label is correct vs wrong (Fig. 2):
  mean, median and count of each, and Welch's t-test and the Mann-Whitney U test between them
  (two-sided p-values; NaN when a side has fewer than 2 values)."""
  error, correct = np.asarray(error, np.float64), np.asarray(correct, bool)
  a, b = error[correct], error[~correct]
  out = {}
  for name, v in (("correct", a), ("wrong", b)):
    out[f"{name}_mean"] = float(v.mean()) if len(v) else float("nan")
    out[f"{name}_median"] = float(np.median(v)) if len(v) else float("nan")
    out[f"{name}_n"] = int(len(v))
  out["t_pvalue"] = out["u_pvalue"] = float("nan")
  if len(a) >= 2 and len(b) >= 2 and (np.ptp(a) > 0 or np.ptp(b) > 0):
    out["t_pvalue"] = float(sps.ttest_ind(a, b, equal_var=False).pvalue)
    out["u_pvalue"] = float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
  return out


def per_group(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(group ids, mean of `values`, count) per distinct group, e.g. per field (Fig. 8)."""
  values, groups = np.asarray(values, np.float64), np.asarray(groups)
  ids, inverse = np.unique(groups, return_inverse=True)
  counts = np.bincount(inverse, minlength=len(ids))
  sums = np.bincount(inverse, weights=values, minlength=len(ids))
  return ids, sums / np.maximum(counts, 1), counts
