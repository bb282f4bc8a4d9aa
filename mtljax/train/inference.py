"""A trained workdir set up from its own files alone, without its training data (deployment).

`setup_for_inference(config, workdir)` builds what predict and export need (the model, the input
and target statistics, the abstract train state that the checkpoint restores into, the input
names) from the workdir's `data_fields.json` (`data_fields.py`, recorded by training) and
`normalization.json`. No data source is opened, no synthetic dataset written and no file of the
training split read: the training archive need not exist where the model is used. A workdir
without those files (trained before they were recorded) is set up the old way, by
`build.setup`, which opens its training data.
"""

from __future__ import annotations

import json
import os

import ml_collections

from mtljax import configlib, hierarchy, parallel
from mtljax import objective as objective_lib
from mtljax.data import get_dataset
from mtljax.models.multitask import build_model
from mtljax.train import build, data_fields
from mtljax.train.state import abstract_ensemble, create_optimizer, ensemble_size


def setup_for_inference(
  config: ml_collections.ConfigDict, workdir: str, *, checked: bool = False
) -> build.Setup:
  """A `build.Setup` for predicting with the workdir's checkpoints (module docstring): `sources`
  empty, `fields` the recorded ones, no eval step or checkpoint selection. `checked`: the caller
  has run `configlib.check(config)`."""
  workdir = os.path.abspath(workdir)
  record = data_fields.read(workdir)
  stats_path = os.path.join(workdir, "normalization.json")
  if record is None or not os.path.isfile(stats_path):
    return build.setup(config, workdir, write_config=False, checked=checked)
  if not checked:
    configlib.check(config, data_paths=False)
  input_fields, target_fields = record["input_fields"], record["target_fields"]
  configlib.resolve_from_data(config, target_fields)
  configlib.check_fields(config, input_fields, target_fields)
  reference, where = build.reference_config(workdir)  # the checkpoints must fit, as for eval
  if reference is not None:
    configlib.check_compatible(reference, config, where)

  with open(stats_path) as f:
    stats = json.load(f)
  target_stats = {t: tuple(v) for t, v in stats["targets"].items() if t in config.tasks}
  size = ensemble_size(config)
  mesh = parallel.make_mesh(ensemble=int(config.ensemble.get("devices", 1)) if size > 1 else 1)
  dataset = get_dataset(config.data.name)
  model = build_model(config)
  objective = objective_lib.build(config)
  tx, lr_fn = create_optimizer(config, int(record["steps_per_epoch"]))
  example_inputs = data_fields.example_inputs(record)
  abstract_state, state_shardings = abstract_ensemble(
    model, tx, example_inputs, size, objective, parallel.ensemble_sharded(mesh)
  )
  main_key, larger_better = build._main_metric(config)
  return build.Setup(
    config=config,
    workdir=workdir,
    sources={},
    stats=stats,
    target_stats=target_stats,
    mesh=mesh,
    model=model,
    tx=tx,
    lr_fn=lr_fn,
    steps_per_epoch=int(record["steps_per_epoch"]),
    example_inputs=example_inputs,
    abstract_state=abstract_state,
    state_shardings=state_shardings,
    p_eval_step=None,
    main_key=main_key,
    larger_better=larger_better,
    input_names=tuple(sorted(config.inputs)),
    task_names=tuple(sorted(config.tasks)),
    dataset=dataset,
    objective=objective,
    output_transform=hierarchy.output_transform(config, dataset),
    fields=record,
    input_fields=input_fields,
    target_fields=target_fields,
  )
