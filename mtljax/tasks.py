"""Task kinds: the one place that knows what a kind of task is.

A task in a config names its kind (`config.tasks.<t>.kind`); everything the rest of mtljax needs
to know about that kind is declared here, once:

| kind               | target holds         | dense | head width   | activation | saved as    | main metric |
| ------------------ | -------------------- | ----- | ------------ | ---------- | ----------- | ----------- |
| `classification`   | one class index      | no    | num_classes  | softmax    | prob (+pred)| f1_micro ↑  |
| `multilabel`       | K labels in {0, 1}   | no    | num_classes  | sigmoid    | prob        | f1_micro ↑  |
| `regression`       | D real values        | no    | num_outputs  | identity   | pred        | mae ↓       |
| `segmentation`     | a class per pixel    | yes   | num_classes  | softmax    | pred (argmax)| miou ↑     |
| `dense_regression` | D values per pixel   | yes   | num_outputs  | identity   | pred        | mae ↓       |

Code elsewhere asks a kind's *properties* (`spec(kind).dense`, `.target`, `.loss`, `.metrics`,
...) and never compares kind names (a test greps the tree for that). Adding a kind (e.g. ordinal
regression) is one `TaskKind` subclass here and one `register(...)` call: the loss, the eval step,
the prediction files, the metrics, model selection, the analysis and the explanation targets all
follow from what it declares.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import losses, metrics

# What a target holds (TaskKind.target).
CLASS = "class"  # one class index per example (or per pixel when dense)
LABELS = "labels"  # a vector of K binary labels
VALUE = "value"  # real values, in the target's own units

_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class TaskKind:
  """What one kind of task is. Subclasses override the methods whose default does not fit.

  Attributes:
    name: the kind's name in configs (`config.tasks.<t>.kind`).
    target: CLASS, LABELS or VALUE (what a target array holds).
    dense: one target per pixel (`[B, H, W]`) instead of one per example.
    loss: `(output, target, mask) -> scalar`, the masked mean over labelled examples / pixels.
    main_metric: the metric a best checkpoint is selected on, and `larger_is_better` its direction.
  """

  name: str
  target: str
  dense: bool
  loss: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
  main_metric: str
  larger_is_better: bool

  # ------------------------------------------------------------------ model
  @property
  def has_classes(self) -> bool:
    """The task has `num_classes` (the head's width) rather than `num_outputs`."""
    return self.target != VALUE

  @property
  def standardized(self) -> bool:
    """Targets are standardised with training statistics for the loss (metrics stay in the
    target's own units); `config.tasks.<t>.normalize=False` opts out."""
    return self.target == VALUE

  def out_dim(self, task_cfg: Mapping[str, Any]) -> int:
    """Output units of the task's head."""
    if self.has_classes:
      return int(task_cfg["num_classes"])
    return int(task_cfg.get("num_outputs", 1))  # > 1: a vector target (BEN-GE weather)

  def squeeze(self, task_cfg: Mapping[str, Any]) -> bool:
    """The head returns `[B]` (dense: `[B, H, W]`) rather than a last axis of width 1."""
    return self.target == VALUE and self.out_dim(task_cfg) == 1

  # ------------------------------------------------------------------ evaluation
  def activation(self, output: jax.Array) -> jax.Array:
    """Raw head output → probabilities (classes, labels) or values (in model units)."""
    return output

  def on_device(self, prediction: jax.Array) -> jax.Array:
    """What of an (ensemble-averaged) prediction leaves the device (segmentation: the argmax
    labels, not the per-pixel probabilities)."""
    return prediction

  @property
  def saved_as(self) -> str:
    """Key prefix of the prediction in the prediction files: `prob/<t>` or `pred/<t>`."""
    return "pred"

  def hard_labels(self, saved: np.ndarray) -> np.ndarray | None:
    """Host-side predicted labels saved beside probabilities as `pred/<t>` (None: none)."""
    del saved
    return None

  @property
  def prediction_key(self) -> str:
    """The key prefix the analysis checks for a task's prediction in the files: `pred` when they
    hold predicted labels or values (also beside probabilities, see `hard_labels`), else `prob`."""
    return self.saved_as

  def metrics(self, target, prediction, mask, num_classes: int | None = None) -> dict:
    """Metrics from the gathered `target`, saved prediction and `mask` (numpy, host side)."""
    raise NotImplementedError

  # ------------------------------------------------------------------ analysis
  def error(
    self,
    arrays: Mapping[str, np.ndarray],
    task: str,
    *,
    classification_error: str = "prob",
    regression_error: str = "absolute",
  ) -> tuple[np.ndarray, np.ndarray]:
    """`(error, valid)` per example `[N]` (dense: per pixel `[N, H, W]`) from a prediction file's
    arrays (intrinsic analysis, mtl-explainability §4.2)."""
    raise NotImplementedError

  def error_name(self, regression_error: str) -> str:
    """How the per-example error is described in the analysis report."""
    return f"{regression_error} error"

  # ------------------------------------------------------------------ explanations
  def explained_targets(self, target: np.ndarray, mask: np.ndarray) -> list[int]:
    """The output indices explained for one labelled example when none is fixed
    (`config.explain.target = -1`)."""
    del target, mask
    return [0]


def _classes_of(saved: np.ndarray) -> np.ndarray:
  return np.asarray(saved).argmax(-1).astype(np.int32)


class _Classification(TaskKind):
  def activation(self, output):
    return jax.nn.softmax(output, axis=-1)

  @property
  def saved_as(self):
    return "prob"

  def hard_labels(self, saved):
    return _classes_of(saved)

  @property
  def prediction_key(self):
    return "pred"

  def metrics(self, target, prediction, mask, num_classes=None):
    return metrics.classification_metrics(target, prediction, num_classes, mask)

  def error(self, arrays, task, *, classification_error="prob", regression_error="absolute"):
    del regression_error
    target = np.asarray(arrays[f"target/{task}"]).astype(np.int64)
    mask = np.asarray(arrays[f"mask/{task}"]) > 0
    prob = arrays.get(f"prob/{task}")
    if classification_error == "prob" and prob is not None:
      prob = np.asarray(prob, np.float64)
      safe = np.clip(target, 0, prob.shape[-1] - 1)
      err = 1.0 - np.take_along_axis(prob, safe[:, None], axis=-1)[:, 0]
    else:
      labels = arrays.get(f"pred/{task}")
      labels = _classes_of(prob) if labels is None else labels
      err = (np.asarray(labels) != target).astype(np.float64)
    return err, mask & np.isfinite(err)

  def error_name(self, regression_error):
    return "1 − p(true class)"

  def explained_targets(self, target, mask):
    return [int(target)]


class _Multilabel(TaskKind):
  def activation(self, output):
    return jax.nn.sigmoid(output)

  @property
  def saved_as(self):
    return "prob"

  def metrics(self, target, prediction, mask, num_classes=None):
    return metrics.multilabel_metrics(target, prediction, mask)

  def error(self, arrays, task, *, classification_error="prob", regression_error="absolute"):
    target = np.asarray(arrays[f"target/{task}"])
    mask = np.asarray(arrays[f"mask/{task}"]) > 0
    err = np.abs(np.asarray(arrays[f"prob/{task}"], np.float64) - target).mean(-1)
    mask = mask.reshape(mask.shape[0], -1).any(-1) if mask.ndim > 1 else mask
    return err, mask & np.isfinite(err)

  def explained_targets(self, target, mask):
    return [int(a) for a in np.flatnonzero(np.asarray(target) > 0.5)]


class _Regression(TaskKind):
  """Per-example (`dense=False`) or per-pixel values; several outputs per example are averaged
  in the error (BEN-GE weather, CropYield's DEM)."""

  def metrics(self, target, prediction, mask, num_classes=None):
    # Several outputs per example are scored each around its own mean (`r2/<k>`, averaged as
    # `r2`); a dense target pools its pixels as one quantity.
    return metrics.regression_metrics(target, prediction, mask, multioutput=not self.dense)

  def error(self, arrays, task, *, classification_error="prob", regression_error="absolute"):
    target = np.asarray(arrays[f"target/{task}"])
    mask = np.asarray(arrays[f"mask/{task}"]) > 0
    pred = np.asarray(arrays[f"pred/{task}"], np.float64).reshape(target.shape)
    err = np.abs(pred - target)
    if regression_error == "relative":
      err = err / np.maximum(np.abs(target), _EPS)
    if not self.dense and err.ndim > 1:  # several outputs per example: their mean error
      e = err.reshape(len(err), -1)
      m = mask.reshape(len(mask), -1) if mask.ndim > 1 else np.repeat(mask[:, None], e.shape[1], 1)
      m = m & np.isfinite(e)
      n = m.sum(-1)
      err = np.where(n > 0, np.where(m, e, 0.0).sum(-1) / np.maximum(n, 1), np.nan)
      mask = n > 0
    err = err.astype(np.float64)
    return err, mask & np.isfinite(err)


class _Segmentation(TaskKind):
  def activation(self, output):
    return jax.nn.softmax(output, axis=-1)

  def on_device(self, prediction):
    return jnp.argmax(prediction, axis=-1).astype(jnp.int32)

  def metrics(self, target, prediction, mask, num_classes=None):
    return metrics.segmentation_metrics(target, prediction, num_classes, mask)

  def error(self, arrays, task, *, classification_error="prob", regression_error="absolute"):
    target = np.asarray(arrays[f"target/{task}"])
    mask = np.asarray(arrays[f"mask/{task}"]) > 0
    err = (np.asarray(arrays[f"pred/{task}"]) != target).astype(np.float64)
    return err, mask & np.isfinite(err)

  def error_name(self, regression_error):
    return "0/1 pixel error"

  def explained_targets(self, target, mask):
    # The example's most frequent labelled class; its score is that class's logit summed over
    # the image (explain/targets.py).
    labelled = np.asarray(target)[np.asarray(mask) > 0]
    return [int(np.bincount(labelled.astype(np.int64)).argmax())]


KINDS: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> TaskKind:
  """Add a task kind (its name must be new); returns it."""
  if kind.name in KINDS:
    raise ValueError(f"task kind {kind.name!r} is already registered")
  KINDS[kind.name] = kind
  return kind


register(
  _Classification(
    "classification", CLASS, False, losses.classification_loss, "f1_micro", larger_is_better=True
  )
)
register(_Multilabel("multilabel", LABELS, False, losses.multilabel_loss, "f1_micro", True))
register(_Regression("regression", VALUE, False, losses.regression_loss, "mae", False))
register(_Segmentation("segmentation", CLASS, True, losses.segmentation_loss, "miou", True))
register(_Regression("dense_regression", VALUE, True, losses.dense_regression_loss, "mae", False))


def spec(kind: str) -> TaskKind:
  """The registered task kind `kind` (a ValueError naming the known ones otherwise)."""
  try:
    return KINDS[kind]
  except KeyError:
    raise ValueError(f"unknown task kind {kind!r}; known: {', '.join(sorted(KINDS))}") from None


def of(task_cfg: Mapping[str, Any]) -> TaskKind:
  """The kind of a task's config (`config.tasks.<t>`)."""
  return spec(task_cfg["kind"])


def is_per_example_class(kind: str) -> bool:
  """A single class per example (what the analysis pairs as correct/false combinations)."""
  k = spec(kind)
  return k.target == CLASS and not k.dense


def is_per_example_value(kind: str) -> bool:
  """Real values per example (what the analysis averages per combination)."""
  k = spec(kind)
  return k.target == VALUE and not k.dense


def standardized_targets(config) -> dict[str, bool]:
  """`{task: dense}` of the tasks whose targets are standardised with training statistics (their
  kind's `standardized`, unless `config.tasks.<t>.normalize=False`), in config order; the input of
  `mtljax.data.statistics.regression_target_stats`."""
  return {
    t: of(c).dense for t, c in config.tasks.items() if of(c).standardized and c.get("normalize", True)
  }
