"""Every file of a manifest checked against its column's schema, and the table's problems turned
into one message.

``check_files(table, schema, rows, full=False)`` opens every raster a run reads (the columns of
``schema``, the rows given) and compares its header — shape, bands, stored type — with the
column's (the first file's); ``full`` decodes each file as training will. It returns problems
``(line, column, what)`` rather than raising, so that the whole table is reported at once
(``raise_problems``: one ``DataError`` with the count and the first few).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from mtljax.data.manifest import rasters
from mtljax.data.manifest.table import Table
from mtljax.errors import DataError

SHOWN = 5  # problems spelt out in the message; the rest are counted


def check_files(
  table: Table, schema: Mapping, rows: Sequence[int], *, full: bool = False
) -> list[tuple[int, str, str]]:
  """Problems of the raster files of ``rows`` (module docstring), in row order."""
  problems = []
  columns = {n: c for n, c in schema["columns"].items() if c["type"] == "raster"}
  for i in rows:
    line = table.lines[i]
    for name, col in columns.items():
      cell = table.rows[i].get(name, "")
      if not cell:
        continue
      path = table.resolve(cell)
      if not rasters.is_raster(cell):
        problems.append((line, name, f"{cell}: expected a file ({', '.join(rasters.EXTENSIONS)})"))
        continue
      try:
        shape, dtype = rasters.header(path)
        if full:
          rasters.read(path)
      except DataError as e:
        problems.append((line, name, f"{cell}: {e}"))
        continue
      want, got = list(col["shape"]), list(shape)
      if got != want:
        what = "bands" if got[:-1] == want[:-1] and len(got) == 3 else "shape"
        problems.append((line, name, f"{cell}: expected {what} {want}, got {got}"))
      elif dtype != col["dtype"]:
        problems.append((line, name, f"{cell}: expected type {col['dtype']}, got {dtype}"))
  return problems


def raise_problems(table: Table, problems: Sequence[tuple[int, str, str]]) -> None:
  """One ``DataError``: the number of problems and the first ``SHOWN`` (line, column, what)."""
  if not problems:
    return
  problems = sorted(problems, key=lambda p: (p[0], p[1]))
  shown = "; ".join(
    (f"line {line}, " if line else "") + f"column {col!r}: {what}"
    for line, col, what in problems[:SHOWN]
  )
  more = f" (first {SHOWN} shown)" if len(problems) > SHOWN else ""
  noun = "problem" if len(problems) == 1 else "problems"
  raise DataError(f"{table.path}: {len(problems)} {noun} in the manifest{more}: {shown}")
