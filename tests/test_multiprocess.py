"""Several local processes on 127.0.0.1 (jax.distributed, gloo collectives on CPU) train exactly
like one process with the same global batch; checkpoints move between process counts; SIGTERM
to all processes then a rerun finishes with the same metrics. Processes are bounded in time and
always cleaned up."""

import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from helpers.commands import main_command

from mtljax.writers import TIMING_FIELDS, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = (
  "--config.train.schedule=constant",
  "--config.train.checkpoint_every_steps=3",
  "--config.train.log_every_steps=3",
)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(n, workdir, root, *overrides):
  port = _free_port()
  procs = []
  for i in range(n):
    cmd = main_command(workdir, f"--config.data.root={root}", *ARGS, *overrides)
    if n > 1:
      cmd += [
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={n}",
        f"--process_id={i}",
      ]
    log = open(os.path.join(str(workdir) + f".proc{i}.log"), "w")
    procs.append(
      subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        start_new_session=True,
      )
    )
  return procs


def _wait(procs, workdir, timeout=420):
  deadline = time.time() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(1, deadline - time.time()))
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  codes = [p.returncode for p in procs]
  return codes, "".join(open(str(workdir) + f".proc{i}.log").read() for i in range(len(procs)))


def _summary(logs):
  """The first error lines (the cause: later ones are usually the other processes' fallout)
  and the end of the logs, for an assertion message."""
  text = logs
  errors = [
    l for l in text.splitlines() if l.startswith(("E1", "E0", "Traceback")) or "Error" in l
  ][:20]
  return "\n".join(errors) + "\n...\n" + text[-3000:]


def _run(n, workdir, root, *overrides):
  codes, logs = _wait(_launch(n, workdir, root, *overrides), workdir)
  assert codes == [0] * n, _summary(logs)
  return logs


def _close(actual, desired, key, msg):
  """Metrics agree to float reduction-order noise. R² is compared as 1 − R² (= SS_res / SS_tot,
  what is computed): an R² near 0 would turn a 1e-5 relative difference into a failure."""
  if key.endswith("/r2"):
    actual, desired = 1.0 - np.asarray(actual), 1.0 - np.asarray(desired)
  np.testing.assert_allclose(actual, desired, rtol=2e-4, atol=1e-5, err_msg=msg)


def _assert_same_run(ref_dir, other_dir):
  # Training and per-epoch validation records (a staged run also evaluates its best checkpoint
  # at the end of each stage: `*_best` records; the final ones are compared below).
  trajectory = lambda d: [r for r in read_metrics(str(d)) if not r["split"].endswith("_best")]
  a, b = trajectory(ref_dir), trajectory(other_dir)
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  for ra, rb in zip(a, b):
    for k, v in ra.items():
      if k in TIMING_FIELDS or k == "split":
        continue
      _close(rb[k], v, k, f"{ra['step']} {k}")
  fa = json.loads((ref_dir / "final_metrics.json").read_text())
  fb = json.loads((other_dir / "final_metrics.json").read_text())
  assert fa["best_epoch"] == fb["best_epoch"]
  for split in ("val", "test"):
    for k, v in fa[split].items():
      _close(fb[split][k], v, k, f"{split} {k}")


@pytest.fixture(scope="module")
def reference(tiny_treesat_root, tmp_path_factory):
  """One process, 3 epochs: the trajectory every multi-process run must reproduce."""
  work = tmp_path_factory.mktemp("mp") / "ref"
  _run(1, work, tiny_treesat_root, "--config.train.num_epochs=3")
  return work


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_n_processes_match_one(reference, tiny_treesat_root, tmp_path, n):
  work = tmp_path / f"p{n}"
  logs = _run(n, work, tiny_treesat_root, "--config.train.num_epochs=3")
  _assert_same_run(reference, work)
  # Only process 0 writes the run's files and prints the summary.
  assert logs.count("Done. Best epoch") == 1
  assert len(os.listdir(work / "predictions" / "test")) == 3


@pytest.mark.slow
def test_sigterm_all_then_resume_on_2_then_on_1(reference, tiny_treesat_root, tmp_path):
  work = tmp_path / "pre"
  procs = _launch(2, work, tiny_treesat_root, "--config.train.num_epochs=3")
  folder = work / "checkpoints" / "latest"
  deadline = time.time() + 300
  while time.time() < deadline and not (
    folder.is_dir() and any(d.isdigit() and int(d) >= 4 for d in os.listdir(folder))
  ):
    assert all(p.poll() is None for p in procs), _summary(_wait(procs, work)[1])
    time.sleep(0.2)
  for p in procs:  # pre-emption: every process gets the signal, as from a cluster scheduler
    p.send_signal(signal.SIGTERM)
  codes, logs = _wait(procs, work)
  assert codes == [143, 143], _summary(logs)
  assert "stopped by SIGTERM at step" in logs
  # Resume on 2 processes for the second epoch, then finish on 1 process: a checkpoint written
  # by 2 processes is restored by 2 and by 1.
  logs = _run(2, work, tiny_treesat_root, "--config.train.num_epochs=2", "--allow_config_change")
  assert "Resuming from" in logs
  logs = _run(1, work, tiny_treesat_root, "--config.train.num_epochs=3", "--allow_config_change")
  assert "Resuming from" in logs and "epoch 2 of 3 done" in logs
  _assert_same_run(reference, work)
