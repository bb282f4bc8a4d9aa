"""Run an exported mtljax model with jax and numpy only (no mtljax needed).

`--mode=export` copies this file beside the artifact as `load.py`:

  import load                                   # with the export folder on sys.path
  model = load.Model("W/export")                # model.jax, params.npz, model.json
  out = model({"aerial": x, "s1": y, "s2": z})  # raw inputs [B, ...] as the reader gives them
  out["l3/prob"], out["l3/entropy"], ...        # per task: prediction and uncertainty

or from a shell: `python W/export/load.py W/export inputs.npz outputs.npz` (inputs.npz holds one
array per input name; time-series inputs as `<name>/values`, `<name>/days`, `<name>/mask`).
model.json describes the inputs (names, shapes, dtypes, bands), the outputs and the class names.
Any batch size works (the artifact is batch-polymorphic); the input standardisation is inside.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np


class Model:
  """The exported prediction function of a trained workdir, loaded from `folder`."""

  def __init__(self, folder: str):
    with open(os.path.join(folder, "model.json")) as f:
      self.description = json.load(f)
    with open(os.path.join(folder, "model.jax"), "rb") as f:
      self.exported = jax.export.deserialize(bytearray(f.read()))
    with np.load(os.path.join(folder, "params.npz")) as f:
      self.params = {k: f[k] for k in f.files}

  def __call__(self, inputs: dict) -> dict:
    """`{input: [B, ...]}` (time series: `{"values", "days", "mask"}`) → `{output: [B, ...]}`."""
    args = {}
    for spec in self.description["inputs"]:
      x = inputs[spec["name"]]
      if spec.get("parts"):
        args[spec["name"]] = {p: np.asarray(x[p], spec["parts"][p]["dtype"]) for p in spec["parts"]}
      else:
        args[spec["name"]] = np.asarray(x, spec["dtype"])
    out = self.exported.call(self.params, args)
    return {k: np.asarray(v) for k, v in out.items()}


def load(folder: str) -> Model:
  return Model(folder)


def _nest(flat: dict) -> dict:
  out = {}
  for k, v in flat.items():
    name, _, part = k.partition("/")
    if part:
      out.setdefault(name, {})[part] = v
    else:
      out[name] = v
  return out


if __name__ == "__main__":
  folder, inputs_path, outputs_path = sys.argv[1:4]
  with np.load(inputs_path) as f:
    given = _nest({k: f[k] for k in f.files})
  np.savez(outputs_path, **Model(folder)(given))
