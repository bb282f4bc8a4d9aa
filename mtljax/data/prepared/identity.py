"""What a prepared dataset is made from (dataset, reader options, archive, reader version), and
the comparison with a config that training and the converter make before using a folder."""

from __future__ import annotations

import hashlib
import inspect
import json
import os

import numpy as np

from mtljax.data import get_dataset


def reader_version(spec) -> str:
  """The reader's module and a hash of its source file: which code produced the examples."""
  path = inspect.getsourcefile(spec.source_cls)
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:12]
  return f"{spec.source_cls.__module__}@{digest}"


def _jsonable(value):
  return json.loads(json.dumps(value, default=lambda o: np.asarray(o).tolist()))


def identity(config) -> dict:
  """What a prepared dataset is made from: the dataset, the reader's keyword arguments, the
  archive (or the synthetic generator's parameters when ``config.data.root`` is empty)."""
  spec = get_dataset(config.data.name)
  root = config.data.root
  return {
    "dataset": spec.name,
    "source_kwargs": _jsonable(spec.source_kwargs(config)),
    "archive": os.path.abspath(root) if root else None,
    "synthetic": None if root else _jsonable(spec.synthetic_kwargs(config)),
  }


def differences(recorded: dict, now: dict, keys) -> list[str]:
  """``"key (X there, Y now)"`` for each of ``keys`` that differs (dicts: each differing entry)."""
  out = []
  for k in keys:
    a, b = recorded.get(k), now.get(k)
    if a == b:
      continue
    if isinstance(a, dict) and isinstance(b, dict):
      out += [
        f"{k}.{s} ({a.get(s)!r} there, {b.get(s)!r} now)"
        for s in sorted(set(a) | set(b))
        if a.get(s) != b.get(s)
      ]
    else:
      out.append(f"{k} ({a!r} there, {b!r} now)")
  return out


def mismatch(recorded: dict, config) -> list[str]:
  """Where ``config`` differs from a recorded identity (training's check: the archive only counts
  when the config names one; the synthetic generator's parameters when both are synthetic)."""
  now = identity(config)
  if recorded.get("dataset") != now["dataset"]:  # the rest differs too: say the one thing
    return differences(recorded, now, ["dataset"])
  keys = ["dataset", "source_kwargs"]
  if now["archive"]:  # the config names an archive: it must be the one converted
    keys.append("archive")
  elif recorded.get("archive") is None:  # both synthetic: the same generator parameters
    keys.append("synthetic")
  # (no data.root and a prepared real archive: the prepared folder is the data)
  return differences(recorded, now, keys)
