"""A table of new inputs for a model trained on a registered dataset (TreeSAT, BEN-GE, ...): what
predict mode reads for `config.predict.manifest` when the workdir was not trained on a manifest.

The table (CSV or JSON Lines, read by `manifest.read_table`: paths relative to its folder)::

    id,aerial,s1,site
    p1,new/aerial/a.tif,new/s1/a.tif,north

has one column per input modality of the model, named as the modality is:

* an image, raster or time series input (a recorded shape of rank >= 2) is a file path, read
  with the dataset's own reading of that modality (its registry entry's `read_input`: TreeSAT's
  band count and dtype checks, S1 nodata as NaN, `aerial_resize`; BEN-GE's patch folders), so
  the model sees exactly what its reader would give; a dataset without that hook (digits,
  façades, CropYield's time series, TFDS) takes a file holding the input as the model takes it
  (`manifest.rasters.read(path, values=True)`: tif, png, jpg, npy), checked against the
  recorded shape;
* a vector input of D numbers (TreeSAT's `age`, BEN-GE's `weather`: rank <= 1) is number
  columns: the column named as the input for one number, else one column per channel named as
  the dataset names them (`temperature_s2`, ...) or `<input>_0` ... `<input>_{D-1}`; an empty
  cell is NaN (missing, as the readers give it).

Any other column (`id`, `name`, coordinates, the paths) is the input's own: kept, in order, in
the predictions' CSV. The examples are named by the `id` column, else `name`, else `line<N>`.
The table's problems (a missing column, naming the model's inputs; a missing file; a number
that is not one) are found when it is opened, each naming the line and column; the files are
read lazily, the first row's at once (so a table of the wrong files fails before any work), a
later file that does not fit failing when it is read, naming the table, its line and column.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mtljax.data.manifest import files, rasters
from mtljax.data.manifest.table import ID_COLUMN, read_table
from mtljax.data.source import DataError, example_index


def _shape(field: Mapping) -> tuple[int, ...]:
  return tuple(int(d) for d in field.get("shape", ()))


def number_columns(name: str, field: Mapping, have: Sequence[str] = ()) -> list[str] | None:
  """The columns of input `name` when it is read from numbers (a shape of rank <= 1), else
  None: `[name]` for one number; for D, the field's channel names (or `name_0`... when the
  table `have`s those instead)."""
  shape = _shape(field)
  if len(shape) > 1:
    return None
  d = shape[0] if shape else 1
  if d == 1:
    return [name]
  channels = [str(c) for c in field.get("channels") or ()]
  numbered = [f"{name}_{k}" for k in range(d)]
  if len(channels) != d or (any(c in have for c in numbered) and not set(channels) <= set(have)):
    return numbered
  return channels


class InputTable:
  """The table's rows as a source (`mtljax/data/source.py`): examples `{"inputs": {input:
  array of its recorded shape and dtype}, "targets": {}, "mask": {}, "meta": {"index"}}`.

  Args:
    path: the table (`.csv`, `.jsonl`).
    fields: the model's recorded `input_fields` (`data_fields.json` of its workdir).
    inputs: the model's input names.
    read: `(modality, path) -> array`, the dataset's reading of a file input (its entry's
      `read_input` with the reader's options); None = `rasters.read(path, values=True)`.
  """

  split = "all"

  def __init__(
    self,
    path: str | os.PathLike,
    fields: Mapping[str, Mapping],
    inputs: Sequence[str],
    read: Callable[[str, Any], np.ndarray] | None = None,
  ):
    table = read_table(path)  # (an empty table, a malformed line: one DataError naming it)
    self.table, self.inputs, self._read = table, tuple(inputs), read
    self._fields = {m: dict(fields[m]) for m in self.inputs}
    self.columns = {m: number_columns(m, f, table.columns) for m, f in self._fields.items()}
    need = {m: c or [m] for m, c in self.columns.items()}
    missing = [(m, c) for m, cols in need.items() for c in cols if c not in table.columns]
    if missing:
      m, c = missing[0]
      other = number_columns(m, {**self._fields[m], "channels": ()}) if need[m] != [m] else [m]
      alt = f" or {other}" if other != need[m] else ""
      what = f"the model's input {m!r}" + (f" (columns {need[m]}{alt})" if need[m] != [m] else "")
      raise DataError(
        f"{table.path}: no column {c!r} for {what}; the model reads {list(self.inputs)}, so the "
        f"table needs the columns {[c for cols in need.values() for c in cols]} "
        f"(it has {table.columns})"
      )
    files.raise_problems(table, self._problems())
    key = ID_COLUMN if ID_COLUMN in table.columns else "name" if "name" in table.columns else ""
    self.names = [table.rows[i].get(key, "") or f"line{table.lines[i]}" for i in range(len(table))]
    self[0]  # the first row's files read at once: a table of the wrong files fails here

  def _problems(self) -> list[tuple[int, str, str]]:
    """Every missing file and every cell that is not a number, as `(line, column, what)`."""
    out = []
    for i, row in enumerate(self.table.rows):
      line = self.table.lines[i]
      for m, cols in self.columns.items():
        if cols is None:
          cell = row[m]
          if not cell:
            out.append((line, m, "expected a file, the cell is empty"))
          elif not self.table.resolve(cell).exists():
            out.append((line, m, f"{cell}: no such file"))
          continue
        integer = np.dtype(self._fields[m].get("dtype", "float32")).kind in "iu"
        for c in cols:
          try:
            v = float(row[c]) if row[c] or integer else 0.0
          except ValueError:
            v = None
          if v is None or (integer and (not np.isfinite(v) or v != int(v))):
            out.append((line, c, f"expected {'an integer' if integer else 'a number'}, got "
                                 f"{row[c]!r}"))  # fmt: skip
    return out

  # ------------------------------------------------------------------ the source contract
  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    return {m: dict(f) for m, f in self._fields.items()}

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    return {}

  def label_arrays(self) -> dict[str, dict[str, np.ndarray]]:
    return {"targets": {}, "mask": {}}

  def __len__(self) -> int:
    return len(self.table)

  def _file(self, m: str, i: int) -> np.ndarray:
    cell, line = self.table.rows[i][m], self.table.lines[i]
    where = f"{self.table.path}: line {line}, column {m!r}"
    path = self.table.resolve(cell)
    try:
      x = self._read(m, path) if self._read is not None else rasters.read(path, values=True)
    except DataError as e:
      raise DataError(f"{where}: {e}") from e
    want = _shape(self._fields[m])
    if x.ndim == len(want) + 1 and x.shape[-1] == 1 and x.shape[:-1] == want:
      x = x[..., 0]  # a 2-D array (a time series [T, C]) read as a one-band raster [T, C, 1]
    if tuple(x.shape) != want:
      same = x.ndim == len(want) and x.shape[:-1] == want[:-1]
      bands = f" ({x.shape[-1]} bands, expected {want[-1]})" if same else ""
      raise DataError(
        f"{where}: {cell}: shape {tuple(x.shape)}, the model's input {m!r} is {want}{bands}"
      )
    return x.astype(self._fields[m].get("dtype", "float32"), copy=False)

  def _numbers(self, m: str, i: int) -> np.ndarray:
    row, field = self.table.rows[i], self._fields[m]
    x = np.asarray([float(row[c]) if row[c] else np.nan for c in self.columns[m]])
    return x.reshape(_shape(field)).astype(field.get("dtype", "float32"))

  def __getitem__(self, index) -> dict:
    i = example_index(index, len(self))
    inputs = {
      m: self._file(m, i) if cols is None else self._numbers(m, i)
      for m, cols in self.columns.items()
    }
    return {"inputs": inputs, "targets": {}, "mask": {}, "meta": {"index": np.asarray(i, np.int32)}}


def open_table(config, dataset, path, fields: Mapping, inputs: Sequence[str]) -> InputTable:
  """The table at `path` read for a model of `config` (its dataset's registry entry `dataset`):
  file inputs with the entry's `read_input` given the reader's options for new data
  (`build.reader_kwargs(..., inputs_only=True)`), or the plain fallback."""
  from mtljax.data import build

  read = None
  if dataset.read_input is not None:  # (a partial, not a closure: the source stays picklable)
    kwargs = build.reader_kwargs(config, dataset, inputs_only=True)
    read = functools.partial(dataset.read_input, **kwargs)
  return InputTable(path, fields, inputs, read)
