"""What the image explain run (`run.py`) measures and draws: the display images, the evaluation
annotations of the explained pairs, the explanation metrics of each map, the comparison of the
ensemble's map with its members' (paired t-test, ensemble-size curve), the markdown table, the
pictures and their TensorBoard copy. Everything that writes is called on process 0 only."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from mtljax import fileio
from mtljax.attribution import localization as xm
from mtljax.attribution.trust import map_metrics as trust_simple
from mtljax.data.annotations import owners, target_keys
from mtljax.data.source import DataError, capability
from mtljax.explain import render
from mtljax.explain.setup import ExplainError

#: (metric, lower is better) in the order of the report.
METRICS = (
  ("iou", False),
  ("intersection", False),
  ("union", True),
  ("pearson", False),
  ("com_distance", True),
)


def display_images(x: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
  """Normalised `[N,H,W,C]` back to data units, first three bands, each image scaled to [0,1]."""
  mean = np.asarray(stats["mean"], np.float32)
  std = np.asarray(stats["std"], np.float32)
  raw = (x * std + mean)[..., :3]
  if raw.shape[-1] == 2:  # e.g. Sentinel-1 VV/VH: show the first band (grey)
    raw = raw[..., :1]
  lo = raw.min(axis=(1, 2, 3), keepdims=True)
  hi = raw.max(axis=(1, 2, 3), keepdims=True)
  return (raw - lo) / np.maximum(hi - lo, 1e-6)


def annotations(src, index, pairs, targets, hw):
  """Masks `[P,H,W]` (bool) and keypoints `[P,2]` of the explained pairs `[P, 2]`, and has_mask
  `[P]`. `targets[t]`: what target t is (`setup.target_owners`); a pair takes the annotations
  that the source declares for its target's class or attribute, else for its whole task
  (`mtljax.data.annotations.owners`)."""
  num = len(pairs)
  masks = np.zeros((num,) + hw, bool)
  keypoints = np.full((num, 2), np.nan, np.float32)
  has_mask = np.zeros(num, bool)
  explain_annotations = capability(src, "explain_annotations")
  if explain_annotations is None:
    return masks, keypoints, has_mask
  try:
    keys = target_keys(owners(src), targets)
  except DataError as e:
    raise ExplainError(f"{type(src).__name__}: {e}") from None
  cache = {}
  for p, (i, t) in enumerate(pairs):
    if not keys[t]:
      continue
    j = int(index[i])
    if j not in cache:
      cache[j] = explain_annotations(j)
    ann = cache[j]
    name = next((k for k in keys[t] if ann["masks"].get(k) is not None), None)
    if name is not None:
      m = ann["masks"][name]
      if m.shape != hw:
        raise ExplainError(
          f"{type(src).__name__} example {j}: mask of {name!r} has size {m.shape}, its image {hw}"
        )
      masks[p], has_mask[p] = m, True
    kp = next((ann["keypoints"][k] for k in keys[t] if ann["keypoints"].get(k) is not None), None)
    if kp is not None:
      keypoints[p] = kp
  return masks, keypoints, has_mask


def score_maps(maps, masks, keypoints, has_mask, ex):
  """Each metric of `maps [P,H,W]` (NaN where the pair has no mask / keypoint)."""
  out = {k: np.full(len(maps), np.nan) for k, _ in METRICS}
  if has_mask.any():
    sel = np.flatnonzero(has_mask)
    iou = xm.iou(maps[sel], masks[sel], threshold=float(ex.iou_threshold))
    for k in ("iou", "intersection", "union"):
      out[k][sel] = iou[k]
    out["pearson"][sel] = xm.pearson(maps[sel], masks[sel], size=int(ex.pearson_size))
  out["com_distance"] = np.asarray(xm.com_distance(maps, keypoints), np.float64)
  return out


def table(results: Mapping[str, Any]) -> str:
  lines = ["| method | metric | Ind-Avg | Ens-Avg | t | p | n |", "|---|---|---|---|---|---|---|"]
  for method, r in results.items():
    for metric, c in r["compare"].items():
      # Bold: the better of the two; stars (escaped for markdown): p < 0.01 (**), p < 1e-4 (****).
      stars = "\\*" * (4 if c["p"] < 1e-4 else 2 if c["p"] < 0.01 else 0)
      best = lambda v, mine: f"**{v:.4f}** {stars}".rstrip() if mine else f"{v:.4f}"
      lines.append(
        f"| {method} | {metric} | {best(c['ind_avg'], not c['ens_better'])} | "
        f"{best(c['ens_avg'], c['ens_better'])} | {c['t']:.2f} | {c['p']:.2g} | "
        f"{c['n']} |"
      )
  return "\n".join(lines)


def compare(member_maps, ens_maps, ann, ex, *, name: str, signed: bool, out_dir=None):
  """Scores of each member's maps `[E, P, H, W]` and the ensemble's `[P, H, W]` against the
  annotations `ann = (masks, keypoints, has_mask)`.

  Returns `(ind, en, compare, curve)`: per-member and ensemble metric arrays (`score_maps`), the
  paired comparison of each scored metric (`metrics.compare`), and for ensembles of more than one
  the metric against the ensemble size (`metrics.size_curve`) of IoU and CoM distance, drawn to
  `<out_dir>/size_curve_<name>_<metric>.png` when `out_dir` is given (None: not drawn, e.g. off
  process 0).
  """
  masks, keypoints, has_mask = ann
  ind = [score_maps(m, masks, keypoints, has_mask, ex) for m in member_maps]
  en = score_maps(ens_maps, masks, keypoints, has_mask, ex)
  result = {}
  for metric, lower in METRICS:
    if np.isfinite(en[metric]).any():
      result[metric] = xm.compare(
        np.stack([d[metric] for d in ind]), en[metric], lower_is_better=lower
      )
  curve = {}
  if len(member_maps) > 1:
    for metric, fn_metric in (
      ("iou", lambda mp: score_maps(mp, masks, keypoints, has_mask, ex)["iou"]),
      ("com_distance", lambda mp: xm.com_distance(mp, keypoints)),
    ):
      if metric in result:
        c = xm.size_curve(member_maps, fn_metric, signed=signed)
        curve[metric] = {k: np.asarray(v).tolist() for k, v in c.items()}
        if out_dir is not None:
          render.save_method_size_curve(out_dir, name, metric, c)
  return ind, en, result, curve


def fmt_classification(metrics, main, main_key):
  metric = main_key.split("/", 1)[1]
  own = metrics.get(main_key, float("nan"))
  avg = metrics.get(f"members_mean/{main_key}")
  return f"{metric}={own:.4f}" + (f" vs average member {avg:.4f}" if avg is not None else "")


def pictures(
  out_dir, name, images, pairs, names, member_maps, ens_maps, en, ind, ex, size, index=None
):
  """Per-member panels for the first pairs, and one labelled-arrow picture per example; `index`
  (each row's example in the split) names the examples in titles and arrow files."""
  split_index = (lambda i: int(i)) if index is None else (lambda i: int(index[i]))
  shown = 0
  for p, (i, t) in enumerate(pairs[: int(ex.num_pictures)]):
    key = "iou" if np.isfinite(en["iou"][p]) else "com_distance"
    scored = np.isfinite(en[key][p])
    render.save_member_panels(
      os.path.join(out_dir, f"members_{name}_{p:03d}.png"),
      images[i],
      member_maps[:, p],
      ens_maps[p],
      title=f"{name}: {names[t]} (example {split_index(i)})",
      member_scores=[d[key][p] for d in ind] if scored else None,
      ensemble_score=en[key][p] if scored else None,
      score_name="IoU" if key == "iou" else "CoM distance",
    )
  for i in dict.fromkeys(pairs[:, 0].tolist()):
    if shown >= int(ex.num_pictures):
      break
    sel = np.flatnonzero(pairs[:, 0] == i)
    arrows, member_points = [], {}
    for p in sel:
      label = names[pairs[p, 1]]
      arrows.append((label, tuple(arrow_points(ens_maps[p][None], ex)[0])))
      member_points[label] = arrow_points(member_maps[:, p], ex)
    render.save_labelled_arrows(
      os.path.join(out_dir, f"arrows_{name}_{split_index(i):03d}.png"),
      images[i],
      arrows,
      member_points=member_points,
      title=f"{name}: ensemble of {size}",
    )
    shown += 1


def arrow_points(maps, ex) -> np.ndarray:
  """(y, x) `[N, 2]` where the arrows of maps `[N, H, W]` point: the centre of mass
  (`config.explain.arrow_at = "com"`) or of the top `arrow_top` of the mass ("top_mass")."""
  at = ex.get("arrow_at", "com")
  if at == "com":
    return xm.center_of_mass(maps)
  if at == "top_mass":
    return np.asarray(trust_simple.strongest_region_center(maps, float(ex.get("arrow_top", 0.1))))
  raise ExplainError(f"config.explain.arrow_at={at!r} must be 'com' or 'top_mass'")


def tensorboard(workdir, out_dir, ex):
  """The saved pictures as TensorBoard images (one tag per kind and method)."""
  from tensorboardX import SummaryWriter

  files = sorted(f for f in os.listdir(out_dir) if f.endswith(".png"))
  if not files:
    return
  writer = SummaryWriter(os.path.join(workdir, "tensorboard", f"explain_{ex.split}"))
  try:
    for f in files:
      render.tensorboard_images(
        writer, f"explain/{f[:-4]}", render.png_to_array(os.path.join(out_dir, f))[None], 0
      )
  finally:
    writer.close()


def save_maps(
  out_dir, name, ens_maps, member_maps, pairs, index, ann, ind, en, others, ex, labels=None
):
  """`maps_<name>.npz`: the ensemble maps `[P, H, W]`, the first members' maps, the pairs, their
  source indices and keypoints, every metric per member and of the ensemble, the ensemble
  maps of the other image inputs (`modality_<m>`) and, given `labels`, each pair's target name
  (`target_names`, "task: name" when several tasks are explained)."""
  named = {} if labels is None else {"target_names": np.asarray([labels[t] for t in pairs[:, 1]])}
  fileio.savez(
    os.path.join(out_dir, f"maps_{name}.npz"),
    **named,
    ensemble=ens_maps,
    members=member_maps[:, : int(ex.num_pictures)],
    pairs=pairs,
    index=index[pairs[:, 0]],
    keypoints=ann[1],
    **{f"member_{k}": np.stack([d[k] for d in ind]) for k, _ in METRICS},
    **{f"ensemble_{k}": v for k, v in en.items()},
    **{f"modality_{m}": np.concatenate(v) for m, v in others.items()},
  )


def save_other_modalities(out_dir, name, x, stats, others, pairs, names, ex):
  """`modality_<m>_<name>.png`: the ensemble maps of each other image input `m` over its
  display images, for the first `num_pictures` pairs."""
  k = min(len(pairs), int(ex.num_pictures))
  for m, v in others.items():
    render.save_heatmap_grid(
      os.path.join(out_dir, f"modality_{m}_{name}.png"),
      display_images(x[m][pairs[:k, 0]], stats[m]),
      np.concatenate(v)[:k],
      titles=[names[t] for t in pairs[:k, 1]],
    )
