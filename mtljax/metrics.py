"""Task metrics from gathered predictions (numpy, host side).

Evaluation gathers every example's prediction anyway (they are saved per epoch for the intrinsic
analysis), so metrics are exact over the whole split, with no per-batch averaging error. Each
function takes `mask` (1 = label present) and ignores the rest. Checked against scikit-learn in
tests/test_metrics.py. Which function a task kind uses, and which metric selects the best
checkpoint, is the kind's declaration (`mtljax.tasks.spec(kind).metrics / .main_metric`).
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int, mask=None) -> np.ndarray:
  y_true = np.asarray(y_true).astype(np.int64).ravel()
  y_pred = np.asarray(y_pred).astype(np.int64).ravel()
  if mask is not None:
    keep = np.asarray(mask).ravel() > 0
    y_true, y_pred = y_true[keep], y_pred[keep]
  return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
    num_classes, num_classes
  )


def _f1_from_counts(tp, fp, fn):
  denom = 2 * tp + fp + fn
  return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def classification_metrics(y_true, probs, num_classes: int, mask=None) -> dict[str, float]:
  """Single-label multiclass: micro-F1 (= accuracy), macro-F1 over the classes that occur, OA,
  Cohen's kappa."""
  pred = np.asarray(probs).argmax(-1)
  cm = confusion_matrix(y_true, pred, num_classes, mask)
  n = cm.sum()
  tp = np.diag(cm).astype(np.float64)
  fp = cm.sum(0) - tp
  fn = cm.sum(1) - tp
  present = (cm.sum(0) + cm.sum(1)) > 0
  f1 = _f1_from_counts(tp, fp, fn)
  micro = float(_f1_from_counts(tp.sum(), fp.sum(), fn.sum()))
  # Cohen's kappa (MTC-LIM paper §3): (p_o - p_e) / (1 - p_e), p_e from the confusion marginals.
  p_o = tp.sum() / n if n else 0.0
  p_e = float(cm.sum(0) @ cm.sum(1)) / n**2 if n else 0.0
  return {
    "f1_micro": micro,
    "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
    "accuracy": float(tp.sum() / n) if n else 0.0,
    "kappa": float((p_o - p_e) / (1.0 - p_e)) if p_e < 1.0 else 0.0,
    "count": int(n),
  }


def multilabel_metrics(y_true, probs, mask=None, threshold: float = 0.5) -> dict[str, float]:
  """Multi-label: micro- and macro-F1 of the thresholded probabilities."""
  y_true = np.asarray(y_true) > 0.5
  y_pred = np.asarray(probs) >= threshold
  if mask is not None:
    keep = np.asarray(mask).ravel() > 0
    y_true, y_pred = y_true[keep], y_pred[keep]
  tp = (y_true & y_pred).sum(0).astype(np.float64)
  fp = (~y_true & y_pred).sum(0).astype(np.float64)
  fn = (y_true & ~y_pred).sum(0).astype(np.float64)
  f1 = _f1_from_counts(tp, fp, fn)
  return {
    "f1_micro": float(_f1_from_counts(tp.sum(), fp.sum(), fn.sum())),
    "f1_macro": float(f1.mean()) if f1.size else 0.0,
    "count": int(len(y_true)),
  }


def _regression_columns(y_true, y_pred, mask):
  """`[M, D]` true and predicted values and their `[M, D]` labelled flags: one column per output of
  a per-example target `[N, D]` (a per-example mask `[N]` covers all its outputs)."""
  y_true = np.asarray(y_true, np.float64)
  y_pred = np.asarray(y_pred, np.float64).reshape(y_true.shape)
  keep = np.ones(y_true.shape, bool)
  if mask is not None:
    mask = np.asarray(mask)
    keep = np.broadcast_to(
      mask.reshape(mask.shape + (1,) * (y_true.ndim - mask.ndim)), y_true.shape
    )
    keep = keep > 0
  n = y_true.shape[0] if y_true.ndim else 1
  return (
    y_true.reshape(n, -1),
    y_pred.reshape(n, -1),
    np.asarray(keep).reshape(n, -1),
  )


def _one_output(y_true, y_pred) -> tuple[float, float, float]:
  """MAE, RMSE and R² of one output's labelled values (NaN where undefined)."""
  if y_true.size == 0:
    return float("nan"), float("nan"), float("nan")
  err = y_pred - y_true
  ss_tot = np.sum((y_true - y_true.mean()) ** 2)
  r2 = 1.0 - np.sum(err**2) / ss_tot if ss_tot > 0 else float("nan")
  return float(np.abs(err).mean()), float(np.sqrt((err**2).mean())), float(r2)


def regression_metrics(y_true, y_pred, mask=None, *, multioutput: bool = True) -> dict[str, float]:
  """MAE, RMSE and the coefficient of determination R² (1 − SS_res / SS_tot).

  A per-example target with several outputs `[N, D]` (BEN-GE weather in K, %, hPa; CropYield's
  DEM features) is scored per output, each around its own mean: `mae/<k>`, `rmse/<k>`, `r2/<k>`
  for output k (the order of the task's `channels`), and `mae`, `rmse`, `r2` are their uniform
  averages (scikit-learn's `multioutput="uniform_average"`; pooling all outputs around one
  overall mean would count the differences between the outputs' means, in their different units,
  as explained variance). `multioutput=False` (dense targets `[N, H, W]`: one quantity per pixel)
  pools every labelled value as one output. `count`: the labelled values.
  """
  t, p, keep = _regression_columns(y_true, y_pred, mask)
  if not multioutput or t.shape[1] == 1:
    mae, rmse, r2 = _one_output(t[keep], p[keep])
    return {"mae": mae, "rmse": rmse, "r2": r2, "count": int(keep.sum())}
  per = [_one_output(t[keep[:, k], k], p[keep[:, k], k]) for k in range(t.shape[1])]
  out: dict[str, float] = {}
  for name, j in (("mae", 0), ("rmse", 1), ("r2", 2)):
    values = np.array([v[j] for v in per])
    out[name] = float(values.mean())  # NaN if any output's is (as scikit-learn's average)
    out.update({f"{name}/{k}": float(v) for k, v in enumerate(values)})
  out["count"] = int(keep.sum())
  return out


def segmentation_metrics(y_true, y_pred, num_classes: int, mask=None) -> dict[str, float]:
  """Per-pixel multiclass labels `[N, H, W]` (predicted: argmax labels), no-data pixels masked.

  Pixel accuracy, mean IoU over the classes that occur in the truth or the prediction (as
  scikit-learn's `jaccard_score(average="macro")`), and each class's IoU as `iou/<k>` (NaN for a
  class that occurs in neither).
  """
  cm = confusion_matrix(y_true, y_pred, num_classes, mask)
  tp = np.diag(cm).astype(np.float64)
  union = cm.sum(0) + cm.sum(1) - tp
  present = union > 0
  iou = np.where(present, tp / np.maximum(union, 1), np.nan)
  n = cm.sum()
  out = {
    "pixel_accuracy": float(tp.sum() / n) if n else 0.0,
    "miou": float(iou[present].mean()) if present.any() else 0.0,
    "count": int(n),
  }
  out.update({f"iou/{k}": float(iou[k]) for k in range(num_classes)})
  return out
