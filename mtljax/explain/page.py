"""`index.html` of an explain run (`explanations/<split>/`) and of a predict run's explanations
(`predict/<name>/explanations/`): one page a person reads.

Top first: what was explained (one model or an ensemble of E), then "at a glance": for examples
picked across the explained classes (`setup.pick_across`), the image beside its stretched explanation
with a colour bar that says what the colours mean, the members' disagreement where there are
several, and one sentence under it grounded in the map (`sentence`). Then what a user reads on
data without masks: each modality's and band's share of the attribution per class
(`shares_by_class`) and the trust metrics that need no mask (faithfulness, sanity, complexity);
the localisation table only where annotations scored something. Then per method the MPRT curve,
the members' uncertainty picture and every picture of the run (member panels, labelled arrows,
ensemble-size curves). Paths are relative, so the folder can be moved or served as is; the
analysis report links here where both exist.
"""

from __future__ import annotations

import glob
import html
import os

import numpy as np

from mtljax import fileio
from mtljax.analysis import html_page
from mtljax.egl.textual import location_words
from mtljax.explain.render import glance, panels
from mtljax.explain.setup import pick_across  # which examples a page shows, as the run picks

_CSS = html_page._CSS  # the analysis report's look


def share_names(bands: dict, channels: dict | None = None) -> list[str]:
  """Column names of `bands {modality: [..., C]}`'s shares: `<modality>` and `<modality>/<band>`
  (the source's channel names where it gives them, `band k` else)."""
  out = []
  for m in sorted(bands):
    c = bands[m].shape[-1]
    own = list((channels or {}).get(m) or ())
    if c == 1 and not own:
      continue
    out += [f"{m}/{own[j] if j < len(own) else f'band {j}'}" for j in range(c)]
  return out


def attribution_shares(masses, bands: dict, pairs, labels, channels, input_names) -> dict:
  """A method's entries of results.json: each input's mean share of the attribution
  (`modality_share`, from the batches' `masses`) and `shares_by_class`; {} without masses."""
  if not masses:
    return {}
  share = np.concatenate(masses, axis=1).mean(axis=(0, 1))
  return {
    "modality_share": dict(zip(sorted(input_names), share.tolist())),
    "share_by_class": shares_by_class(bands, pairs, labels, channels),
  }


def shares_by_class(bands: dict, pairs, labels, channels: dict | None = None) -> dict:
  """`{class: {"<modality>": share, "<modality>/<band>": share, "n": targets}}`: each input's and
  band's mean share of the attribution (|attribution| summed over it / over every input,
  averaged over the members) over the targets of each class; `bands {m: [E, P, C_m]}` as
  `batches.attribute_examples` returns them, `labels[t]` target t's name."""
  if not bands:
    return {}
  per = {m: np.asarray(v, np.float64).mean(0) for m, v in sorted(bands.items())}  # [P, C]
  names = share_names(per, channels)
  cols = np.concatenate([per[m].sum(-1, keepdims=True) for m in per], -1)
  fine = np.concatenate([per[m] for m in per if per[m].shape[-1] > 1 or (channels or {}).get(m)]
                        or [np.zeros((len(pairs), 0))], -1)  # fmt: skip
  out = {}
  targets = np.asarray(pairs)[:, 1]
  for t in dict.fromkeys(targets.tolist()):
    sel = targets == t
    row = {m: float(v) for m, v in zip(per, cols[sel].mean(0))}
    row.update({n: float(v) for n, v in zip(names, fine[sel].mean(0))})
    out[str(labels[t])] = {**row, "n": int(sel.sum())}
  return out


def sentence(lead: str, heatmap, *, modality: str, method: str, shares=None, agreement=None):
  """One line grounded in the map: `lead` (what is explained), where the map of `modality` is
  strongest (its top decile's centre, in words), how much of the map that decile holds, which
  inputs and band carry the attribution (`shares {name: share}`), and how far the members'
  maps agree (`agreement`, their mean pairwise rank correlation)."""
  m = np.maximum(np.nan_to_num(np.asarray(heatmap, np.float64)), 0)
  parts = [lead]
  if m.sum() > 0:
    top = m >= np.quantile(m, 0.9)
    ys, xs = np.nonzero(top)
    w = m[top]
    where = location_words(((w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()), m.shape)
    held = float(m[top].sum() / m.sum())
    parts.append(
      f"{method} looks mostly at the {where} of the {modality} image "
      f"(its brightest tenth holds {held:.0%} of the map)"
    )
  if shares:
    whole = sorted(((v, k) for k, v in shares.items() if "/" not in k), reverse=True)
    if len(whole) > 1:
      parts.append("attribution by input: " + ", ".join(f"{k} {v:.0%}" for v, k in whole[:3]))
    bands = sorted(((v, k) for k, v in shares.items() if "/" in k), reverse=True)
    if bands:
      parts.append(f"strongest band {bands[0][1]} ({bands[0][0]:.0%})")
  if agreement is not None and np.isfinite(agreement):
    word = "agree" if agreement >= 0.7 else "partly agree" if agreement >= 0.4 else "disagree"
    parts.append(f"the members' maps {word} (rank correlation {float(agreement):.2f})")
  return "; ".join(parts) + "."


def ensemble_words(size: int) -> str:
  """ "one model" or "an ensemble of E models" (the page's first line)."""
  return (
    "one model (no ensemble: no member agreement)"
    if size == 1
    else (f"an ensemble of {size} models")
  )


# ============================================================================ tables
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


def _glance(out_dir, summary, images, pairs, names, leads, bands, channels, count) -> list[str]:
  """The "at a glance" pictures of the first method with maps (`maps_<method>.npz`): examples
  picked across the explained targets, each as `glance_<method>_<k>.png`; their HTML."""
  for method in summary["methods"]:
    path = os.path.join(out_dir, f"maps_{method}.npz")
    if os.path.exists(path):
      break
  else:
    return []
  with np.load(path) as z:
    maps = z["ensemble"]
  std = agree = None
  trust_path = os.path.join(out_dir, f"trust_{method}.npz")
  if os.path.exists(trust_path):
    with np.load(trust_path) as z:
      std, agree = z["uncertainty_std"], z["uncertainty_agreement"]
  several = int(summary["ensemble_size"]) > 1
  per = {
    m: np.asarray(v, np.float64).mean(0) for m, v in sorted((bands or {}).get(method, {}).items())
  }
  cols = share_names(per, channels)
  fine = [per[m] for m in per if per[m].shape[-1] > 1 or (channels or {}).get(m)]
  out = []
  for k, p in enumerate(pick_across([names[t] for t in pairs[:, 1]], count)):
    i, t = pairs[p]
    shares = {m: float(v[p].sum()) for m, v in per.items()}
    if fine:
      shares.update(zip(cols, np.concatenate([v[p] for v in fine]).tolist()))
    text = sentence(
      leads[p] if leads is not None else f"Explained: {names[t]}",
      maps[p],
      modality=str(summary.get("modality", "image")),
      method=method,
      shares=shares if per else None,
      agreement=agree[p] if several and agree is not None else None,
    )
    pic = glance.save_glance(
      os.path.join(out_dir, f"glance_{method}_{k:03d}.png"),
      images[i],
      maps[p],
      sentence=text,
      title=f"{names[t]} (example {i})",
      spread=std[p] if several and std is not None else None,
    )
    out.append(
      f"<figure><img src='{html.escape(os.path.basename(pic))}' alt='{html.escape(text)}'>"
      f"<figcaption>{html.escape(text)}</figcaption></figure>"
    )
  return out


def _share_rows(summary) -> list[dict]:
  rows = []
  for method, r in summary["methods"].items():
    for cls, shares in (r.get("share_by_class") or {}).items():
      rows.append({"method": method, "class": cls, **shares})
  return rows


def _trust_rows(method: str, compare: dict) -> list[dict]:
  from mtljax.attribution.trust.registry import TRUST_METRICS

  rows = _compare_rows(method, compare)
  for r in rows:
    entry = TRUST_METRICS.get(r["metric"])
    if entry is not None:
      r["metric"] = (
        f"{r['metric']} ({entry.family}, {'lower' if entry.lower_is_better else 'higher'} is better)"
      )
  return rows


def write(
  out_dir: str,
  summary: dict,
  images,
  pairs,
  names,
  *,
  leads=None,
  bands=None,
  channels=None,
  count: int = 8,
) -> str:
  """Writes `<out_dir>/index.html` from the run's `summary` (results.json) and the files of
  `out_dir`; returns its path. `images [N, H, W, 3]` display images, `pairs [P, 2]` (example,
  target), `names[t]` target t's name; `leads[p]` what the sentence of pair p starts with
  (default "Explained: <name>"), `bands {method: {modality: [E, P, C]}}` the band shares
  (`batches.attribute_examples`), `channels {modality: band names}`, `count` glance pictures."""
  size = int(summary["ensemble_size"])
  parts = [
    f"<h1>Explanations: {html.escape(str(summary['task']))} on {html.escape(summary['split'])}"
    "</h1>",
    f"<p>{html.escape(ensemble_words(size)).capitalize()}, checkpoint step "
    f"{summary['checkpoint_step']}, {summary['num_targets']} targets of "
    f"{summary['num_examples']} examples. Ind-Avg: a metric averaged over the members' own maps; "
    "Ens-Avg: of the averaged map (paired t-test over targets). Definitions: docs/trust.md.</p>",
  ]
  report = os.path.join(out_dir, "..", "..", "report", "index.html")
  if os.path.exists(report):
    parts.append("<p><a href='../../report/index.html'>The analysis report of this workdir</a></p>")
  pictures = _glance(out_dir, summary, images, pairs, names, leads, bands, channels, count)
  if pictures:
    parts += [
      "<h2>At a glance</h2>",
      "<p>Examples picked across the explained classes: the input beside where the explanation "
      "puts the evidence (colours stretched so the strongest percent is full colour)"
      + (", and where the members' maps disagree" if size > 1 else "")
      + "; the sentence under each is read off the map.</p>",
      *pictures,
    ]
  shares = _share_rows(summary)
  if shares:
    parts += [
      "<h2>Where the attribution lies, per class</h2>",
      "<p>Each input's and band's share of |attribution| (summed over it, over all inputs), "
      "averaged over the members and over the targets of the class (n).</p>",
      html_page.table(shares),
    ]
  loc, trust_rows, notes = [], [], []
  for method, r in summary["methods"].items():
    loc += _compare_rows(method, r.get("compare", {}))
    t = r.get("trust")
    if t:
      trust_rows += _trust_rows(method, t["compare"])
      notes += [f"{method}: {m} skipped ({why})" for m, why in t["skipped"].items()]
  if trust_rows or notes:
    parts += [
      "<h2>Trust metrics: faithfulness, sanity, complexity</h2>",
      html_page.table(trust_rows),
    ]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
  if loc:  # scored only where the data has masks or keypoints
    parts += ["<h2>Localisation against the annotations</h2>", html_page.table(loc)]
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
    if t and size > 1:
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
