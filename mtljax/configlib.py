"""Validation of a config against the registries and the dataset's fields.

Unknown or misspelt keys on the command line are already rejected by the locked ConfigDict that
`config_flags` builds; this module checks what only makes sense with the whole picture, in two
parts, each run once per run:

  problems(config)   the config alone: names of registered encoders/heads/fusions/task kinds/
                     datasets, the training and ensemble settings, the task weighting, the label
                     hierarchy, the objective's terms, the explanation loss, the MTC-LIM variant
                     and the values of `config.data` (fractions, counts, sizes, names, the data
                     root: `mtljax.data.values`). `check(config)` raises them; `python -m
                     mtljax.main` calls it before anything is written to the workdir.
  field_problems(config, input_fields, target_fields)
                     the config against the dataset's fields (every input an input field, every
                     task a target field of the right kind and class count), known once the
                     run's set-up has opened the data.

`validate(config, input_fields, target_fields)` is both at once. All problems are collected and
reported in one `ConfigError`, each naming its key.
"""

from __future__ import annotations

from typing import Mapping

import ml_collections

from mtljax import plugins
from mtljax import tasks as tasks_lib
from mtljax.config_resume import (  # noqa: F401 (re-exported: the resume checks)
  HARMLESS_CHANGES,
  check_compatible,
  check_resume,
  run_changes,
)
from mtljax.data import values as data_values
from mtljax.errors import ConfigError
from mtljax.models import convolution
from mtljax.models.encoders import ENCODERS
from mtljax.models.fusion import FUSIONS
from mtljax.models.heads import HEADS

_SCHEDULES = ("warmup_cosine", "constant", "plateau")
ENSEMBLE_STRATEGIES = ("seeds", "bagging", "leave_one_bucket_out")
# How an explain run batches its members (mtljax.attribution.ensemble; "tune" times programs,
# which cannot happen inside the explain run's jitted batch).
EXPLAIN_STRATEGIES = ("auto", "vmap", "loop", "map")
_OPTIMIZERS = ("adamw", "adam", "sgd")
# num_outputs: width of a regression target (default 1); normalize: False keeps a regression
# target in its own units for the loss (e.g. a sigmoid head's [0, 1] target); classes: a declared
# class vocabulary (the manifest's "a,b,c").
_TASK_KEYS = {
  "kind", "num_classes", "classes", "weight", "head", "head_kwargs", "num_outputs", "normalize"
}  # fmt: skip
_INPUT_KEYS = {"encoder", "encoder_kwargs"}


def resolve_from_data(config: ml_collections.ConfigDict, target_fields: Mapping[str, dict]) -> None:
  """Fill what the dataset decides: a classification/multilabel task with `num_classes = 0` gets
  the dataset's class count (e.g. CUB's 200 classes, or the attributes selected by
  `config.data.attributes`), so one config serves the synthetic and the real archive."""
  for name, t in config.tasks.items():
    field = target_fields.get(name)
    if field and t.get("num_classes") == 0 and field.get("num_classes"):
      t.num_classes = int(field["num_classes"])


def _dataset(config, problems: list[str]):
  """The registry entry of `config.data.name` (None, with a problem when it is not registered;
  None without one when the config names no dataset)."""
  data = config.get("data", None)
  name = data.get("name", "") if data else ""
  if not name:
    return None
  from mtljax.data import DATASETS, get_dataset

  if name not in DATASETS and not plugins.is_reference(name):
    problems.append(
      f"config.data.name={name!r} is not one of the datasets {sorted(DATASETS)} "
      "(or package.module:ATTRIBUTE)"
    )
    return None
  try:
    return get_dataset(name)
  except ConfigError as e:  # a plug-in reference that does not load
    problems.append(str(e))
    return None


def _register_plugins(config) -> list[str]:
  """Register every `package.module:ATTRIBUTE` the config names as an encoder, head, fusion, task
  kind, attribution method, explanation-loss kind or objective term in its registry (under that
  name, so every later lookup finds it); the problems of those that do not load."""
  import flax.linen as nn

  from mtljax import objective
  from mtljax.attribution import methods, spec
  from mtljax.egl import losses as egl_losses

  named = [(ENCODERS, m.get("encoder"), f"config.inputs.{n}.encoder", nn.Module)
           for n, m in config.inputs.items()]  # fmt: skip
  for n, t in config.tasks.items():
    named.append((HEADS, t.get("head"), f"config.tasks.{n}.head", nn.Module))
    named.append((tasks_lib.KINDS, t.get("kind"), f"config.tasks.{n}.kind", tasks_lib.TaskKind))
  named.append((FUSIONS, config.model.get("fusion"), "config.model.fusion", nn.Module))
  for m in config.get("explain", {}).get("methods", ()):
    named.append((methods.METHODS, m, "config.explain.methods", spec.MethodSpec))
  loss = config.get("explanation_loss", None) or {}
  named.append(
    (egl_losses.KINDS, loss.get("kind"), "config.explanation_loss.kind", egl_losses.LossKind)
  )
  saliency = str(loss.get("saliency", "")).rsplit("@", 1)[0]  # "<method>@<layer>"
  named.append((methods.METHODS, saliency, "config.explanation_loss.saliency", spec.MethodSpec))
  for t in (config.get("objective", None) or {}).get("terms", ()):
    named.append((objective.TERMS, t, "config.objective.terms", None))
  return [p for r, name, key, cls in named if (p := plugins.register(r, name, key, cls))]


def _section_problems(config, dataset) -> list[str]:
  """The task weighting, label hierarchy, objective terms, explanation loss and MTC-LIM variant
  (each module's own check)."""
  from mtljax import hierarchy, objective, weighting
  from mtljax.egl import term as egl_term  # also registers the "explanation" term
  from mtljax.models import lim

  out = []
  if config.get("tasks", None):
    out += weighting.problems(config) + hierarchy.problems(config, dataset)
    out += objective.problems(config)
  out += egl_term.check_config(config)
  strategy = config.get("explain", {}).get("strategy", "auto")
  if strategy not in EXPLAIN_STRATEGIES:
    out.append(f"config.explain.strategy={strategy!r} is not one of {EXPLAIN_STRATEGIES}")
  variant = config.get("model", {}).get("variant", "")
  if variant:
    try:
      lim.parse_variant(variant)
    except ConfigError as e:
      out.append(str(e))
  return out


def problems(config: ml_collections.ConfigDict, *, data_paths: bool = True) -> list[str]:
  """Every mistake of `config` that the config alone shows (module docstring), each naming its
  key; `data_paths=False`: not whether the training data's paths exist (predict and export
  read the workdir, and the training data only where they predict one of its splits).

  A dataset whose entry has ``complete_config`` (the manifest) first fills what its data decides
  (task kinds, class counts, encoders; ``mtljax.data.Dataset``), so the checks below see the
  completed config; the data's own problems are raised then as one ``DataError``."""
  problems = []
  problems += _register_plugins(config)
  dataset = _dataset(config, problems)
  if dataset is not None and dataset.complete_config is not None:
    kinds = {n: (k.target, k.dense) for n, k in tasks_lib.KINDS.items()}
    dataset.complete_config(config, kinds)
  inputs, tasks = config.inputs, config.tasks
  for name, m in inputs.items():
    key = f"config.inputs.{name}"
    unknown = set(m.keys()) - _INPUT_KEYS
    if unknown:
      problems.append(f"{key}: unknown keys {sorted(unknown)} (allowed: {sorted(_INPUT_KEYS)})")
    if m.get("encoder") not in ENCODERS:
      problems.append(f"{key}.encoder={m.get('encoder')!r} is not one of {sorted(ENCODERS)}")
  if not inputs:
    problems.append("config.inputs is empty: a model needs at least one input modality")
  for name, t in tasks.items():
    key = f"config.tasks.{name}"
    unknown = set(t.keys()) - _TASK_KEYS
    if unknown:
      problems.append(f"{key}: unknown keys {sorted(unknown)} (allowed: {sorted(_TASK_KEYS)})")
    kind = t.get("kind")
    if kind not in tasks_lib.KINDS:
      problems.append(f"{key}.kind={kind!r} is not one of {sorted(tasks_lib.KINDS)}")
    if name in inputs:
      problems.append(
        f"{key}: {name!r} is also an input; a modality is an input or a target, not both"
      )
    if t.get("head") not in HEADS:
      problems.append(f"{key}.head={t.get('head')!r} is not one of {sorted(HEADS)}")
    w = t.get("weight")
    if not isinstance(w, (int, float)) or w < 0:
      problems.append(f"{key}.weight={w!r} must be a number >= 0")
  problems.extend(_section_problems(config, dataset))
  problems.extend(data_values.problems(config, paths=data_paths))
  if not tasks:
    problems.append("config.tasks is empty: a model needs at least one task")
  elif sum(float(t.get("weight", 0) or 0) for t in tasks.values()) <= 0:
    problems.append("config.tasks: the loss weights must sum to a positive number")
  if config.main_task not in tasks:
    problems.append(
      f"config.main_task={config.main_task!r} is not one of the tasks {sorted(tasks)}"
    )
  if config.get("conv", "xla") not in convolution.BACKENDS:
    problems.append(f"config.conv={config.conv!r} is not one of {convolution.BACKENDS}")
  if config.model.fusion not in FUSIONS:
    problems.append(f"config.model.fusion={config.model.fusion!r} is not one of {sorted(FUSIONS)}")
  tr = config.train
  if tr.schedule not in _SCHEDULES:
    problems.append(f"config.train.schedule={tr.schedule!r} is not one of {_SCHEDULES}")
  if tr.optimizer not in _OPTIMIZERS:
    problems.append(f"config.train.optimizer={tr.optimizer!r} is not one of {_OPTIMIZERS}")
  for key in (
    "batch_size",
    "num_epochs",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
  ):
    if int(tr[key]) < 1:
      problems.append(f"config.train.{key}={tr[key]!r} must be >= 1")
  if tr.get("verify_checksums", "all") not in ("all", "best", "none"):
    problems.append(
      f"config.train.verify_checksums={tr.verify_checksums!r} is not one of 'all', 'best', 'none'"
    )
  if int(config.eval.batch_size) < 1:
    problems.append(f"config.eval.batch_size={config.eval.batch_size!r} must be >= 1")
  for split in config.eval.prediction_splits:
    if split not in ("train", "val", "test"):
      problems.append(f"config.eval.prediction_splits: unknown split {split!r}")
  if "ensemble" in config:
    ens = config.ensemble
    if not isinstance(ens.size, int) or ens.size < 1:
      problems.append(f"config.ensemble.size={ens.size!r} must be an integer >= 1")
    devices = ens.get("devices", 1)
    if not isinstance(devices, int) or devices < 1:
      problems.append(f"config.ensemble.devices={devices!r} must be an integer >= 1")
    elif isinstance(ens.size, int) and ens.size % devices:
      problems.append(
        f"config.ensemble.devices={devices} must divide config.ensemble.size={ens.size}"
      )
    if ens.strategy not in ENSEMBLE_STRATEGIES:
      problems.append(
        f"config.ensemble.strategy={ens.strategy!r} is not one of {ENSEMBLE_STRATEGIES}"
      )
    elif ens.strategy == "leave_one_bucket_out" and isinstance(ens.size, int) and ens.size < 2:
      problems.append(
        "config.ensemble.strategy='leave_one_bucket_out' needs "
        "config.ensemble.size >= 2 (member k leaves out bucket k of E)"
      )
  return problems


def field_problems(
  config: ml_collections.ConfigDict,
  input_fields: Mapping[str, dict],
  target_fields: Mapping[str, dict],
) -> list[str]:
  """Every mismatch between `config` and the dataset's fields. `input_fields`/`target_fields`:
  the dataset's fields usable as inputs / targets, name → info (`{"kind": ..., "num_classes":
  ...}`)."""
  problems = []
  for name in config.inputs:
    if name not in input_fields:
      problems.append(
        f"config.inputs.{name}: the dataset {config.data.name!r} has no input modality {name!r} "
        f"(available: {sorted(input_fields)})"
      )
  for name, t in config.tasks.items():
    key, kind = f"config.tasks.{name}", t.get("kind")
    field = target_fields.get(name)
    if field is None:
      problems.append(
        f"{key}: the dataset {config.data.name!r} has no target {name!r} "
        f"(available: {sorted(target_fields)})"
      )
      continue
    if field["kind"] != kind:
      problems.append(f"{key}.kind={kind!r} but the dataset's {name!r} is {field['kind']!r}")
    has_classes = kind in tasks_lib.KINDS and tasks_lib.spec(kind).has_classes
    if has_classes and t.get("num_classes") != field.get("num_classes"):
      problems.append(
        f"{key}.num_classes={t.get('num_classes')!r} but the dataset's {name!r} "
        f"has {field.get('num_classes')} classes"
      )
  return problems


def _raise(problems: list[str]) -> None:
  """One ConfigError: the problem itself, or every problem listed."""
  if len(problems) == 1:
    raise ConfigError(problems[0])
  if problems:
    raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def check(config: ml_collections.ConfigDict, *, data_paths: bool = True) -> None:
  """Raise one ConfigError listing every problem of `problems(config, data_paths=...)`."""
  _raise(problems(config, data_paths=data_paths))


def check_fields(
  config: ml_collections.ConfigDict,
  input_fields: Mapping[str, dict],
  target_fields: Mapping[str, dict],
) -> None:
  """Raise one ConfigError listing every problem of `field_problems`."""
  _raise(field_problems(config, input_fields, target_fields))


def validate(
  config: ml_collections.ConfigDict,
  input_fields: Mapping[str, dict],
  target_fields: Mapping[str, dict],
) -> None:
  """`check` and `check_fields` at once: one ConfigError listing every problem of both."""
  _raise(problems(config) + field_problems(config, input_fields, target_fields))
