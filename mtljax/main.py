r"""Entry point. Deliberately thin: parses flags and hands the config to the library.

  python -m mtljax.main --config=configs/treesat.py --workdir=/tmp/treesat
  python -m mtljax.main --config=configs/treesat.py:exp=3 --workdir=W --config.train.batch_size=8
  python -m mtljax.main --config=configs/treesat.py --workdir=W --mode=eval
  python -m mtljax.main --config=configs/attributes.py --workdir=W             # an ensemble
  python -m mtljax.main --config=configs/attributes.py --workdir=W --mode=explain
  python -m mtljax.main --config=configs/treesat.py --workdir=W --mode=analyze  # report/index.html

`--config.a.b=value` overrides any key of the config file (types are checked, unknown keys are
rejected). The same command rerun in the same workdir continues from the last checkpoint; a
resume with a config that changes the run (see configlib.HARMLESS_CHANGES for what may change) is
refused unless --allow_config_change. One run at a time per workdir (a lock, mtljax/workdir.py).
A user's mistake (flags, config, data, workdir; a full disk, a read-only or forbidden path) ends
in one line `error: ...` and exit status 2. SIGTERM/SIGINT at any moment stop the run at its next
step or batch (a training run saves that step first) with one line and exit 143/130
(mtljax/interrupts.py; a second signal exits at once).
The same command runs on every host of a multi-host job (see launch/): add --distributed on a TPU
pod or SLURM, or --coordinator_address/--num_processes/--process_id for explicit processes.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mtljax import errors, interrupts

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file, e.g. configs/treesat.py[:variant].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes everything.")
_MODE = flags.DEFINE_enum(
  "mode",
  "train",
  ["train", "eval", "explain", "analyze", "predict", "export"],
  "train: train (or resume) and evaluate; eval: evaluate the best "
  "checkpoint of --workdir on val and test; explain: ensemble "
  "explanations of the best checkpoint (config.explain); analyze: "
  "intrinsic multitask analysis of the per-epoch predictions "
  "(config.analysis) into <workdir>/report/; predict: the best checkpoint applied to new "
  "inputs (config.predict) into <workdir>/predict/; export: a jax.export artifact of the "
  "prediction function into <workdir>/export/.",
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
_ALLOW_CHANGE = flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Resume a workdir with a config that changes the run (e.g. another learning rate): the new "
  "values are recorded in config.json and the change, with its step, in config_changes.jsonl.",
)
_BREAK_LOCK = flags.DEFINE_bool(
  "break_lock",
  False,
  "Take over the workdir lock of a run on another host (only when that run is known dead).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str, *, now: bool = False):
  """A user's mistake: one line on stderr, exit status 2 (`now`: without the interpreter's
  shutdown, whose joins of a failed orbax save's threads print tracebacks of their own)."""
  first, *rest = [line.strip() for line in str(message).strip().splitlines() if line.strip()] or [
    "?"
  ]
  parts = [" ".join(first.split())] + [" ".join(r.lstrip("- ").split()) for r in rest]
  message = parts[0] + (" " + "; ".join(parts[1:]) if rest else "")  # one line
  print(f"error: {message}", file=sys.stderr, flush=True)
  if now:
    sys.stdout.flush()
    os._exit(2)
  sys.exit(2)


def _quiet_closed_loops(unraisable) -> None:
  """TensorStore's callbacks of a failed orbax save may still report to orbax's event loop once
  it is closed: `RuntimeError('Event loop is closed')`, printed as an unraisable traceback; noise
  beside the run's own error line. Any other unraisable error is printed as usual."""
  e = unraisable.exc_value
  if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
    sys.__unraisablehook__(unraisable)


class _QuietOsFaults:
  """Leaves out the log records (orbax's background save threads log theirs with tracebacks) of
  an OS fault that main reports as one line when it reaches the main thread."""

  def filter(self, record) -> bool:
    if record.exc_info and record.exc_info[1] is not None:
      if errors.os_error_message(record.exc_info[1]) is not None:
        return False
    try:
      return errors.os_error_message(Exception(record.getMessage())) is None
    except Exception:  # noqa: BLE001 (a record that cannot be formatted: let logging say so)
      return True


def _config_file_error(argv, e: Exception) -> str:
  arg = flags.FLAGS["config"].serialize().split("=", 1)[-1]
  path = arg.split(":", 1)[0]
  if path and not os.path.exists(path):
    return f"--config={arg}: no such config file {path!r}"
  cause = e.__cause__ or e
  return f"--config={arg}: {type(cause).__name__}: {cause}"


def _parse_flags(argv):
  """absl's parsing, with every flag or config-override mistake as one `error:` line."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:  # the config file's get_config raised
      _fail(f"{lines[0].rstrip(':')}: {lines[-1]}")
    _fail(lines[0] if lines else repr(e))
  except (KeyError, AttributeError) as e:  # an unknown --config.a.b key (ml_collections)
    text = e
    while isinstance(text, BaseException) and text.args:  # AttributeError(KeyError(message))
      text = text.args[0]
    key, _, hint = str(text).partition("\n")
    key = key.strip("'\"")
    bad = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    bad = [a for a in bad if key and key in a.split(".")] or bad
    where = bad[0] if bad else "--config.*"
    _fail(f"{where}: the config has no key {key!r}. {hint}".strip())
  except (ValueError, TypeError) as e:  # an override of the wrong type
    _fail(f"bad --config override: {e}")
  if len(rest) > 1:
    _fail(f"unexpected arguments {rest[1:]} (flags are --name=value)")
  try:
    _CONFIG.value.keys()  # the config file is loaded lazily: a missing or broken one fails here
  except Exception as e:  # noqa: BLE001 (whatever the file raised is the user's to fix)
    _fail(_config_file_error(argv, e))
  return rest


def _stop(stop) -> None:
  """A run stopped by SIGTERM/SIGINT (`interrupts.Interrupted`): one line, exit 128 + signal."""
  lead = "\n" if sys.stderr.isatty() else ""  # after a progress bar or the terminal's ^C
  print(f"{lead}{stop.message()}", file=sys.stderr, flush=True)
  sys.exit(stop.exit_code)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]} (flags are --name=value)")
  interrupts.install()  # (done first under `python -m mtljax.main`; here for other callers)
  # Imported here so that `--help` and flag errors are fast and jax sees XLA_FLAGS set by users.
  from mtljax import train  # noqa: F401 (jax and the library; the start-up phase)

  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_QuietOsFaults())
  sys.unraisablehook = _quiet_closed_loops
  config, workdir, mode = _CONFIG.value, os.path.abspath(_WORKDIR.value), _MODE.value
  interrupts.point("main.start")
  try:
    _run(config, workdir, mode)
    # A signal after the run's last check (its files all written) is still honoured.
    interrupts.check(collective=False)
  except interrupts.Interrupted as stop:
    _stop(stop)
  except Exception as e:
    # A full disk, a read-only or forbidden path: the user's to fix, wherever it surfaced
    # (an orbax/TensorStore error wraps the OSError or only quotes it).
    message = errors.os_error_message(e, workdir)
    if message is None:
      raise
    _fail(message, now=True)


def _run(config, workdir: str, mode: str) -> None:
  from mtljax import configlib, parallel, train
  from mtljax import workdir as workdir_lib
  from mtljax.analysis import AnalysisError
  from mtljax.checkpoint import CheckpointMismatchError
  from mtljax.data.source import DataError

  interrupts.check(collective=False)  # a signal during the start-up
  # Nothing is written in the workdir before these checks and the lock.
  try:
    if mode == "train":
      if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise workdir_lib.WorkdirError(f"--workdir={workdir} is a file, not a directory")
    else:
      section = {"explain": "explain", "predict": "predict", "export": "predict"}.get(mode)
      which = config.get(section, {}).get("checkpoint", "best") if section else "best"
      workdir_lib.check_trained(workdir, mode, which if which in ("best", "latest") else "best")
  except workdir_lib.WorkdirError as e:
    _fail(e)
  parallel.initialize_distributed(
    _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_DISTRIBUTED.value
  )
  interrupts.install()  # again: jax.distributed replaces SIGTERM's handler by XLA's notifier
  interrupts.set_phase("set-up")
  try:
    # The whole config, every problem at once, before anything is written to the workdir; the
    # run's set-up then checks only what needs the data (its fields). (analyze reads files only.)
    if mode != "analyze":  # (predict and export need the workdir, not the training data)
      configlib.check(config, data_paths=mode not in ("predict", "export"))
    before = workdir_lib.entries(workdir)  # what a failed first run leaves as it was
    if mode == "train":
      try:
        os.makedirs(workdir, exist_ok=True)
      except OSError as e:
        raise workdir_lib.WorkdirError(f"--workdir={workdir}: cannot create it ({e})") from e
    with (
      workdir_lib.locked(workdir, break_lock=_BREAK_LOCK.value) as lock,
      workdir_lib.cleaned_if_failed(workdir, before, lock if mode == "train" else None),
    ):
      interrupts.check()  # between phases: before the run reads or writes anything
      interrupts.set_phase({"train": "set-up", "eval": "evaluation"}.get(mode, mode))
      if mode == "train":
        train.train_and_evaluate(
          config, workdir, allow_config_change=_ALLOW_CHANGE.value, checked=True
        )
      elif mode == "eval":
        train.evaluate_workdir(config, workdir, checked=True)
      elif mode == "analyze":  # reads the workdir's files only; no model, no data
        from mtljax.analysis import report

        report.analyze_workdir(config, workdir)
      elif mode in ("predict", "export"):
        from mtljax.predict import export, run

        (run.predict_workdir if mode == "predict" else export.export_workdir)(
          config, workdir, checked=True
        )
      else:
        from mtljax.explain import run as explain_run

        explain_run.explain_workdir(config, workdir, checked=True)
  except (
    configlib.ConfigError,
    DataError,
    CheckpointMismatchError,
    train.NonFiniteLossError,
    AnalysisError,
    workdir_lib.WorkdirError,
  ) as e:
    _fail(e)


if __name__ == "__main__":
  # First of all: from here on SIGTERM/SIGINT only set a flag (mtljax/interrupts.py).
  interrupts.install()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main, flags_parser=_parse_flags)
