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

from mtljax import configlib
from mtljax.data import get_dataset
from mtljax.train import build, data_fields
from mtljax.train.state import ensemble_mesh


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
  main_key, larger_better = build._main_metric(config)
  dataset = get_dataset(config.data.name)
  part = build.model_part(
    config,
    dataset,
    ensemble_mesh(config),
    int(record["steps_per_epoch"]),
    data_fields.example_inputs(record),
  )
  return build.Setup(
    config=config,
    workdir=workdir,
    sources={},
    stats=stats,
    target_stats=target_stats,
    p_eval_step=None,
    main_key=main_key,
    larger_better=larger_better,
    dataset=dataset,
    fields=record,
    input_fields=input_fields,
    target_fields=target_fields,
    **part,
  )
