"""Shared by every synthetic generator: the marker file and writing a dataset folder once.

A generator writes its dataset's real on-disk layout into a temporary folder and ``MARKER`` last
(``marker_text``: what the folder is and the generator parameters); ``write_once`` swaps it in,
and skips the work when the folder already holds the same parameters.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

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


def write_once(
  root: Path,
  params: dict[str, Any],
  generate: Callable[[Path, dict[str, Any]], None],
  *,
  overwrite: bool = False,
) -> Path:
  """Write a synthetic dataset folder ``root`` with ``generate(tmp, params)`` unless it is there.

  ``generate`` must write ``MARKER`` last, with a ``parameters: <json>`` line (see
  ``marker_text``). A folder whose marker holds the same parameters is kept as is (cheap to call
  on every start); one with other parameters is replaced as a whole; a non-empty folder without
  the marker is never touched. The new folder is built beside ``root`` and swapped in with
  renames, so readers (and other processes calling this concurrently, e.g. several local jax
  processes) never see a half-written dataset.

  Raises:
    FileExistsError: ``root`` is a non-empty folder that was not written by a generator.
  """
  root = Path(root).expanduser()
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
    generate(tmp, params)
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
