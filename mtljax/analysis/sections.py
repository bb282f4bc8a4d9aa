"""The sections of the analysis report: each one's CSV table, figure and explaining text.

`write_sections` turns what `per_epoch.collect` gathered into the files of `<workdir>/report/`
(see `mtljax.analysis.report` for the list) and returns the page's sections and the notes on what
was skipped; `val_metrics` draws the validation curves of `metrics.jsonl`. A section is
`(title, html text, image paths, table rows, CSV names)` (`html_page.write_html`).
"""

from __future__ import annotations

import html
import os
from typing import Any, Callable, Sequence

import numpy as np

from mtljax import tasks as tasks_lib
from mtljax.analysis import figures
from mtljax.analysis import stats as st
from mtljax.analysis.html_page import write_csv
from mtljax.analysis.per_epoch import Collected
from mtljax.analysis.predictions import read_jsonl

Section = tuple[str, str, list[str], list[dict], list[str]]


class _Writer:
  """The report folder, what to analyse and what was collected; `sections` and `notes` grow as
  each section is written."""

  def __init__(self, out: str, plan: Any, acfg: Any, col: Collected):
    self.out, self.plan, self.acfg, self.col = out, plan, acfg, col
    self.sections: list[Section] = []
    self.notes: list[str] = list(plan.notes)

  def path(self, name: str) -> str:
    return os.path.join(self.out, name)

  def rel(self, path: str) -> str:
    return os.path.relpath(path, self.out)

  def per_task_figures(self, name: str, parts: dict, draw: Callable[..., Any]) -> list[str]:
    """One PNG per task whose part is non-empty: `draw(path, task, part)` writes
    `<out>/<name>_<task>.png`. Returns their paths relative to the report folder, in `parts`'
    order."""
    imgs = []
    for task, part in parts.items():
      if part:
        path = self.path(f"{name}_{task}.png")
        draw(path, task, part)
        imgs.append(self.rel(path))
    return imgs

  def main_error_name(self) -> str:
    return tasks_lib.spec(self.plan.kinds[self.plan.main]).error_name(self.acfg.split_error)


def write_sections(
  out: str, plan: Any, acfg: Any, col: Collected, show: Sequence[int], map_epoch: int
) -> tuple[list[Section], list[str]]:
  """Writes every section's files into `out`; returns `(sections, notes)` in page order."""
  w = _Writer(out, plan, acfg, col)
  ep_corr = sorted({r["epoch"] for r in col.corr_rows})
  _correlation(w, ep_corr)
  if plan.pair:
    _combinations(w, show)
  _main_error_by_aux(w, ep_corr)
  _group_scatter(w)
  _error_maps_section(w, map_epoch)
  return w.sections, w.notes


def _correlation(w: _Writer, ep_corr: list[int]) -> None:
  col, acfg, main, split = w.col, w.acfg, w.plan.main, w.acfg.split
  if not col.corr_rows:
    w.notes.append("Error correlation (Fig. 4) skipped: the run has no auxiliary task.")
    return
  write_csv(w.path("error_correlation.csv"), col.corr_rows)
  figures.curves(
    w.path("error_correlation.png"),
    ep_corr,
    {f"{main}-{t}": [r["r"] for r in col.corr_rows if r["aux"] == t] for t in w.plan.aux},
    title=f"Pearson r of the {main} error with each auxiliary error ({split}, "
    f"{len(col.subset)} examples)",
    ylabel="Pearson r",
  )
  w.sections.append(
    (
      "Error correlation between tasks (Fig. 4)",
      f"Pearson correlation of the per-example (pixel-wise for two dense tasks) errors of the main "
      f"task <b>{html.escape(main)}</b> and each auxiliary task, per epoch, on "
      f"{len(col.subset)} of {col.n} {html.escape(split)} examples (fraction "
      f"{acfg.correlation_fraction}, seed {acfg.seed}). Errors: classification "
      + ("1 − p(true class)" if acfg.classification_error == "prob" else "0/1")
      + f", regression {acfg.regression_error} error, segmentation 0/1 per pixel, dense "
      "regression |error| per pixel; a dense error is averaged per example when paired with a "
      "per-example one.",
      ["error_correlation.png"],
      col.corr_rows,
      ["error_correlation.csv"],
    )
  )


def _combinations(w: _Writer, show: Sequence[int]) -> None:
  """Figs. 6, 7, 12: the pair's combinations, FF transitions, hierarchy and regression error."""
  col, plan, split = w.col, w.plan, w.acfg.split
  a, b = plan.pair
  ep = [r["epoch"] for r in col.combo_rows]

  def combination_curves(name: str, rows: list[dict], title: str, ylabel: str) -> None:
    """`<name>.csv` (the rows) and `<name>.png`: one curve per combination over the epochs."""
    write_csv(w.path(f"{name}.csv"), rows)
    curves = {c: [r[c] for r in rows] for c in st.COMBINATIONS}
    figures.curves(
      w.path(f"{name}.png"), ep, curves, title=title, ylabel=ylabel, colors=figures._COMBO_COLORS
    )

  combination_curves(
    "combinations",
    col.combo_rows,
    f"Correct (C) / false (F) combinations of {a} and {b} ({split})",
    "examples",
  )
  trans = []
  for e in ep:
    trans.append(
      {
        "epoch": e,
        **st.transition_fractions(col.first_labels, col.labels_by_epoch[e]),
        "n_ff_first": int((col.first_labels == "FF").sum()),
      }
    )
  write_csv(w.path("ff_transitions.csv"), trans)
  figures.stacked_fractions(
    w.path("ff_transitions.png"),
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
    col.combo_rows,
    ["combinations.csv", "ff_transitions.csv"],
  )
  if col.member_rows:
    write_csv(w.path("combinations_members.csv"), col.member_rows)
    csvs.append("combinations_members.csv")
    body += " Ensemble: the counts use the averaged prediction; each member's are in the CSV."
  ff_rows = [
    {
      "epoch": f"FF@{ep[0]} → {r['epoch']}",
      **{c: r[c] for c in st.COMBINATIONS},
      "n": r["n_ff_first"],
    }
    for r in trans
  ]
  w.sections.append(("Correct/false combinations (Fig. 6)", body, imgs, tables + ff_rows, csvs))
  if col.hier_rows:
    child, parent, _ = plan.child_to_parent
    write_csv(w.path("hierarchy.csv"), col.hier_rows)
    figures.pies(
      w.path("hierarchy.png"),
      {f"epoch {e}": col.hier_by_epoch[e] for e in show},
      title=f"{a}-{b} combinations; -in: predicted {child} inside predicted {parent}",
    )
    w.sections.append(
      (
        "Hierarchy adherence (Fig. 7)",
        f"Hierarchy {html.escape(plan.hierarchy_desc)}: '-in' when the predicted "
        f"{html.escape(child)} class belongs to the predicted {html.escape(parent)} class, "
        "'-out' otherwise. Pies at the epochs " + ", ".join(map(str, show)) + ". "
        "CF-in_chance: the CF-in fraction expected if the wrong child class were drawn "
        "uniformly from the other classes (siblings of the true class / (K − 1)).",
        ["hierarchy.png"],
        col.hier_rows,
        ["hierarchy.csv"],
      )
    )
  if col.reg_rows:
    rt = plan.regression
    combination_curves(
      "regression_by_combination",
      col.reg_rows,
      f"{rt} MAE per {a}-{b} combination ({split})",
      f"{rt} MAE",
    )
    w.sections.append(
      (
        f"{rt} error per combination (Fig. 12)",
        f"Mean absolute error of {html.escape(rt)} (original units) per combination.",
        ["regression_by_combination.png"],
        col.reg_rows,
        ["regression_by_combination.csv"],
      )
    )


def _main_error_by_aux(w: _Writer, ep_corr: list[int]) -> None:
  """Fig. 2: the main error, auxiliary task right vs wrong."""
  col, acfg, main = w.col, w.acfg, w.plan.main
  if not col.split_rows:
    return
  write_csv(w.path("main_error_by_aux.csv"), col.split_rows)

  def draw(path: str, t: str, pts) -> None:
    title = f"{main} error, {t} correct (blue) vs wrong (orange); ≤{acfg.max_points} points each"
    ylabel = f"{main} {w.main_error_name()}"
    figures.correct_wrong_strips(
      path, ep_corr, pts, seed=int(acfg.seed), title=title, ylabel=ylabel
    )

  imgs = w.per_task_figures("main_error_by_aux", col.strips, draw)
  w.sections.append(
    (
      "Main-task error by auxiliary correctness (Fig. 2)",
      f"Error of <b>{html.escape(main)}</b> ({w.main_error_name()}) for "
      "examples (pixels, when both tasks are dense) whose auxiliary label is predicted correctly "
      "vs wrongly; Welch t-test and Mann-Whitney U p-values.",
      imgs,
      col.split_rows,
      ["main_error_by_aux.csv"],
    )
  )


def _group_scatter(w: _Writer) -> None:
  """Fig. 8: one point per group, mean main error vs auxiliary accuracy."""
  col, main = w.col, w.plan.main
  if not col.has_group:
    w.notes.append("Per-group scatter (Fig. 8) skipped: the predictions have no 'group' array.")
    return

  def draw(path: str, t: str, panels) -> None:
    title, xlabel = f"Per group: {main} error vs {t} accuracy", f"{t} accuracy"
    figures.group_scatter(path, panels, title=title, xlabel=xlabel, ylabel=f"mean {main} error")

  imgs = w.per_task_figures("group_scatter", col.scatter, draw)
  if imgs:
    write_csv(w.path("group_scatter.csv"), col.group_rows)
    w.sections.append(
      (
        "Per-group scatter (Fig. 8)",
        "One point per group (the predictions' <code>group</code>, e.g. a field): "
        f"mean {html.escape(main)} error "
        f"({w.main_error_name()}) vs auxiliary accuracy, "
        "coloured by the first low-cardinality <code>meta/</code> key.",
        imgs,
        [],
        ["group_scatter.csv"],
      )
    )


def _error_maps_section(w: _Writer, map_epoch: int) -> None:
  """Figs. 5, 10: target, prediction and error of each dense task."""
  kinds = w.plan.kinds
  dense = [t for t in kinds if tasks_lib.spec(kinds[t]).dense]
  if not dense:
    w.notes.append("Error maps (Figs. 5, 10) skipped: the run has no dense task.")
    return
  if w.col.map_arrays is None:
    return
  path = _error_maps(
    w.path("error_maps.png"),
    w.col.map_arrays,
    dense,
    kinds,
    w.plan.main,
    int(w.acfg.num_maps),
    int(w.acfg.seed),
    map_epoch,
  )
  w.sections.append(
    (
      "Error maps of dense tasks (Figs. 5, 10)",
      f"Target, prediction and error of each dense task at epoch {map_epoch} "
      "(the best epoch), for randomly drawn examples; grey = no label.",
      [w.rel(path)],
      [],
      [],
    )
  )


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
      # Classes per pixel get a categorical colour map, values a continuous one.
      classes = tasks_lib.spec(kinds[t]).target == tasks_lib.CLASS
      cmap = "tab20" if classes else "viridis"
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


def val_metrics(out: str, workdir: str, kinds: dict[str, str]) -> str | None:
  """Each task's main metric (its kind's `main_metric`) per validation epoch of
  `metrics.jsonl`, as `out/val_metrics.png`; None when there is nothing to draw."""
  recs = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r.get("split") == "val"]
  series = {}
  for t, k in kinds.items():
    key = f"{t}/{tasks_lib.spec(k).main_metric}"
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
