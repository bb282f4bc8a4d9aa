"""`--mode=export`: the ensemble's prediction function as a serialized `jax.export` artifact.

Writes `<workdir>/export/` (atomically, file by file):
  model.jax    `jax.export` serialisation of `predict(params, inputs) -> {"<task>/<key>": [B, ...]}`
               (mtljax/predict/model.py with `raw_inputs=True`: the workdir's input standardisation
               inside, raw inputs in, per-task predictions and the ensemble's uncertainty out), the
               batch size symbolic (`b`), lowered for CPU and, where jax can, CUDA
  params.npz   the ensemble's variables, one array per flattened path (the function's first
               argument, so the artifact stays small and the weights inspectable)
  model.json   inputs (name, shape with "b", dtype, bands), outputs (key, shape, dtype), tasks
               (kind, class names), ensemble size, checkpoint step, input statistics
  load.py      a loader that needs only jax and numpy (mtljax/predict/loader.py)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping

import jax
import numpy as np

from mtljax import fileio, tasks, train
from mtljax.predict import model as model_lib
from mtljax.predict.run import class_names
from mtljax.train import data_fields


def _flat_params(variables) -> tuple[dict, object]:
  """`{"<i>:<path>": array}` in flattening order, and the tree to rebuild `variables` from it."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  flat = {f"{i:05d}:{jax.tree_util.keystr(p)}": np.asarray(v) for i, (p, v) in enumerate(leaves)}
  return flat, treedef


def _spec(x, batch):
  if isinstance(x, Mapping):
    return {k: _spec(v, batch) for k, v in x.items()}
  x = np.asarray(x)
  return jax.ShapeDtypeStruct((batch, *x.shape), x.dtype)


def _describe_input(s, name, x) -> dict:
  field = s.input_fields.get(name, {})
  d = {"name": name, "kind": field.get("kind", "")}
  if isinstance(x, Mapping):
    d["parts"] = {
      k: {"shape": ["b", *np.shape(v)], "dtype": str(np.asarray(v).dtype)} for k, v in x.items()
    }
  else:
    d.update(shape=["b", *np.shape(x)], dtype=str(np.asarray(x).dtype))
  bands = field.get("channels") or field.get("bands")
  if bands is not None:
    d["bands"] = list(bands) if not isinstance(bands, int) else bands
  return d


def export_workdir(config, workdir: str, *, checked: bool = False) -> str:
  """Export the workdir's `config.predict.checkpoint`; returns the export folder."""
  # The workdir's own files alone (mtljax/train/inference.py): no training data is read.
  s = train.setup_for_inference(config, workdir, checked=checked)
  # XLA's convolutions in the artifact, whatever `config.conv` trained with: the artifact must run
  # where mtljax's oneDNN library is not (a custom call is not portable, and its batch axis is not
  # polymorphic); the two backends compute the same function (tests/test_onednn_conv.py). A model
  # without the setting (the MTC-LIM models of mtljax/models/lim.py) always traces XLA's.
  if hasattr(s.model, "conv"):
    s = dataclasses.replace(s, model=s.model.clone(conv="xla"))
  state, meta = model_lib.restore(config, s, config.predict.checkpoint)
  flat, treedef = _flat_params(model_lib.variables_of(state))
  predict = model_lib.make_predict_fn(s, raw_inputs=True)
  order = list(flat)

  def fn(params, inputs):
    return predict(jax.tree_util.tree_unflatten(treedef, [params[k] for k in order]), inputs)

  raw = data_fields.raw_example(s)  # shapes and dtypes as the reader gives them
  (b,) = jax.export.symbolic_shape("b")
  args = ({k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}, _spec(raw, b))
  exported, platforms = None, None
  for platforms in (("cpu", "cuda"), ("cpu",)):
    try:
      exported = jax.export.export(jax.jit(fn), platforms=platforms)(*args)
      break
    except Exception:  # noqa: BLE001 (no CUDA lowering here: CPU alone)
      if platforms == ("cpu",):
        raise
  out_shapes = jax.eval_shape(fn, args[0], _spec(raw, 2))
  description = {
    "format": "mtljax export 1",
    "call": "load.Model(folder)(inputs) -> outputs (load.py); the first argument of model.jax "
    "is params.npz",
    "platforms": list(platforms),
    "checkpoint": config.predict.checkpoint,
    "step": int(meta.get("step", -1)),
    "ensemble_size": train.ensemble_size(config),
    "dataset": config.data.name,
    "inputs": [_describe_input(s, m, raw[m]) for m in s.input_names],
    "outputs": [
      {"name": k, "shape": ["b", *v.shape[1:]], "dtype": str(v.dtype)}
      for k, v in sorted(out_shapes.items())
    ],
    "tasks": {
      t: {
        "kind": c.kind,
        "dense": tasks.of(c).dense,
        "class_names": class_names(s, t) if tasks.of(c).target != tasks.VALUE else [],
      }
      for t, c in config.tasks.items()
    },
    "input_statistics": s.stats["inputs"],
  }
  out = os.path.join(s.workdir, "export")
  os.makedirs(out, exist_ok=True)
  fileio.savez(os.path.join(out, "params.npz"), compressed=False, **flat)
  fileio.write_bytes(os.path.join(out, "model.jax"), bytes(exported.serialize()))
  fileio.write_json(os.path.join(out, "model.json"), description)
  with fileio.atomic_path(os.path.join(out, "load.py")) as tmp:
    shutil.copyfile(os.path.join(os.path.dirname(__file__), "loader.py"), tmp)
  print(f"exported to {out} ({', '.join(platforms)}; load with {out}/load.py)", flush=True)
  return out
