"""Atomic result files: written to a temporary file in the same folder, then `os.replace`d, so a
reader (or a resumed run) sees the old file or the new one, never half of one.

A killed writer may leave a `.<name>.<pid>.<hex>.tmp` file behind; readers ignore it, and the
next successful write of the same file removes those of dead processes.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import sys
import uuid
from typing import Any, Iterable

import numpy as np

from mtljax import faults


def _tmp_path(path: str) -> str:
  folder, name = os.path.split(os.path.abspath(path))
  return os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def pid_alive(pid: int) -> bool:
  """Whether process `pid` runs (on this host)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale_tmps(path: str) -> None:
  """Removes the temporary files of `path` left by writers that were killed (dead pids)."""
  folder, name = os.path.split(os.path.abspath(path))
  for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
    pid = tmp[len(os.path.join(folder, name)) + 2 :].split(".")[0]
    if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
      with contextlib.suppress(OSError):
        os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fault: str = "write.rename"):
  """Yields a temporary path beside `path`; on success renames it to `path` (the kill point
  `fault` lies between the write and the rename). On an error the temporary file is removed."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = _tmp_path(path)
  try:
    yield tmp
    faults.point(fault)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  _remove_stale_tmps(path)


def write_bytes(path, data: bytes, fault: str = "write.rename") -> str:
  with atomic_path(path, fault) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
  return os.fspath(path)


def write_text(path, text: str, fault: str = "write.rename") -> str:
  with atomic_path(path, fault) as tmp:
    with open(tmp, "w", newline="") as f:
      f.write(text)
  return os.fspath(path)


def write_json(path, obj: Any, fault: str = "write.rename", indent=1, **kwargs) -> str:
  """`json.dump(obj, indent=1, **kwargs)`, atomically."""
  return write_text(path, json.dumps(obj, indent=indent, **kwargs), fault)


def write_csv(path, rows: Iterable[Iterable[Any]], fault: str = "write.rename") -> str:
  """Rows (the header first) through `csv.writer`, atomically."""
  buf = io.StringIO(newline="")
  csv.writer(buf).writerows(rows)
  return write_text(path, buf.getvalue(), fault)


def savez(path, fault: str = "write.rename", compressed: bool = True, **arrays) -> str:
  """`np.savez[_compressed](path, **arrays)`, atomically (`path` should end in `.npz`)."""
  with atomic_path(path, fault) as tmp:
    with open(tmp, "wb") as f:  # a file object: numpy would otherwise append ".npz" to tmp
      (np.savez_compressed if compressed else np.savez)(f, **arrays)
  return os.fspath(path)


def read_jsonl(path: str, warn: bool = False) -> list[dict]:
  """The records of a JSON-lines file; a torn last line (a writer killed mid-append) is dropped,
  with a one-line warning on stderr when `warn`; any other unreadable line is an error naming the
  file and line."""
  with open(path) as f:
    lines = f.readlines()
  last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i != last:
        raise ValueError(f"{path}:{i + 1}: not a JSON record ({e})") from None
      if warn:
        print(
          f"warning: {path}: dropped a torn last line (line {i + 1}, a run killed while writing it)",
          file=sys.stderr,
          flush=True,
        )
  return records
