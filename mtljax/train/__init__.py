"""Multitask training and evaluation, one module per job (after flax `examples/imagenet/train.py`):

  state.py       optimizer, learning rate, initial state, ensembles (member_map, sample weights)
  steps.py       the pure steps: loss (the objective, mtljax/objective.py), train, ensemble, eval
  evaluation.py  evaluate a split → metrics and prediction arrays; prediction files; pictures
  build.py       Setup: data sources, statistics, mesh, model, optimizer, abstract state
  data_fields.py what predict and export need of the training data, recorded in the workdir
  inference.py   setup_for_inference: a Setup from the workdir's own files (no data opened)
  loop.py        train_and_evaluate (epochs, checkpoints, resume, pre-emption), evaluate_workdir

The train state is a plain dict `{"step", "params", "batch_stats", "opt_state"}` and the step a
pure function `(state, batch, rng) -> (state, measurements)`, so an ensemble is `jax.vmap` of the
same step over stacked states, and data parallelism is `jax.jit` with shardings over a mesh,
applied where the step is called. `from mtljax import train` gives the names below.
"""

from mtljax.train.build import Setup, setup
from mtljax.train.evaluation import (
  _source_context,
  evaluate,
  pictures_folder,
  save_predictions,
  write_pictures,
)
from mtljax.train.inference import setup_for_inference
from mtljax.train.loop import NonFiniteLossError, Preempted, evaluate_workdir, train_and_evaluate
from mtljax.train.state import (
  create_learning_rate,
  create_optimizer,
  ensemble_size,
  init_ensemble,
  init_state,
  member_map,
  member_sample_weights,
)
from mtljax.train.steps import (
  make_ensemble_train_step,
  make_eval_step,
  make_train_step,
  on_device_inputs,
  target_transform,
)

__all__ = [
  "NonFiniteLossError",
  "Preempted",
  "Setup",
  "_source_context",
  "create_learning_rate",
  "create_optimizer",
  "ensemble_size",
  "evaluate",
  "evaluate_workdir",
  "init_ensemble",
  "init_state",
  "make_ensemble_train_step",
  "make_eval_step",
  "make_train_step",
  "on_device_inputs",
  "member_map",
  "member_sample_weights",
  "pictures_folder",
  "save_predictions",
  "setup",
  "setup_for_inference",
  "target_transform",
  "train_and_evaluate",
  "write_pictures",
]
