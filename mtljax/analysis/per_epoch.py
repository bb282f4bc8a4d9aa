"""The per-epoch pass of the intrinsic analysis: every statistic that `report.analyze_workdir`
tables and draws, gathered over the saved epochs of one split (paper §4.2, Appendix C).

`collect` reads each epoch's predictions once and returns the rows of every table (one dict per
epoch, or per epoch and auxiliary task); `mtljax.analysis.sections` turns them into CSV files,
figures and page sections. What a task's error is, and whether its predictions are classes that
can be right or wrong, is its kind's declaration (`mtljax.tasks`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from mtljax import tasks as tasks_lib
from mtljax.analysis import stats as st
from mtljax.analysis.predictions import iter_epochs


@dataclasses.dataclass
class Collected:
  """What the epochs hold for the report. Rows are dicts, one per epoch (and auxiliary task)."""

  corr_rows: list[dict] = dataclasses.field(default_factory=list)  # Fig. 4
  combo_rows: list[dict] = dataclasses.field(default_factory=list)  # Fig. 6a
  member_rows: list[dict] = dataclasses.field(default_factory=list)  # an ensemble's members
  hier_rows: list[dict] = dataclasses.field(default_factory=list)  # Fig. 7
  reg_rows: list[dict] = dataclasses.field(default_factory=list)  # Fig. 12
  split_rows: list[dict] = dataclasses.field(default_factory=list)  # Fig. 2
  group_rows: list[dict] = dataclasses.field(default_factory=list)  # Fig. 8
  first_labels: np.ndarray | None = None  # the pair's combination per example, first epoch
  labels_by_epoch: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
  hier_by_epoch: dict[int, dict] = dataclasses.field(default_factory=dict)
  strips: dict[str, list] = dataclasses.field(default_factory=dict)  # aux → [(correct, wrong)]
  scatter: dict[str, dict] = dataclasses.field(default_factory=dict)  # aux → {panel: points}
  subset: np.ndarray | None = None  # the examples the correlations use (sorted indices)
  map_arrays: dict[str, np.ndarray] | None = None  # the epoch whose error maps are drawn
  has_group: bool | None = None  # the predictions carry a `group` array
  n: int = 0  # examples per epoch


def _correct(arrays, t):
  """(correct, valid) of a task whose predictions are classes, per example or pixel."""
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


def collect(workdir: str, plan: Any, acfg: Any, show: Sequence[int], map_epoch: int) -> Collected:
  """One pass over `<workdir>/predictions/<acfg.split>/epoch_*.npz`.

  Args:
    plan: what to analyse (`report._Plan`: `kinds`, `main`, `aux`, `pair`, `child_to_parent`,
      `regression`).
    acfg: the analysis settings (`config_blocks.analysis_config`).
    show: the epochs whose per-group scatter is drawn.
    map_epoch: the epoch whose arrays are kept for the error maps.
  """
  c = Collected(strips={t: [] for t in plan.aux}, scatter={t: {} for t in plan.aux})
  rng = np.random.default_rng(int(acfg.seed))
  for epoch, arrays in iter_epochs(workdir, acfg.split, plan.kinds):
    c.n = len(arrays["index"])
    if c.subset is None:
      k = max(1, int(math.ceil(float(acfg.correlation_fraction) * c.n)))
      c.subset = np.sort(rng.permutation(c.n)[:k])
      c.has_group = "group" in arrays
    _correlations(c, plan, acfg, arrays, epoch)
    if plan.pair:
      _pair(c, plan, arrays, epoch)
    _main_error_by_aux(c, plan, acfg, arrays, epoch, show, rng)
    if epoch == map_epoch:
      c.map_arrays = arrays
  return c


def _correlations(c: Collected, plan, acfg, arrays, epoch) -> None:
  """Fig. 4: Pearson r of the main error with each auxiliary error on the example subset."""
  main = plan.main
  err = {
    t: st.task_error(
      kind,
      arrays,
      t,
      classification_error=acfg.classification_error,
      regression_error=acfg.regression_error,
    )
    for t, kind in plan.kinds.items()
  }
  sub = {t: (e[c.subset], v[c.subset]) for t, (e, v) in err.items()}
  for t in plan.aux:
    r, p, m = st.error_correlation(sub[main], sub[t])
    pixelwise = sub[main][0].shape == sub[t][0].shape and sub[t][0].ndim > 1
    c.corr_rows.append(
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


def _pair(c: Collected, plan, arrays, epoch) -> None:
  """Figs. 6, 7, 12: the correct/false combinations of the pair of per-example class tasks."""
  a, b = plan.pair
  ok_a, va = _correct(arrays, a)
  ok_b, vb = _correct(arrays, b)
  valid = va & vb
  labels = np.where(valid, st.combinations(ok_a, ok_b), "")
  c.labels_by_epoch[epoch] = labels
  if c.first_labels is None:
    c.first_labels = labels
  c.combo_rows.append(
    {"epoch": epoch, **st.combination_counts(labels[valid]), "n": int(valid.sum())}
  )
  if f"member_prob/{a}" in arrays and f"member_prob/{b}" in arrays:
    pa, pb = arrays[f"member_prob/{a}"].argmax(-1), arrays[f"member_prob/{b}"].argmax(-1)
    for mbr in range(pa.shape[1]):
      ml = st.combinations(
        pa[:, mbr] == arrays[f"target/{a}"], pb[:, mbr] == arrays[f"target/{b}"]
      )[valid]
      c.member_rows.append({"epoch": epoch, "member": mbr, **st.combination_counts(ml)})
  if plan.child_to_parent is not None:
    child, parent, c2p = plan.child_to_parent
    hl = st.hierarchy_labels(
      labels[valid], arrays[f"pred/{child}"][valid], arrays[f"pred/{parent}"][valid], c2p
    )
    counts = st.hierarchy_counts(hl)
    c.hier_by_epoch[epoch] = counts
    pc = "CF" if child == b else "FC"  # parent right, child wrong
    cf = labels[valid] == pc
    n_cf = counts[f"{pc}-in"] + counts[f"{pc}-out"]
    c.hier_rows.append(
      {
        "epoch": epoch,
        **counts,
        "CF-in_fraction": counts[f"{pc}-in"] / n_cf if n_cf else float("nan"),
        "CF-in_chance": st.sibling_chance(arrays[f"target/{child}"][valid][cf], c2p),
      }
    )
  if plan.regression:
    e_r, v_r = st.task_error(plan.kinds[plan.regression], arrays, plan.regression)
    sel = valid & v_r
    means = st.group_means(e_r[sel], labels[sel])
    c.reg_rows.append(
      {
        "epoch": epoch,
        **{k: means[k][0] for k in st.COMBINATIONS},
        **{f"n_{k}": means[k][1] for k in st.COMBINATIONS},
      }
    )


def _main_error_by_aux(c: Collected, plan, acfg, arrays, epoch, show, rng) -> None:
  """Figs. 2, 8: the main error split by whether an auxiliary task's classes are predicted right
  (auxiliary tasks whose predictions are classes: per example or per pixel)."""
  main, kinds = plan.main, plan.kinds
  e_main, v_main = st.task_error(
    kinds[main],
    arrays,
    main,
    classification_error=acfg.classification_error,
    regression_error=acfg.split_error,
  )
  for t in plan.aux:
    if tasks_lib.spec(kinds[t]).target != tasks_lib.CLASS:
      continue
    ok, okv = _correct(arrays, t)
    e, ok_al, v = _align(e_main, v_main, ok, okv)
    row = st.split_by_correct(e[v], ok_al[v])
    c.split_rows.append({"epoch": epoch, "aux": t, **row})
    ev, cv = e[v].ravel(), ok_al[v].ravel()
    pts = []
    for side in (cv, ~cv):
      vals = ev[side]
      take = min(len(vals), int(acfg.max_points))
      pts.append(vals[rng.choice(len(vals), take, replace=False)] if take else vals[:0])
    c.strips[t].append(tuple(pts))
    if c.has_group and epoch in show:
      _groups(c, arrays, epoch, t, st.per_example(e_main, v_main), ok, okv)


def _groups(c: Collected, arrays, epoch, t, main_err, ok, okv) -> None:
  """Fig. 8: per group (e.g. a field) the mean main error and the auxiliary accuracy."""
  e1, v1 = main_err
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
  c.scatter[t][f"epoch {epoch}"] = (mean_acc, mean_err, cats)
  c.group_rows += [
    {
      "epoch": epoch,
      "aux": t,
      "group": str(i),
      "n": int(k),
      "aux_accuracy": float(x),
      "main_error": float(y),
      "category": str(cat),
    }
    for i, k, x, y, cat in zip(ids, counts, mean_acc, mean_err, cats)
  ]
