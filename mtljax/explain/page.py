"""`explanations/<split>/index.html`: one page per explain run with its tables (localisation and
trust metrics, Ind-Avg vs Ens-Avg), the members' uncertainty maps, the MPRT curves, and every
picture of the run (member panels, labelled arrows, ensemble-size curves). Paths are relative, so
the folder can be moved or served as is; the analysis report links here where both exist."""

from __future__ import annotations

import glob
import html
import os

import numpy as np

from mtljax import fileio
from mtljax.analysis import html_page
from mtljax.explain.render import panels

_CSS = html_page._CSS  # the analysis report's look


def _compare_rows(method: str, compare: dict) -> list[dict]:
  return [
    {
      "method": method,
      "metric": metric,
      "Ind-Avg": c["ind_avg"],
      "Ens-Avg": c["ens_avg"],
      "t (+: ensemble better)": c["t"],
      "p": c["p"],
      "n": c["n"],
    }
    for metric, c in compare.items()
  ]


def _uncertainty_picture(out_dir, name, images, pairs, names, count: int = 8) -> str | None:
  """`uncertainty_<name>.png`: the members' per-pixel std over the first pairs' images."""
  path = os.path.join(out_dir, f"trust_{name}.npz")
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    std, agree = z["uncertainty_std"][:count], z["uncertainty_agreement"][:count]
  sel = pairs[: len(std)]
  titles = [f"{names[t]} (ex {i}) agree {a:.2f}" for (i, t), a in zip(sel, agree)]
  return panels.save_heatmap_grid(
    os.path.join(out_dir, f"uncertainty_{name}.png"),
    images[sel[:, 0]],
    std,
    titles=titles,
    signed=False,
    fontsize=7,
  )


def write(out_dir: str, summary: dict, images, pairs, names) -> str:
  """Writes `<out_dir>/index.html` from the run's `summary` (results.json) and the files of
  `out_dir`; returns its path."""
  parts = [
    f"<h1>Explanations: {html.escape(str(summary['task']))} on {html.escape(summary['split'])}"
    "</h1>",
    f"<p>Ensemble of {summary['ensemble_size']}, checkpoint step {summary['checkpoint_step']}, "
    f"{summary['num_targets']} targets of {summary['num_examples']} examples. Ind-Avg: the "
    "metric averaged over the members' own maps; Ens-Avg: of the averaged map (paired t-test "
    "over targets). Definitions: docs/trust.md.</p>",
  ]
  report = os.path.join(out_dir, "..", "..", "report", "index.html")
  if os.path.exists(report):
    parts.append("<p><a href='../../report/index.html'>The analysis report of this workdir</a></p>")
  loc, trust_rows, notes = [], [], []
  for method, r in summary["methods"].items():
    loc += _compare_rows(method, r.get("compare", {}))
    t = r.get("trust")
    if t:
      trust_rows += _compare_rows(method, t["compare"])
      notes += [f"{method}: {m} skipped ({why})" for m, why in t["skipped"].items()]
  parts += ["<h2>Localisation against the annotations</h2>", html_page.table(loc)]
  if trust_rows or notes:
    parts += [
      "<h2>Faithfulness, randomisation, robustness, localisation, complexity</h2>",
      html_page.table(trust_rows),
    ]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
  for method, r in summary["methods"].items():
    parts.append(f"<h2>{html.escape(method)}</h2>")
    t = r.get("trust") or {}
    if t.get("mprt_curve"):
      c = t["mprt_curve"]
      rows = [
        {"randomised up to": layer, "members": m, "ensemble": e}
        for layer, m, e in zip(c["layers"], c["members"], c["ensemble"])
      ]
      parts += [
        "<h3>MPRT: similarity with the randomised model's maps (top layer first)</h3>",
        html_page.table(rows),
      ]
    if t:
      parts.append(
        f"<p>Members' agreement (mean pairwise Spearman): "
        f"{t.get('agreement_mean', float('nan')):.3f}</p>"
      )
      pic = _uncertainty_picture(out_dir, method, images, pairs, names)
      if pic:
        parts += [
          "<h3>Uncertainty: per-pixel std of the members' maps</h3>",
          f"<img src='{os.path.basename(pic)}' alt='uncertainty {method}'>",
        ]
    for label, pattern in (
      ("Member panels", "members"),
      ("Labelled arrows", "arrows"),
      ("Ensemble size", "size_curve"),
    ):
      pngs = sorted(glob.glob(os.path.join(out_dir, f"{pattern}_{method}_*.png")))
      if pngs:
        parts.append(f"<h3>{label}</h3>")
        parts += [f"<img src='{html.escape(os.path.basename(p))}' alt='{label}'>" for p in pngs]
  doc = (
    f"<!doctype html><html><head><meta charset='utf-8'><title>Explanations</title>"
    f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>"
  )
  return fileio.write_text(os.path.join(out_dir, "index.html"), doc)
