"""`--mode=analyze`: the intrinsic multitask analysis of a workdir (paper §4.2, Appendix C).

    python -m mtljax.main --config=configs/treesat.py --workdir=W --mode=analyze

reads `W/config.json` (the run's tasks; falls back to the passed config), `W/metrics.jsonl`,
`W/final_metrics.json` and `W/predictions/<split>/epoch_NNN.npz`, and writes `W/report/`:

    index.html                     everything below on one page, with the run's config and metrics
    summary.json                   what was analysed (tasks, pair, epochs) and notes on what was skipped
    error_correlation.csv/.png     Pearson r and p of main vs each auxiliary error per epoch (Fig. 4)
    combinations.csv/.png          CC/CF/FC/FF counts of the pair per epoch (Fig. 6a)
    ff_transitions.csv/.png        what became of the first epoch's FF examples (Fig. 6b)
    hierarchy.csv, hierarchy.png   -in/-out per combination per epoch; pies at chosen epochs (Fig. 7)
    regression_by_combination.csv/.png   a regression auxiliary's MAE per combination (Fig. 12)
    main_error_by_aux.csv, main_error_by_aux_<aux>.png   main error, aux correct vs wrong (Fig. 2)
    group_scatter_<aux>.png, group_scatter.csv   per-group (e.g. field) main error vs aux accuracy (Fig. 8)
    error_maps.png                 dense tasks: target, prediction, error side by side (Figs. 5, 10)
    combinations_members.csv       an ensemble's per-member combination counts
    val_metrics.png                each task's validation metric per epoch (metrics.jsonl)

The settings are `config.analysis` (`config_blocks.analysis_config`); the statistics are in
`mtljax.analysis.stats`, gathered over the epochs by `per_epoch`, drawn and tabled by `sections`
and put on the page by `html_page`. What a task's error, main metric and prediction are is its
kind's declaration (`mtljax.tasks`). For an ensemble the analysed prediction is the ensemble's (averaged
probabilities, `prob/<t>`); member arrays only feed `combinations_members.csv`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import ml_collections
import numpy as np

from mtljax import config_blocks, fileio
from mtljax import tasks as tasks_lib
from mtljax.analysis import html_page, per_epoch, sections
from mtljax.analysis.predictions import AnalysisError, epoch_files, read_json


# ============================================================================ settings
def _run_config(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The run's resolved config (`<workdir>/config.json`), else the passed config."""
  saved = read_json(os.path.join(workdir, "config.json"))
  return saved if saved is not None else json.loads(config.to_json_best_effort())


def _analysis_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  defaults = config_blocks.analysis_config()
  if "analysis" in config:
    unknown = set(config.analysis.keys()) - set(defaults.keys())
    if unknown:
      raise AnalysisError(
        f"config.analysis: unknown keys {sorted(unknown)} (allowed: {sorted(defaults.keys())})"
      )
    defaults.update(config.analysis.to_dict())
  return defaults


def _hierarchy_fn(data_name: str):
  """The dataset's `label_hierarchy(child, parent)` (its registry entry), or None."""
  from mtljax import data as data_lib

  try:
    spec = data_lib.get_dataset(data_name)
  except KeyError:
    return None
  return spec.label_hierarchy


class _Plan:
  """What to analyse, resolved from the analysis settings and the run's tasks."""

  def __init__(self, acfg, run: dict, workdir: str):
    self.acfg = acfg
    tasks = run.get("tasks") or {}
    self.kinds = {t: v["kind"] for t, v in tasks.items()}
    if not self.kinds:
      raise AnalysisError(f"{workdir}/config.json: the run has no tasks to analyse")
    unknown = {t: k for t, k in self.kinds.items() if k not in tasks_lib.KINDS}
    if unknown:
      raise AnalysisError(
        f"{workdir}/config.json: tasks {unknown} have kinds that are not registered "
        f"(known: {sorted(tasks_lib.KINDS)})"
      )
    self.main = acfg.main_task or run.get("main_task", "")
    if self.main not in self.kinds:
      raise AnalysisError(
        f"config.analysis.main_task={self.main!r} is not one of the run's tasks "
        f"{sorted(self.kinds)}"
      )
    self.aux = [t for t in self.kinds if t != self.main]
    self.notes: list[str] = []
    self.pair = self._pair(tuple(acfg.pair))
    self.child_to_parent, self.hierarchy_desc = self._hierarchy(run)
    self.regression = self._regression(acfg.regression_task)
    if acfg.classification_error not in ("prob", "zero_one"):
      raise AnalysisError(
        f"config.analysis.classification_error={acfg.classification_error!r} "
        "is not 'prob' or 'zero_one'"
      )
    for key in ("regression_error", "split_error"):
      if acfg[key] not in ("absolute", "relative"):
        raise AnalysisError(f"config.analysis.{key}={acfg[key]!r} is not 'absolute' or 'relative'")
    if not 0 < float(acfg.correlation_fraction) <= 1:
      raise AnalysisError(
        f"config.analysis.correlation_fraction={acfg.correlation_fraction!r} must be in (0, 1]"
      )

  def _pair(self, pair):
    # The combinations pair two tasks with one class per example.
    classif = [t for t, k in self.kinds.items() if tasks_lib.is_per_example_class(k)]
    if any(pair):
      if len(pair) != 2 or not all(pair) or pair[0] == pair[1]:
        raise AnalysisError(f"config.analysis.pair={pair!r}: expected two different task names")
      for t in pair:
        if t not in self.kinds:
          raise AnalysisError(
            f"config.analysis.pair: {t!r} is not a task of this run (tasks: {sorted(self.kinds)})"
          )
        if not tasks_lib.is_per_example_class(self.kinds[t]):
          raise AnalysisError(
            f"config.analysis.pair: {t!r} is a {self.kinds[t]} task; the "
            "correct/false combinations need two classification tasks "
            f"(this run has {classif})"
          )
      return tuple(pair)
    aux = [t for t in classif if t != self.main]
    if tasks_lib.is_per_example_class(self.kinds[self.main]) and aux:
      return (aux[0], self.main)
    self.notes.append(
      "Correct/false combinations, hierarchy and Fig. 12 skipped: they need the "
      f"main task and an auxiliary task to be classification tasks (tasks: "
      f"{self.kinds})."
    )
    return None

  def _hierarchy(self, run):
    mode = self.acfg.hierarchy
    if mode not in ("auto", "on", "off"):
      raise AnalysisError(f"config.analysis.hierarchy={mode!r} is not 'auto', 'on' or 'off'")
    if mode == "off":
      return None, ""
    data_name = (run.get("data") or {}).get("name", "")
    if self.pair is None:
      if mode == "on":
        raise AnalysisError(
          "config.analysis.hierarchy='on' needs a pair of classification tasks "
          "(config.analysis.pair)"
        )
      return None, ""
    fn = _hierarchy_fn(data_name)
    a, b = self.pair
    for child, parent in ((b, a), (a, b)):
      m = fn(child, parent) if fn is not None else None
      if m is not None:
        return (child, parent, np.asarray(m)), f"{child} ⊂ {parent} ({data_name})"
    msg = f"the dataset {data_name!r} defines no label hierarchy between {a!r} and {b!r}" + (
      "" if fn else " (its module has no label_hierarchy function)"
    )
    if mode == "on":
      raise AnalysisError(f"config.analysis.hierarchy='on': {msg}")
    self.notes.append(f"Hierarchy adherence (Fig. 7) skipped: {msg}.")
    return None, ""

  def _regression(self, name):
    if name:
      if name not in self.kinds or not tasks_lib.is_per_example_value(self.kinds[name]):
        raise AnalysisError(
          f"config.analysis.regression_task={name!r} is not a regression task "
          f"of this run (tasks: {self.kinds})"
        )
      return name
    regs = [t for t in self.aux if tasks_lib.is_per_example_value(self.kinds[t])]
    if not regs and self.pair:
      self.notes.append(
        "Regression error per combination (Fig. 12) skipped: no regression auxiliary task."
      )
    return regs[0] if regs else None


def _show_epochs(acfg, epochs: Sequence[int], best: int | None, folder: str) -> list[int]:
  if acfg.epochs:
    missing = [e for e in acfg.epochs if e not in epochs]
    if missing:
      raise AnalysisError(
        f"config.analysis.epochs: no predictions for epochs {missing} in "
        f"{folder} (saved epochs: {list(epochs)})"
      )
    return list(acfg.epochs)
  chosen = [epochs[0], epochs[len(epochs) // 2], best if best in epochs else epochs[-1]]
  return sorted(set(chosen))


# ============================================================================ the analysis
def analyze_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every analysis that the run's tasks allow and writes `<workdir>/report/`; returns the
  summary (also `report/summary.json`). Raises `AnalysisError` naming what is missing."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise AnalysisError(f"{workdir}: no such workdir")
  acfg = _analysis_settings(config)
  run = _run_config(config, workdir)
  plan = _Plan(acfg, run, workdir)
  split, main, kinds = acfg.split, plan.main, plan.kinds
  files = epoch_files(workdir, split)
  epochs = list(files)
  final = read_json(os.path.join(workdir, "final_metrics.json"), {}) or {}
  best = final.get("best_epoch")
  show = _show_epochs(acfg, epochs, best, os.path.dirname(files[epochs[0]]))
  map_epoch = best if best in epochs else epochs[-1]
  out = os.path.join(workdir, "report")
  os.makedirs(out, exist_ok=True)
  col = per_epoch.collect(workdir, plan, acfg, show, map_epoch)
  page_sections, notes = sections.write_sections(out, plan, acfg, col, show, map_epoch)
  val_fig = sections.val_metrics(out, workdir, kinds)
  summary = {
    "workdir": workdir,
    "split": split,
    "epochs": epochs,
    "shown_epochs": show,
    "best_epoch": best,
    "main_task": main,
    "tasks": kinds,
    "pair": list(plan.pair) if plan.pair else None,
    "hierarchy": plan.hierarchy_desc or None,
    "regression_task": plan.regression,
    "correlation_examples": int(len(col.subset)),
    "notes": notes,
    "combinations": col.combo_rows,
    "hierarchy_counts": col.hier_rows,
  }
  fileio.write_json(os.path.join(out, "summary.json"), summary)
  html_page.write_html(
    os.path.join(out, "index.html"), run, final, page_sections, notes, val_fig, summary
  )
  print(
    f"Analysis of {split} predictions ({len(epochs)} epochs) written to {out}/index.html",
    flush=True,
  )
  return summary
