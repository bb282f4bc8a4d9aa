"""Where predict mode's inputs come from, each opened as one `Source` of examples.

`open_inputs(config, s)` reads `config.predict`: `root` (a data root of the workdir's registered
dataset, its split `split`; opened for the inputs alone, a TreeSAT root needs neither its split
lists, then every patch is predicted, nor its labels JSON), `prepared` (a prepared folder,
`python -m mtljax.prepare`), `manifest` (a table of new inputs: for a manifest run, only its input
columns, read with the run's recorded schema; for a registered dataset, one column per input of
the model, each file read with the dataset's own reading of that modality,
`mtljax.data.new_inputs`; the table's own columns go first in the predictions' CSV), or, when all
are empty, split `split` of the workdir's own dataset. A new kind of input is one more
`_OPENERS` entry: a function `(config, s, p) -> Source` and the name its outputs go under.
Only the model's *input* modalities are read from the examples (`pipeline.eval_batches` with no
task), and a data root is opened with its reader's input modalities alone (`make_sources(...,
inputs_only=True)`: a modality the model was trained to predict, e.g. TreeSAT's Sentinel-2 as a
target, need not be there); only the split predicted is opened. `check_inputs` refuses a source
that lacks an input, or holds one of another shape (band count), naming it, against the fields
the model was trained on (`Setup.input_fields`: recorded in the workdir, no training data read).
`needs_training_data(config)`: whether the inputs are a split of the workdir's own dataset.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from mtljax.data import build as data_build
from mtljax.data import get_dataset
from mtljax.data.source import DataError


@dataclasses.dataclass
class Inputs:
  """A predict run's inputs: `source` (random access, `Source`), the `name` its outputs go under
  (`<workdir>/predict/<name>/`), `what` (a description, recorded to refuse resuming another
  request) and `columns`: the inputs' own CSV columns `{column: [N] values}`."""

  source: Any
  name: str
  what: str
  columns: dict


def _with_data(config, **data) -> ml_collections.ConfigDict:
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for k, v in data.items():
      c.data[k] = v
  return c


def _split(config, s, p):
  if p.split not in s.sources:
    raise DataError(f"config.predict.split={p.split!r} is not one of {sorted(s.sources)}")
  return s.sources[p.split], f"split-{p.split}", f"split {p.split!r} of the workdir's dataset"


def _one_split(config, s, p, **data):
  """Split `p.split` of the dataset `config` names with `data` changed, opened alone."""
  splits = (s.dataset or get_dataset(config.data.name)).splits
  if p.split not in splits:
    raise DataError(f"config.predict.split={p.split!r} is not one of {sorted(splits)}")
  # Only the model's inputs are opened: a modality that was a training target need not be there.
  c = _with_data(config, **data)
  return data_build.make_sources(c, s.workdir, splits=(p.split,), inputs_only=True)[0][p.split]


def _root(config, s, p):
  if not os.path.isdir(p.root):
    raise DataError(f"config.predict.root={p.root!r} is not a folder")
  source = _one_split(config, s, p, root=p.root, prepared="")
  base = os.path.basename(os.path.normpath(p.root))
  if getattr(source, "split", p.split) == "all":  # a root without split lists (new patches)
    return source, f"root-{base}-all", f"every example of data root {p.root} (no split lists)"
  return source, f"root-{base}-{p.split}", f"split {p.split!r} of data root {p.root}"


def _prepared(config, s, p):
  if not os.path.isdir(p.prepared):
    raise DataError(f"config.predict.prepared={p.prepared!r} is not a folder")
  source = _one_split(config, s, p, prepared=p.prepared)
  base = os.path.basename(os.path.normpath(p.prepared))
  what = f"split {p.split!r} of prepared folder {p.prepared}"
  return source, f"prepared-{base}-{p.split}", what


def _manifest(config, s, p):
  """A table of new inputs: for a manifest run, a manifest without labels or split read with the
  run's schema; for a registered dataset, one column per input of the model, its files read as
  the dataset's reader reads them (`mtljax.data.new_inputs`). The table's own columns (an `id`,
  paths, anything else) are kept for the predictions' CSV."""
  from mtljax.data import manifest, new_inputs

  base = os.path.splitext(os.path.basename(p.manifest))[0]
  name, what = f"manifest-{base}", f"manifest {p.manifest}"
  if config.data.name != "manifest":
    dataset = s.dataset or get_dataset(config.data.name)
    src = new_inputs.open_table(config, dataset, p.manifest, s.input_fields, s.input_names)
    rows = None  # every row of the table
  else:
    src = manifest.open_source(p.manifest, config.data.schema, s.input_names, grid=config.data.grid)
    rows = src.rows
  return src, name, what, src.table.own_columns(rows, skip=tuple(config.tasks))


# (config.predict key that selects it, opener); the first whose key is set wins, else the split.
# An opener returns (source, name, what) or (source, name, what, {column: [N] values}).
_OPENERS = (("root", _root), ("prepared", _prepared), ("manifest", _manifest))


def needs_training_data(config) -> bool:
  """Whether `config.predict` names a split of the workdir's own dataset (no root, prepared
  folder, manifest or raster): only then is the training data opened."""
  p = config.predict
  return not any(p.get(k) for k in ("root", "prepared", "manifest", "raster"))


def open_inputs(config, s) -> Inputs:
  """The inputs `config.predict` names, checked against the model's inputs (`s`: `train.Setup`)."""
  p = config.predict
  chosen = [k for k, _ in _OPENERS if p.get(k)]
  if len(chosen) > 1:
    raise DataError(f"config.predict: give one of {[k for k, _ in _OPENERS]}, not {chosen}")
  opener = dict(_OPENERS)[chosen[0]] if chosen else _split
  source, name, what, *own = opener(config, s, p)
  check_inputs(source, s, what)
  columns = {"name": [str(n) for n in source.names], "index": list(range(len(source)))}
  columns.update(own[0] if own else {})
  return Inputs(source, p.get("name") or name, what, columns)


def check_inputs(source, s, what: str) -> None:
  """Every input modality of the model is in `source`, with the shape it was trained on."""
  trained = s.input_fields
  have = source.input_fields
  for m in s.input_names:
    if m not in have:
      raise DataError(
        f"{what} has no input {m!r}: the model reads {list(s.input_names)} "
        f"(the inputs have {sorted(have)})"
      )
    want, got = tuple(trained[m].get("shape", ())), tuple(have[m].get("shape", ()))
    if want and got and want != got:
      raise DataError(
        f"{what}: input {m!r} has shape {got}, the model was trained on {want}"
        + (f" ({got[-1]} bands, expected {want[-1]})" if got[-1] != want[-1] else "")
      )
  if len(source) == 0:
    raise DataError(f"{what} has no example")
