"""MTC-LIM evaluation: OA, Cohen's κ, class-wise F1, Δm (Eq. 15) and label co-occurrence (Fig. 4).

Numpy, host side; checked against scikit-learn in tests/test_mtc_metrics.py. Labels are integer
class indices ``[N]``; ``mask`` (1 = labelled) is optional everywhere. OA and κ are those of
`mtljax.metrics.classification_metrics` (the numbers training reports as `<task>/accuracy` and
`<task>/kappa`), taken from hard predictions here.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from mtljax.metrics import classification_metrics, confusion_matrix


def _from_labels(y_true, y_pred, num_classes: int, mask=None) -> dict[str, float]:
  """`metrics.classification_metrics` of hard predictions: their one-hot rows are the
  "probabilities" whose argmax it takes, so OA and κ are computed in one place for the training
  evaluation and for MTC-LIM."""
  onehot = np.eye(num_classes)[np.asarray(y_pred).astype(np.int64)]
  return classification_metrics(y_true, onehot, num_classes, mask)


def overall_accuracy(y_true, y_pred, num_classes: int, mask=None) -> float:
  """OA: the fraction of (labelled) examples whose predicted class is the true one."""
  return _from_labels(y_true, y_pred, num_classes, mask)["accuracy"]


def cohen_kappa(y_true, y_pred, num_classes: int, mask=None) -> float:
  """Cohen's κ = (p_o − p_e) / (1 − p_e), p_e = Σ_k (row_k · col_k) / n² (0 when p_e = 1)."""
  return _from_labels(y_true, y_pred, num_classes, mask)["kappa"]


def classwise_f1(y_true, y_pred, num_classes: int, mask=None) -> np.ndarray:
  """F1 of each class ``[K]`` (0 for a class neither true nor predicted, as scikit-learn's
  ``zero_division=0``)."""
  cm = confusion_matrix(y_true, y_pred, num_classes, mask).astype(np.float64)
  tp = np.diag(cm)
  denom = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)
  return np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)


def delta_m(method: Mapping[str, float], baseline: Mapping[str, float]) -> float:
  """Eq. 15: accumulated relative residuals Σ_t (M_m,t − M_b,t) / M_b,t over the baseline's tasks
  (a fraction; ×100 for the paper's %)."""
  missing = sorted(set(baseline) - set(method))
  if missing:
    raise KeyError(f"delta_m: the method lacks tasks {missing}")
  return float(sum((method[t] - baseline[t]) / baseline[t] for t in baseline))


def cooccurrence(labels: np.ndarray, num_classes: Sequence[int]) -> np.ndarray:
  """Conditional label co-occurrence ``C [S, S]`` over all S = Σ_t K_t classes (Fig. 4):
  ``C[i, j] = P(label j | label i)`` = #(i and j) / #i (a row of an absent label i is 0).

  ``labels [N, T]``: the class of each of the T tasks (task t's classes occupy rows/columns
  ``Σ_{u<t} K_u ...``). Not symmetric: P(j | i) ≠ P(i | j) in general.
  """
  labels = np.asarray(labels, np.int64)
  if labels.ndim != 2 or labels.shape[1] != len(num_classes):
    raise ValueError(f"labels must be [N, {len(num_classes)}], got {labels.shape}")
  offsets = np.concatenate([[0], np.cumsum(num_classes)[:-1]])
  onehot = np.zeros((len(labels), int(np.sum(num_classes))))
  for t, off in enumerate(offsets):
    onehot[np.arange(len(labels)), off + labels[:, t]] = 1.0
  joint = onehot.T @ onehot
  counts = np.diag(joint)
  return np.divide(joint, counts[:, None], out=np.zeros_like(joint), where=counts[:, None] > 0)


def plot_cooccurrence(matrix: np.ndarray, names: Sequence[str], path: str, title: str = "") -> str:
  """Fig. 4 as a PNG: rows = conditioning label i, columns = label j, cell = P(j | i)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  s = len(names)
  fig, ax = plt.subplots(figsize=(0.42 * s + 2.5, 0.42 * s + 1.5))
  im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
  ax.set_xticks(range(s), names, rotation=90, fontsize=7)
  ax.set_yticks(range(s), names, fontsize=7)
  ax.set_xlabel("label j")
  ax.set_ylabel("given label i")
  for i in range(s):
    for j in range(s):
      ax.text(
        j,
        i,
        f"{matrix[i, j]:.2f}".lstrip("0"),
        ha="center",
        va="center",
        fontsize=5,
        color="white" if matrix[i, j] < 0.6 else "black",
      )
  fig.colorbar(im, ax=ax, fraction=0.04, label="P(j | i)")
  ax.set_title(title or "Label co-occurrence P(label j | label i)", fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
