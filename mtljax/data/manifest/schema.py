"""What each column of a manifest is, inferred from the table and the first file of each raster
column, and every problem of the table found in one pass.

A column's entry in the schema (``schema["columns"][name]``, plain JSON)::

    {"role": "input" | "target" | "annotation",
     "type": "raster"       file paths; "shape": [H, W, C] (or [D]), "dtype": stored type
           | "vector"       numbers: "columns": [the table's columns] (a group, or the column)
           | "categorical"  names as an input: "classes" (the training split's, sorted)
           | "class"        one class per row: "classes" (training split's, sorted)
           | "labels"       ";"-separated classes: "classes"
           | "value",       one number per row
     "target": "class" | "labels" | "value" (targets: what the task kind's target holds),
     "dense": bool (targets: a raster target), "kind": the task kind (targets)}

A class or labels target's vocabulary is the training split's classes, sorted, unless the config
declares one (``config.tasks.<col>.classes="a,b,c"``): then it is the declared names in the
declared order, so a val/test class that training never saw is an output like any other (the
field's usual answer, and how a built-in dataset with a fixed vocabulary reads its labels), and
any cell outside the declared names, in any split, is still a problem.

Inference of a target's kind (unless ``config.tasks.<col>.kind`` names one): a raster column is
dense (an integer raster: classes per pixel; a float raster: values per pixel); cells with ";"
hold several labels; numbers that are all integers with at most ``MAX_INT_CLASSES`` distinct
values (and no more than half the labelled rows) are classes, other numbers values; names are
classes. A column where some cells are numbers and others names is a problem. The kind's name
is the first registered kind whose target and density match (``kinds``: the task registry's
``{name: (target, dense)}``), so no kind name is spelt here.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from mtljax.data.manifest import rasters
from mtljax.data.manifest.table import Table
from mtljax.errors import DataError

MAX_INT_CLASSES = 20
CLASS, LABELS, VALUE = "class", "labels", "value"  # mtljax.tasks' target kinds
MASK_COLUMN = "expl_mask"  # a path to the example's relevant-region mask (explanations)

Problem = tuple  # (line, column, what was expected)


def _number(cell: str) -> float | None:
  try:
    v = float(cell)
  except ValueError:
    return None
  return v if math.isfinite(v) else None


def _sort_classes(values: set[str]) -> list[str]:
  """Numbers in numeric order, names in alphabetical order."""
  if all(_number(v) is not None for v in values):
    return sorted(values, key=lambda v: (float(v), v))
  return sorted(values)


def _labels(cell: str) -> list[str]:
  return [s.strip() for s in cell.split(";") if s.strip()]


class _Inference:
  def __init__(self, table: Table, splits: Mapping[str, Sequence[int]]):
    self.table, self.splits = table, splits
    self.train = list(splits.get("train", ()))
    self.problems: list[Problem] = []

  def problem(self, row: int | None, column: str, what: str) -> None:
    line = self.table.lines[row] if row is not None else 0
    self.problems.append((line, column, f"expected {what}"))

  def filled(self, column: str, rows=None) -> list[tuple[int, str]]:
    rows = range(len(self.table)) if rows is None else rows
    return [(i, c) for i in rows if (c := self.table.rows[i].get(column, ""))]

  # -------------------------------------------------------------------------- one column
  def raster(self, column: str, cells) -> dict | None:
    """A raster column's shape and type, from its first readable file."""
    for _, cell in cells:
      try:
        shape, dtype = rasters.header(self.table.resolve(cell))
      except DataError:
        continue  # reported with the file checks
      return {"type": "raster", "shape": list(shape), "dtype": dtype}
    self.problem(cells[0][0] if cells else None, column, "at least one readable file")
    return None

  def target(
    self, column: str, kind: str, kinds: Mapping[str, tuple[str, bool]], declared: Sequence[str]
  ) -> dict | None:
    cells = self.filled(column)
    if not cells:
      self.problem(None, column, "a target column with at least one label")
      return None
    paths = [rasters.is_raster(c) for _, c in cells]
    if any(paths) and not all(paths):
      i = next(i for (i, _), p in zip(cells, paths) if p != paths[0])
      self.problem(i, column, "the same type in every cell (file paths mixed with labels)")
      return None
    if kind and kind not in kinds:
      self.problem(None, column, f"a registered task kind, got {kind!r}")
      return None
    target, dense = kinds[kind] if kind else (None, all(paths))
    if dense != all(paths):
      what = "file paths (a dense kind)" if dense else "labels, not file paths"
      self.problem(cells[0][0], column, f"{what} for kind {kind!r}")
      return None
    if declared and (dense or target == VALUE):
      what = "a raster target" if dense else f"kind {kind!r}"
      self.problem(None, column, f"no declared classes for {what} (config.tasks.{column}.classes)")
      return None
    if dense:
      entry = self.raster(column, cells)
      if entry is None:
        return None
      if target is None:
        target = CLASS if np.dtype(entry["dtype"]).kind in "uib" else VALUE
      if target == CLASS:
        entry["classes"] = self.raster_classes(cells)
    else:
      entry = self.labels(column, cells, target, declared)
      if entry is None:
        return None
      target = entry.pop("target")
    if target not in (CLASS, LABELS, VALUE):
      self.problem(None, column, f"a kind whose targets are classes, labels or values ({kind!r})")
      return None
    name = kind or next((k for k, sig in kinds.items() if sig == (target, dense)), "")
    return {**entry, "role": "target", "target": target, "dense": dense, "kind": name}

  def raster_classes(self, cells) -> int:
    """The number of classes of a class raster: 1 + its largest value over the training files
    (nodata pixels left out)."""
    top = 0
    train = set(self.train)
    for i, cell in cells:
      if i in train:
        try:
          x = rasters.read(self.table.resolve(cell), values=True)
        except DataError:
          continue
        x = x[np.isfinite(x)]
        top = max(top, int(x.max())) if x.size else top
    return top + 1

  def labels(self, column: str, cells, target: str | None, declared: Sequence[str]) -> dict | None:
    """A per-example target column: classes, labels or values (``declared``: the config's
    vocabulary, or empty)."""
    if target is None and declared:
      target = LABELS if any(";" in c for _, c in cells) else CLASS
    if target is None:
      if any(";" in c for _, c in cells):
        target = LABELS
      else:
        nums = [_number(c) for _, c in cells]
        if any(n is None for n in nums) and any(n is not None for n in nums):
          numeric = sum(n is not None for n in nums) * 2 > len(nums)
          i = next(i for (i, _), n in zip(cells, nums) if (n is None) == numeric)
          want = "a number" if numeric else "a name"
          self.problem(i, column, f"{want} like the rest of the column (mixed types)")
          return None
        if nums and nums[0] is not None:
          distinct = set(nums)
          ints = all(float(n).is_integer() for n in nums)
          few = len(distinct) <= MAX_INT_CLASSES and len(distinct) * 2 <= len(nums)
          target = CLASS if ints and few else VALUE
        else:
          target = CLASS
    if target == VALUE:
      for i, c in cells:
        if _number(c) is None:
          self.problem(i, column, f"a number, got {c!r}")
      return {"type": "value", "target": VALUE}
    train = set(self.train)
    split = _labels if target == LABELS else (lambda c: [c])
    if declared:
      twice = sorted({v for v in declared if list(declared).count(v) > 1})
      if twice:
        self.problem(None, column, f"each declared class once, got {twice[0]!r} twice")
        return None
      classes, checked = list(declared), range(len(self.table))
      what = f"a class of config.tasks.{column}.classes"
    else:
      classes = _sort_classes({v for i, c in cells if i in train for v in split(c)})
      checked = [i for i in range(len(self.table)) if i not in train]
      what = "a class of the training split"
    known, checked = set(classes), set(checked)
    for i, c in cells:
      if i in checked:
        unknown = [v for v in split(c) if v not in known]
        if unknown:
          hint = "" if declared else f" (or declare them: config.tasks.{column}.classes)"
          self.problem(i, column, f"{what}, got {unknown[0]!r}{hint}")
    return {"type": "class" if target == CLASS else "labels", "classes": classes, "target": target}

  def input(self, column: str, groups: Mapping[str, Sequence[str]]) -> dict | None:
    if column in groups:
      members = list(groups[column])
      for m in members:
        for i, c in self.filled(m):
          if _number(c) is None:
            self.problem(i, m, f"a number (column of {column!r}), got {c!r}")
      return {"role": "input", "type": "vector", "columns": members, "shape": [len(members)]}
    cells = self.filled(column)
    for i in range(len(self.table)):
      if not self.table.rows[i].get(column, ""):
        self.problem(i, column, "a value (an input cannot be empty)")
    if not cells:
      return None
    paths = [rasters.is_raster(c) for _, c in cells]
    if any(paths) and not all(paths):
      i = next(i for (i, _), p in zip(cells, paths) if p != paths[0])
      self.problem(i, column, "the same type in every cell (file paths mixed with other values)")
      return None
    if all(paths):
      entry = self.raster(column, cells)
      return None if entry is None else {**entry, "role": "input"}
    nums = [_number(c) for _, c in cells]
    if all(n is not None for n in nums):
      return {"role": "input", "type": "vector", "columns": [column], "shape": [1]}
    if any(n is not None for n in nums):
      i = next(i for (i, _), n in zip(cells, nums) if n is not None)
      self.problem(i, column, "a name like the rest of the column (mixed types)")
      return None
    train = set(self.train)
    classes = _sort_classes({c for i, c in cells if i in train})
    for i, c in cells:
      if i not in train and c not in classes:
        self.problem(i, column, f"a category of the training split, got {c!r}")
    return {"role": "input", "type": "categorical", "classes": classes, "shape": []}


def parse_groups(text: str) -> dict[str, list[str]]:
  """``"weather=temp|rain|wind;soil=ph|n"`` -> ``{"weather": ["temp", "rain", "wind"], ...}``."""
  out = {}
  for part in filter(None, (p.strip() for p in (text or "").split(";"))):
    name, eq, cols = part.partition("=")
    if not eq or not name.strip() or not cols.strip():
      raise DataError(f"config.data.groups: {part!r} is not name=col|col|...")
    out[name.strip()] = [c.strip() for c in cols.split("|") if c.strip()]
  return out


def infer(
  table: Table,
  splits: Mapping[str, Sequence[int]],
  *,
  inputs: Sequence[str],
  targets: Mapping[str, str],
  groups: Mapping[str, Sequence[str]],
  kinds: Mapping[str, tuple[str, bool]],
  classes: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict, list[Problem]]:
  """``(schema, problems)`` of the columns a run uses: ``inputs`` (names: a column or a group),
  ``targets`` (``{column: kind or ""}``: "" = inferred), the annotation columns present;
  ``classes``: declared vocabularies of targets (``{column: [names]}``, module docstring)."""
  classes = classes or {}
  inf = _Inference(table, splits)
  columns = {}
  known = set(table.columns)
  for name in list(inputs) + list(targets):
    needed = groups[name] if name in groups and name in inputs else [name]
    missing = [c for c in needed if c not in known]
    if missing:
      inf.problem(None, missing[0], f"a column of the manifest (it has {sorted(known)})")
      continue
    entry = (
      inf.input(name, groups)
      if name in inputs
      else inf.target(name, targets[name], kinds, classes.get(name, ()))
    )
    if entry is not None:
      columns[name] = entry
  if MASK_COLUMN in known:
    cells = inf.filled(MASK_COLUMN)
    entry = inf.raster(MASK_COLUMN, cells) if cells else None
    if entry is not None:
      columns[MASK_COLUMN] = {**entry, "role": "annotation"}
  for split in ("train", "val", "test"):
    if not splits.get(split):
      inf.problem(None, "split", f"at least one {split} row")
  return {"columns": columns}, inf.problems
