r"""Entry point. Deliberately thin: parses flags and hands the config to the library.

  python -m mtljax.main --config=configs/treesat.py --workdir=/tmp/treesat
  python -m mtljax.main --config=configs/treesat.py:exp=3 --workdir=W --config.train.batch_size=8
  python -m mtljax.main --config=configs/treesat.py --workdir=W --mode=eval
  python -m mtljax.main --config=configs/attributes.py --workdir=W             # an ensemble
  python -m mtljax.main --config=configs/attributes.py --workdir=W --mode=explain
  python -m mtljax.main --config=configs/treesat.py --workdir=W --mode=analyze  # report/index.html

`--config.a.b=value` overrides any key of the config file (types are checked, unknown keys are
rejected). The same command rerun in the same workdir continues from the last checkpoint.
The same command runs on every host of a multi-host job (see launch/): add --distributed on a TPU
pod or SLURM, or --coordinator_address/--num_processes/--process_id for explicit processes.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file, e.g. configs/treesat.py[:variant].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes everything.")
_MODE = flags.DEFINE_enum(
  "mode",
  "train",
  ["train", "eval", "explain", "analyze"],
  "train: train (or resume) and evaluate; eval: evaluate the best "
  "checkpoint of --workdir on val and test; explain: ensemble "
  "explanations of the best checkpoint (config.explain); analyze: "
  "intrinsic multitask analysis of the per-epoch predictions "
  "(config.analysis) into <workdir>/report/.",
)
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "Start JAX's multi-controller runtime with cluster auto-detection "
  "(TPU pod slices, SLURM, Open MPI). Not needed on one host.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  None,
  "host:port of process 0 for an explicit multi-process run (or env JAX_COORDINATOR_ADDRESS).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id, 0..num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported here so that `--help` and flag errors are fast and jax sees XLA_FLAGS set by users.
  from mtljax import configlib, parallel, train
  from mtljax.analysis import AnalysisError
  from mtljax.checkpoint import CheckpointMismatchError
  from mtljax.data.source import DataError

  logging.set_verbosity(logging.WARNING)
  parallel.initialize_distributed(
    _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_DISTRIBUTED.value
  )
  try:
    if _MODE.value == "train":
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    elif _MODE.value == "eval":
      train.evaluate_workdir(_CONFIG.value, _WORKDIR.value)
    elif _MODE.value == "analyze":  # reads the workdir's files only; no model, no data
      from mtljax.analysis import report

      report.analyze_workdir(_CONFIG.value, _WORKDIR.value)
    else:
      from mtljax.explain import run as explain_run

      explain_run.explain_workdir(_CONFIG.value, _WORKDIR.value)
  except (
    configlib.ConfigError,
    DataError,
    CheckpointMismatchError,
    train.NonFiniteLossError,
    AnalysisError,
  ) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)
