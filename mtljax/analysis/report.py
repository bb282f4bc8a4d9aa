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

The settings are `config.analysis` (`configlib.analysis_config`); the statistics are in
`mtljax.analysis.stats`. For an ensemble the analysed prediction is the ensemble's (averaged
probabilities, `prob/<t>`); member arrays only feed `combinations_members.csv`.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from typing import Any, Sequence

import ml_collections
import numpy as np

from mtljax import configlib
from mtljax.analysis import figures
from mtljax.analysis import stats as st
from mtljax.analysis.predictions import (
  AnalysisError,
  epoch_files,
  iter_epochs,
  read_json,
  read_jsonl,
)

_MAIN_METRIC = {
  "classification": "f1_micro",
  "multilabel": "f1_micro",
  "regression": "mae",
  "segmentation": "miou",
  "dense_regression": "mae",
}


# ============================================================================ settings
def _run_config(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The run's resolved config (`<workdir>/config.json`), else the passed config."""
  saved = read_json(os.path.join(workdir, "config.json"))
  return saved if saved is not None else json.loads(config.to_json_best_effort())


def _analysis_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  defaults = configlib.analysis_config()
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
    classif = [t for t, k in self.kinds.items() if k == "classification"]
    if any(pair):
      if len(pair) != 2 or not all(pair) or pair[0] == pair[1]:
        raise AnalysisError(f"config.analysis.pair={pair!r}: expected two different task names")
      for t in pair:
        if t not in self.kinds:
          raise AnalysisError(
            f"config.analysis.pair: {t!r} is not a task of this run (tasks: {sorted(self.kinds)})"
          )
        if self.kinds[t] != "classification":
          raise AnalysisError(
            f"config.analysis.pair: {t!r} is a {self.kinds[t]} task; the "
            "correct/false combinations need two classification tasks "
            f"(this run has {classif})"
          )
      return tuple(pair)
    aux = [t for t in classif if t != self.main]
    if self.kinds[self.main] == "classification" and aux:
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
      if name not in self.kinds or self.kinds[name] != "regression":
        raise AnalysisError(
          f"config.analysis.regression_task={name!r} is not a regression task "
          f"of this run (tasks: {self.kinds})"
        )
      return name
    regs = [t for t in self.aux if self.kinds[t] == "regression"]
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


# ============================================================================ helpers
def _correct(kind, arrays, t):
  """(correct, valid) of a classification / segmentation task, per example or pixel."""
  ok = np.asarray(arrays[f"pred/{t}"]) == np.asarray(arrays[f"target/{t}"])
  return ok, np.asarray(arrays[f"mask/{t}"]) > 0


def _align(err, valid, ok, okvalid):
  """Main error and aux correctness on a common footing: pixel-wise when both are dense maps of
  one shape, else per example (a dense aux counts as correct when most labelled pixels are)."""
  if err.shape == ok.shape:
    return err, ok, valid & okvalid
  err, valid = st.per_example(err, valid)
  if ok.ndim > 1:
    acc, okvalid = st.per_example(ok.astype(np.float64), okvalid)
    ok = acc > 0.5
  return err, ok, valid & okvalid


def _write_csv(path: str, rows: list[dict]) -> str:
  fields = list(rows[0]) if rows else []
  for r in rows:
    fields += [k for k in r if k not in fields]
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
      w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
  return path


def _fmt(v):
  if isinstance(v, float):
    return "nan" if math.isnan(v) else f"{v:.4g}"
  return str(v)


def _table(rows: list[dict], max_rows: int = 60) -> str:
  if not rows:
    return "<p><em>(empty)</em></p>"
  cols = list(rows[0])
  head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
  body = "".join(
    "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
    for r in rows[:max_rows]
  )
  more = (
    f"<p><em>{len(rows) - max_rows} more rows in the CSV</em></p>" if len(rows) > max_rows else ""
  )
  return f"<table><tr>{head}</tr>{body}</table>{more}"


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
  rel = lambda p: os.path.relpath(p, out)  # noqa: E731
  sections: list[tuple[str, str, list[str], list[dict], list[str]]] = []
  notes = list(plan.notes)

  corr_rows, combo_rows, member_rows, hier_rows, reg_rows, split_rows = [], [], [], [], [], []
  group_rows: list[dict] = []
  first_labels, labels_by_epoch, hier_by_epoch = None, {}, {}
  strips: dict[str, list] = {t: [] for t in plan.aux}
  scatter: dict[str, dict] = {t: {} for t in plan.aux}
  subset, map_arrays, has_group = None, None, None
  rng = np.random.default_rng(int(acfg.seed))
  split_kinds = ("classification", "segmentation")

  for epoch, arrays in iter_epochs(workdir, split, kinds):
    n = len(arrays["index"])
    if subset is None:
      k = max(1, int(math.ceil(float(acfg.correlation_fraction) * n)))
      subset = np.sort(rng.permutation(n)[:k])
      has_group = "group" in arrays
    # ------------------------------------------------ Fig. 4: error correlations
    err = {
      t: st.task_error(
        kind,
        arrays,
        t,
        classification_error=acfg.classification_error,
        regression_error=acfg.regression_error,
      )
      for t, kind in kinds.items()
    }
    sub = {t: (e[subset], v[subset]) for t, (e, v) in err.items()}
    for t in plan.aux:
      r, p, m = st.error_correlation(sub[main], sub[t])
      pixelwise = sub[main][0].shape == sub[t][0].shape and sub[t][0].ndim > 1
      corr_rows.append(
        {
          "epoch": epoch,
          "main": main,
          "aux": t,
          "r": r,
          "p": p,
          "n": m,
          "unit": "pixel" if pixelwise else "example",
        }
      )
    # ------------------------------------------------ Figs. 6, 7, 12: combinations of the pair
    if plan.pair:
      a, b = plan.pair
      ok_a, va = _correct("classification", arrays, a)
      ok_b, vb = _correct("classification", arrays, b)
      valid = va & vb
      labels = np.where(valid, st.combinations(ok_a, ok_b), "")
      labels_by_epoch[epoch] = labels
      if first_labels is None:
        first_labels = labels
      combo_rows.append(
        {"epoch": epoch, **st.combination_counts(labels[valid]), "n": int(valid.sum())}
      )
      if f"member_prob/{a}" in arrays and f"member_prob/{b}" in arrays:
        pa, pb = arrays[f"member_prob/{a}"].argmax(-1), arrays[f"member_prob/{b}"].argmax(-1)
        for mbr in range(pa.shape[1]):
          ml = st.combinations(
            pa[:, mbr] == arrays[f"target/{a}"], pb[:, mbr] == arrays[f"target/{b}"]
          )[valid]
          member_rows.append({"epoch": epoch, "member": mbr, **st.combination_counts(ml)})
      if plan.child_to_parent is not None:
        child, parent, c2p = plan.child_to_parent
        hl = st.hierarchy_labels(
          labels[valid], arrays[f"pred/{child}"][valid], arrays[f"pred/{parent}"][valid], c2p
        )
        counts = st.hierarchy_counts(hl)
        hier_by_epoch[epoch] = counts
        pc = "CF" if child == b else "FC"  # parent right, child wrong
        cf = labels[valid] == pc
        n_cf = counts[f"{pc}-in"] + counts[f"{pc}-out"]
        hier_rows.append(
          {
            "epoch": epoch,
            **counts,
            "CF-in_fraction": counts[f"{pc}-in"] / n_cf if n_cf else float("nan"),
            "CF-in_chance": st.sibling_chance(arrays[f"target/{child}"][valid][cf], c2p),
          }
        )
      if plan.regression:
        e_r, v_r = st.task_error("regression", arrays, plan.regression)
        sel = valid & v_r
        means = st.group_means(e_r[sel], labels[sel])
        reg_rows.append(
          {
            "epoch": epoch,
            **{c: means[c][0] for c in st.COMBINATIONS},
            **{f"n_{c}": means[c][1] for c in st.COMBINATIONS},
          }
        )
    # ------------------------------------------------ Figs. 2, 8: main error vs aux correctness
    e_main, v_main = st.task_error(
      kinds[main],
      arrays,
      main,
      classification_error=acfg.classification_error,
      regression_error=acfg.split_error,
    )
    for t in plan.aux:
      if kinds[t] not in split_kinds:
        continue
      ok, okv = _correct(kinds[t], arrays, t)
      e, c, v = _align(e_main, v_main, ok, okv)
      row = st.split_by_correct(e[v], c[v])
      split_rows.append({"epoch": epoch, "aux": t, **row})
      ev, cv = e[v].ravel(), c[v].ravel()
      pts = []
      for side in (cv, ~cv):
        vals = ev[side]
        take = min(len(vals), int(acfg.max_points))
        pts.append(vals[rng.choice(len(vals), take, replace=False)] if take else vals[:0])
      strips[t].append(tuple(pts))
      if has_group and epoch in show:
        e1, v1 = st.per_example(e_main, v_main)
        acc, av = st.per_example(ok.astype(np.float64), okv)
        keep = v1 & av
        g = arrays["group"][keep]
        ids, mean_err, counts = st.per_group(e1[keep], g)
        _, mean_acc, _ = st.per_group(acc[keep], g)
        cat_key = next(
          (k for k in sorted(arrays) if k.startswith("meta/") and len(np.unique(arrays[k])) <= 12),
          None,
        )
        if cat_key:  # "crop=1": the group's first example's value, named for the legend
          cats = np.array([f"{cat_key[5:]}={arrays[cat_key][keep][g == i][0]}" for i in ids])
        else:
          cats = np.full(len(ids), "all")
        scatter[t][f"epoch {epoch}"] = (mean_acc, mean_err, cats)
        group_rows += [
          {
            "epoch": epoch,
            "aux": t,
            "group": str(i),
            "n": int(k),
            "aux_accuracy": float(x),
            "main_error": float(y),
            "category": str(c),
          }
          for i, k, x, y, c in zip(ids, counts, mean_acc, mean_err, cats)
        ]
    if epoch == map_epoch:
      map_arrays = arrays
  # ------------------------------------------------------------------ figures and tables
  ep_corr = sorted({r["epoch"] for r in corr_rows})
  if corr_rows:
    _write_csv(os.path.join(out, "error_correlation.csv"), corr_rows)
    figures.curves(
      os.path.join(out, "error_correlation.png"),
      ep_corr,
      {f"{main}-{t}": [r["r"] for r in corr_rows if r["aux"] == t] for t in plan.aux},
      title=f"Pearson r of the {main} error with each auxiliary error ({split}, "
      f"{len(subset)} examples)",
      ylabel="Pearson r",
    )
    sections.append(
      (
        "Error correlation between tasks (Fig. 4)",
        f"Pearson correlation of the per-example (pixel-wise for two dense tasks) errors of the main "
        f"task <b>{html.escape(main)}</b> and each auxiliary task, per epoch, on "
        f"{len(subset)} of {n} {html.escape(split)} examples (fraction "
        f"{acfg.correlation_fraction}, seed {acfg.seed}). Errors: classification "
        + ("1 − p(true class)" if acfg.classification_error == "prob" else "0/1")
        + f", regression {acfg.regression_error} error, segmentation 0/1 per pixel, dense "
        "regression |error| per pixel; a dense error is averaged per example when paired with a "
        "per-example one.",
        ["error_correlation.png"],
        corr_rows,
        ["error_correlation.csv"],
      )
    )
  else:
    notes.append("Error correlation (Fig. 4) skipped: the run has no auxiliary task.")

  if plan.pair:
    a, b = plan.pair
    ep = [r["epoch"] for r in combo_rows]
    _write_csv(os.path.join(out, "combinations.csv"), combo_rows)
    figures.curves(
      os.path.join(out, "combinations.png"),
      ep,
      {c: [r[c] for r in combo_rows] for c in st.COMBINATIONS},
      title=f"Correct (C) / false (F) combinations of {a} and {b} ({split})",
      ylabel="examples",
      colors=figures._COMBO_COLORS,
    )
    trans = []
    for e in ep:
      trans.append(
        {
          "epoch": e,
          **st.transition_fractions(first_labels, labels_by_epoch[e]),
          "n_ff_first": int((first_labels == "FF").sum()),
        }
      )
    _write_csv(os.path.join(out, "ff_transitions.csv"), trans)
    figures.stacked_fractions(
      os.path.join(out, "ff_transitions.png"),
      ep,
      {c: [r[c] for r in trans] for c in st.COMBINATIONS},
      title=f"What became of the {trans[0]['n_ff_first']} examples FF at epoch {ep[0]}",
    )
    body = (
      f"Letters: first <b>{html.escape(a)}</b>, then <b>{html.escape(b)}</b> "
      "(C = correct, F = false), counted over the examples labelled for both."
    )
    imgs, tables, csvs = (
      ["combinations.png", "ff_transitions.png"],
      combo_rows,
      ["combinations.csv", "ff_transitions.csv"],
    )
    if member_rows:
      _write_csv(os.path.join(out, "combinations_members.csv"), member_rows)
      csvs.append("combinations_members.csv")
      body += " Ensemble: the counts use the averaged prediction; each member's are in the CSV."
    sections.append(
      (
        "Correct/false combinations (Fig. 6)",
        body,
        imgs,
        tables
        + [
          {
            "epoch": f"FF@{ep[0]} → {r['epoch']}",
            **{c: r[c] for c in st.COMBINATIONS},
            "n": r["n_ff_first"],
          }
          for r in trans
        ],
        csvs,
      )
    )
    if hier_rows:
      child, parent, _ = plan.child_to_parent
      _write_csv(os.path.join(out, "hierarchy.csv"), hier_rows)
      figures.pies(
        os.path.join(out, "hierarchy.png"),
        {f"epoch {e}": hier_by_epoch[e] for e in show},
        title=f"{a}-{b} combinations; -in: predicted {child} inside predicted {parent}",
      )
      sections.append(
        (
          "Hierarchy adherence (Fig. 7)",
          f"Hierarchy {html.escape(plan.hierarchy_desc)}: '-in' when the predicted "
          f"{html.escape(child)} class belongs to the predicted {html.escape(parent)} class, "
          "'-out' otherwise. Pies at the epochs " + ", ".join(map(str, show)) + ". "
          "CF-in_chance: the CF-in fraction expected if the wrong child class were drawn "
          "uniformly from the other classes (siblings of the true class / (K − 1)).",
          ["hierarchy.png"],
          hier_rows,
          ["hierarchy.csv"],
        )
      )
    if reg_rows:
      rt = plan.regression
      _write_csv(os.path.join(out, "regression_by_combination.csv"), reg_rows)
      figures.curves(
        os.path.join(out, "regression_by_combination.png"),
        ep,
        {c: [r[c] for r in reg_rows] for c in st.COMBINATIONS},
        title=f"{rt} MAE per {a}-{b} combination ({split})",
        ylabel=f"{rt} MAE",
        colors=figures._COMBO_COLORS,
      )
      sections.append(
        (
          f"{rt} error per combination (Fig. 12)",
          f"Mean absolute error of {html.escape(rt)} (original units) per combination.",
          ["regression_by_combination.png"],
          reg_rows,
          ["regression_by_combination.csv"],
        )
      )

  if split_rows:
    _write_csv(os.path.join(out, "main_error_by_aux.csv"), split_rows)
    imgs = []
    for t, pts in strips.items():
      if pts:
        path = os.path.join(out, f"main_error_by_aux_{t}.png")
        figures.correct_wrong_strips(
          path,
          ep_corr,
          pts,
          seed=int(acfg.seed),
          title=f"{main} error, {t} correct (blue) vs wrong (orange); ≤{acfg.max_points} "
          "points each",
          ylabel=f"{main} {_error_name(kinds[main], acfg.split_error)}",
        )
        imgs.append(rel(path))
    sections.append(
      (
        "Main-task error by auxiliary correctness (Fig. 2)",
        f"Error of <b>{html.escape(main)}</b> ({_error_name(kinds[main], acfg.split_error)}) for "
        "examples (pixels, when both tasks are dense) whose auxiliary label is predicted correctly "
        "vs wrongly; Welch t-test and Mann-Whitney U p-values.",
        imgs,
        split_rows,
        ["main_error_by_aux.csv"],
      )
    )
  if has_group:
    imgs = []
    for t, panels in scatter.items():
      if panels:
        path = os.path.join(out, f"group_scatter_{t}.png")
        figures.group_scatter(
          path,
          panels,
          title=f"Per group: {main} error vs {t} accuracy",
          xlabel=f"{t} accuracy",
          ylabel=f"mean {main} error",
        )
        imgs.append(rel(path))
    if imgs:
      _write_csv(os.path.join(out, "group_scatter.csv"), group_rows)
      sections.append(
        (
          "Per-group scatter (Fig. 8)",
          "One point per group (the predictions' <code>group</code>, e.g. a field): "
          f"mean {html.escape(main)} error "
          f"({_error_name(kinds[main], acfg.split_error)}) vs auxiliary accuracy, "
          "coloured by the first low-cardinality <code>meta/</code> key.",
          imgs,
          [],
          ["group_scatter.csv"],
        )
      )
  else:
    notes.append("Per-group scatter (Fig. 8) skipped: the predictions have no 'group' array.")

  dense = [t for t in kinds if kinds[t] in st.DENSE_KINDS]
  if dense and map_arrays is not None:
    path = _error_maps(
      os.path.join(out, "error_maps.png"),
      map_arrays,
      dense,
      kinds,
      main,
      int(acfg.num_maps),
      int(acfg.seed),
      map_epoch,
    )
    sections.append(
      (
        "Error maps of dense tasks (Figs. 5, 10)",
        f"Target, prediction and error of each dense task at epoch {map_epoch} "
        "(the best epoch), for randomly drawn examples; grey = no label.",
        [rel(path)],
        [],
        [],
      )
    )
  elif not dense:
    notes.append("Error maps (Figs. 5, 10) skipped: the run has no dense task.")

  val_fig = _val_metrics(out, workdir, kinds)
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
    "correlation_examples": int(len(subset)),
    "notes": notes,
    "combinations": combo_rows,
    "hierarchy_counts": hier_rows,
  }
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  _write_html(os.path.join(out, "index.html"), run, final, sections, notes, val_fig, summary)
  print(
    f"Analysis of {split} predictions ({len(epochs)} epochs) written to {out}/index.html",
    flush=True,
  )
  return summary


def _error_name(kind, mode):
  if kind == "classification":
    return "1 − p(true class)"
  if kind == "segmentation":
    return "0/1 pixel error"
  return f"{mode} error"


def _error_maps(path, arrays, dense, kinds, main, num, seed, epoch):
  n = len(arrays["index"])
  valid = np.ones(n, bool)
  for t in dense:
    valid &= np.asarray(arrays[f"mask/{t}"]).reshape(n, -1).any(-1)
  cand = np.flatnonzero(valid)
  pick = np.sort(np.random.default_rng(seed).permutation(cand)[:num])
  order = [main] + [t for t in dense if t != main] if main in dense else dense
  rows = []
  for i in pick:
    row = []
    for t in order:
      m = np.asarray(arrays[f"mask/{t}"][i]) > 0
      tgt = np.where(m, arrays[f"target/{t}"][i], np.nan)
      prd = np.asarray(arrays[f"pred/{t}"][i], np.float64)
      err, _ = st.task_error(
        kinds[t],
        {
          k: v[i : i + 1]
          for k, v in arrays.items()
          if k.endswith(f"/{t}") and not k.startswith("member")
        },
        t,
      )
      cmap = "tab20" if kinds[t] == "segmentation" else "viridis"
      name = str(arrays["name"][i]) if "name" in arrays else str(arrays["index"][i])
      both = np.concatenate([tgt[np.isfinite(tgt)].ravel(), prd.ravel()])
      lim = (float(both.min()), float(both.max())) if both.size else (None, None)
      row += [
        (tgt, f"{name}\n{t} target", cmap, lim),
        (prd, f"{t} prediction", cmap, lim),
        (np.where(m, err[0], np.nan), f"{t} error", "magma"),
      ]
    rows.append(row)
  return figures.map_grid(path, rows, title=f"Dense tasks at epoch {epoch}")


def _val_metrics(out, workdir, kinds):
  recs = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r.get("split") == "val"]
  series = {}
  for t, k in kinds.items():
    key = f"{t}/{_MAIN_METRIC.get(k, '')}"
    if recs and all(key in r for r in recs):
      series[key] = [r[key] for r in recs]
  if not series:
    return None
  return figures.curves(
    os.path.join(out, "val_metrics.png"),
    [r.get("epoch") for r in recs],
    series,
    title="Validation metrics per epoch (metrics.jsonl)",
    ylabel="",
  )


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
img{max-width:100%;border:1px solid #eee;margin:4px 0}pre{background:#f6f6f6;padding:1em;
overflow:auto;font-size:11px}h2{border-bottom:1px solid #ddd}"""


def _write_html(path, run, final, sections, notes, val_fig, summary):
  e = html.escape
  parts = [
    "<!DOCTYPE html>",
    "<html lang='en'><head><meta charset='utf-8'>",
    "<title>mtljax intrinsic multitask analysis</title>",
    f"<style>{_CSS}</style>",
    "</head><body>",
    "<h1>Intrinsic multitask analysis</h1>",
    f"<p>Workdir <code>{e(summary['workdir'])}</code>, split <b>{e(summary['split'])}</b>, "
    f"epochs {summary['epochs'][0]}–{summary['epochs'][-1]} ({len(summary['epochs'])}), "
    f"main task <b>{e(summary['main_task'])}</b>, tasks "
    f"{e(', '.join(f'{t} ({k})' for t, k in summary['tasks'].items()))}.</p>",
  ]
  if final:
    rows = []
    for split in ("val", "test"):
      m = final.get(split) or {}
      rows.append(
        {
          "split": split,
          **{
            k: v
            for k, v in sorted(m.items())
            if not k.endswith("/count") and not k.startswith("member")
          },
        }
      )
    parts += [
      f"<h2>Final metrics (best epoch {e(str(final.get('best_epoch')))})</h2>",
      _table(rows),
    ]
  if val_fig:
    parts += ["<img src='val_metrics.png' alt='validation metrics per epoch'>"]
  for title, text, imgs, rows, csvs in sections:
    parts += [f"<h2>{e(title)}</h2>", f"<p>{text}</p>"]
    parts += [f"<img src='{e(i)}' alt='{e(title)}'>" for i in imgs]
    if rows:
      parts.append(_table(rows))
    if csvs:
      parts.append("<p>Tables: " + ", ".join(f"<a href='{e(c)}'>{e(c)}</a>" for c in csvs) + "</p>")
  if notes:
    parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{e(n)}</li>" for n in notes] + ["</ul>"]
  parts += [
    "<h2>Run config</h2>",
    "<details><summary>config.json</summary><pre>",
    e(json.dumps(run, indent=1, default=str)),
    "</pre></details>",
    "<p><a href='summary.json'>summary.json</a></p>",
    "</body></html>",
  ]
  with open(path + ".tmp", "w") as f:
    f.write("\n".join(parts))
  os.replace(path + ".tmp", path)
