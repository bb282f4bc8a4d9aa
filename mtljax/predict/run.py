"""`--mode=predict`: a trained workdir's ensemble applied to new inputs (mtljax/predict/inputs.py).

Writes under `<workdir>/predict/<name>/` (name: `config.predict.name`, else from the inputs):
  predictions.csv   one row per input: its own columns (`name`, `index`), then per task the
                    prediction in the task's terms (class name, the `;`-joined names of the
                    predicted labels, the value in the target's units), its probability and the
                    ensemble's uncertainty (uncertainty.py); dense tasks name their raster
  predictions.npz   the same as arrays (`<task>/<key>` as `uncertainty.summarise` names them, the
                    members' outputs `<task>/members` [N, E, ...]; dense tasks' class maps as
                    `<task>/pred` instead of their per-pixel probabilities), `index`, `name`
  rasters/<task>/   dense tasks: `<name>.tif` (class or value map) and `<name>_uncertainty.tif`
  request.json      what was predicted (inputs, checkpoint and its step)
  explanations/     with `config.predict.explain`: maps, trust metrics and index.html of inputs
                    picked across the predicted classes (explain.py)
Resumable: the inputs are predicted in parts of `config.predict.chunk` examples, each written
atomically to `parts/` as it completes; a killed run rerun with the same command skips the parts
already there. The final files are written atomically once every part is there, then the parts
are removed. A request.json of another request (other inputs, another checkpoint) is refused.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil

import jax
import numpy as np
from tqdm import tqdm

from mtljax import fileio, tasks, train
from mtljax.data import pipeline
from mtljax.data.source import DataError
from mtljax.predict import inputs as inputs_lib
from mtljax.predict import model as model_lib
from mtljax.predict import tiles
from mtljax.predict.model import PredictError


class _Range:
  """Examples `[start, stop)` of a source, as a source (what `pipeline.eval_batches` reads)."""

  def __init__(self, source, start: int, stop: int):
    self.source, self.start, self.stop = source, start, stop

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, i: int):
    return self.source[self.start + int(i)]


def predict_arrays(fn, variables, s, source, batch_size: int, progress=None) -> dict:
  """`fn`'s outputs over every example of `source` as numpy `{key: [N, ...]}` (+ `index`), in
  order; dense tasks' probabilities replaced by their class maps (`<task>/pred`)."""
  parts = []
  for b in pipeline.eval_batches(
    source, input_names=s.input_names, task_names=(), stats=s.stats["inputs"], batch_size=batch_size
  ):
    keep = np.asarray(b["valid"]) > 0
    out = jax.device_get(fn(variables, b["inputs"]))
    out = {k: np.asarray(v)[keep] for k, v in out.items()}
    parts.append(_compact(s.config, out))
    if progress is not None:
      progress.update(int(keep.sum()))
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _compact(config, out: dict) -> dict:
  for t, c in config.tasks.items():
    kind = tasks.of(c)
    if kind.dense and kind.target != tasks.VALUE and f"{t}/prob" in out:
      out[f"{t}/pred"] = out.pop(f"{t}/prob").argmax(-1).astype(np.int32)
  return out


def _check_request(out_dir: str, request: dict, name: str) -> None:
  path = os.path.join(out_dir, "request.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != request:
      diff = sorted(k for k in set(saved) | set(request) if saved.get(k) != request.get(k))
      raise PredictError(
        f"{out_dir} holds the predictions of another request (differs in: {', '.join(diff)}); "
        f"set config.predict.name to write elsewhere (now {name!r}), or move that folder away"
      )
  else:
    fileio.write_json(path, request)


def predict_workdir(config, workdir: str, *, checked: bool = False) -> str:
  """Predict `config.predict`'s inputs with the workdir's checkpoint; returns the output folder."""
  # New inputs (a root, a prepared folder, a manifest, a raster) need nothing of the training
  # data: the model is set up from the workdir's own files (mtljax/train/inference.py).
  if inputs_lib.needs_training_data(config):
    s = train.setup(config, workdir, write_config=False, checked=checked)
  else:
    s = train.setup_for_inference(config, workdir, checked=checked)
  p = config.predict
  if p.get("raster"):
    if p.get("explain"):
      raise PredictError(
        "config.predict.explain explains inputs of the model's size; a raster's tiles are not "
        "explained (drop config.predict.raster or config.predict.explain)"
      )
    return predict_rasters(config, s)
  inp = inputs_lib.open_inputs(config, s)
  state, meta = model_lib.restore(config, s, p.checkpoint)
  variables = model_lib.variables_of(state)
  fn = jax.jit(model_lib.make_predict_fn(s))
  n, chunk = len(inp.source), int(p.chunk)
  batch_size = int(p.batch_size or config.eval.batch_size)
  if chunk < 1 or batch_size < 1:
    raise PredictError("config.predict.chunk and config.predict.batch_size must be >= 1")
  out_dir = os.path.join(s.workdir, "predict", inp.name)
  request = {
    "inputs": inp.what,
    "examples": n,
    "checkpoint": p.checkpoint,
    "step": int(meta.get("step", -1)),
    "chunk": chunk,
    "ensemble_size": train.ensemble_size(config),
  }
  os.makedirs(out_dir, exist_ok=True)
  _check_request(out_dir, request, inp.name)
  parts_dir = os.path.join(out_dir, "parts")
  starts = range(0, n, chunk)
  done = {int(os.path.basename(f)[:-4]) for f in glob.glob(os.path.join(parts_dir, "*.npz"))}
  todo = [a for a in starts if a not in done]
  if todo or not os.path.exists(os.path.join(out_dir, "predictions.csv")):
    with tqdm(total=n, desc=f"predict {inp.name}", initial=n - sum(
      min(chunk, n - a) for a in todo), mininterval=2) as bar:  # fmt: skip
      for a in todo:
        got = predict_arrays(fn, variables, s, _Range(inp.source, a, min(a + chunk, n)),
                             batch_size, bar)  # fmt: skip
        fileio.savez(os.path.join(parts_dir, f"{a:09d}.npz"), fault="predict.part", **got)
    arrays = _merge(parts_dir, starts)
    arrays["index"] = np.arange(n, dtype=np.int64)
    arrays["name"] = np.asarray(inp.columns["name"])
    rasters = _write_rasters(config, s, out_dir, arrays)
    fileio.savez(os.path.join(out_dir, "predictions.npz"), **arrays)
    fileio.write_csv(
      os.path.join(out_dir, "predictions.csv"), table(config, s, inp.columns, arrays, rasters)
    )
    shutil.rmtree(parts_dir, ignore_errors=True)
  print(f"predictions of {n} inputs ({inp.what}) in {out_dir}", flush=True)
  if p.get("explain"):  # explanations/ of inputs picked across the predicted classes
    from mtljax.predict import explain

    with np.load(os.path.join(out_dir, "predictions.npz")) as f:
      arrays = {k: f[k] for k in f.files}
    names = class_names(s, config.explain.task)
    explain.explain_predictions(config, s, inp, state, meta, arrays, out_dir, names)
  return out_dir


def _merge(parts_dir: str, starts) -> dict:
  parts = []
  for a in starts:
    with np.load(os.path.join(parts_dir, f"{a:09d}.npz")) as f:
      parts.append({k: f[k] for k in f.files})
  return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(name))[0]) or "x"


def _write_rasters(config, s, out_dir, arrays) -> dict[str, list[str]]:
  """Dense tasks: one GeoTIFF per input of the map and one of its uncertainty; `{task: paths}`
  (relative to out_dir)."""
  import tifffile

  written = {}
  for t, c in config.tasks.items():
    kind = tasks.of(c)
    if not kind.dense:
      continue
    value = kind.target == tasks.VALUE
    maps = arrays[f"{t}/value" if value else f"{t}/pred"]
    unc = arrays[f"{t}/spread" if value else f"{t}/entropy"]
    paths = []
    for i, name in enumerate(arrays["name"]):
      rel = os.path.join("rasters", t, f"{i:06d}_{_safe(str(name))}.tif")
      for suffix, data in (("", maps[i]), ("_uncertainty", unc[i])):
        path = os.path.join(out_dir, rel[:-4] + suffix + ".tif")
        with fileio.atomic_path(path) as tmp:
          tifffile.imwrite(tmp, np.asarray(data), photometric="minisblack", metadata=None)
      paths.append(rel)
    written[t] = paths
  return written


def class_names(s, task: str) -> list[str]:
  """Task `task`'s class (or label) names from the dataset, `<task>[k]` where it has none."""
  field = s.target_fields.get(task, {})
  n = int(s.config.tasks[task].get("num_classes") or field.get("num_classes") or 0)
  own = [str(c) for c in (field.get("class_names") or ())]
  return own + [f"{task}[{k}]" for k in range(len(own), n)]


def table(config, s, columns: dict, arrays: dict, rasters: dict) -> list[list]:
  """The CSV rows (header first): the inputs' own columns, then each task's (see module doc)."""
  header = list(columns)
  cols = [list(map(str, v)) for v in columns.values()]
  for t, c in config.tasks.items():
    kind = tasks.of(c)
    add = {}
    if kind.dense:
      add[f"{t}_raster"] = rasters[t]
      key = "spread" if kind.target == tasks.VALUE else "entropy"
      v = arrays[f"{t}/{key}"]
      add[f"{t}_mean_{key}"] = v.reshape(len(v), -1).mean(-1)
    elif kind.target == tasks.VALUE:
      value, spread = arrays[f"{t}/value"], arrays[f"{t}/spread"]
      if value.ndim == 1:
        add[t], add[f"{t}_spread"] = value, spread
      own = list(s.target_fields.get(t, {}).get("channels") or ())  # e.g. S2's band names
      for k in range(value.shape[1] if value.ndim > 1 else 0):
        col = f"{t}[{own[k] if k < len(own) else k}]"
        add[col], add[f"{col}_spread"] = value[:, k], spread[:, k]
    else:
      names, prob = class_names(s, t), arrays[f"{t}/prob"]
      if kind.target == tasks.LABELS:
        on = prob >= 0.5
        add[t] = [";".join(names[k] for k in np.flatnonzero(r)) for r in on]
        add[f"{t}_prob"] = [";".join(f"{q:.4f}" for q in p[r]) for p, r in zip(prob, on)]
      else:
        top = prob.argmax(-1)
        add[t] = [names[k] for k in top]
        add[f"{t}_prob"] = prob[np.arange(len(prob)), top]
      for key in ("entropy", "expected_entropy", "mutual_information"):
        add[f"{t}_{key}"] = arrays[f"{t}/{key}"]
    for k, v in add.items():
      header.append(k)
      cols.append([f"{x:.6g}" if isinstance(x, (float, np.floating)) else str(x) for x in v])
  return [header] + [list(r) for r in zip(*cols)]


# ============================================================================ large rasters
def predict_rasters(config, s) -> str:
  """`config.predict.raster` (a GeoTIFF, or a folder of them) predicted in blended tiles
  (tiles.py) into `<workdir>/predict/<name>/<scene>/`: per output `<task>_<key>.tif` (the
  blended map, the scene's georeferencing), `<task>_class.tif` for classes, `tiles.csv` (one row
  per tile: its corner, then the predictions table's columns) and `tiles.npz` (written last: a
  scene with it is complete and skipped by a rerun)."""
  p = config.predict
  m = p.get("modality") or (s.input_names[0] if len(s.input_names) == 1 else "")
  if m not in s.input_names or len(s.input_names) != 1:
    raise PredictError(
      f"config.predict.raster: tiled prediction needs a model whose only input is an image "
      f"(config.predict.modality); this one reads {list(s.input_names)}"
    )
  shape = tuple(s.input_fields[m]["shape"])
  tile, bands = int(shape[0]), int(shape[-1])
  stride = int(p.get("stride") or max(tile // 2, 1))
  if os.path.isdir(p.raster):
    paths = sorted(
      glob.glob(os.path.join(p.raster, "*.tif")) + glob.glob(os.path.join(p.raster, "*.tiff"))
    )
  elif os.path.isfile(p.raster):
    paths = [p.raster]
  else:
    raise DataError(f"config.predict.raster={p.raster!r}: no such file or folder")
  if not paths:
    raise DataError(f"config.predict.raster={p.raster!r}: no .tif file in that folder")
  state, meta = model_lib.restore(config, s, p.checkpoint)
  variables = model_lib.variables_of(state)
  predict = jax.jit(model_lib.make_predict_fn(s, raw_inputs=True))

  def fn(batch):
    out = jax.device_get(predict(variables, {m: batch}))
    return {k: v for k, v in out.items() if not k.endswith("/members")}

  name = p.get("name") or "raster-" + _safe(os.path.normpath(p.raster))
  out_root = os.path.join(s.workdir, "predict", name)
  for path in paths:
    scene, tags = tiles.read_raster(path)
    if scene.shape[-1] != bands:
      raise DataError(
        f"{path}: {scene.shape[-1]} bands, the model's input {m!r} has {bands} (shape {shape})"
      )
    out = os.path.join(out_root, _safe(path))
    if os.path.exists(os.path.join(out, "tiles.npz")):
      continue
    maps, per_tile, corners = tiles.predict_tiled(
      scene, tile, stride, fn, int(p.batch_size or config.eval.batch_size)
    )
    for k, v in maps.items():
      tiles.write_raster(os.path.join(out, k.replace("/", "_") + ".tif"), v, tags)
    for t, c in config.tasks.items():
      if tasks.of(c).target == tasks.CLASS and f"{t}/prob" in maps:
        labels = maps[f"{t}/prob"].argmax(-1).astype(np.uint16)
        tiles.write_raster(os.path.join(out, f"{t}_class.tif"), labels, tags)
    per_tile = _compact(config, per_tile)
    columns = {"y": corners[:, 0], "x": corners[:, 1]}
    dense = {t: [f"{t}_*.tif"] * len(corners) for t in config.tasks}
    fileio.write_csv(os.path.join(out, "tiles.csv"), table(config, s, columns, per_tile, dense))
    fileio.savez(os.path.join(out, "tiles.npz"), corners=corners, **per_tile)
    print(f"{path}: {len(corners)} tiles of {tile} px every {stride} px -> {out}", flush=True)
  return out_root
