"""The errors a user's mistake raises, one leaf module that every layer may import.

Each is a `ValueError` whose message names the key, file or field and what was expected;
`mtljax.main` turns any of them into one `error:` line and exit status 2, as it does an OS error
the user must fix (`os_error_message`: a full disk, a read-only or forbidden path).
"""

import errno
import os
import re


class ConfigError(ValueError):
  """A config that cannot run; the message lists every problem with its key."""


class DataError(ValueError):
  """A dataset on disk does not match what the reader expects (missing/odd file, bad label)."""


# ---------------------------------------------------------------------------- OS errors
# A full disk, a read-only file system or a path the user may not write is not a bug of the run
# but the user's to fix; wherever it surfaces (open, os.replace, an orbax save whose TensorStore
# error only quotes the OS message) it becomes one `error:` line (mtljax/main.py).
_OS_CAUSES = {
  errno.ENOSPC: ("no space left on device", "free space and rerun to resume"),
  errno.EDQUOT: ("disk quota exceeded", "free space and rerun to resume"),
  errno.EROFS: ("read-only file system", "use a writable --workdir, or remount it read-write"),
  errno.EACCES: ("permission denied", "use a path you may read and write"),
  errno.EPERM: ("operation not permitted", "use a path you may read and write"),
}
# strerror of each, as a wrapped error quotes it (TensorStore: "[OS error 28: No space ...]").
_OS_TEXTS = {os.strerror(n).lower(): n for n in _OS_CAUSES}
_QUOTED_PATH = re.compile(r"""["'](/[^"'\n]+)["']""")
_CHECKPOINT_STEP = re.compile(
  r"^(.*/checkpoints/(?:latest|best))/(\d+)(?:\.orbax-checkpoint-tmp|/|$)"
)
_FILEIO_TMP = re.compile(r"^\.(.+)\.\d+\.[0-9a-f]{8}\.tmp$")  # mtljax/fileio.py's temporary files


def _chain(e: BaseException):
  """`e`, its `__cause__`/`__context__` chain and the errors of exception groups, each once."""
  seen, todo = set(), [e]
  while todo:
    x = todo.pop(0)
    if x is None or id(x) in seen:
      continue
    seen.add(id(x))
    yield x
    todo += [x.__cause__, x.__context__, *getattr(x, "exceptions", ())]


def _os_fault(e: BaseException) -> tuple[int, str] | None:
  """`(errno, path or "")` of an OS error of `_OS_CAUSES` in `e`'s chain: an OSError, or an error
  whose message quotes the OS's text (TensorStore's, with the file's path). The first that names
  a path (a bare `OSError(28)` of a write may come first in the chain), else the first."""
  found = []
  for x in _chain(e):
    if isinstance(x, OSError) and x.errno in _OS_CAUSES:
      found.append((x.errno, os.fspath(x.filename) if x.filename is not None else ""))
      continue
    text = str(x)
    for words, number in _OS_TEXTS.items():
      if words in text.lower():
        paths = _QUOTED_PATH.findall(text)
        found.append((number, paths[0] if paths else ""))
  return next((f for f in found if f[1]), found[0] if found else None)


def _where(path: str, number: int) -> tuple[str, str]:
  """`(path to name, what was being done)`: a checkpoint's folder and step rather than a file
  deep in orbax's temporary folder; the folder of a file that could not be written."""
  m = _CHECKPOINT_STEP.match(path)
  if m:
    return m.group(1), f" while saving checkpoint step {m.group(2)}"
  writing = number in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # (EACCES: a read, perhaps)
  if writing and path and not os.path.exists(path) and os.path.isdir(os.path.dirname(path)):
    name = os.path.basename(path)
    name = m.group(1) if (m := _FILEIO_TMP.match(name)) else name
    return os.path.dirname(path), f" while writing {name}"
  return path, ""


def os_error_message(e: BaseException, written: str = "") -> str | None:
  """One line for a full disk, a read-only file system or a permission problem anywhere in `e`
  (`<path>: no space left on device while saving checkpoint step N; free space and rerun to
  resume`); None when `e` is none of these. `written`: the folder the run writes in, named when a
  full or read-only disk's error names no path."""
  fault = _os_fault(e)
  if fault is None:
    return None
  number, path = fault
  cause, remedy = _OS_CAUSES[number]
  where, doing = _where(path, number)
  if not where and number in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
    where = written
  return f"{where or '?'}: {cause}{doing}; {remedy}"
