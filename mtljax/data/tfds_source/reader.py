"""One split of a TFDS catalog dataset, read at random through ``tfds.data_source`` (ArrayRecord
files a builder prepared; no TensorFlow) as examples of the source contract
(``mtljax/data/source.py``), with the fields of the manifest's reader (the same schema form).

``TfdsSource(root, split, *, name, data_dir, splits, schema, inputs, tasks, grid)``: ``name`` the
builder (``"eurosat/all"``, ``"so2sat/all:2.1.0"``), ``data_dir`` where it was prepared,
``splits`` the TFDS split of each of ours (``resolve_splits``). Missing labels: a class outside
the classes (e.g. -1) or a value that is NaN has mask 0, as an empty cell of a manifest.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mtljax.data.manifest import rasters
from mtljax.data.manifest.reader import ManifestSource, _plain
from mtljax.data.manifest.schema import CLASS, LABELS
from mtljax.data.source import DataError, example_index

OURS = ("train", "val", "test")
INSTALL = "pip install 'mtljax[tfds]' (tensorflow-datasets, without TensorFlow)"


def import_tfds():
  """``tensorflow_datasets``, or a DataError saying how to install it (an optional extra)."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(f"config.data.name='tfds' needs tensorflow-datasets: {INSTALL} ({e})") from e
  return tfds


def open_builder(name: str, data_dir: str):
  """The builder ``name`` prepared in ``data_dir`` (its features and splits), as a DataError
  when it is unknown or not prepared as ArrayRecord there (nothing is downloaded)."""
  tfds = import_tfds()
  where = data_dir or "TFDS's default data_dir"
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # DatasetNotFoundError, bad config names: all say what is wrong
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(
      f"config.data.tfds.name={name!r}: no such TFDS builder in {where} ({first})"
    ) from e
  if not builder.info.splits:
    raise DataError(
      f"config.data.tfds.name={name!r} is not prepared in {where}: prepare it first, with "
      "file_format='array_record' (docs/data.md)"
    )
  fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
  if str(fmt) != "array_record":
    raise DataError(
      f"config.data.tfds.name={name!r} in {where} was prepared as {fmt}: random access needs "
      "file_format='array_record' (prepare it again with that format)"
    )
  return builder


def resolve_splits(available: Sequence[str], chosen: Mapping[str, str]) -> dict[str, str]:
  """Our train/val/test as TFDS split specs: ``chosen[s]`` when set (any TFDS spec, e.g.
  ``"train[:90%]"``), else the builder's own ``train``, ``validation`` (or ``val``) and ``test``;
  without a validation split, the last 10% of ``train`` (and train the first 90%); without a
  test split, the test is a DataError asking for one."""
  out = {s: chosen.get(s, "") for s in OURS}
  val_name = next((v for v in ("validation", "val", "valid") if v in available), "")
  if not out["val"]:
    out["val"] = val_name or "train[90%:]"
  if not out["train"]:
    out["train"] = "train" if val_name or chosen.get("val") else "train[:90%]"
  if not out["test"]:
    if "test" not in available:
      raise DataError(
        f"the TFDS builder has no 'test' split (it has {sorted(available)}): name one with "
        "--config.data.tfds.splits.test, e.g. 'train[80%:]'"
      )
    out["test"] = "test"
  return out


class TfdsSource(ManifestSource):
  """One split of a TFDS builder (module docstring). Fields, ``__len__`` and ``names`` as the
  manifest's reader; examples decoded by TFDS (PNG/JPEG with Pillow) and shaped here."""

  def __init__(
    self,
    root,
    split: str,
    *,
    name: str,
    data_dir: str = "",
    splits: Mapping[str, str] | None = None,
    schema: Mapping,
    inputs: Sequence[str],
    tasks: Sequence[str] = (),
    grid: int = 0,
  ):
    del root  # the builder's files are in data_dir
    tfds = import_tfds()
    builder = open_builder(name, data_dir)
    specs = resolve_splits(list(builder.info.splits), dict(splits or {}))
    self.spec = specs[split]
    try:
      self._src = tfds.data_source(name, data_dir=data_dir or None, split=self.spec, download=False)
    except Exception as e:
      raise DataError(f"config.data.tfds: split {split!r} = {self.spec!r}: {e}") from e
    self.split, self.schema = split, _plain(schema)
    self._cols = self.schema["columns"]
    missing = [n for n in list(inputs) + list(tasks) if n not in self._cols]
    if missing:
      raise DataError(f"TFDS {name}: the schema has no feature {missing[0]!r}")
    self.inputs, self.tasks, self.grid = tuple(inputs), tuple(tasks), int(grid)
    self.rows = list(range(len(self._src)))
    self.names = [f"{self.spec}:{i}" for i in self.rows]
    self._annot = None

  # ------------------------------------------------------------------ reading
  def _array(self, name: str, value, nearest: bool) -> np.ndarray:
    shape = self._cols[name]["shape"]
    x = np.asarray(value).reshape(shape)
    if self.grid and x.ndim == 3:
      x = rasters.resize(x, self.grid, nearest)
    return x

  def _input_of(self, name: str, record) -> np.ndarray:
    return self._array(name, record[name], nearest=False).astype(np.float32)

  def _target_of(self, name: str, record) -> tuple[np.ndarray, np.ndarray]:
    c = self._cols[name]
    field = self.target_fields[name]
    value = record[name]
    if c["dense"]:
      x = self._array(name, value, nearest=c["target"] == CLASS)
      if c["target"] == CLASS:
        y = x[..., 0].astype(np.int64)
        ok = (y >= 0) & (y < field["num_classes"])
        return np.where(ok, y, 0).astype(np.int32), ok.astype(np.float32)
      y = x.astype(np.float32).reshape(field["shape"])
      ok = np.isfinite(y)
      return np.where(ok, y, 0.0).astype(np.float32), ok.astype(np.float32)
    if c["target"] == CLASS:
      k = int(np.asarray(value).reshape(()))
      ok = 0 <= k < field["num_classes"]
      return np.asarray(k if ok else 0, np.int32), np.asarray(float(ok), np.float32)
    if c["target"] == LABELS:
      y = np.zeros(field["num_classes"], np.float32)
      ks = np.asarray(value, np.int64).reshape(-1)
      y[ks[(ks >= 0) & (ks < len(y))]] = 1.0
      return y, np.asarray(1.0, np.float32)
    v = float(np.asarray(value, np.float64).reshape(()))
    ok = np.isfinite(v)
    return np.asarray(v if ok else 0.0, np.float32), np.asarray(float(ok), np.float32)

  def __getitem__(self, index) -> dict:
    i = example_index(index, len(self))
    record = self._src[i]
    targets, masks = {}, {}
    for t in self.tasks:
      targets[t], masks[t] = self._target_of(t, record)
    return {
      "inputs": {m: self._input_of(m, record) for m in self.inputs},
      "targets": targets,
      "mask": masks,
      "meta": {"index": np.asarray(i, np.int32)},
    }

  def label_arrays(self) -> dict[str, dict[str, np.ndarray]]:
    """Every example's per-example labels (dense targets left out); reads every record."""
    tasks = [t for t in self.tasks if not self._cols[t]["dense"]]
    out = {"targets": {t: [] for t in tasks}, "mask": {t: [] for t in tasks}}
    for i in self.rows if tasks else ():
      record = self._src[i]
      for t in tasks:
        y, m = self._target_of(t, record)
        out["targets"][t].append(y)
        out["mask"][t].append(m)
    for part in out.values():
      for t in tasks:
        part[t] = np.stack(part[t]) if part[t] else np.zeros(0)
    return out

  def read_target(self, task: str, index: int):
    return self._target_of(task, self._src[example_index(index, len(self))])

  def check_files(self, *, progress: bool = True, full: bool = False) -> int:
    """Nothing to check file by file: the builder's ArrayRecord shards and its features were
    checked when it was prepared, and opening the split reads their index."""
    del progress, full
    return len(self)
