"""What the image (`run.py`) and time-series (`timeseries.py`) explain runs share: the error
type, the checks of `config.explain`, the restore of the trained ensemble, the split's examples,
the explained targets, and writing on process 0 only (every process computes, one writes)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from mtljax import checkpoint, configlib, fileio, tasks, train
from mtljax.attribution import layers, methods
from mtljax.attribution import targets as targets_lib
from mtljax.checkpoint import Checkpointer
from mtljax.data import pipeline
from mtljax.data.annotations import Owner


class ExplainError(configlib.ConfigError):
  """An explain request that cannot run (unknown method or layer, bad target, no ensemble)."""


# ============================================================================ processes
def is_main() -> bool:
  """Whether this process writes the explanation files (process 0 of a multi-host run)."""
  return jax.process_index() == 0


def write_json(path: str, obj: Any, **kwargs) -> None:
  """`json.dump(obj, indent=1, **kwargs)` to `path`, on process 0 only."""
  if is_main():
    fileio.write_json(path, obj, **kwargs)


def write_text(path: str, text: str) -> None:
  """`text` to `path`, on process 0 only."""
  if is_main():
    fileio.write_text(path, text)


# ============================================================================ checks
def check_request(
  config: ml_collections.ConfigDict, s, *, stacked=None, time_series: bool = False
) -> None:
  """Raises one ExplainError listing every problem of `config.explain` for this setup.

  `s` is the `train.Setup`. Image runs (`time_series=False`): every method registered, the
  modality an image input, and for `needs_layer_fn` methods the layer a module path of the model
  (checked on the first member of `stacked`). Time-series runs: every method `time_series`.
  """
  ex = config.explain
  problems = []
  if time_series:
    allowed = tuple(n for n, spec in methods.METHODS.items() if spec.time_series)
    problems += [
      f"config.explain.methods: {m!r} is not one of {allowed}"
      for m in ex.methods
      if m not in allowed
    ]
  else:
    for name in ex.methods:
      try:
        methods.get_method(name)
      except ValueError as e:
        problems.append(f"config.explain.methods: {e}")
  if ex.task not in config.tasks:
    problems.append(
      f"config.explain.task={ex.task!r} is not one of the tasks {sorted(config.tasks)}"
    )
  if not time_series:
    problems += _check_tasks(config)
  if not time_series:
    fields = s.input_fields
    if ex.modality not in config.inputs or len(fields[ex.modality]["shape"]) != 3:
      problems.append(
        f"config.explain.modality={ex.modality!r} must be an image input (one of "
        f"{sorted(m for m in config.inputs if len(fields[m]['shape']) == 3)})"
      )
  if ex.get("target_form", "auto") not in methods.TARGET_FORMS:
    problems.append(
      f"config.explain.target_form={ex.target_form!r} is not one of {methods.TARGET_FORMS}"
    )
  chunk = ex.get("target_chunk", 0)
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
    problems.append(f"config.explain.target_chunk={chunk!r} must be an integer >= 0 (0 = all)")
  if s.sources and ex.split not in s.sources:  # (none: predict's new inputs, not a split)
    problems.append(f"config.explain.split={ex.split!r} is not one of {sorted(s.sources)}")
  needs_layer = any(methods.METHODS[m].needs_layer_fn for m in ex.methods if m in methods.METHODS)
  if not time_series and needs_layer and not problems:
    _check_layer(s, ex, stacked, problems)
  if problems:
    raise ExplainError("cannot explain:\n  - " + "\n  - ".join(problems))


def _check_layer(s, ex, stacked, problems: list[str]) -> None:
  def score(v, xx):
    return s.model.apply(v, xx, train=False)[0][ex.task].reshape(len(xx[ex.modality]), -1).sum(-1)

  paths = layers.module_paths(score, jax.tree.map(lambda a: a[0], stacked), s.example_inputs)
  if ex.layer not in paths:
    near = [p for p in paths if p.startswith(f"encoders_{ex.modality}/")]
    problems.append(
      f"config.explain.layer={ex.layer!r} is not a layer of the model; layers of "
      f"the {ex.modality} encoder: {', '.join(near) or ', '.join(paths)}"
    )


# ============================================================================ restore and collect
def restore(config: ml_collections.ConfigDict, s, workdir: str):
  """`(state, meta)` of `config.explain.checkpoint` ("best" or "latest") of the trained ensemble."""
  ckpt = Checkpointer(
    os.path.join(s.workdir, "checkpoints"),
    keep=config.train.keep_checkpoints,
    verify=config.train.get("verify_checksums", "all"),
    record=checkpoint.config_record(config),
  )
  which = config.explain.checkpoint
  if which not in ("best", "latest"):
    raise ExplainError(f"config.explain.checkpoint={which!r} must be 'best' or 'latest'")
  if not os.path.isdir(os.path.join(s.workdir, "checkpoints", which)):
    raise ExplainError(f"{workdir}: no checkpoints/{which} to explain; train first")
  try:
    restored = (ckpt.restore_best if which == "best" else ckpt.restore_latest)(s.abstract_state)
  except checkpoint.CheckpointDamagedError:  # one line naming the damaged step (mtljax/main.py)
    raise
  except Exception as e:  # a checkpoint of another shape: e.g. one model, not an ensemble
    raise ExplainError(
      f"{workdir}/checkpoints/{which} does not hold the ensemble of "
      f"config.ensemble.size={train.ensemble_size(config)} this config describes: "
      f"{str(e)[:300]}"
    ) from e
  ckpt.close()
  if restored is None:
    raise ExplainError(f"{workdir}/checkpoints/{which} holds no checkpoint; train first")
  return restored


class Subset:
  """Examples `index` of a source, in that order, as a source (`source[index[i]]`: each keeps its
  own `meta.index`, its position in the whole split)."""

  def __init__(self, source, index):
    self.source, self.index = source, [int(i) for i in index]

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, i: int):
    return self.source[self.index[int(i)]]


def collect(
  s, split: str, max_examples: int, batch_size: int, indices: Sequence[int] | None = None
) -> dict[str, Any]:
  """The first `max_examples` examples of a split (or, given `indices`, those examples in that
  order) as numpy: `{"inputs": {modality: [N, ...]} (normalised), "targets": {task: [N, ...]},
  "mask": {task: [N, ...]}, "index": [N]}` (the index of each example in its source)."""
  src = s.sources[split]
  if indices is not None:
    src, max_examples = Subset(src, indices), len(indices)
  parts, n = [], 0
  for b in pipeline.eval_batches(
    src,
    input_names=s.input_names,
    task_names=s.task_names,
    stats=s.stats["inputs"],
    batch_size=batch_size,
  ):
    keep = np.asarray(b["valid"]) > 0
    parts.append(
      jax.tree.map(
        lambda v: np.asarray(v)[keep],
        {k: b[k] for k in ("inputs", "targets", "mask")} | {"index": b["meta"]["index"]},
      )
    )
    n += int(keep.sum())
    if n >= max_examples:
      break
  return jax.tree.map(lambda *v: np.concatenate(v)[:max_examples], *parts)


# ============================================================================ which examples
def pick_across(keys, k: int, order=None) -> np.ndarray:
  """Indices of up to `k` items taken in turn from each distinct key (`keys [N]`, e.g. the
  predicted class of each input): the most frequent key first, each key's items in `order` (e.g.
  most confident first; default: as given), no item twice. An item's key may be a list of keys
  (the present labels of a multilabel example: it waits in each of their queues; an empty list:
  never taken). So 8 examples of a split whose first 8 are one class still show several
  classes. Deterministic: no seed, ties between keys broken by their first item."""
  order = np.arange(len(keys)) if order is None else np.asarray(order)
  groups: dict[str, list[int]] = {}
  for i in order:
    key = keys[int(i)]
    for g in key if isinstance(key, (list, tuple)) else [key]:
      groups.setdefault(str(g), []).append(int(i))
  queues = sorted(groups.values(), key=len, reverse=True)
  out: list[int] = []
  taken: set[int] = set()
  while len(out) < k and any(queues):
    for q in queues:
      while q and q[0] in taken:  # taken from another of its keys' queues
        q.pop(0)
      if q and len(out) < k:
        taken.add(q[0])
        out.append(q.pop(0))
  return np.asarray(out, np.int64)


def explained_examples(config: ml_collections.ConfigDict, src, k: int) -> np.ndarray:
  """Split indices of the up to `k` examples the explain run explains, spread over the classes of
  its task (`config.explain.task`, else the first of `config.explain.tasks`): `pick_across` of
  each labelled example's true targets (`TaskKind.explained_targets`: a classification task's
  class, every present label of a multilabel task), or of `k` equal-count bins of a regression
  target's output (its quantiles). Round robin over the classes, the most frequent first, each
  class's examples in split order; no seed. Examples without a label of that task are left out
  (they have nothing to explain). A dense task (per-pixel labels), or no labelled example at
  all: the first `k` examples of the split, as before any spreading."""
  ex = config.explain
  names = explain_tasks(ex)
  task = ex.task if ex.task in names else names[0]
  kind, first = tasks.of(config.tasks[task]), np.arange(min(k, len(src)))
  if kind.dense:
    return first
  labels = src.label_arrays()
  if task not in labels["targets"]:
    return first
  target, mask = np.asarray(labels["targets"][task]), np.asarray(labels["mask"][task])
  n = len(target)
  labelled = mask.reshape(n, -1).max(-1) > 0 if n else np.zeros(0, bool)
  if not labelled.any():
    return first
  if kind.target == tasks.VALUE:  # the rank of output 0 (or the fixed one) in k bins
    out = max(int(ex.target), 0)
    value = target.reshape(n, -1)[:, out].astype(np.float64)
    rank = np.empty(n, np.int64)
    sel = np.flatnonzero(labelled)
    rank[sel] = np.argsort(np.argsort(value[sel], kind="stable"), kind="stable")
    keys = [[int(rank[i] * k // len(sel))] if labelled[i] else [] for i in range(n)]
  else:
    fixed = int(ex.target) != -1  # every labelled example has that target to explain
    keys = [
      kind.explained_targets(target[i], mask[i]) or (["-"] if fixed else []) if labelled[i] else []
      for i in range(n)
    ]
  return pick_across(keys, k)


# ============================================================================ targets
def explain_tasks(ex: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The tasks whose targets the image run explains: `config.explain.tasks` (several heads in one
  call), or `(config.explain.task,)` when that is empty."""
  return tuple(ex.get("tasks") or ()) or (ex.task,)


def explain_heads(config: ml_collections.ConfigDict) -> list[tuple[str, str, int]]:
  """`(task, kind, num_outputs)` of each explained task, for `targets.make_target_scores`."""
  return [
    (t, config.tasks[t].kind, int(config.tasks[t].get("num_classes") or 1))
    for t in explain_tasks(config.explain)
  ]


def _check_tasks(config) -> list[str]:
  """The problems of `config.explain.tasks`: unknown or repeated names."""
  names = tuple(config.explain.get("tasks") or ())
  problems = [
    f"config.explain.tasks: {t!r} is not one of the tasks {sorted(config.tasks)}"
    for t in names
    if t not in config.tasks
  ]
  repeated = sorted({t for t in names if names.count(t) > 1})
  if repeated:
    problems.append(f"config.explain.tasks: {repeated} named more than once")
  return problems


def explained_pairs(config, src, data) -> tuple[np.ndarray, list[str], list[str], dict[str, int]]:
  """The explain run's pairs over every task of `explain_tasks`: `(pairs [P, 2], names, labels,
  per_task)`. A pair's target indexes the concatenated outputs of the heads
  (`targets.head_offsets`); pairs are ordered by example (an example's targets, head by head).
  `names[t]`: target t's class name (`<task>[k]` for output k of a task without class names, the
  task's name for a single output); `labels[t]`: the name shown in pictures ("task: name" when
  several tasks are explained); `per_task`: pairs per task. Which annotation belongs to a target
  is `target_owners`, not its name.
  Raises ExplainError naming a task without any example to explain."""
  ex = config.explain
  heads = explain_heads(config)
  offsets = targets_lib.head_offsets(heads)
  pairs, names, labels, per_task = [], [], [], {}
  for task, _, n in heads:
    got = explained_targets(
      config.tasks[task], data["targets"][task], data["mask"][task], int(ex.target)
    )
    if not len(got):
      raise ExplainError(
        f"no example of split {ex.split!r} has a label to explain for task "
        f"{task!r} (config.explain.target={ex.target})"
      )
    per_task[task] = len(got)
    pairs.append(got + np.asarray([0, offsets[task]], np.int32))
    own = list(src.target_fields[task].get("class_names") or ([task] if n == 1 else []))
    own += [f"{task}[{i}]" for i in range(len(own), n)]
    own = own if len(heads) == 1 else own[:n]
    names += own
    labels += [f"{task}: {c}" if len(heads) > 1 else c for c in own]
  pairs = np.concatenate(pairs)
  pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
  return pairs, names, labels, per_task


def target_owners(config) -> list[Owner]:
  """What each target of the heads' joint index space is (`[T]`, as `explained_pairs` indexes
  them): output k of its task, for matching the source's annotations (`Owner`)."""
  return [Owner(task, k) for task, _, n in explain_heads(config) for k in range(n)]


def explained_targets(task_cfg, targets: np.ndarray, mask: np.ndarray, target: int) -> np.ndarray:
  """Pairs `(example, target index)` `[P, 2]` int32 to explain.

  `target = -1`: what the task's kind explains for each labelled example
  (`tasks.TaskKind.explained_targets`: every present label of a multilabel task, the true class
  of a classification task, the most frequent labelled class of a segmentation example, output 0
  of a regression); otherwise that index for every example with a label.
  """
  kind, n = tasks.of(task_cfg), int(task_cfg.get("num_classes") or 1)
  if target != -1 and not 0 <= target < n:
    raise ExplainError(
      f"config.explain.target={target} is outside the range of task "
      f"{kind.name} with {n} outputs: use 0..{n - 1}, or -1 for the true labels"
    )
  pairs: list[Sequence[int]] = []
  for i in range(len(targets)):
    if np.max(mask[i]) <= 0:  # a dense (per-pixel) mask: some pixel labelled
      continue
    chosen = [target] if target != -1 else kind.explained_targets(targets[i], mask[i])
    pairs += [(i, int(t)) for t in chosen]
  return np.asarray(pairs, np.int32).reshape(-1, 2)
