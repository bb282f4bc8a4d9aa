r"""Train the MTC-LIM table (paper Table 3) over R independent realisations and write it.

  python -m mtljax.sweeps.mtc --config=configs/facades.py --workdir=W
  python -m mtljax.sweeps.mtc --config=configs/facades.py --workdir=W --realisations=5 \
      --variants=STC,BL,BL-MS,LIM-MS_ALL --config.train.num_epochs=30

Each variant is one `train.train_and_evaluate` run in `W/<variant>/` whose R realisations (seeds)
are trained together as a vmapped ensemble (`config.ensemble.size = R`, strategy "seeds"); the
test metrics of each member (`member<k>/<task>/accuracy|kappa`, best checkpoint by the ensemble's
validation score: the main task's, or with `config.train.select_task_mean` (configs/facades.py:
"kappa") the mean over tasks) are the realisations. An unknown name in `--variants` is an error
before anything is written. A variant whose `final_metrics.json`
exists is not retrained (rerun the command to finish an interrupted sweep). Writes:

  W/table3.csv, W/table3.md, W/table3.json   per task OA and κ, their mean over tasks, Δm (Eq. 15)
                                             against STC, as mean ± std over realisations (%)
  W/cooccurrence.png, W/cooccurrence.csv     P(label j | label i) of the data (Fig. 4)
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mtljax import fileio

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "configs/facades.py[:variant]", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the sweep writes everything.")
_VARIANTS = flags.DEFINE_string("variants", "", "Comma-separated variants (default: all 12).")
_REALISATIONS = flags.DEFINE_integer("realisations", 3, "Independent realisations (seeds).")
flags.mark_flags_as_required(["config", "workdir"])


def realisation_metrics(results: dict, tasks, size: int) -> list[dict[str, dict[str, float]]]:
  """Per realisation k: ``{task: {"oa", "kappa"}}`` from a run's test metrics."""
  test = results["test"]
  prefix = (lambda k: f"member{k}/") if size > 1 else (lambda k: "")
  return [
    {
      t: {"oa": test[f"{prefix(k)}{t}/accuracy"], "kappa": test[f"{prefix(k)}{t}/kappa"]}
      for t in tasks
    }
    for k in range(size)
  ]


def build_table(per_variant: dict[str, list], tasks, baseline: str = "STC") -> list[dict]:
  """Rows of Table 3: per task and mean over tasks, mean and std over realisations of OA and κ
  (fractions), and Δm (Eq. 15) of the realisation means against ``baseline`` when present."""
  from mtljax.mtc.scores import delta_m

  rows = []
  base_means = None
  if baseline in per_variant:
    reals = per_variant[baseline]
    base_means = {
      m: {t: float(np.mean([r[t][m] for r in reals])) for t in tasks} for m in ("oa", "kappa")
    }
  for v, reals in per_variant.items():
    row = {"variant": v, "realisations": len(reals)}
    for m in ("oa", "kappa"):
      for t in tasks:
        vals = [r[t][m] for r in reals]
        row[f"{t}/{m}"] = (float(np.mean(vals)), float(np.std(vals)))
      means = [float(np.mean([r[t][m] for t in tasks])) for r in reals]
      row[f"mean/{m}"] = (float(np.mean(means)), float(np.std(means)))
      row[f"mean/{m}/realisations"] = means
      if base_means is not None:
        row[f"delta_m/{m}"] = delta_m({t: row[f"{t}/{m}"][0] for t in tasks}, base_means[m])
    rows.append(row)
  return rows


def write_table(rows: list[dict], tasks, workdir: str) -> dict[str, str]:
  """table3.csv / .md / .json in ``workdir`` (values in %)."""
  pm = lambda x: f"{100 * x[0]:.2f} ± {100 * x[1]:.2f}"
  cols = [f"{t}/{m}" for t in tasks for m in ("oa", "kappa")] + ["mean/oa", "mean/kappa"]
  has_dm = "delta_m/oa" in rows[0]
  header = ["variant"] + [c.replace("/oa", " OA").replace("/kappa", " κ") for c in cols]
  header += ["Δm OA (%)", "Δm κ (%)"] if has_dm else []
  lines = []
  for r in rows:
    line = [r["variant"]] + [pm(r[c]) for c in cols]
    if has_dm:
      line += [f"{100 * r['delta_m/oa']:+.2f}", f"{100 * r['delta_m/kappa']:+.2f}"]
    lines.append(line)
  paths = {k: os.path.join(workdir, f"table3.{k}") for k in ("csv", "md", "json")}
  fileio.write_csv(paths["csv"], [header, *lines])
  md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
  fileio.write_text(paths["md"], md + "".join("| " + " | ".join(line) + " |\n" for line in lines))
  fileio.write_json(paths["json"], rows)
  return paths


def write_cooccurrence(data_root: str, workdir: str) -> str:
  """Fig. 4 of the whole labels table of ``data_root``: cooccurrence.png and .csv."""
  from mtljax.data.facades.reader import read_table
  from mtljax.mtc.scores import cooccurrence, plot_cooccurrence

  table = read_table(data_root)
  names = [f"{t}:{c}" for t, cls in table["tasks"].items() for c in cls]
  mat = cooccurrence(table["labels"], [len(c) for c in table["tasks"].values()])
  fileio.write_csv(
    os.path.join(workdir, "cooccurrence.csv"),
    [["given \\ label"] + names] + [[n] + [f"{x:.4f}" for x in row] for n, row in zip(names, mat)],
  )
  return plot_cooccurrence(mat, names, os.path.join(workdir, "cooccurrence.png"))


def _child(cfg, run_dir):
  from mtljax import train

  train.train_and_evaluate(cfg, run_dir)


def _train_in_child(cfg, run_dir: str) -> dict:
  """One variant's run in a fresh (spawned) process: in one long process the fourth run of a
  sweep was seen to stall with every thread asleep (left for investigation); a child per run also
  returns its memory."""
  import multiprocessing

  proc = multiprocessing.get_context("spawn").Process(target=_child, args=(cfg, run_dir))
  proc.start()
  proc.join()
  if proc.exitcode != 0:
    raise RuntimeError(f"training {run_dir} failed (exit code {proc.exitcode}); see its output")
  with open(os.path.join(run_dir, "final_metrics.json")) as f:
    return json.load(f)


def run_sweep(config, workdir: str, variants, realisations: int) -> dict:
  """Train every variant (R realisations each) and write the table; returns the summary."""
  from mtljax import configlib
  from mtljax.models.lim import VARIANTS, parse_variant

  variants = list(variants or VARIANTS)
  for v in variants:
    parse_variant(v)  # unknown names fail before anything is written or trained
  if int(realisations) < 1:
    raise configlib.ConfigError(f"--realisations={realisations}: expected at least 1")
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  tasks = sorted(config.tasks)
  per_variant, seconds = {}, {}
  t_all = time.perf_counter()
  data_dir = (
    config.data.root or config.data.synthetic.dir or os.path.join(workdir, "synthetic_data")
  )
  for v in variants:
    cfg = copy.deepcopy(config)
    with cfg.unlocked():
      cfg.model.variant = v
      cfg.ensemble.size = int(realisations)
      cfg.ensemble.strategy = "seeds"
      if not cfg.data.root:
        cfg.data.synthetic.dir = data_dir
    run_dir = os.path.join(workdir, v)
    final = os.path.join(run_dir, "final_metrics.json")
    t0 = time.perf_counter()
    if os.path.exists(final):
      with open(final) as f:
        results = json.load(f)
    else:
      print(f"=== {v}: {realisations} realisation(s) in {run_dir}", flush=True)
      results = _train_in_child(cfg, run_dir)
    seconds[v] = time.perf_counter() - t0
    per_variant[v] = realisation_metrics(results, tasks, int(realisations))
  rows = build_table(per_variant, tasks)
  for r, v in zip(rows, variants):
    r["train_seconds"] = seconds[v]
  paths = write_table(rows, tasks, workdir)
  png = write_cooccurrence(data_dir, workdir)
  total = time.perf_counter() - t_all
  summary = {"seconds": total, "table": paths, "cooccurrence": png}
  fileio.write_json(
    os.path.join(workdir, "sweep.json"),
    {**summary, "variants": variants, "realisations": realisations, "seconds_per_variant": seconds},
  )
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from absl import logging

  from mtljax import configlib
  from mtljax.data.source import DataError

  logging.set_verbosity(logging.WARNING)
  variants = [v.strip() for v in _VARIANTS.value.split(",") if v.strip()]
  try:
    summary = run_sweep(_CONFIG.value, _WORKDIR.value, variants, _REALISATIONS.value)
  except (configlib.ConfigError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  with open(summary["table"]["md"]) as f:
    print(f.read())
  print(
    f"Sweep done in {summary['seconds']:.0f} s: {summary['table']['md']} (+ .csv, .json), "
    f"{summary['cooccurrence']}",
    flush=True,
  )


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)
