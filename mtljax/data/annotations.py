"""Explanation annotations carried by training examples (read by the explanation losses).

A reader that has them adds these entries to ``example["meta"]`` (every example of a split has
the same keys; an absent annotation is zeros with its ``*_present`` flag 0)::

    expl_mask            float32 [H, W]  the relevant region (1 inside), the image's size
    expl_mask_present    float32 []      1 = this example's mask is given (annotated)
    expl_prior           float32 [H, W]  the dataset-level pattern of the example's class: the
                                         mean of the annotated training masks of that class
                                         (MEGL's distribution consistency target)
    expl_rationale       float32 [A]     (optional) attributes named by a textual rationale
    expl_rationale_present float32 []    (optional) 1 = a rationale is given
    expl_rationale_region float32 [H, W] (optional) the part regions of the attributes the
                                         rationale names (their keypoints' discs)

Which training examples are annotated is ``annotated(n, fraction)``: a fixed seeded choice of
``round(fraction · n)`` examples, so runs with a larger fraction annotate a superset.

Evaluation-only annotations (capability ``explain_annotations``: masks and keypoints by
annotation name) say what they belong to through ``annotation_owners``: an ``Owner`` is a whole
task (any class of it) or one output of a task (a class, or an attribute of a multilabel task).
The explain run matches them to its targets by ``owners`` and ``target_keys``, never by a
target's display name.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from mtljax.data.source import capability
from mtljax.errors import DataError

MASK, MASK_PRESENT, PRIOR = "expl_mask", "expl_mask_present", "expl_prior"
RATIONALE, RATIONALE_PRESENT = "expl_rationale", "expl_rationale_present"
RATIONALE_REGION = "expl_rationale_region"


def annotated(n: int, fraction: float, seed: int = 20170301) -> np.ndarray:
  """bool [n]: the first ``round(fraction · n)`` of a fixed permutation (nested in fraction)."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"annotated fraction must be in [0, 1], got {fraction}")
  out = np.zeros(n, bool)
  out[np.random.default_rng(seed).permutation(n)[: int(round(fraction * n))]] = True
  return out


def class_priors(masks: np.ndarray, present: np.ndarray, labels: np.ndarray, num_classes: int):
  """float32 [C, H, W]: per class the mean annotated mask, normalised to sum 1 (a class without
  annotated examples gets the mean over all annotated ones; none at all: uniform)."""
  h, w = masks.shape[1:3]
  m = masks.astype(np.float32)
  overall = m[present].mean(0) if present.any() else np.ones((h, w), np.float32)
  out = np.empty((num_classes, h, w), np.float32)
  for c in range(num_classes):
    sel = present & (labels == c)
    out[c] = m[sel].mean(0) if sel.any() else overall
  return out / np.maximum(out.sum((1, 2), keepdims=True), 1e-12)


class MaskAnnotations:
  """Per-example meta entries from region masks [N, H, W], the annotated flags and the labels
  (optionally rationales [N, A] with their own present flags)."""

  def __init__(
    self, masks, present, labels, num_classes, rationales=None, rationale_present=None,
    rationale_regions=None,
  ):  # fmt: skip
    self.masks, self.present = np.asarray(masks, bool), np.asarray(present, bool)
    self.labels = np.asarray(labels)
    self.priors = class_priors(self.masks, self.present, self.labels, num_classes)
    self.rationales = None if rationales is None else np.asarray(rationales, np.float32)
    self.rationale_present = (
      None if rationale_present is None else np.asarray(rationale_present, bool)
    )
    self.rationale_regions = (
      None if rationale_regions is None else np.asarray(rationale_regions, bool)
    )

  def meta(self, i: int) -> dict[str, np.ndarray]:
    given = bool(self.present[i])
    out = {
      MASK: self.masks[i].astype(np.float32)
      if given
      else np.zeros(self.masks.shape[1:], np.float32),
      MASK_PRESENT: np.float32(given),
      PRIOR: self.priors[int(self.labels[i])],
    }
    if self.rationales is not None:
      has = bool(self.rationale_present[i])
      out[RATIONALE] = self.rationales[i] if has else np.zeros_like(self.rationales[i])
      out[RATIONALE_PRESENT] = np.float32(has)
      if self.rationale_regions is not None:
        region = self.rationale_regions[i] if has else np.zeros_like(self.rationale_regions[i])
        out[RATIONALE_REGION] = region.astype(np.float32)
    return out


def phrase(attribute_name: str) -> str:
  """A CUB attribute name as the words of a rationale: ``"has_bill_color::red"`` → ``"red
  bill"`` (the rationale vocabulary; names without ``::`` are kept)."""
  word, _, value = attribute_name.partition("::")
  word = word[4:] if word.startswith("has_") else word
  for suffix in ("_color", "_pattern", "_shape", "_length"):
    word = word[: -len(suffix)] if word.endswith(suffix) else word
  return f"{value.replace('_', ' ')} {word.replace('_', ' ')}".strip()


# ------------------------------------------------------------------ explanation annotations' owners
class Owner(NamedTuple):
  """What an explanation annotation belongs to. ``Owner(task)``: the whole task, whatever the
  class (e.g. the decoy digits' box: where the evidence for any digit lies); ``Owner(task, k)``:
  output ``k`` of the task only (class k of a classification or segmentation task, attribute k
  of a multilabel task)."""

  task: str
  output: int | None = None


def owners(source: Any) -> dict[str, tuple[Owner, ...]]:
  """Each explanation annotation's owners by annotation name: what ``source`` declares
  (capability ``annotation_owners``), else what its ``target_fields`` declare: an annotation named
  like an entry of a task's ``class_names`` belongs to that output, one named like a task to the
  whole task. An annotation without an owner (e.g. the decoy digits' swatch) scores no target."""
  declared = capability(source, "annotation_owners")
  if declared is not None:
    given = {str(n): [Owner(*o) for o in v] for n, v in declared().items()}  # JSON: lists
    return {n: tuple(Owner(o.task, o.output if o.output is None else int(o.output)) for o in v)
            for n, v in given.items()}  # fmt: skip
  out: dict[str, list[Owner]] = {}
  for task, field in source.target_fields.items():
    out.setdefault(task, []).append(Owner(task))
    for k, name in enumerate(field.get("class_names") or ()):
      out.setdefault(str(name), []).append(Owner(task, k))
  return {n: tuple(v) for n, v in out.items()}


def target_keys(
  owned: dict[str, tuple[Owner, ...]], targets: Sequence[Owner]
) -> list[tuple[str, ...]]:
  """For each target ``Owner(task, k)`` the names of the annotations that belong to it, in the
  order they are tried on an example: the output's own, then its task's (``[T]`` tuples).

  Raises DataError when two annotations are declared for the same output (or the same task):
  which of them an explanation is scored against would depend on the example."""
  by_owner: dict[Owner, list[str]] = {}
  for name, belongs_to in owned.items():
    for o in belongs_to:
      by_owner.setdefault(Owner(*o), []).append(name)
  for o, names in by_owner.items():
    if len(names) > 1:
      what = (
        f"the whole task {o.task!r}" if o.output is None else f"output {o.output} of {o.task!r}"
      )
      raise DataError(f"annotations {sorted(names)} are all declared to belong to {what}")
  out = []
  for t in targets:
    own = by_owner.get(Owner(t.task, t.output), []) if t.output is not None else []
    out.append(tuple(own + by_owner.get(Owner(t.task), [])))
  return out
