"""The workdir lock and the checks a workdir must pass before a run touches it.

One run at a time per workdir: `locked(workdir, ...)` holds `<workdir>/.lock` for the life of a
train/eval/explain/analyze run (`mtljax/main.py` takes it before anything is read or written).
The lock file is created atomically with its content (written to a temporary file, then hard
linked to `.lock`, which fails if it exists) and holds JSON: the holder's pid, host, process start
time (Linux `/proc`, so a reused pid is not mistaken for the holder), start date and command.

A lock whose holder is gone is taken over with a one-line note on stderr: on the same host, a pid
that no longer runs (or runs a different process). A lock held from another host cannot be checked
from here: the run is refused, naming the holder, unless `--break_lock` says that holder is dead.
The lock is released when the run ends, also on an exception, Ctrl-C or SIGTERM (exit 130/143:
mtljax/interrupts.py stops the run at a safe point, which unwinds through `locked`). A `kill -9`
leaves the file behind; the next run sees its dead pid and takes it over.

Many processes (multi-host): only process 0 takes the lock; it tells every process whether it got
it, so that all of them stop with exit 2 when the workdir is busy (none is left waiting in a
collective).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import sys
import tempfile

LOCK_NAME = ".lock"


class WorkdirError(Exception):
  """A workdir that cannot be used for this run (busy, a file, not trained yet); a user error."""


def _proc_start(pid: int) -> str | None:
  """The start time of `pid` in clock ticks since boot (Linux), else None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(holder: dict) -> bool:
  """Whether the holder (a process of this host) still runs."""
  try:
    pid = int(holder.get("pid", -1))
  except (TypeError, ValueError):
    return False
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  recorded, now = holder.get("proc_start"), _proc_start(pid)
  return recorded is None or now is None or recorded == now  # else: the pid was reused


def describe(holder: dict) -> str:
  return (
    f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
    f"{holder.get('started', '?')} ({holder.get('command', '?')})"
  )


def read_lock(workdir: str) -> dict | None:
  """The holder recorded in `<workdir>/.lock`, {} if unreadable, None if there is no lock."""
  try:
    with open(os.path.join(workdir, LOCK_NAME)) as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) else {}
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}


class WorkdirLock:
  """`<workdir>/.lock`, held by this process; `release()` removes it if it is still ours."""

  def __init__(self, workdir: str, command: str | None = None, *, break_lock: bool = False):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.info = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "proc_start": _proc_start(os.getpid()),
      "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "command": command if command is not None else " ".join(sys.argv),
    }
    self.break_lock = break_lock
    self.held = False

  def _try_create(self) -> bool:
    try:
      fd, tmp = tempfile.mkstemp(prefix=".lock.", dir=self.workdir)
    except OSError as e:  # a read-only or full workdir: named by the lock, not the temporary file
      raise OSError(e.errno, e.strerror, self.path) from e
    try:
      with os.fdopen(fd, "w") as f:
        json.dump(self.info, f)
      try:
        os.link(tmp, self.path)  # atomic, fails if the lock exists; the lock is never half-written
        return True
      except FileExistsError:
        return False
    finally:
      os.unlink(tmp)

  def acquire(self) -> WorkdirLock:
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise WorkdirError(f"--workdir={self.workdir} is a file, not a directory")
    for _ in range(3):
      holder = read_lock(self.workdir)  # looked at first: a refused run writes nothing there
      if holder is None:
        if self._try_create():
          self.held = True
          return self
        holder = read_lock(self.workdir)
        if holder is None:  # released between our attempt and the read: try again
          continue
      same_host = holder.get("host") == self.info["host"]
      if same_host and _alive(holder):
        raise WorkdirError(
          f"{self.workdir} is in use by another run: {describe(holder)}; wait for it to finish "
          f"or use another --workdir (lock file {self.path})"
        )
      if holder and not same_host and not self.break_lock:
        raise WorkdirError(
          f"{self.workdir} is in use by a run on another host: {describe(holder)}; if that run "
          f"is dead, rerun with --break_lock (lock file {self.path})"
        )
      why = "no longer running" if holder else "unreadable"
      print(
        f"note: taking over the stale lock {self.path} of {describe(holder)} ({why})",
        file=sys.stderr,
        flush=True,
      )
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.path)
    raise WorkdirError(f"could not take the lock {self.path}; another run keeps taking it")

  def release(self) -> None:
    if self.held and (read_lock(self.workdir) or {}).get("pid") == self.info["pid"]:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.path)
    self.held = False


def _sigterm_exit(signum, frame):
  del frame
  raise SystemExit(128 + signum)


@contextlib.contextmanager
def locked(workdir: str, command: str | None = None, *, break_lock: bool = False):
  """Hold the workdir lock (process 0) for the body; every process raises `WorkdirError` if
  process 0 could not take it. SIGTERM, when it would otherwise kill the process outright, exits
  with 143 through the body's `finally` clauses: a fallback for library callers of pure Python
  bodies. `mtljax.main` installs flag-only handlers first (mtljax/interrupts.py; raising from a
  handler inside a C++ call such as XLA's compile crashes the interpreter), so this one is unused
  there."""
  import jax
  import numpy as np

  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = WorkdirLock(workdir, command, break_lock=break_lock).acquire()
    except WorkdirError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      error = WorkdirError(f"{os.path.abspath(workdir)} is in use by another run (see process 0)")
  if error is not None:
    raise error
  previous = None
  with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
      previous = signal.signal(signal.SIGTERM, _sigterm_exit)
  try:
    yield lock
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
    if lock is not None:
      lock.release()


def check_trained(workdir: str, mode: str, checkpoint: str = "best") -> None:
  """`--mode=eval|explain|analyze` need a trained workdir: refuse a missing or empty one before
  anything (the synthetic dataset, a lock) is written there."""
  workdir = os.path.abspath(workdir)
  if not os.path.exists(workdir):
    raise WorkdirError(f"--mode={mode}: {workdir} does not exist; train first (--mode=train)")
  if not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory")
  if mode == "analyze":
    if not os.path.isdir(os.path.join(workdir, "predictions")):
      raise WorkdirError(
        f"--mode=analyze: {workdir} has no predictions/ to analyze; train first (--mode=train)"
      )
    return
  folder = os.path.join(workdir, "checkpoints", checkpoint)
  if not os.path.isdir(folder) or not os.listdir(folder):
    raise WorkdirError(
      f"--mode={mode}: {workdir} has no checkpoints/{checkpoint}; train first (--mode=train)"
    )


def entries(workdir: str) -> frozenset[str] | None:
  """The names in `workdir` now (None if it does not exist): what `cleaned_if_failed` keeps."""
  try:
    return frozenset(os.listdir(workdir))
  except (FileNotFoundError, NotADirectoryError):
    return None


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a saved checkpoint (a step folder under checkpoints/latest or best;
  orbax's unfinished `<step>.orbax-checkpoint-tmp-*` folders do not count)."""
  for which in ("latest", "best"):
    folder = os.path.join(workdir, "checkpoints", which)
    with contextlib.suppress(OSError):
      if any(n.isdigit() for n in os.listdir(folder)):
        return True
  return False


@contextlib.contextmanager
def cleaned_if_failed(workdir: str, before: frozenset[str] | None, lock: WorkdirLock | None):
  """A training run that fails before its first checkpoint leaves nothing behind.

  A first run that stops on a mistake (config, data, a diverging loss) or any other exception
  would otherwise leave `config.json`, `normalization.json`, `tensorboard/` or the synthetic
  dataset in the workdir: a stray folder that looks like a run, and whose files the next attempt
  has to work around. On an exception in the body, when no checkpoint exists, this removes what
  the run added: every entry of `workdir` not in `before` (`entries(workdir)` taken before the
  run created anything), and the workdir itself if `before` is None (it did not exist). Nothing
  that existed before is removed, and nothing at all once a checkpoint exists (a resumable run).

  `lock`: the workdir lock this process holds (None: another process of a multi-host run, which
  removes nothing). The workdir is removed only after the lock is released, with `os.rmdir`, which
  fails harmlessly if another run took the lock in the meantime.
  """
  try:
    yield
  except BaseException:
    if lock is not None and not has_checkpoint(workdir):
      import shutil

      for name in set(entries(workdir) or ()) - set(before or ()) - {LOCK_NAME}:
        path = os.path.join(workdir, name)
        with contextlib.suppress(OSError):
          if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
          else:
            os.unlink(path)
      if before is None:
        lock.release()
        with contextlib.suppress(OSError):
          os.rmdir(workdir)
    raise
