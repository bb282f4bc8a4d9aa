"""The manifest's source: one split of the user's table, examples read from its files.

``ManifestSource(root, split, manifest=..., schema=..., inputs=..., tasks=...)`` follows the
source contract (``mtljax/data/source.py``) with the schema a run resolved
(``mtljax.data.manifest.schema``); ``split=None`` (or ``"all"``) takes every row, and ``tasks=()``
reads the inputs alone, so new inputs without labels can be read with the schema of a trained
run (``open_source``).

Example (``source[i]``)::

    {"inputs":  {raster: float32 [H, W, C] (resampled to grid × grid in a run with dense targets;
                         a GeoTIFF's nodata pixels NaN: ``rasters.read``),
                 vector: float32 [D] (NaN for an empty cell), categorical: int32 []},
     "targets": {class: int32 [], labels: float32 [K], value: float32 [],
                 class raster: int32 [H, W], value raster: float32 [H, W] (or [H, W, C])},
     "mask":    {task: float32 [] / [H, W] / [H, W, C]: 0 = empty cell, NaN value or a class
                 raster's pixel outside its classes or nodata},
     "meta":    {"index": int32 [], + expl_mask, expl_mask_present, expl_prior with an
                 `expl_mask` column (mtljax.data.annotations)}}
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from mtljax.data import annotations
from mtljax.data.manifest import files, rasters
from mtljax.data.manifest.schema import CLASS, LABELS, MASK_COLUMN, VALUE, _labels
from mtljax.data.manifest.table import Table, assign_splits, read_table
from mtljax.data.source import DataError, example_index


def _plain(value: Any) -> Any:
  """A ConfigDict (or nested mapping) as plain dicts and lists."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


class ManifestSource:
  """One split of a manifest (module docstring)."""

  def __init__(
    self,
    root,
    split: str | None,
    *,
    manifest: str | Table,
    schema: Mapping,
    inputs: Sequence[str],
    tasks: Sequence[str] = (),
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    grid: int = 0,
  ):
    table = manifest if isinstance(manifest, Table) else read_table(manifest, root or None)
    self.table, self.schema = table, _plain(schema)
    self.split = split or "all"
    if self.split == "all":
      self.rows = list(range(len(table)))
    else:
      self.rows = assign_splits(table, split_fractions, split_seed)[0][self.split]
    self.names = table.names(self.rows)
    cols = self.schema["columns"]
    missing = [n for n in list(inputs) + list(tasks) if n not in cols]
    if missing:
      raise DataError(f"{table.path}: the schema has no column {missing[0]!r}")
    self.inputs, self.tasks, self.grid = tuple(inputs), tuple(tasks), int(grid)
    self._cols = cols
    self._annot = self._annotations() if MASK_COLUMN in cols and self.tasks else None

  # ------------------------------------------------------------------ fields
  def _side(self, shape) -> list[int]:
    shape = list(shape)
    if self.grid and len(shape) == 3:
      shape[:2] = [self.grid, self.grid]
    return shape

  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    out = {}
    for n in self.inputs:
      c = self._cols[n]
      if c["type"] == "raster" and len(c["shape"]) == 3:
        out[n] = {"kind": "image", "shape": tuple(self._side(c["shape"])), "dtype": "float32"}
      elif c["type"] == "categorical":
        out[n] = {"kind": "categorical", "shape": (), "dtype": "int32"}
        out[n]["num_classes"] = len(c["classes"])
      else:
        out[n] = {"kind": "vector", "shape": tuple(c["shape"]), "dtype": "float32"}
    return out

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    out = {}
    for n in self.tasks:
      c = self._cols[n]
      field = {"kind": c["kind"], "dtype": "float32" if c["target"] != CLASS else "int32"}
      if c["dense"]:
        shape = self._side(c["shape"])
        field["shape"] = tuple(shape[:2] if shape[-1] == 1 or c["target"] == CLASS else shape)
      else:
        field["shape"] = (len(c["classes"]),) if c["target"] == LABELS else ()
      if c["target"] == VALUE:
        field["num_outputs"] = int(c["shape"][-1]) if c["dense"] else 1
      else:
        classes = c["classes"]
        field["num_classes"] = classes if isinstance(classes, int) else len(classes)
        if not isinstance(classes, int):
          field["class_names"] = tuple(classes)
      out[n] = field
    return out

  # ------------------------------------------------------------------ reading
  def _raster(self, name: str, row: int, nearest: bool) -> np.ndarray:
    cell = self.table.rows[row][name]
    x = rasters.read(self.table.resolve(cell), values=True)  # float32, nodata NaN
    if self.grid and x.ndim == 3:
      x = rasters.resize(x, self.grid, nearest)
    return x

  def _input(self, name: str, row: int):
    c, r = self._cols[name], self.table.rows[row]
    if c["type"] == "raster":
      return self._raster(name, row, nearest=False)
    if c["type"] == "categorical":
      v = r.get(name, "")
      return np.asarray(c["classes"].index(v) if v in c["classes"] else 0, np.int32)
    return np.asarray([float(r[m]) if r.get(m, "") else np.nan for m in c["columns"]], np.float32)

  def _target(self, name: str, row: int) -> tuple[np.ndarray, np.ndarray]:
    c, cell = self._cols[name], self.table.rows[row].get(name, "")
    field = self.target_fields[name]
    if not cell:
      return np.zeros(field["shape"], field["dtype"]), self._mask_zeros(c, field)
    if c["dense"]:
      x = self._raster(name, row, nearest=c["target"] == CLASS)
      if c["target"] == CLASS:
        ok = np.isfinite(x[..., 0])
        y = np.where(ok, x[..., 0], -1).astype(np.int64)
        ok &= (y >= 0) & (y < field["num_classes"])
        return np.where(ok, y, 0).astype(np.int32), ok.astype(np.float32)
      y = x.astype(np.float32).reshape(field["shape"])
      ok = np.isfinite(y)
      return np.where(ok, y, 0.0).astype(np.float32), ok.astype(np.float32)
    if c["target"] == CLASS:
      return np.asarray(c["classes"].index(cell), np.int32), np.asarray(1.0, np.float32)
    if c["target"] == LABELS:
      y = np.zeros(len(c["classes"]), np.float32)
      for v in _labels(cell):
        if v in c["classes"]:
          y[c["classes"].index(v)] = 1.0
      return y, np.asarray(1.0, np.float32)
    return np.asarray(float(cell), np.float32), np.asarray(1.0, np.float32)

  def _mask_zeros(self, c, field) -> np.ndarray:
    shape = field["shape"] if c["dense"] else ()
    return np.zeros(shape, np.float32)

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, index) -> dict:
    i = example_index(index, len(self))
    row = self.rows[i]
    targets, masks = {}, {}
    for t in self.tasks:
      targets[t], masks[t] = self._target(t, row)
    meta = {"index": np.asarray(i, np.int32)}
    if self._annot is not None:
      meta.update(self._annot.meta(i))
    return {
      "inputs": {m: self._input(m, row) for m in self.inputs},
      "targets": targets,
      "mask": masks,
      "meta": meta,
    }

  def label_arrays(self) -> dict[str, dict[str, np.ndarray]]:
    """Every example's per-example labels from the table alone (dense targets left out)."""
    out = {"targets": {}, "mask": {}}
    for t in self.tasks:
      if self._cols[t]["dense"]:
        continue
      pairs = [self._target(t, r) for r in self.rows]
      out["targets"][t] = np.stack([p[0] for p in pairs]) if pairs else np.zeros(0)
      out["mask"][t] = np.stack([p[1] for p in pairs]) if pairs else np.zeros(0)
    return out

  def read_target(self, task: str, index: int):
    """One target and its mask without reading the inputs (for target statistics)."""
    return self._target(task, self.rows[example_index(index, len(self))])

  def check_files(self, *, progress: bool = True, full: bool = False) -> int:
    """Every raster of the split against the schema (mtljax/data/manifest/files.py)."""
    del progress
    files.raise_problems(
      self.table, files.check_files(self.table, self.schema, self.rows, full=full)
    )
    return len(self)

  # ------------------------------------------------------------------ annotations
  def _annotations(self):
    """The ``expl_mask`` column as training annotations of the first classification task."""
    owner = next((t for t in self.tasks if self._cols[t]["target"] == CLASS), None)
    if owner is None or self._cols[owner]["dense"]:
      return None
    side = self._side(self._cols[MASK_COLUMN]["shape"])
    masks = np.zeros((len(self), side[0], side[1]), bool)
    present = np.zeros(len(self), bool)
    for i, row in enumerate(self.rows):
      if self.table.rows[row].get(MASK_COLUMN, ""):
        masks[i] = self._raster(MASK_COLUMN, row, nearest=True)[..., 0] > 0
        present[i] = True
    labels = self.label_arrays()["targets"][owner]
    self._mask_owner, self._masks, self._present = owner, masks, present
    return annotations.MaskAnnotations(masks, present, labels, len(self._cols[owner]["classes"]))

  def explain_annotations(self, index):
    """The row's ``expl_mask`` (when given) as the relevant region of its classification task."""
    i = example_index(index, len(self))
    if self._annot is None or not self._present[i]:
      return {"masks": {}, "keypoints": {}}
    return {"masks": {MASK_COLUMN: self._masks[i]}, "keypoints": {}}

  def annotation_owners(self):
    """The ``expl_mask`` belongs to the whole classification task it annotates."""
    if self._annot is None:
      return {}
    return {MASK_COLUMN: (annotations.Owner(self._mask_owner),)}


def open_source(
  manifest, schema: Mapping, inputs: Sequence[str], *, grid: int = 0, base=None
) -> ManifestSource:
  """Every row of a table of new inputs (no target columns needed) read with a trained run's
  schema and grid (``config.data.schema``, ``config.data.grid`` of its ``config.json``), its
  files checked first (a ``DataError`` listing the problems)."""
  table = read_table(manifest, base)
  source = ManifestSource(
    None, None, manifest=table, schema=schema, inputs=inputs, tasks=(), grid=grid
  )
  problems = [
    (0, n, "expected a column of the table")
    for n in _needed(schema, inputs)
    if n not in table.columns
  ]
  files.raise_problems(table, problems)
  used = {"columns": {n: _plain(schema)["columns"][n] for n in inputs}}
  files.raise_problems(table, files.check_files(table, used, source.rows))
  return source


def _needed(schema, inputs) -> list[str]:
  cols = _plain(schema)["columns"]
  out = []
  for n in inputs:
    out += cols[n].get("columns", [n]) if cols[n]["type"] == "vector" else [n]
  return out
