"""Explanation-guided training compared: baseline vs each loss vs the annotated fraction.

Every setting trains one seeds ensemble of E members in one vmapped step (so each row is
mean ± std over E seeds), then scores each member on the shortcut-free test split:

  accuracy          of the explained classification task
  iou               IoU@0.3 of the member's normalised input-gradient map of the true class (or
                    another `saliency`, e.g. the Grad-CAM a loss supervised) with the true
                    region (source capability `explanation_regions`)
  pearson           Pearson correlation with the true region (area-downsampled to ≤ 14×14)
  com               centre-of-mass distance to the true region's centroid (image = unit square)
  decoy_share       the share of the map's mass on the decoy (0 = the shortcut is ignored)
  swapped_accuracy  (in the json, `EXTRA`) accuracy with each decoy repainted in the decoy
                    colour of a random other example of the split (a seeded permutation,
                    mtljax/data/decoys.py; the evaluation's `<task>/accuracy_decoy_swapped`): the
                    test split's decoy (a random class's colour) on the split's own images. On
                    the decoyed validation split it measures the shortcut without the test split
                    (profiling/experiments/egl_compare.py `--split val`, the λ rule)

and a paired t-test (per test example, the member-averaged IoU) of each setting against the
plain run. `compare(...)` writes `egl_comparison.json` and `egl_comparison.md` (a table) into its
output folder; profiling/experiments/egl_compare.py is its command line.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import fileio
from mtljax.attribution import localization as xm
from mtljax.data import decoys
from mtljax.data.source import capability

METRICS = ("accuracy", "iou", "pearson", "com", "decoy_share")
EXTRA = ("swapped_accuracy",)


def _member_fn(model, task, modality, saliency="input_gradient"):
  from mtljax.egl import maps as sal

  def one(variables, inputs, labels):
    def score(params, x):
      v = {**variables, "params": params}
      return model.apply(v, {**inputs, modality: x}, train=False)[0][task]

    out = score(variables["params"], inputs[modality])
    return out, sal.class_map(score, variables["params"], inputs[modality], labels, saliency)

  return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def score_workdir(
  config, workdir: str, split: str = "test", saliency: str = "input_gradient"
) -> dict[str, Any]:
  """Per-member metrics `{metric: [E]}`, the per-example member-mean IoU `iou_examples [N]` and
  per member and example `[E, N]` `correct_examples`, `swapped_correct_examples` and
  `decoy_share_examples` (with `index [N]`, each example's place in the source) of a trained
  workdir's `config.explain.checkpoint` on `split` (module docstring), the maps
  being `saliency` (mtljax/egl/maps.py: a method of the attribution registry; the input gradient by
  default). With a
  shortcut in the validation split, use "latest": the "best" checkpoint by validation accuracy
  is the one that leans on the shortcut most."""
  from mtljax.explain import setup
  from mtljax.train import build

  s = build.setup(config, workdir, write_config=False)
  state, _ = setup.restore(config, s, workdir)
  src = s.sources[split]
  regions = capability(src, "explanation_regions")
  if regions is None:
    raise ValueError(f"dataset {config.data.name!r} has no explanation_regions to score")
  relevant, decoy = regions()
  e = config.explanation_loss
  data = setup.collect(s, split, len(src), int(config.eval.batch_size))
  fn = _member_fn(s.model, e.task, e.modality, saliency)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  outs, maps, swapped = [], [], []
  n, bs = len(data["index"]), int(config.eval.batch_size)
  idx = data["index"]
  if decoy is not None:  # each decoy in another example's decoy colour (mtljax/data/decoys.py)
    x_swapped = decoys.swap_decoys(data["inputs"][e.modality], decoy[idx])
  for a in range(0, n, bs):
    inputs = {k: jnp.asarray(v[a : a + bs]) for k, v in data["inputs"].items()}
    lab = jnp.asarray(data["targets"][e.task][a : a + bs], jnp.int32)
    o, m = fn(variables, inputs, lab)
    outs.append(np.asarray(o))
    maps.append(np.asarray(m))
    if decoy is not None:
      cut = {**inputs, e.modality: jnp.asarray(x_swapped[a : a + bs])}
      swapped.append(np.asarray(fn(variables, cut, lab)[0]))
  logits, maps = np.concatenate(outs, 1), np.concatenate(maps, 1)  # [E, N, K], [E, N, H, W]
  labels = data["targets"][e.task]
  rel = relevant[idx]
  norm = maps / np.maximum(maps.max(axis=(2, 3), keepdims=True), 1e-12)
  size = min(14, rel.shape[1])
  ys, xs = np.mgrid[0 : rel.shape[1], 0 : rel.shape[2]]
  centre = np.stack(
    [(rel * ys).sum((1, 2)) / rel.sum((1, 2)), (rel * xs).sum((1, 2)) / rel.sum((1, 2))], 1
  )
  # per member and example [E, N] (rows of `index`, the examples' positions in the source)
  per = {"index": idx, "correct_examples": np.argmax(logits, -1) == labels}
  nan = np.full(maps.shape[0], np.nan)
  if decoy is not None:
    swapped = np.concatenate(swapped, 1)
    per["swapped_correct_examples"] = np.argmax(swapped, -1) == labels
    mass = np.maximum(maps.sum((2, 3)), 1e-12)
    per["decoy_share_examples"] = (maps * decoy[idx][None]).sum((2, 3)) / mass
  out = {
    "accuracy": per["correct_examples"].mean(1),
    "swapped_accuracy": per["swapped_correct_examples"].mean(1) if decoy is not None else nan,
    "decoy_share": per["decoy_share_examples"].mean(1) if decoy is not None else nan,
  }
  ious, pearson, com = [], [], []
  for k in range(maps.shape[0]):
    ious.append(xm.iou(norm[k], rel, 0.3)["iou"])
    pearson.append(float(np.nanmean(xm.pearson(norm[k], rel, size))))
    com.append(float(np.nanmean(xm.com_distance(norm[k], centre))))
  out["iou"] = np.asarray([float(np.nanmean(iou)) for iou in ious])
  out["pearson"], out["com"] = np.asarray(pearson), np.asarray(com)
  out["iou_examples"] = np.nanmean(np.stack(ious), axis=0)
  out.update(per)
  return out


def _fmt(v: np.ndarray) -> str:
  return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if np.all(np.isfinite(v)) else "–"


def table(rows: Sequence[dict], metrics: Sequence[str] = METRICS) -> str:
  """The markdown table of `compare`'s rows."""
  head = "| setting | loss | masks | " + " | ".join(metrics) + " | IoU vs plain: t, p |"
  lines = [head, "|" + "---|" * (len(metrics) + 4)]
  for r in rows:
    test = r.get("ttest")
    tp = f"{test['t']:+.1f}, {test['p']:.1e}" if test else ""
    cells = [_fmt(np.asarray(r["metrics"][m])) for m in metrics]
    lines.append(
      f"| {r['label']} | {r['kind']} | {r['fraction']:.0%} | " + " | ".join(cells) + f" | {tp} |"
    )
  return "\n".join(lines) + "\n"


def compare(
  base_config,
  settings: Sequence[dict],
  out_dir: str,
  *,
  clean_config=None,
  log=print,
  split: str = "test",
  metrics: Sequence[str] = METRICS,
  saliency: str = "input_gradient",
) -> list[dict]:
  """Train and score (on `split`) each setting `{"label", "kind", "fraction", "overrides":
  {dotted: value}}` on `base_config` (and, when given, the plain model on `clean_config`, the
  no-decoy reference); writes the table of `metrics` (maps: `saliency`). Each setting's workdir is
  `<out_dir>/<label>`; a finished one is reused."""
  from scipy import stats

  from mtljax import train

  runs = [dict(s) for s in settings]
  if clean_config is not None:
    runs.insert(0, {"label": "clean", "kind": "none", "fraction": 0.0, "config": clean_config})
  rows, plain = [], None
  for r in runs:
    config = copy.deepcopy(r.get("config", base_config))
    config.explanation_loss.kind = r["kind"]
    config.explanation_loss.mask_fraction = float(r["fraction"])
    for key, value in r.get("overrides", {}).items():
      section, _, leaf = key.rpartition(".")
      node = config
      for part in filter(None, section.split(".")):
        node = node[part]
      node[leaf] = value
    workdir = os.path.join(out_dir, r["label"])
    if not os.path.isfile(os.path.join(workdir, "final_metrics.json")):
      log(f"== {r['label']}: training {train.ensemble_size(config)} members")
      train.train_and_evaluate(config, workdir)
    m = score_workdir(config, workdir, split, saliency)
    row = {k: r[k] for k in ("label", "kind", "fraction")}
    row["split"] = split
    row["metrics"] = {k: m[k].tolist() for k in METRICS + EXTRA}
    if r["label"] == "plain":
      plain = m["iou_examples"]
    elif plain is not None and r["label"] != "clean":
      t, p = stats.ttest_rel(m["iou_examples"], plain, nan_policy="omit")
      row["ttest"] = {"t": float(t), "p": float(p)}
    rows.append(row)
    log(table([row], metrics).splitlines()[-1])
  os.makedirs(out_dir, exist_ok=True)
  name = "egl_comparison" + ("" if split == "test" else f"_{split}")
  name += "" if saliency == "input_gradient" else "_" + saliency.partition("@")[0]
  fileio.write_json(os.path.join(out_dir, name + ".json"), rows)
  fileio.write_text(os.path.join(out_dir, name + ".md"), table(rows, metrics))
  return rows
