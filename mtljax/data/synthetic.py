"""Shared by every synthetic generator: its declaration, the marker file, writing a folder once.

A generator is declared once as a ``Generator`` (its cache key, version, parameters with their
defaults, and what its folder is). ``Generator.write`` runs its ``generate`` function, which writes
the dataset's real on-disk layout into a temporary folder; ``write_once`` then writes ``MARKER``
last (``marker_text``: what the folder is and the generator parameters), swaps the folder in, and
skips the work when the folder already holds the same parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mtljax import fileio

#: Written last into every synthetic folder: says the data is synthetic, records the parameters.
MARKER = "SYNTHETIC.txt"


def _marker_params(path: Path) -> dict[str, Any] | None:
  marker = path / MARKER
  if not marker.is_file():
    return None
  for line in marker.read_text().splitlines():
    if line.startswith("parameters: "):
      try:
        return json.loads(line[len("parameters: ") :])
      except json.JSONDecodeError:
        return None
  return None


def remove_stale(root: Path) -> list[Path]:
  """Remove the ``.<name>.tmp<pid>`` / ``.<name>.old<pid>`` folders beside ``root`` left by
  writers that were killed (their pid no longer runs), as ``fileio`` does for its temporary
  files; a live writer's folders (another process writing the same dataset) are kept. Returns
  the folders removed."""
  removed = []
  if not root.parent.is_dir():
    return removed
  for p in root.parent.iterdir():
    for tag in (".tmp", ".old"):
      prefix = f".{root.name}{tag}"
      pid = p.name[len(prefix) :] if p.name.startswith(prefix) else ""
      if pid.isdigit() and int(pid) != os.getpid() and not fileio.pid_alive(int(pid)):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
  return removed


def write_once(
  root: Path,
  params: dict[str, Any],
  generate: Callable[[Path, dict[str, Any]], None],
  *,
  description: str,
  overwrite: bool = False,
) -> Path:
  """Write a synthetic dataset folder ``root`` with ``generate(tmp, params)`` unless it is there.

  After ``generate``, ``MARKER`` is written last (``marker_text(description, params, seconds)``):
  its presence means the folder is complete. A folder whose marker holds the same parameters is
  kept as is (cheap to call on every start); one with other parameters is replaced as a whole; a
  non-empty folder without the marker is never touched. The new folder is built beside ``root``
  and swapped in with renames, so readers (and other processes calling this concurrently, e.g.
  several local jax processes) never see a half-written dataset. A writer killed half-way leaves
  its temporary folder; the next call removes those of dead processes (``remove_stale``).

  Raises:
    FileExistsError: ``root`` is a non-empty folder that was not written by a generator.
  """
  root = Path(root).expanduser()
  remove_stale(root)
  if root.exists():
    old = _marker_params(root)
    if old is None and any(root.iterdir()):
      raise FileExistsError(
        f"{root} is not empty and has no {MARKER}: refusing to write synthetic data there"
      )
    if old == params and not overwrite:
      return root
  tmp = root.with_name(f".{root.name}.tmp{os.getpid()}")
  trash = root.with_name(f".{root.name}.old{os.getpid()}")
  for p in (tmp, trash):
    if p.exists():
      shutil.rmtree(p)
  root.parent.mkdir(parents=True, exist_ok=True)
  try:
    t0 = time.perf_counter()
    generate(tmp, params)
    (tmp / MARKER).write_text(marker_text(description, params, time.perf_counter() - t0))
    if root.exists():
      old = _marker_params(root)
      if old == params and not overwrite:  # another process finished first
        return root
      if old is None and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and has no {MARKER}: refusing to replace it")
      root.rename(trash)  # ours (marker present) or empty
    try:
      tmp.rename(root)
    except OSError:
      if _marker_params(root) == params:  # lost a race to an identical dataset
        return root
      raise
  finally:
    for p in (tmp, trash):
      if p.exists():
        shutil.rmtree(p, ignore_errors=True)
  return root


def marker_text(description: str, params: dict[str, Any], seconds: float) -> str:
  """The content of ``MARKER``: what the folder is, and the parameters ``write_once`` compares."""
  return (
    f"{description}\ngenerated in {seconds:.1f} s\n"
    "parameters: " + json.dumps(params, sort_keys=True) + "\n"
  )


def _cast(default: Any, value: Any) -> Any:
  """``value`` as the type of ``default``: int, float, a list for a tuple (each item cast as the
  default's first), anything else as is."""
  if isinstance(default, tuple):
    return [_cast(default[0], v) for v in value]
  if isinstance(default, (int, float)):
    return type(default)(value)
  return value


@dataclass(frozen=True)
class Generator:
  """One synthetic generator, declared once.

  Attributes:
    key: the generator's name recorded in ``MARKER`` (part of the cache key; kept when the code
      moves, so folders written before stay valid). Its last part is the public function's name.
    version: bump when the generated content changes, so cached folders are regenerated.
    defaults: parameter -> default value; a given value is recorded as the default's type (see
      ``_cast``: int, float, a list for a tuple).
    description: the first lines of ``MARKER``: what the folder is.
  """

  key: str
  version: int
  defaults: dict[str, Any]
  description: str

  def arguments(self, given: dict[str, Any]) -> dict[str, Any]:
    """The defaults updated with ``given`` (as given; ``TypeError`` for an unknown name)."""
    for name in given:
      if name not in self.defaults:
        fn = self.key.rsplit(".", 1)[-1]
        raise TypeError(f"{fn}() got an unexpected keyword argument {name!r}")
    return {**self.defaults, **given}

  def write(
    self,
    root: str | os.PathLike,
    arguments: dict[str, Any],
    generate: Callable[[Path, dict[str, Any]], None],
    *,
    overwrite: bool = False,
  ) -> Path:
    """Write ``root`` with ``generate(tmp, params)`` unless it holds these parameters already
    (``write_once``); ``params`` = the key, the version and the cast ``arguments``."""
    params = {"generator": self.key, "version": self.version}
    params.update({k: _cast(self.defaults[k], v) for k, v in arguments.items()})
    return write_once(
      Path(root), params, generate, description=self.description, overwrite=overwrite
    )
