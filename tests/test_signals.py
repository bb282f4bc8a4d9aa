"""SIGTERM and SIGINT at every phase of a run (mtljax/interrupts.py): exit 143/130 with one line on
stderr, no traceback and no crash, the lock released, and a rerun that ends with the same files as
an uninterrupted run.

The run sends itself the signal at a named point (`MTLJAX_SIGNAL_AT=point[@N]:TERM|INT`), and once
the test sends a real SIGTERM while the first train step compiles. Every stop is a step of one
workdir's life, so that the last rerun checks them all together against one uninterrupted run; the
runs after the first share a JAX compilation cache (each then costs seconds)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.commands import main_command, stderr_lines

from mtljax import interrupts
from mtljax.writers import TIMING_FIELDS, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One epoch of 12 steps, a train record every 2 steps, a mid-epoch checkpoint every 4.
ARGS = (
  "--config.train.num_epochs=1",
  "--config.train.log_every_steps=2",
  "--config.train.checkpoint_every_steps=4",
)


def _env(cache=None, signal_at=None):
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  env.pop(interrupts.ENV, None)
  if signal_at:
    env[interrupts.ENV] = signal_at
  if cache:  # every executable cached, however fast it compiled
    env.update(
      JAX_COMPILATION_CACHE_DIR=cache,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
  return env


def _cmd(workdir, root):
  return main_command(workdir, f"--config.data.root={root}", *ARGS)


def _run(workdir, root, cache, signal_at=None):
  return subprocess.run(
    _cmd(workdir, root),
    cwd=ROOT,
    env=_env(cache, signal_at),
    capture_output=True,
    text=True,
    timeout=300,
  )


def _assert_stopped(returncode, stdout, stderr, workdir, code, note):
  assert "Traceback" not in stderr and "Fatal Python error" not in stderr, stderr[-3000:]
  assert returncode == code, (returncode, stdout[-2000:], stderr[-3000:])
  lines = stderr_lines(stderr)
  assert len(lines) == 1 and lines[0].startswith(note), lines
  assert not os.path.exists(os.path.join(workdir, ".lock"))  # released
  return lines[0]


def _latest_steps(workdir):
  folder = os.path.join(workdir, "checkpoints", "latest")
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def _strip(records):
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


@pytest.mark.slow
def test_signals_at_every_phase_then_resume_matches_uninterrupted(tiny_treesat_root, tmp_path):
  root, cache, work = tiny_treesat_root, str(tmp_path / "jax_cache"), tmp_path / "work"
  latest = os.path.join(work, "checkpoints", "latest")

  # Start-up: nothing written, nothing to save.
  res = _run(work, root, cache, "main.start:INT")
  _assert_stopped(res.returncode, res.stdout, res.stderr, work, 130, "stopped by SIGINT during")
  assert "during start-up" in res.stderr

  # A real SIGTERM from outside while the first train step compiles (the cache is still empty: a
  # real compile; a handler that raised inside it used to crash the interpreter). The run
  # finishes that step and saves it.
  proc = subprocess.Popen(
    _cmd(work, root),
    cwd=ROOT,
    env=_env(cache),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    for line in proc.stdout:
      if line.startswith("Model:"):  # printed just before the train step is compiled
        break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
  finally:
    proc.kill()
  line = _assert_stopped(proc.returncode, out, err, work, 143, "stopped by SIGTERM")
  assert line == (
    f"stopped by SIGTERM at step 1; checkpoint saved in {latest}; rerun the same command to resume"
  )
  assert _latest_steps(work) == [1]

  # The uninterrupted run (its train step from the cache).
  ref = tmp_path / "reference"
  res = _run(ref, root, cache)
  assert res.returncode == 0, res.stderr[-3000:]

  # Mid-epoch, while the save of step 4 is being written (asynchronously): the next step is
  # saved too, once that save is complete.
  res = _run(work, root, cache, "train.saving:TERM")
  line = _assert_stopped(res.returncode, res.stdout, res.stderr, work, 143, "stopped by SIGTERM")
  assert line.startswith("stopped by SIGTERM at step 5;") and _latest_steps(work) == [4, 5]
  assert "Resuming from" in res.stdout and "at step 1 " in res.stdout

  # During the epoch-end evaluation (the test predictions' first batch, after the validation
  # record was written): the epoch's last step is saved, its validation left to the rerun.
  res = _run(work, root, cache, "eval.batch@2:INT")
  line = _assert_stopped(res.returncode, res.stdout, res.stderr, work, 130, "stopped by SIGINT")
  assert line.startswith("stopped by SIGINT at step 12;")
  assert [r["split"] for r in read_metrics(str(work))][-1] == "train"

  # During the final test: trained and saved, nothing more to save.
  res = _run(work, root, cache, "final.test:TERM")
  line = _assert_stopped(res.returncode, res.stdout, res.stderr, work, 143, "stopped by SIGTERM")
  assert line == "stopped by SIGTERM during final test"
  assert not (work / "final_metrics.json").exists()

  res = _run(work, root, cache)
  assert res.returncode == 0, res.stderr[-3000:]
  final, final_ref = (json.loads((w / "final_metrics.json").read_text()) for w in (work, ref))
  assert final["best_epoch"] == final_ref["best_epoch"] == 1
  for split in ("val", "test"):
    for k, v in final_ref[split].items():
      np.testing.assert_allclose(final[split][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
  got, want = _strip(read_metrics(str(work))), _strip(read_metrics(str(ref)))
  assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
  for a, b in zip(got, want):
    assert a.keys() == b.keys()
    keys = [k for k in a if k != "split"]
    np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys], rtol=1e-5, atol=1e-6)


def test_stderr_lines_leave_out_progress_bars():
  err = (
    "epoch 1/1:   0%|          | 0/12 [00:00<?, ?it/s]\repoch 1/1:  25%|██▌       | 3/12 "
    "[00:28<01:25,  9.46s/it]\nval 1: 0it [00:00, ?it/s]\n"
    "stopped by SIGTERM at step 3; checkpoint saved in /w; rerun the same command to resume\n"
  )
  assert stderr_lines(err) == [
    "stopped by SIGTERM at step 3; checkpoint saved in /w; rerun the same command to resume"
  ]


def test_a_second_signal_exits_at_once(tmp_path):
  """The first signal only sets the flag; a second one while stopping exits with its code and a
  note, even while the main thread is busy outside Python bytecode (a long sleep here)."""
  code = (
    "import os, signal, time\nfrom mtljax import interrupts\ninterrupts.install()\n"
    "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.2)\n"
    "print('flag', interrupts.received(), flush=True)\n"
    "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\nprint('not reached')\n"
  )
  t0 = time.time()
  res = subprocess.run(
    [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
  )
  assert res.returncode == 130, res.stderr
  assert res.stdout.split() == ["flag", str(int(signal.SIGTERM))]
  assert time.time() - t0 < 20
  assert stderr_lines(res.stderr) == ["note: second SIGINT while stopping: exiting at once"]


def test_a_forked_childs_signal_is_not_a_second_one_here():
  """A Ctrl-C reaches the forked input workers too; their signals must not reach this process's
  watcher (which would take the parent's own, first, SIGINT for a second one and exit at once)."""
  code = (
    "import os, signal, time\nfrom mtljax import interrupts\ninterrupts.install()\n"
    "pid = os.fork()\n"
    "if pid == 0:\n  os.kill(os.getpid(), signal.SIGINT)\n  time.sleep(0.2)\n  os._exit(0)\n"
    "os.waitpid(pid, 0)\ntime.sleep(0.2)\nassert interrupts.received() is None\n"
    "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.2)\n"
    "print('stopping on', interrupts.received(), flush=True)\n"
  )
  res = subprocess.run(
    [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
  )
  assert res.returncode == 0, res.stderr
  assert res.stdout.split() == ["stopping", "on", str(int(signal.SIGINT))]
