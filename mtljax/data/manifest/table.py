"""The manifest table: one row per example, read from CSV or JSON Lines with the standard library.

Every cell is kept as a string ("" = empty: a missing label, or a missing annotation); a JSON
Lines value that is a list becomes its items joined by ";" (a multilabel cell), a number its
text, null "". Each row remembers its line in the file (the header is line 1 of a CSV), which is
what every problem names. Paths in cells are relative to the table's folder (or absolute).

The split of each row is its ``split`` cell (``train``, ``val`` or ``test``) when the table has
that column, otherwise a seeded draw by fractions: rows are ranked by a hash of (seed, line), the
same on every machine, and dealt into train/val/test in the fractions' proportions.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from mtljax.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_COLUMN = "split"
ID_COLUMN = "id"
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclasses.dataclass
class Table:
  """A read manifest. ``rows[i][column]`` is a string; ``lines[i]`` the row's line in the file;
  ``base`` the folder relative paths start from."""

  path: Path
  base: Path
  columns: list[str]
  rows: list[dict[str, str]]
  lines: list[int]

  def __len__(self) -> int:
    return len(self.rows)

  def column(self, name: str, rows: Sequence[int] | None = None) -> list[str]:
    """The cells of ``name`` (of ``rows``, default all) as strings."""
    idx = range(len(self.rows)) if rows is None else rows
    return [self.rows[i].get(name, "") for i in idx]

  def own_columns(self, rows: Sequence[int] | None = None, skip: Sequence[str] = ()) -> dict:
    """``{column: cells of rows}`` of every column, in order, but ``name``, ``index`` and
    ``skip`` (a task's column is its prediction's): the inputs' own columns of the
    predictions' CSV."""
    drop = {"name", "index", *skip}
    return {c: self.column(c, rows) for c in self.columns if c not in drop}

  def resolve(self, cell: str) -> Path:
    """A path cell as a path (relative to ``base``)."""
    p = Path(cell)
    return p if p.is_absolute() else self.base / p

  def names(self, rows: Sequence[int]) -> list[str]:
    """One name per row: its ``id`` cell, else ``line<N>``."""
    if ID_COLUMN in self.columns:
      return [self.rows[i][ID_COLUMN] or f"line{self.lines[i]}" for i in rows]
    return [f"line{self.lines[i]}" for i in rows]


def _cell(value) -> str:
  if value is None:
    return ""
  if isinstance(value, (list, tuple)):
    return ";".join(_cell(v) for v in value)
  if isinstance(value, bool):
    return str(int(value))
  return str(value).strip()


def read_table(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Table:
  """Read a manifest (``.csv``, ``.jsonl``/``.ndjson``); ``base``: the folder relative paths
  start from (default: the table's own folder).

  Raises:
    DataError: the file is missing, unreadable, of an unknown format, empty, or malformed (a
      JSON line that is not an object, a CSV row with more cells than the header, a repeated
      column name), naming the line.
  """
  path = Path(path)
  fmt = FORMATS.get(path.suffix.lower())
  if fmt is None:
    raise DataError(
      f"{path}: a manifest must be a .csv or .jsonl (JSON Lines) table, got {path.suffix!r}"
    )
  if not path.is_file():
    raise DataError(f"{path}: no such manifest file")
  try:
    text = path.read_text(encoding="utf-8-sig")
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read the manifest ({e})") from e
  rows, lines, columns = [], [], []
  if fmt == "csv":
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    columns = [c.strip() for c in header or []]
    for lineno, cells in enumerate(reader, start=2):
      if not any(c.strip() for c in cells):
        continue
      if len(cells) > len(columns):
        raise DataError(
          f"{path}: line {lineno} has {len(cells)} cells, the header {len(columns)} columns"
        )
      rows.append({c: (cells[k].strip() if k < len(cells) else "") for k, c in enumerate(columns)})
      lines.append(lineno)
  else:
    for lineno, line in enumerate(text.splitlines(), start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except ValueError as e:
        raise DataError(f"{path}: line {lineno} is not JSON ({e})") from e
      if not isinstance(obj, dict):
        raise DataError(f"{path}: line {lineno} is not a JSON object")
      for k in obj:
        if k not in columns:
          columns.append(k)
      rows.append({k: _cell(v) for k, v in obj.items()})
      lines.append(lineno)
  dupes = sorted({c for c in columns if columns.count(c) > 1})
  if dupes:
    raise DataError(f"{path}: the header repeats the columns {dupes}")
  if not rows:
    raise DataError(f"{path}: the manifest has no rows")
  for r in rows:
    for c in columns:
      r.setdefault(c, "")
  base = Path(base) if base else path.resolve().parent
  return Table(path, base, columns, rows, lines)


def _rank(seed: int, line: int) -> bytes:
  return hashlib.blake2b(f"{seed}/{line}".encode(), digest_size=16).digest()


def assign_splits(
  table: Table, fractions: Sequence[float], seed: int
) -> tuple[dict[str, list[int]], list[tuple[int, str, str]]]:
  """``({split: row indices in table order}, problems)``: the ``split`` column's, or a seeded
  draw by ``fractions`` (train, val, test) when the table has none. A problem is ``(line,
  column, what)``: a split cell that is not train/val/test."""
  out: dict[str, list[int]] = {s: [] for s in SPLITS}
  problems = []
  if SPLIT_COLUMN in table.columns:
    for i, r in enumerate(table.rows):
      s = r[SPLIT_COLUMN].lower()
      s = "val" if s in ("validation", "valid") else s
      if s not in out:
        problems.append(
          (table.lines[i], SPLIT_COLUMN, f"expected 'train', 'val' or 'test', got {s!r}")
        )
        continue
      out[s].append(i)
    return out, problems
  fr = [max(float(f), 0.0) for f in fractions]
  total = sum(fr) or 1.0
  n = len(table)
  order = sorted(range(n), key=lambda i: (_rank(seed, table.lines[i]), i))
  n_train = int(round(fr[0] / total * n))
  n_val = int(round(fr[1] / total * n))
  parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
  for s, idx in zip(SPLITS, parts):
    out[s] = sorted(idx)
  return out, problems
