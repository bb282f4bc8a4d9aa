"""What a run derives from (config, workdir) before training, evaluating or explaining: the data
sources, the input and target statistics, the mesh, the model, the optimizer and the abstract
(shape-only) train state, gathered in one `Setup`.

(The module is `build`, not `setup`, so that `train.setup` stays the function.)

Batch sizes: `config.train.batch_size` and `config.eval.batch_size` are both GLOBAL, the examples
of one step summed over all processes and devices; each process reads its `1 / process_count`
share of every global batch (`Setup.train_iter`, `Setup.eval_iter`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mtljax import checkpoint, configlib, fileio, hierarchy, parallel, tasks
from mtljax import objective as objective_lib
from mtljax.data import build as data_build
from mtljax.data import checks as data_checks
from mtljax.data import get_dataset, pipeline
from mtljax.data.statistics import regression_target_stats
from mtljax.models.multitask import build_model
from mtljax.train import data_fields, selection
from mtljax.train.evaluation import metric_directions
from mtljax.train.state import abstract_ensemble, create_optimizer, ensemble_mesh, ensemble_size
from mtljax.train.steps import make_eval_step, on_device_inputs


def _input_stats(config, train_src, names):
  """`pipeline.compute_stats` of the training split, or the same numbers saved with a prepared
  dataset when it computed them with this seed and subsample size."""
  if config.data.get("prepared"):
    from mtljax.data import prepared

    if (saved := prepared.statistics(config, names)) is not None:
      return saved
  return pipeline.compute_stats(
    train_src, names, max_examples=config.data.stats_examples, seed=config.seed
  )


def _load_or_compute_stats(path, compute):
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  stats = compute()
  if jax.process_index() == 0:
    fileio.write_json(path, stats)
  return stats


def _banner(lines):
  width = max(len(s) for s in lines) + 4
  print("\n" + "#" * width)
  for s in lines:
    print(f"# {s.ljust(width - 4)} #")
  print("#" * width + "\n", flush=True)


# ============================================================================ Setup
@dataclasses.dataclass
class Setup:
  """Everything a run derives from (config, workdir) before training or evaluating.

  main_key: the run's headline validation metric (`<task>/<metric>`: the main task's main metric,
  or `task_mean/<metric>`), and larger_better its direction; select: what the best checkpoint
  is chosen on (`config.train.select_by`, by default main_key). input_names, task_names: sorted.
  dataset: the registry entry of `config.data.name`; objective: the training objective
  (`objective.build`); output_transform: the hierarchy's map of the model's outputs
  (`hierarchy.output_transform`): each built once here and passed to what needs them.
  input_fields, target_fields: the training split's; fields: the training data's record
  (`data_fields.py`) when the run wrote it or was set up from it alone
  (`inference.setup_for_inference`, whose `sources` is empty).
  """

  config: ml_collections.ConfigDict
  workdir: str
  sources: dict
  stats: dict
  target_stats: dict
  mesh: Any
  model: Any
  tx: Any
  lr_fn: Any
  steps_per_epoch: int
  example_inputs: dict
  abstract_state: Any
  state_shardings: Any
  p_eval_step: Any
  main_key: str
  larger_better: bool
  input_names: tuple
  task_names: tuple
  dataset: Any = None
  objective: Any = None
  output_transform: Any = None
  select: selection.Selection = None
  fields: dict | None = None
  input_fields: dict = None
  target_fields: dict = None

  def eval_batches(self, source):
    """This process's rows of the global eval batches (`config.eval.batch_size`) of `source`."""
    # pipeline.eval_batches takes the global batch size and splits it over the shards.
    return pipeline.eval_batches(
      source, batch_size=int(self.config.eval.batch_size), **self._read()
    )

  @property
  def batch_size(self) -> int:
    """The global training batch size (`config.train.batch_size`), over all processes."""
    return int(self.config.train.batch_size)

  @property
  def on_device(self) -> bool:
    """Integer-stored inputs are standardised inside the jitted steps (`p_eval_step`, the train
    step of train/loop.py), not on the host (`config.data.normalise_on_device`)."""
    return bool(self.config.data.get("normalise_on_device", False))

  def _read(self):
    return dict(
      input_names=self.input_names,
      task_names=self.task_names,
      stats=self.stats["inputs"],
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
      on_device=self.on_device,
      read_options=pipeline.default_read_options(
        self.config.data.num_threads, self.config.data.prefetch
      ),
    )

  def eval_iter(self, split):
    """This process's rows of the global eval batches (`config.eval.batch_size`) of `split`."""
    return self.eval_batches(self.sources[split])

  def train_iter(self, start_step: int = 0):
    """This process's rows of the global training batches (`config.train.batch_size`), from
    global step `start_step`."""
    config = self.config
    # pipeline.train_iterator takes the per-process batch size (global = it × shard_count);
    # setup() checked that the global size divides over the data axis, hence the processes.
    return pipeline.train_iterator(
      self.sources["train"],
      batch_size=self.batch_size // jax.process_count(),
      seed=config.seed,
      augment_cfg=config.data.augment.to_dict(),
      start_step=start_step,
      workers=config.data.get("workers", 0),
      **self._read(),
    )


def _read_config(path):
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise configlib.ConfigError(
      f"{path} is not valid JSON ({e}); move it away to start over"
    ) from e


def _checkpoint_steps(workdir) -> list[int]:
  """The steps of the workdir's checkpoints (latest and best): a run to resume if any."""
  steps = []
  for which in ("latest", "best"):
    folder = os.path.join(workdir, "checkpoints", which)
    if os.path.isdir(folder):
      steps += [int(n) for n in os.listdir(folder) if n.isdigit()]
  return sorted(steps)


def _record_config(config, path, saved, changes, steps) -> None:
  """Write `config.json` (a new run, a config that changed before any checkpoint, or an allowed
  change) and, for a change of a resumed run, a line in `config_changes.jsonl`: the step it
  resumes from and each key's recorded and new value."""
  text = config.to_json_best_effort(indent=2)
  if saved is not None and saved == json.loads(text):
    return
  if changes and steps:
    record = {
      "step": max(steps),
      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "changes": {k: {"recorded": old, "now": new} for k, (old, new) in changes.items()},
    }
    with open(os.path.join(os.path.dirname(path), "config_changes.jsonl"), "a") as f:
      f.write(json.dumps(record) + "\n")
    print(
      f"note: continuing from step {max(steps)} with a changed config ({', '.join(changes)}); "
      f"recorded in {path} and config_changes.jsonl",
      flush=True,
    )
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)  # other processes may be reading it


def setup(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  write_config: bool = True,
  allow_config_change: bool = False,
  checked: bool = False,
) -> Setup:
  """Data sources (writing the synthetic dataset when no root is given), validation, statistics,
  mesh, model, optimizer, the objective and the abstract (shape-only) train state.

  `checked`: the caller has run `configlib.check(config)` (mtljax/main.py, before anything was
  written); otherwise it runs here first. Either way the config is checked once, and its fields
  against the dataset's once the data is open (`configlib.check_fields`).
  `write_config` (a training run): a workdir with checkpoints is resumed only with a config that
  does not change the run (`configlib.check_resume`), unless `allow_config_change`; config.json
  is written once everything has validated."""
  if not checked:
    configlib.check(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  # ------------------------------------------------------------------ data sources
  dataset = get_dataset(config.data.name)
  sources, synthetic_root = data_build.make_sources(config, workdir, dataset)
  train_src = sources["train"]
  if synthetic_root and is_main:
    _banner(
      [
        "NO DATA ROOT GIVEN: using the BUILT-IN SYNTHETIC dataset",
        f"(planted truth, real {config.data.name} layout) written to {synthetic_root}",
        "Pass --config.data.root=/path/to/the/real/archive to train on real data.",
      ]
    )
  configlib.resolve_from_data(config, train_src.target_fields)
  configlib.check_fields(config, train_src.input_fields, train_src.target_fields)
  # The checkpoint selection names a metric the validation logs (before anything is written).
  main_key, larger_better = _main_metric(config)
  select = selection.resolve(
    config, metric_directions(config, sources["val"], dataset), main_key, larger_better
  )
  # Every split's files and the batch sizes, before anything is written or trained (a corrupt
  # val/test file is reported now, not after an epoch).
  checked = data_checks.check_inputs(sources, config, progress=is_main)
  if checked and is_main:
    print(
      f"checked the files of {len(checked)} splits in {sum(checked.values()):.1f} s", flush=True
    )

  # ------------------------------------------------------------------ workdir config
  # Checked now, written at the end once the whole run has validated (see _record_config). The
  # reference is the config recorded with the newest checkpoint (mtljax/checkpoint.py), so that
  # a missing, edited or replaced config.json changes nothing; config.json only for checkpoints
  # from before configs were recorded with them.
  config_path = os.path.join(workdir, "config.json")
  saved, changes = _read_config(config_path), {}
  reference, where = reference_config(workdir)
  if reference is not None and not write_config:  # eval/explain: the checkpoints must fit
    configlib.check_compatible(reference, config, where)
  elif reference is not None and _checkpoint_steps(workdir):  # a resume: the same run, or say so
    changes = configlib.run_changes(reference, config)
    if changes and not allow_config_change:
      configlib.check_resume(reference, config, where)

  # ------------------------------------------------------------------ batch sizes
  mesh = ensemble_mesh(config)
  batch_size = int(config.train.batch_size)
  try:
    parallel.check_batch_size(batch_size, mesh)
    parallel.check_batch_size(int(config.eval.batch_size), mesh, "config.eval.batch_size")
  except ValueError as e:
    raise configlib.ConfigError(str(e)) from e
  steps_per_epoch = len(train_src) // batch_size
  if len(train_src) == 0:
    raise configlib.ConfigError(
      f"the training split of {config.data.name} at "
      f"{config.data.root or synthetic_root!r} is empty (no training example listed)"
    )
  if steps_per_epoch < 1:
    raise configlib.ConfigError(
      f"the training split has {len(train_src)} examples, fewer than "
      f"config.train.batch_size={batch_size}"
    )

  # ------------------------------------------------------------------ statistics
  input_names = tuple(sorted(config.inputs))
  task_names = tuple(sorted(config.tasks))
  stats = _load_or_compute_stats(
    os.path.join(workdir, "normalization.json"),
    lambda: {
      # Categorical inputs (embedding indices) are not standardised.
      "inputs": _input_stats(
        config,
        train_src,
        [m for m in input_names if train_src.input_fields.get(m, {}).get("kind") != "categorical"],
      ),
      "targets": {
        t: list(v)
        for t, v in regression_target_stats(
          train_src, config, tasks.standardized_targets(config)
        ).items()
      },
    },
  )
  target_stats = {t: tuple(v) for t, v in stats["targets"].items() if t in config.tasks}

  # ------------------------------------------------------------------ model, eval step
  first = next(
    pipeline.eval_batches(
      train_src, input_names=input_names, task_names=task_names, stats=stats["inputs"], batch_size=1
    )
  )
  example_inputs = jax.tree.map(jnp.zeros_like, first["inputs"])
  part = model_part(config, dataset, mesh, steps_per_epoch, example_inputs)
  eval_step = make_eval_step(
    part["model"], config, target_stats, transform=part["output_transform"]
  )
  p_eval_step = jax.jit(
    on_device_inputs(eval_step, stats["inputs"]),
    in_shardings=(part["state_shardings"], parallel.data_sharded(mesh)),
    out_shardings=parallel.data_sharded(mesh),
  )
  record = None
  if is_main and write_config:
    _record_config(config, config_path, saved, changes, _checkpoint_steps(workdir))
    # What predict and export need of the training data (data_fields.py).
    record = data_fields.describe(train_src, input_names, example_inputs, steps_per_epoch)
    data_fields.write(workdir, record)
  return Setup(
    config=config,
    workdir=workdir,
    sources=sources,
    stats=stats,
    target_stats=target_stats,
    p_eval_step=p_eval_step,
    main_key=main_key,
    larger_better=larger_better,
    select=select,
    dataset=dataset,
    fields=record,
    input_fields=train_src.input_fields,
    target_fields=train_src.target_fields,
    **part,
  )


def model_part(config, dataset, mesh, steps_per_epoch: int, example_inputs) -> dict:
  """The `Setup` fields built from the config and one example's shape alone (model, objective,
  output transform, optimizer, abstract ensemble state on `mesh`, sorted input and task names):
  `setup` and `inference.setup_for_inference` (a workdir from its record) build them alike."""
  model = build_model(config)
  objective = objective_lib.build(config)
  tx, lr_fn = create_optimizer(config, steps_per_epoch)
  abstract_state, state_shardings = abstract_ensemble(
    model, tx, example_inputs, ensemble_size(config), objective, parallel.ensemble_sharded(mesh)
  )
  return dict(
    mesh=mesh,
    model=model,
    objective=objective,
    output_transform=hierarchy.output_transform(config, dataset),
    tx=tx,
    lr_fn=lr_fn,
    steps_per_epoch=steps_per_epoch,
    example_inputs=example_inputs,
    abstract_state=abstract_state,
    state_shardings=state_shardings,
    input_names=tuple(sorted(config.inputs)),
    task_names=tuple(sorted(config.tasks)),
  )


def reference_config(workdir: str) -> tuple[dict | None, str]:
  """`(config, where)` the workdir's checkpoints were made with: the one recorded with the newest
  checkpoint (mtljax/checkpoint/), else config.json (checkpoints from before configs were recorded
  with them); `(None, path)` where neither exists."""
  config_path = os.path.join(workdir, "config.json")
  if _checkpoint_steps(workdir):
    recorded = checkpoint.recorded_config(os.path.join(workdir, "checkpoints"))
    if recorded is not None:
      return recorded[0], f"{recorded[1]} (the config recorded with that checkpoint)"
  return _read_config(config_path), config_path


def _main_metric(config) -> tuple[str, bool]:
  """The run's headline validation metric and whether larger is better: the main task's main
  metric, or `task_mean/<metric>` with `config.train.select_task_mean`."""
  main_kind = tasks.of(config.tasks[config.main_task])
  if config.train.get("select_task_mean", ""):  # see evaluate(); e.g. "kappa": larger is better
    return f"task_mean/{config.train.select_task_mean}", True
  return f"{config.main_task}/{main_kind.main_metric}", main_kind.larger_is_better
