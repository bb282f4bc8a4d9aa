"""TreeSAT deployment without Sentinel-2: models with S2 as input, as target or without it, on new data.

The mtl-explainability paper's claim: a modality used as an auxiliary *target* need not be
collected at deployment. Three models are trained on the same data (each its own command; the
synthetic archive is the same for all three, seed 0):

  python -m mtljax.main --config=configs/treesat.py:s2=input --workdir=/tmp/deploy/input
  python -m mtljax.main --config=configs/treesat.py:s2=target --workdir=/tmp/deploy/target
  python -m mtljax.main --config=configs/treesat.py:s2=off --workdir=/tmp/deploy/off
  python -m profiling.experiments.treesat_deploy --out=/tmp/deploy

then this script (a workdir `<out>/<input|target|off>` that is not there is skipped):
1. copies the data root of the first workdir (`config.data.root`, or its `synthetic_data`) to
   `<out>/root_without_s2` without the `s2/` folder (`--root` names another such root instead);
2. runs `--mode=predict --config.predict.root=<that root> --config.predict.split=test` for each
   model (the same config as its training: `--variant` and `--flag` are added to all): the
   `target` and `off` models predict, the `input` model is refused in one line naming s2;
3. joins each model's predictions back to the labels of that root's test split (by file name)
   and scores them with each task's own metrics, beside the test metrics of the training run's
   evaluation (data present, S2 included);
4. writes `<out>/comparison.json` and prints the table.

A smoke run on the tiny config (seconds of training each):

  python -m mtljax.main --config=configs/treesat.py:tiny,s2=target --workdir=/tmp/dtiny/target
  python -m profiling.experiments.treesat_deploy --out=/tmp/dtiny --variant=tiny
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = ("input", "target", "off")
METRICS = {"l3": ("f1_micro", "accuracy"), "l2": ("accuracy",), "age": ("mae",), "s2": ("mae",)}


def config_arg(variant: str, extra: str) -> str:
  return f"configs/treesat.py:{','.join(filter(None, (extra, f's2={variant}')))}"


def data_root(workdir: str) -> str:
  """The data root a workdir trained on (its config's, else its synthetic archive)."""
  with open(os.path.join(workdir, "config.json")) as f:
    data = json.load(f)["data"]
  return data["root"] or data["synthetic"]["dir"] or os.path.join(workdir, "synthetic_data")


def copy_without_s2(src: str, dst: str) -> str:
  """`dst`: a copy of the root `src` without its `s2/` folder (kept when already there)."""
  if not os.path.isdir(dst):
    top = os.path.abspath(src)
    shutil.copytree(src, dst, ignore=lambda d, n: ["s2"] if os.path.abspath(d) == top else [])
  return dst


def predict(
  workdir: str, variant: str, root: str, extra: str, flags
) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "mtljax.main", f"--config={config_arg(variant, extra)}",
         f"--workdir={workdir}", "--mode=predict", f"--config.predict.root={root}",
         "--config.predict.split=test", *flags]  # fmt: skip
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def scores(config, predictions_dir: str, root: str) -> dict[str, float]:
  """Each task's metrics (`METRICS`) of the predictions in `predictions_dir` joined by file name
  to the labels of the test split of `root`, read with the reader options of `config` (the
  training run's)."""
  import numpy as np

  from mtljax import tasks
  from mtljax.data import build

  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.data.root = root
  source = build.make_sources(c, ROOT, splits=("test",), inputs_only=True)[0]["test"]
  labels = source.label_arrays()
  with open(os.path.join(predictions_dir, "predictions.csv")) as f:
    names = [row["name"] for row in csv.DictReader(f)]
  order = {n: i for i, n in enumerate(source.names)}
  rows = np.asarray([order[n] for n in names])  # the labels' row of each prediction
  arrays = dict(np.load(os.path.join(predictions_dir, "predictions.npz")))
  out = {}
  for t, wanted in METRICS.items():
    if t not in config.tasks or t not in labels["targets"]:  # (S2's own target: no S2 here)
      continue
    kind = tasks.of(config.tasks[t])
    pred = arrays[f"{t}/value"] if kind.target == tasks.VALUE else arrays[f"{t}/prob"]
    got = kind.metrics(labels["targets"][t][rows], pred, labels["mask"][t][rows],
                       num_classes=config.tasks[t].get("num_classes"))  # fmt: skip
    out.update({f"{t}/{m}": float(got[m]) for m in wanted})
  return out


def parser() -> argparse.ArgumentParser:
  """The command line (checked against the documented commands)."""
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True, help="holds the workdirs input/, target/, off/")
  ap.add_argument("--root", default="", help="a data root without s2/ (default: made in --out)")
  ap.add_argument("--variant", default="", help="extra variant tokens of the config, e.g. tiny")
  ap.add_argument("--flag", action="append", default=[], help="an override of every command")
  return ap


def main(argv=None) -> dict:
  args = parser().parse_args(argv)
  import ml_collections

  from mtljax import fileio

  runs = {v: os.path.join(args.out, v) for v in VARIANTS}
  runs = {v: w for v, w in runs.items() if os.path.isfile(os.path.join(w, "config.json"))}
  if not runs:
    sys.exit(f"no trained workdir among {[os.path.join(args.out, v) for v in VARIANTS]}")
  root = args.root or copy_without_s2(
    data_root(next(iter(runs.values()))), os.path.join(args.out, "root_without_s2")
  )
  table = {}
  for variant, workdir in runs.items():
    res = predict(workdir, variant, root, args.variant, args.flag)
    with open(os.path.join(workdir, "final_metrics.json")) as f:
      trained = json.load(f)["test"]
    row = {"evaluation": {k: trained[k] for k in _keys(trained)}}
    if res.returncode != 0:
      row["without_s2"] = "refused: " + (res.stderr.strip().splitlines() or ["?"])[-1]
    else:
      with open(os.path.join(workdir, "config.json")) as f:  # the training's resolved config
        config = ml_collections.ConfigDict(json.load(f))
      folder = os.path.join(workdir, "predict", f"root-{os.path.basename(root.rstrip('/'))}-test")
      row["without_s2"] = scores(config, folder, root)
    table[variant] = row
  fileio.write_json(os.path.join(args.out, "comparison.json"), {"root": root, "runs": table})
  keys = _keys({k: 0 for r in table.values() for k in r["evaluation"]})
  print(f"{'model':12s} {'test split':10s} " + " ".join(f"{k:>12s}" for k in keys))
  for variant, row in table.items():
    for what, values in (("evaluation", row["evaluation"]), ("no-S2 root", row["without_s2"])):
      cells = values if isinstance(values, str) else " ".join(
        f"{values[k]:12.4f}" if k in values else f"{'-':>12s}" for k in keys
      )  # fmt: skip
      print(f"{'s2=' + variant:12s} {what:10s} {cells}")
  return table


def _keys(metrics: dict) -> list[str]:
  return [f"{t}/{m}" for t, ms in METRICS.items() for m in ms if f"{t}/{m}" in metrics]


if __name__ == "__main__":
  main()
