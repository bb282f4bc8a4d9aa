"""The manifest reproduces a built-in dataset: the synthetic TreeSAT archive of
`configs/treesat.py:tiny` exported as a manifest (one column per modality's file, the label
columns, the split column of the built-in reader), then both trained on the same seed and their
test metrics printed side by side (docs/notes/manifest.md records them and explains each
difference).

  python -m profiling.experiments.manifest_treesat --out=/tmp/manifest_treesat
  python -m profiling.experiments.manifest_treesat --out=/tmp/mt --epochs=1   # a smoke run

Only raster modalities and per-example tasks are exported (the manifest's columns); the built-in
run keeps its own inputs and tasks, so a metric missing on one side is reported as "-".
"""

import csv
import json
import os
import subprocess
import sys

from absl import app, flags

_OUT = flags.DEFINE_string("out", "/tmp/manifest_treesat", "Scratch folder (data, runs).")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Epochs of both runs (0 = the tiny config's).")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export(out: str) -> tuple[str, list[str], dict[str, str], str]:
  """Writes the synthetic archive and its manifest: `(manifest, inputs, {target: the built-in
  kind}, data root)`."""
  import numpy as np

  from configs import treesat
  from mtljax.data import get_dataset

  c = treesat.get_config("tiny")
  spec = get_dataset("treesat")
  root = str(spec.write_synthetic(os.path.join(out, "data"), **spec.synthetic_kwargs(c)))
  kwargs = spec.source_kwargs(c)
  inputs = [m for m in c.inputs if os.path.isdir(os.path.join(root, m, "60m"))]
  rows, targets = [], None
  for split in ("train", "val", "test"):
    src = spec.source_cls(root, split, **kwargs)
    fields = src.target_fields
    if targets is None:
      targets = {t: f["kind"] for t, f in fields.items() if len(f.get("shape", ())) <= 1}
    labels = src.label_arrays()
    for i, name in enumerate(src.names):
      row = {"id": name, "split": split}
      for m in inputs:
        row[m] = os.path.join(root, m, "60m", name if name.endswith(".tif") else name + ".tif")
      for t in targets:
        y, mask = labels["targets"][t][i], labels["mask"][t][i]
        names = fields[t].get("class_names") or [
          str(k) for k in range(fields[t].get("num_classes", 0))
        ]
        if not np.all(mask):
          row[t] = ""
        elif np.ndim(y) == 1:
          row[t] = ";".join(names[k] for k in np.flatnonzero(y > 0.5))
        elif "num_classes" in fields[t]:
          row[t] = names[int(y)]
        else:
          row[t] = f"{float(y):.6g}"
      rows.append(row)
  path = os.path.join(out, "treesat_manifest.csv")
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, ["id", *inputs, *targets, "split"])
    w.writeheader()
    w.writerows(rows)
  return path, inputs, targets, root


def _train(workdir: str, config: str, *flags_: str) -> dict:
  cmd = [sys.executable, "-m", "mtljax.main", f"--config={config}", f"--workdir={workdir}"]
  res = subprocess.run(cmd + list(flags_), cwd=ROOT, capture_output=True, text=True)
  if res.returncode != 0:
    raise SystemExit(f"{config} failed:\n{res.stderr[-3000:]}")
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    return json.load(f)


def main(argv):
  del argv
  out = os.path.abspath(_OUT.value)
  os.makedirs(out, exist_ok=True)
  path, inputs, targets, root = export(out)
  epochs = [f"--config.train.num_epochs={_EPOCHS.value}"] if _EPOCHS.value else []
  builtin = _train(os.path.join(out, "builtin"), "configs/treesat.py:tiny",
                   f"--config.data.root={root}", *epochs)  # fmt: skip
  arg = f"inputs={'+'.join(inputs)},targets={'+'.join(targets)},tiny"
  # The built-in kinds (the manifest would infer classification for the integer ages).
  kinds = [f"--config.tasks.{t}.kind={k}" for t, k in targets.items()]
  ours = _train(os.path.join(out, "manifest"), f"configs/manifest.py:{arg}",
                f"--config.data.manifest={path}", *kinds, *epochs)  # fmt: skip
  keys = sorted(set(builtin["test"]) | set(ours["test"]))
  print(f"manifest: {path} ({arg})")
  print("| test metric | configs/treesat.py:tiny | manifest |\n|---|---|---|")
  for k in keys:
    a, b = builtin["test"].get(k), ours["test"].get(k)
    fmt = lambda v: "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
    print(f"| {k} | {fmt(a)} | {fmt(b)} |")


if __name__ == "__main__":
  app.run(main)
