"""SIGTERM and SIGINT at any moment: the handlers only set a flag; the run stops at a safe point.

A handler that raises (SystemExit, KeyboardInterrupt) runs at whatever bytecode the main thread is
at, which may be a Python callback inside a C++ call such as XLA's compile: the exception then
unwinds through C++ frames and the interpreter dies (`Fatal Python error: Segmentation fault`).
So `install()` (mtljax/main.py, before anything else runs) sets handlers that only record the
signal and the phase the run was in; the code calls `check()` at safe points (each train step,
each eval and explain batch, between phases), which raises `Interrupted`. The train loop saves
`latest/` at the current step when it holds a state newer than its last checkpoint; main.py turns
the exception into one line on stderr and exit status 128 + signal (143 SIGTERM, 130 SIGINT).

A second SIGTERM/SIGINT while stopping exits at once (`os._exit`, one line of note): a user who
really wants out is not kept waiting for a checkpoint. It is seen by a thread reading the signal
wake-up pipe, so it works even while the main thread is inside a long C++ call (a compile).

`MTLJAX_SIGNAL_AT="name[@N]:TERM"` (or `:INT`; several, comma-separated) makes the process send
itself that signal at the N-th pass through `point(name)` (the first without `@N`), beside the
kill points of mtljax/faults.py: the tests stop a run at a chosen phase this way (`POINTS`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from mtljax import faults

ENV = "MTLJAX_SIGNAL_AT"

POINTS = (
  "main.start",  # main.py, after the imports, before the config checks
  "train.compile",  # just before the first train step of this process (its compile)
  "train.step",  # after each train step (with @N: at a chosen step)
  "train.saving",  # a mid-epoch save of latest/ started, still being written (asynchronous)
  "eval.batch",  # before each evaluation batch (epoch-end validation, the final test, eval)
  "final.test",  # training done, before the final test of the best checkpoint
  "explain.batch",  # before each batch of attribution calls
)

_SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT}


class Interrupted(BaseException):
  """The run was asked to stop by `signum`. A BaseException, like KeyboardInterrupt: no `except
  Exception` on the way up may swallow it. `step`/`checkpoint`: where the train loop saved."""

  def __init__(self, signum: int, phase: str, step: int | None = None, checkpoint: str = ""):
    super().__init__(signum, phase, step, checkpoint)
    self.signum, self.phase, self.step, self.checkpoint = signum, phase, step, checkpoint

  @property
  def exit_code(self) -> int:
    return 128 + self.signum

  def message(self) -> str:
    name = signal.Signals(self.signum).name
    if self.checkpoint:
      return (
        f"stopped by {name} at step {self.step}; checkpoint saved in {self.checkpoint}; rerun "
        "the same command to resume"
      )
    return f"stopped by {name} during {self.phase}"


_lock = threading.Lock()
_received: int | None = None  # the first signal's number
_phase_at_signal = ""
_phase = "start-up"
_installed = False


def set_phase(name: str) -> None:
  """What the run does now (`stopped by ... during <phase>`)."""
  global _phase
  _phase = name


def phase() -> str:
  return _phase


def _record(signum: int) -> bool:
  """Records the first signal; True when one was already recorded (this is a second)."""
  global _received, _phase_at_signal
  with _lock:
    if _received is None:
      _received, _phase_at_signal = signum, _phase
      return False
    return True


def _handler(signum, frame):
  del frame
  _record(signum)  # a second one is the watcher thread's to act on


def _exit_now(signum: int) -> None:
  name = signal.Signals(signum).name
  os.write(2, f"\nnote: second {name} while stopping: exiting at once\n".encode())
  os._exit(128 + signum)


def _watch(fd: int) -> None:
  """Reads the numbers the C-level handler writes to the wake-up pipe, as each signal arrives
  (the Python handler may wait for the main thread to leave a C++ call)."""
  seen = 0
  while True:
    try:
      data = os.read(fd, 64)
    except InterruptedError:
      continue
    except OSError:
      return
    if not data:
      return
    for signum in data:
      if signum in (signal.SIGTERM, signal.SIGINT):
        seen += 1
        if seen == 1:
          _record(signum)
        else:
          _exit_now(signum)


def install() -> None:
  """Flag-only SIGTERM/SIGINT handlers and the watcher of a second signal, from the main thread
  (elsewhere: a no-op, the signals keep their handlers). Called again after anything that sets
  its own handler (`jax.distributed.initialize` installs XLA's SIGTERM pre-emption notifier),
  it sets the handlers again; the watcher is started once."""
  global _installed
  if threading.current_thread() is not threading.main_thread():
    return
  signal.signal(signal.SIGTERM, _handler)
  signal.signal(signal.SIGINT, _handler)
  # A shell may start a job with SIGTERM/SIGINT blocked; this process wants them.
  signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
  if _installed:
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  threading.Thread(target=_watch, args=(read_fd,), name="mtljax-signals", daemon=True).start()

  def forget_in_child():
    # A forked child (e.g. an input worker) must not write its own signals into this process's
    # pipe: a Ctrl-C reaches the whole process group, and would count as a second signal here.
    try:
      signal.set_wakeup_fd(-1)
    except ValueError:
      pass
    for fd in (read_fd, write_fd):
      try:
        os.close(fd)
      except OSError:
        pass

  os.register_at_fork(after_in_child=forget_in_child)
  _installed = True


def received() -> int | None:
  """The number of the signal this process received, None if none."""
  return _received


def agreed() -> int:
  """The signal any process of the run received (0: none). On many processes (`jax.distributed`)
  a collective: every process calls it at the same point, so that all stop at the same step (orbax
  saves collectively) and none is left waiting in a collective."""
  mine = _received or 0
  import jax

  if jax.process_count() == 1:
    return mine
  import numpy as np
  from jax.experimental import multihost_utils

  return int(np.max(multihost_utils.process_allgather(np.int32(mine))))


def check(collective: bool = True) -> None:
  """Raises `Interrupted` if a signal arrived (on any process when `collective`, see `agreed`)."""
  signum = agreed() if collective else (_received or 0)
  if signum:
    raise Interrupted(signum, _phase_at_signal or _phase)


def point(name: str) -> None:
  """A signal point: sends this process the signal `MTLJAX_SIGNAL_AT` names for it (at its N-th
  pass); the handler runs before the next line, as for a signal from outside."""
  sig = faults.passes(name, ENV)
  if sig is not None:
    print(f"signals: SIG{sig or 'TERM'} at {name}", file=sys.stdout, flush=True)
    os.kill(os.getpid(), _SIGNALS[sig or "TERM"])
