"""The manifest reproduces a built-in dataset: the synthetic TreeSAT archive of
`configs/treesat.py:tiny` exported as a manifest (one column per modality's files, the label
columns with the built-in vocabularies, the split membership of the built-in reader), then
trained on the same seed three ways and the test metrics printed side by side
(docs/notes/manifest.md records them and explains each difference):

- `builtin`: `python -m mtljax.main --config=configs/treesat.py:tiny`;
- `manifest`: `python -m mtljax.main --config=configs/manifest.py:...` with what a command line
  can say (the built-in's tasks, kinds and vocabularies, batch size, epochs, loss weight and
  augmentation); the encoders and heads are the ones the manifest chooses by shape;
- `manifest_same_model`: the same manifest, in process, with the built-in config's model
  sections copied in (encoders, heads, fusion and their kwargs, the evaluation batch): any
  difference left to the builtin column comes from reading the data.

  python -m profiling.experiments.manifest_treesat --out=/tmp/manifest_treesat
  python -m profiling.experiments.manifest_treesat --out=/tmp/mt --epochs=1   # a smoke run

The comparison is also written to `<out>/comparison.json`. Last, every exported class column
(species and l3_multi included) is checked as a target without and with the built-in
vocabularies declared (no training).
"""

import csv
import json
import os
import subprocess
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export(out: str) -> tuple[str, list[str], dict[str, dict], str]:
  """Writes the synthetic archive and its manifest: `(manifest, inputs, {column: the built-in
  target field}, data root)`. Every per-example label of the reader is a column (more than the
  tiny config trains), and the split column is the reader's split of each name."""
  import numpy as np

  from configs import treesat
  from mtljax.data import get_dataset

  c = treesat.get_config("tiny")
  spec = get_dataset("treesat")
  root = str(spec.write_synthetic(os.path.join(out, "data"), **spec.synthetic_kwargs(c)))
  kwargs = spec.source_kwargs(c)
  inputs = [m for m in c.inputs if os.path.isdir(os.path.join(root, m, "60m"))]
  rows, fields = [], None
  for split in ("train", "val", "test"):
    src = spec.source_cls(root, split, **kwargs)
    if fields is None:
      fields = {t: f for t, f in src.target_fields.items() if len(f.get("shape", ())) <= 1}
    labels = src.label_arrays()
    for i, name in enumerate(src.names):
      row = {"id": name, "split": split}
      for m in inputs:
        row[m] = os.path.join(root, m, "60m", name if name.endswith(".tif") else name + ".tif")
      for t, f in fields.items():
        y, mask = labels["targets"][t][i], labels["mask"][t][i]
        if not np.all(mask):
          row[t] = ""
        elif np.ndim(y) == 1:  # multi-hot: the names present (none present reads as missing)
          row[t] = ";".join(f["class_names"][k] for k in np.flatnonzero(y > 0.5))
        elif "class_names" in f:
          row[t] = f["class_names"][int(y)]
        else:
          row[t] = f"{float(y):.6g}"
      rows.append(row)
  path = os.path.join(out, "treesat_manifest.csv")
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, ["id", *inputs, *fields, "split"])
    w.writeheader()
    w.writerows(rows)
  return path, inputs, fields, root


def _train(workdir: str, config: str, *flags_: str) -> dict:
  cmd = [sys.executable, "-m", "mtljax.main", f"--config={config}", f"--workdir={workdir}"]
  res = subprocess.run(cmd + list(flags_), cwd=ROOT, capture_output=True, text=True)
  if res.returncode != 0:
    raise SystemExit(f"{config} failed:\n{res.stderr[-3000:]}")
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    return json.load(f)


def _same_model(workdir: str, path: str, arg: str, declared: dict, epochs: int) -> dict:
  """The manifest run with the built-in config's model and training sections (in process: the
  encoders' and heads' kwargs are dicts, which a command line cannot set)."""
  from configs import manifest as manifest_config
  from configs import treesat
  from mtljax import configlib, train

  b = treesat.get_config("tiny")
  c = manifest_config.get_config(arg)
  c.data.manifest = path
  c.data.augment = b.data.augment
  c.data.stats_examples = b.data.stats_examples
  for section in ("inputs", "model", "train", "eval", "explain", "seed"):
    c[section] = b[section]
  for t, task in b.tasks.items():
    c.tasks[t] = {**task.to_dict(), "classes": declared.get(t, "")}
  c.main_task = b.main_task
  if epochs:
    c.train.num_epochs = epochs
  configlib.check(c)
  train.train_and_evaluate(c, workdir, checked=True)
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    return json.load(f)


def vocabulary_check(path: str, inputs: list[str], fields: dict) -> list[str]:
  """Every exported class column as a target, checked (no training) without and with the
  built-in vocabularies declared: the first refuses the test classes that the training split
  never shows (a species of the tiny split), the second accepts them."""
  from configs import manifest as manifest_config
  from mtljax import configlib
  from mtljax.errors import DataError

  named = [t for t, f in fields.items() if "class_names" in f]
  out = []
  for declare in (False, True):
    c = manifest_config.get_config(f"inputs={'+'.join(inputs)},targets={'+'.join(named)}")
    c.data.manifest = path
    for t in named:
      c.tasks[t].kind = fields[t]["kind"]
      c.tasks[t].classes = ",".join(fields[t]["class_names"]) if declare else ""
    try:
      configlib.check(c)
      counts = {t: c.tasks[t].num_classes for t in named}
      out.append(f"declared vocabularies: accepted, classes {counts}")
    except DataError as e:
      out.append(f"training split's vocabularies: {e}")
  return out


def main(argv):
  del argv
  from configs import treesat

  out = os.path.abspath(flags.FLAGS.out)
  os.makedirs(out, exist_ok=True)
  path, inputs, fields, root = export(out)
  b = treesat.get_config("tiny")
  epochs = flags.FLAGS.epochs or b.train.num_epochs
  runs = {}
  runs["builtin"] = _train(os.path.join(out, "builtin"), "configs/treesat.py:tiny",
                           f"--config.data.root={root}", f"--config.train.num_epochs={epochs}")  # fmt: skip
  tasks = list(b.tasks)
  arg = f"inputs={'+'.join(inputs)},targets={'+'.join(tasks)},main={b.main_task}"
  # The built-in kinds (the manifest would infer classes for the integer ages) and vocabularies
  # (in the built-in order: one test species/genus may be missing from the training split).
  declared = {t: ",".join(fields[t]["class_names"]) for t in tasks if "class_names" in fields[t]}
  flags_ = [f"--config.data.manifest={path}", f"--config.train.num_epochs={epochs}"]
  flags_ += [f"--config.tasks.{t}.kind={b.tasks[t].kind}" for t in tasks]
  flags_ += [f"--config.tasks.{t}.classes={v}" for t, v in declared.items()]
  flags_ += [f"--config.tasks.{t}.weight={b.tasks[t].weight}" for t in tasks]
  flags_ += [f"--config.train.batch_size={b.train.batch_size}"]
  flags_ += [f"--config.data.augment.{k}={v}" for k, v in b.data.augment.items()]
  runs["manifest"] = _train(os.path.join(out, "manifest"), f"configs/manifest.py:{arg}", *flags_)
  runs["manifest_same_model"] = _same_model(
    os.path.join(out, "manifest_same_model"), path, arg, declared, epochs
  )
  keys = sorted(set().union(*(r["test"] for r in runs.values())))
  table = {k: {n: r["test"].get(k) for n, r in runs.items()} for k in keys}
  with open(os.path.join(out, "comparison.json"), "w") as f:
    json.dump({"manifest": path, "config": arg, "flags": flags_, "test": table}, f, indent=1)
  print(f"manifest: {path}\nconfigs/manifest.py:{arg} {' '.join(flags_)}")
  print(f"| test metric | {' | '.join(runs)} |\n|---|{'---|' * len(runs)}")
  fmt = lambda v: "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
  for k in keys:
    print(f"| {k} | {' | '.join(fmt(v) for v in table[k].values())} |")
  for line in vocabulary_check(path, inputs, fields):
    print(line)


if __name__ == "__main__":
  # Defined here, not on import: profiling/benchmarks/manifest_bench.py imports `export` and has
  # flags of its own.
  flags.DEFINE_string("out", "/tmp/manifest_treesat", "Scratch folder (data, runs).")
  flags.DEFINE_integer("epochs", 0, "Epochs of every run (0 = the tiny config's).")
  app.run(main)
