"""The workdir lock (mtljax/workdir.py) and resuming with a changed config: a
second run on a busy workdir is refused with the holder named and the first is
unharmed; stale locks are taken over; a resume that changes the run is refused unless
--allow_config_change, which records the change."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mtljax import workdir as workdir_lib
from mtljax.writers import TIMING_FIELDS
from tests.test_cli_errors import ROOT, cli, error_line, snapshot


def _write_lock(folder, **info):
  holder = {"pid": 1, "host": socket.gethostname(), "started": "then", "command": "old run"}
  holder.update(info)
  (folder / ".lock").write_text(json.dumps(holder))


def _dead_pid():
  p = subprocess.Popen([sys.executable, "-c", "pass"])
  p.wait()
  return p.pid


def test_lock_is_exclusive_and_released(tmp_path):
  first = workdir_lib.WorkdirLock(tmp_path, "first run").acquire()
  holder = json.loads((tmp_path / ".lock").read_text())
  assert holder["pid"] == os.getpid() and holder["command"] == "first run"
  mtime = os.stat(tmp_path).st_mtime_ns
  with pytest.raises(workdir_lib.WorkdirError, match=f"pid {os.getpid()} on host .*first run"):
    workdir_lib.WorkdirLock(tmp_path, "second run").acquire()
  assert os.stat(tmp_path).st_mtime_ns == mtime  # the refused run wrote nothing, not even a tmp
  first.release()
  assert not (tmp_path / ".lock").exists()
  workdir_lib.WorkdirLock(tmp_path, "second run").acquire().release()
  assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_note(tmp_path, capsys):
  pid = _dead_pid()
  _write_lock(tmp_path, pid=pid)
  lock = workdir_lib.WorkdirLock(tmp_path).acquire()
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "stale lock" in err[0] and f"pid {pid}" in err[0], err
  assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  lock.release()


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
  _write_lock(tmp_path, pid=os.getpid(), proc_start="1")  # our pid, but another process's start
  workdir_lib.WorkdirLock(tmp_path).acquire().release()


def test_lock_from_another_host_needs_break_lock(tmp_path, capsys):
  _write_lock(tmp_path, host="node-17", pid=os.getpid())
  with pytest.raises(workdir_lib.WorkdirError, match="another host: pid .* on host node-17.*"):
    workdir_lib.WorkdirLock(tmp_path).acquire()
  assert json.loads((tmp_path / ".lock").read_text())["host"] == "node-17"  # left alone
  workdir_lib.WorkdirLock(tmp_path, break_lock=True).acquire().release()
  assert "node-17" in capsys.readouterr().err


def test_release_leaves_another_runs_lock_alone(tmp_path):
  lock = workdir_lib.WorkdirLock(tmp_path).acquire()
  _write_lock(tmp_path, pid=12345, command="someone else")  # e.g. after a --break_lock
  lock.release()
  assert json.loads((tmp_path / ".lock").read_text())["command"] == "someone else"


def test_sigterm_releases_the_lock(tmp_path):
  # SIGTERM as a fresh shell would start it (default, unblocked): an ignored or blocked SIGTERM
  # can be inherited from the test runner's process, and then neither kills nor is handled.
  # The body sleeps in short steps, as a training loop returns to Python between steps: once
  # JAX's backend threads exist the kernel may deliver the signal to one of them, and Python
  # then runs the handler only when the main thread next runs bytecode (one long sleep would
  # hold it for the whole sleep).
  code = (
    "import signal, sys, time\nfrom mtljax import workdir\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])\n"
    "with workdir.locked(sys.argv[1]):\n  print('locked', flush=True)\n"
    "  for _ in range(1200):\n    time.sleep(0.1)\n"
  )
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  p = subprocess.Popen(
    [sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
  )
  try:
    assert p.stdout.readline().strip() == "locked"
    assert (tmp_path / ".lock").exists()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 143
  finally:
    p.kill()
  assert not (tmp_path / ".lock").exists()


# ---------------------------------------------------------------------------- end to end (CLI)
ARGS = ("--config.train.num_epochs=2",)


@pytest.fixture(scope="module")
def solo(tiny_treesat_root, tmp_path_factory):
  """An uninterrupted 2-epoch run: (workdir, its final metrics)."""
  w = tmp_path_factory.mktemp("solo")
  res = cli(w, *ARGS, root=tiny_treesat_root)
  assert res.returncode == 0, res.stdout + res.stderr
  return w, json.loads((w / "final_metrics.json").read_text())


@pytest.mark.slow
def test_two_concurrent_runs_second_refused_first_unharmed(solo, tiny_treesat_root, tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "mtljax.main",
    "--config=configs/treesat.py:tiny",
    f"--workdir={tmp_path}",
    f"--config.data.root={tiny_treesat_root}",
    *ARGS,
  ]
  first = subprocess.Popen(
    cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  try:
    deadline = time.time() + 120
    while not (tmp_path / ".lock").exists():
      assert first.poll() is None and time.time() < deadline, "the first run never took the lock"
      time.sleep(0.2)
    before = snapshot(tmp_path)
    t0 = time.time()
    second = cli(tmp_path, *ARGS, root=tiny_treesat_root)
    took = time.time() - t0
    out, _ = first.communicate(timeout=600)
  finally:
    first.kill()
  line = error_line(second)
  assert f"pid {first.pid}" in line and "in use by another run" in line, line
  assert took < 60, took  # refused at once, not after a set-up or an epoch
  assert first.returncode == 0, out
  # The first run is unharmed: what it had written then was not touched by the second (only the
  # first run's own files grew since), and it ends as a solo run does.
  after = snapshot(tmp_path)
  assert set(before) <= set(after) | {".lock"}
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert final == solo[1]
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(s) for s in lines]  # no torn or interleaved line
  assert len(set(lines)) == len(lines), "duplicate lines in metrics.jsonl"
  assert [r["step"] for r in records] == sorted(r["step"] for r in records)
  solo_records = [json.loads(s) for s in (solo[0] / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["split"]) for r in records] == [
    (r["step"], r["split"]) for r in solo_records
  ]
  for r, q in zip(records, solo_records):  # the same numbers, timing aside
    assert {k: v for k, v in r.items() if k not in TIMING_FIELDS} == pytest.approx(
      {k: v for k, v in q.items() if k not in TIMING_FIELDS}
    )
  assert not (tmp_path / ".lock").exists()

  # A lock left by a dead process (kill -9) is taken over with a one-line note.
  _write_lock(tmp_path, pid=_dead_pid())
  rerun = cli(tmp_path, *ARGS, root=tiny_treesat_root)
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  assert "note: taking over the stale lock" in rerun.stderr
  assert not (tmp_path / ".lock").exists()


@pytest.mark.slow
def test_resume_with_a_changed_run_is_refused_unless_allowed(solo, tiny_treesat_root, tmp_path):
  w = solo[0]
  recorded = json.loads((w / "config.json").read_text())
  before = snapshot(w)
  changed = ("--config.train.num_epochs=3", "--config.train.learning_rate=0.5")
  line = error_line(cli(w, *changed, root=tiny_treesat_root))
  assert "train.num_epochs (2 -> 3)" in line and "train.learning_rate" in line, line
  assert "--allow_config_change" in line, line
  assert snapshot(w) == before  # nothing written, nothing lost

  # Harmless keys may change (logging frequency, eval batch size).
  res = cli(
    w,
    *ARGS,
    "--config.train.log_every_steps=5",
    "--config.eval.batch_size=8",
    root=tiny_treesat_root,
  )
  assert res.returncode == 0, res.stdout + res.stderr
  assert not (w / "config_changes.jsonl").exists()

  # Allowed: continues from the last checkpoint with the new values, recorded with the step.
  res = cli(w, *changed, "--allow_config_change", root=tiny_treesat_root)
  assert res.returncode == 0, res.stdout + res.stderr
  config = json.loads((w / "config.json").read_text())
  assert config["train"]["num_epochs"] == 3 and config["train"]["learning_rate"] == 0.5
  (change,) = [json.loads(s) for s in (w / "config_changes.jsonl").read_text().splitlines()]
  assert change["step"] == recorded["train"]["num_epochs"] * 12  # 192 examples / batch 16
  assert change["changes"]["train.num_epochs"] == {"recorded": 2, "now": 3}
  assert set(change["changes"]) == {"train.num_epochs", "train.learning_rate"}
  assert json.loads((w / "final_metrics.json").read_text())["best_epoch"] in (1, 2, 3)


def test_a_failed_first_run_leaves_no_config_json(tiny_treesat_root, tmp_path):
  error_line(cli(tmp_path, "--config.train.batch_size=1000", root=tiny_treesat_root))
  assert not (tmp_path / "config.json").exists()
