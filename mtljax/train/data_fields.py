"""What a trained workdir needs of its training data to be used without it: `data_fields.json`.

A training run records, beside `normalization.json` (the statistics), the training split's
`input_fields` and `target_fields` (what `configlib.check_fields` and the predictions' class
names read), the shapes and dtypes of one standardised example's inputs (what the abstract train
state is built from, so a checkpoint restores without a batch of data), those of one raw example
as the reader gives it (what `--mode=export` traces), and the steps per epoch (the learning-rate
schedule's length, part of the optimizer). `mtljax.train.inference.setup_for_inference` builds
the model from these alone; a workdir from before the file existed has none, and its predict and
export runs open the training data as before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from mtljax import fileio

FILE = "data_fields.json"
FORMAT = "mtljax data fields 1"


def _jsonable(value):
  """Fields as JSON: tuples as lists, numpy scalars and dtypes as their Python value or name."""
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
    return np.dtype(value).name
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  return value


def _tuples(fields: Mapping) -> dict:
  """JSON fields back to the reader's form: a list value (a shape, channel names) as a tuple."""
  return {n: {k: tuple(v) if isinstance(v, list) else v for k, v in f.items()}
          for n, f in fields.items()}  # fmt: skip


def _specs(tree) -> Any:
  """`{name: {"shape": [...], "dtype": "..."}}` of a tree of arrays (nested dicts kept)."""
  if isinstance(tree, Mapping):
    return {k: _specs(v) for k, v in tree.items()}
  x = np.asarray(tree)
  return {"shape": list(x.shape), "dtype": x.dtype.name}


def _is_spec(node) -> bool:
  return isinstance(node, Mapping) and set(node) == {"shape", "dtype"}


def _zeros(tree) -> Any:
  if _is_spec(tree):
    return np.zeros(tuple(tree["shape"]), np.dtype(tree["dtype"]))
  return {k: _zeros(v) for k, v in tree.items()}


def describe(train_source, input_names, example_inputs, steps_per_epoch: int) -> dict:
  """The record of a training run (module docstring): `example_inputs` is the batch of one
  standardised example `setup` builds the state from; the raw one is read from the source."""
  raw = train_source[0]["inputs"]
  return {
    "format": FORMAT,
    "input_fields": _jsonable(train_source.input_fields),
    "target_fields": _jsonable(train_source.target_fields),
    "example_inputs": _specs(example_inputs),
    "raw_inputs": _specs({m: raw[m] for m in input_names}),
    "steps_per_epoch": int(steps_per_epoch),
  }


def write(workdir: str, record: dict) -> None:
  """`<workdir>/data_fields.json`, atomically."""
  fileio.write_json(os.path.join(workdir, FILE), record)


def read(workdir: str) -> dict | None:
  """The workdir's record with the fields in the reader's form, or None where there is none (a
  workdir trained before it was written) or it is not one this version reads."""
  path = os.path.join(workdir, FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
  except ValueError:
    return None
  if not isinstance(record, dict) or record.get("format") != FORMAT:
    return None
  for key in ("input_fields", "target_fields"):
    record[key] = _tuples(record[key])
  return record


def example_inputs(record: dict) -> dict:
  """Zeros shaped like the recorded batch of one standardised example (the abstract state's)."""
  return _zeros(record["example_inputs"])


def raw_example(s) -> dict:
  """One example's model inputs as the reader gives them, of the run set up as `s` (a
  `train.Setup`): zeros of the recorded shapes and dtypes, else the training split's first."""
  if s.fields:
    return _zeros(s.fields["raw_inputs"])
  ex = s.sources["train"][0]["inputs"]
  return {m: ex[m] for m in s.input_names}
