"""`--mode=explain`: ensemble explanations of a trained workdir, measured and drawn.

For the examples of `config.explain.split`, each explained target (every present attribute of a
multilabel task, the true class of a classification task, the value of a regression task) is
attributed by every member of the ensemble with each method of `config.explain.methods`; the
members' normalised maps are averaged (ensembles paper, Eq. 1). Where the dataset has
evaluation-only annotations (masks, keypoints: `source.explain_annotations(i)`), each member's
map and the ensemble's are scored (IoU at 0.3 with intersection and union, Pearson at 14×14,
centre-of-mass distance) and compared with a paired t-test (Ind-Avg vs Ens-Avg, Tables 1–7),
also as a function of the ensemble size (Fig. 5). Pictures: per-member panels beside the
ensemble map (Fig. 2) and labelled arrows at the centre of mass of each present attribute's map
(Figs. 4, 14). Everything goes to `<workdir>/explanations/<split>/` and TensorBoard.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from mtljax import configlib, train
from mtljax.checkpoint import Checkpointer
from mtljax.data import pipeline
from mtljax.data.source import capability
from mtljax.explain import attributions, flax_utils, render
from mtljax.explain import ensemble as ens_lib
from mtljax.explain import metrics as xm
from mtljax.explain import targets as targets_lib
from mtljax.models import activations, encoders

#: (metric, lower is better) in the order of the report.
METRICS = (
  ("iou", False),
  ("intersection", False),
  ("union", True),
  ("pearson", False),
  ("com_distance", True),
)


class ExplainError(configlib.ConfigError):
  """An explain request that cannot run (unknown method or layer, bad target, no ensemble)."""


# ============================================================================ targets
def explained_targets(task_cfg, targets: np.ndarray, mask: np.ndarray, target: int):
  """Pairs `(example, target index)` to explain.

  `target = -1`: every present label of a multilabel task, the true class of a classification
  task, the most frequent labelled class of a segmentation example (its score: the class logit
  summed over the image, explain/targets.py), output 0 of a regression; otherwise that index for
  every example with a label.
  """
  kind, n = task_cfg.kind, int(task_cfg.get("num_classes") or 1)
  if target != -1 and not 0 <= target < n:
    raise ExplainError(
      f"config.explain.target={target} is outside the range of task "
      f"{kind} with {n} outputs: use 0..{n - 1}, or -1 for the true labels"
    )
  pairs = []
  for i in range(len(targets)):
    if np.max(mask[i]) <= 0:  # a dense (per-pixel) mask: some pixel labelled
      continue
    if target != -1:
      pairs.append((i, target))
    elif kind == "segmentation":  # the example's most frequent labelled class (whole image)
      pairs.append((i, int(np.bincount(np.asarray(targets[i])[np.asarray(mask[i]) > 0]).argmax())))
    elif kind == "multilabel":
      pairs += [(i, int(a)) for a in np.flatnonzero(targets[i] > 0.5)]
    elif kind == "classification":
      pairs.append((i, int(targets[i])))
    else:
      pairs.append((i, 0))
  return np.asarray(pairs, np.int32).reshape(-1, 2)


# ============================================================================ attribution
def make_attribute_fn(
  model, config: ml_collections.ConfigDict, name: str, image_hw: tuple[int, int]
) -> Callable:
  """`(stacked_variables, inputs, idx, segments) -> (member_maps [E,B,H,W], ens [B,H,W], mass,
  others)`, jitted; for methods that attribute every input, `mass` is each input modality's share
  of the attribution mass `[E, B, M]` and `others` the ensemble map `[B, h, w]` of every other
  image input (otherwise None and {})."""
  ex = config.explain
  spec = attributions.get_method(name)
  task, modality = ex.task, ex.modality
  rng = jax.random.key(int(config.seed))

  def outputs(variables, x):
    return model.apply(variables, x, train=False)[0]

  task_cfg = config.tasks[task]
  num_outputs = int(task_cfg.get("num_classes") or 1)
  # Each encoder's first layer that is affine in its modality: Integrated Gradients runs it
  # twice instead of once per step, and its transpose once (exact;
  # `attributions.integrated_gradients(split=...)`).
  affine = []
  for m in sorted(config.inputs):
    layer = encoders.affine_input_layer(
      config.inputs[m].get("encoder"), config.inputs[m].get("encoder_kwargs")
    )
    if layer:
      affine.append(f"encoders_{m}/{layer}")

  def attribute_member(variables, x, idx, segments):
    f = targets_lib.make_score_fn(outputs, task, task_cfg.kind, idx, num_outputs=num_outputs)

    def guided_f(v, xx):
      with activations.guided_relus():  # traced here, so the guided ReLU is used
        return f(v, xx)

    layer_fn = flax_utils.flax_layer_fn(f, ex.layer)
    if name == "saliency":
      return attributions.saliency(f, variables, x)
    if name == "input_x_gradient":
      return attributions.input_x_gradient(f, variables, x)
    if name == "integrated_gradients":
      return attributions.integrated_gradients(
        f,
        variables,
        x,
        steps=int(ex.ig_steps),
        method=ex.ig_method,
        batch_steps=ex.ig_batch_steps or None,
        split=flax_utils.affine_split(f, affine) if affine else None,
      )
    if name == "smoothgrad":
      return attributions.smoothgrad(
        attributions.saliency, f, variables, x, rng, samples=int(ex.samples), stdev=float(ex.noise)
      )
    if name == "gradient_shap":
      return attributions.gradient_shap(
        f, variables, x, rng, samples=int(ex.samples), stdev=float(ex.noise)
      )
    if name == "occlusion":
      w, s = int(ex.occlusion_window), int(ex.occlusion_stride)
      return attributions.occlusion(f, variables, x, window=(w, w), stride=(s, s))
    if name == "grad_cam":
      return attributions.grad_cam(layer_fn, variables, x, upsample_to=image_hw)
    if name == "guided_backprop":
      return attributions.guided_backprop(guided_f, variables, x)
    if name == "guided_grad_cam":
      return attributions.guided_grad_cam(guided_f, layer_fn, variables, x, modality=modality)
    if name == "lime":
      return attributions.lime(
        f, variables, x, rng, modality=modality, segments=segments, num_samples=int(ex.lime_samples)
      )
    raise ExplainError(f"no explain recipe for method {name!r}")

  reduce = "sum" if spec.signed else "abs_sum"

  def run(stacked, x, idx, segments):
    per_member, _ = ens_lib.ensemble_attribute(
      lambda v, xx: attribute_member(v, xx, idx, segments), stacked, x, strategy=ex.strategy
    )
    mass, others = None, {}
    if spec.output == "inputs":
      leaves = {
        m: jnp.abs(a).reshape(a.shape[0], a.shape[1], -1).sum(-1) for m, a in per_member.items()
      }
      total = sum(leaves.values()) + 1e-12
      mass = jnp.stack([leaves[m] / total for m in sorted(leaves)], axis=-1)
      # The ensemble map of every other image input (one attribution per modality).
      others = {
        m: ens_lib.ensemble_heatmaps(a, reduce=reduce, signed=spec.signed)[1]
        for m, a in per_member.items()
        if m != modality and a.ndim == 5
      }
      per_member = per_member[modality]
    members, ens_map = ens_lib.ensemble_heatmaps(per_member, reduce=reduce, signed=spec.signed)
    return members, ens_map, mass, others

  return jax.jit(run)


# ============================================================================ the run
def _restore(config, s, workdir):
  ckpt = Checkpointer(os.path.join(s.workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  which = config.explain.checkpoint
  if which not in ("best", "latest"):
    raise ExplainError(f"config.explain.checkpoint={which!r} must be 'best' or 'latest'")
  if not os.path.isdir(os.path.join(s.workdir, "checkpoints", which)):
    raise ExplainError(f"{workdir}: no checkpoints/{which} to explain; train first")
  try:
    restored = (ckpt.restore_best if which == "best" else ckpt.restore_latest)(s.abstract_state)
  except Exception as e:  # a checkpoint of another shape: e.g. one model, not an ensemble
    raise ExplainError(
      f"{workdir}/checkpoints/{which} does not hold the ensemble of "
      f"config.ensemble.size={train.ensemble_size(config)} this config describes: "
      f"{str(e)[:300]}"
    ) from e
  ckpt.close()
  if restored is None:
    raise ExplainError(f"{workdir}/checkpoints/{which} holds no checkpoint; train first")
  return restored


def _check_request(config, s, stacked):
  ex = config.explain
  problems = []
  for name in ex.methods:
    try:
      attributions.get_method(name)
    except ValueError as e:
      problems.append(f"config.explain.methods: {e}")
  if ex.task not in config.tasks:
    problems.append(
      f"config.explain.task={ex.task!r} is not one of the tasks {sorted(config.tasks)}"
    )
  fields = s.sources["train"].input_fields
  if ex.modality not in config.inputs or len(fields[ex.modality]["shape"]) != 3:
    problems.append(
      f"config.explain.modality={ex.modality!r} must be an image input (one of "
      f"{sorted(m for m in config.inputs if len(fields[m]['shape']) == 3)})"
    )
  if ex.split not in s.sources:
    problems.append(f"config.explain.split={ex.split!r} is not one of {sorted(s.sources)}")
  if any(m in ("grad_cam", "guided_grad_cam") for m in ex.methods) and not problems:
    score = lambda v, xx: (
      s.model.apply(v, xx, train=False)[0][ex.task].reshape(len(xx[ex.modality]), -1).sum(-1)
    )
    paths = flax_utils.module_paths(score, jax.tree.map(lambda a: a[0], stacked), s.example_inputs)
    if ex.layer not in paths:
      near = [p for p in paths if p.startswith(f"encoders_{ex.modality}/")]
      problems.append(
        f"config.explain.layer={ex.layer!r} is not a layer of the model; layers of "
        f"the {ex.modality} encoder: {', '.join(near) or ', '.join(paths)}"
      )
  if problems:
    raise ExplainError("cannot explain:\n  - " + "\n  - ".join(problems))


def _collect(config, s):
  """The first `max_examples` examples of the split (normalised inputs, labels, source index)."""
  ex = config.explain
  src = s.sources[ex.split]
  batches = pipeline.eval_batches(
    src,
    input_names=s.input_names,
    task_names=s.task_names,
    stats=s.stats["inputs"],
    batch_size=int(ex.batch_size),
  )
  inputs, targets, masks, index = {m: [] for m in s.input_names}, [], [], []
  n = 0
  for b in batches:
    keep = np.asarray(b["valid"]) > 0
    for m in s.input_names:
      inputs[m].append(np.asarray(b["inputs"][m])[keep])
    targets.append(np.asarray(b["targets"][ex.task])[keep])
    masks.append(np.asarray(b["mask"][ex.task])[keep])
    index.append(np.asarray(b["meta"]["index"])[keep])
    n += int(keep.sum())
    if n >= ex.max_examples:
      break
  cut = lambda a: np.concatenate(a)[: ex.max_examples]
  return ({m: cut(v) for m, v in inputs.items()}, cut(targets), cut(masks), cut(index))


def _display_images(x: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
  """Normalised `[N,H,W,C]` back to data units, first three bands, each image scaled to [0,1]."""
  mean = np.asarray(stats["mean"], np.float32)
  std = np.asarray(stats["std"], np.float32)
  raw = (x * std + mean)[..., :3]
  if raw.shape[-1] == 2:  # e.g. Sentinel-1 VV/VH: show the first band (grey)
    raw = raw[..., :1]
  lo = raw.min(axis=(1, 2, 3), keepdims=True)
  hi = raw.max(axis=(1, 2, 3), keepdims=True)
  return (raw - lo) / np.maximum(hi - lo, 1e-6)


def _annotations(src, index, pairs, names, hw):
  """Masks `[P,H,W]` (bool) and keypoints `[P,2]` for the explained pairs; has_mask/has_kp."""
  num = len(pairs)
  masks = np.zeros((num,) + hw, bool)
  keypoints = np.full((num, 2), np.nan, np.float32)
  has_mask = np.zeros(num, bool)
  explain_annotations = capability(src, "explain_annotations")
  if explain_annotations is None:
    return masks, keypoints, has_mask
  cache = {}
  for p, (i, t) in enumerate(pairs):
    j = int(index[i])
    if j not in cache:
      cache[j] = explain_annotations(j)
    ann = cache[j]
    m = ann["masks"].get(names[t])
    if m is not None:
      if m.shape != hw:
        raise ExplainError(
          f"{type(src).__name__} example {j}: mask of {names[t]!r} has size "
          f"{m.shape}, its image {hw}"
        )
      masks[p], has_mask[p] = m, True
    kp = ann["keypoints"].get(names[t])
    if kp is not None:
      keypoints[p] = kp
  return masks, keypoints, has_mask


def _score_maps(maps, masks, keypoints, has_mask, ex):
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


def _table(results: Mapping[str, Any]) -> str:
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


def explain_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Explain the ensemble of a trained workdir (see the module docstring)."""
  if config.explain.get("kind") == "time_series":  # CropYield: importance over steps/features
    from mtljax.explain import timeseries

    return timeseries.explain_workdir(config, workdir)
  s = train.setup(config, workdir, write_config=False)
  ex = config.explain
  state, meta = _restore(config, s, workdir)
  stacked = {"params": state["params"], "batch_stats": state["batch_stats"]}
  size = train.ensemble_size(config)
  _check_request(config, s, stacked)
  task_cfg = config.tasks[ex.task]
  src = s.sources[ex.split]
  names = list(src.target_fields[ex.task].get("class_names") or [ex.task])
  out_dir = os.path.join(s.workdir, "explanations", ex.split)
  os.makedirs(out_dir, exist_ok=True)
  is_main = jax.process_index() == 0

  x, targets, lmask, index = _collect(config, s)
  pairs = explained_targets(task_cfg, targets, lmask, int(ex.target))
  if not len(pairs):
    raise ExplainError(
      f"no example of split {ex.split!r} has a label to explain for task "
      f"{ex.task!r} (config.explain.target={ex.target})"
    )
  hw = tuple(x[ex.modality].shape[1:3])
  ann_masks, keypoints, has_mask = _annotations(src, index, pairs, names, hw)
  images = _display_images(x[ex.modality], s.stats["inputs"][ex.modality])
  if is_main:
    print(
      f"Explaining {len(pairs)} targets of {len(index)} {ex.split} examples (task "
      f"{ex.task!r}) with an ensemble of {size}, methods {list(ex.methods)}; "
      f"{int(has_mask.sum())} with a ground-truth mask, "
      f"{int(np.isfinite(keypoints[:, 0]).sum())} with a keypoint.",
      flush=True,
    )

  # Classification quality of the ensemble against its average member on the same split.
  cls_metrics, _ = train.evaluate(
    s.p_eval_step, state, s.eval_iter(ex.split), config, s.mesh, desc=f"{ex.split} eval"
  )
  results: dict[str, Any] = {}
  summary = {
    "split": ex.split,
    "task": ex.task,
    "ensemble_size": size,
    "checkpoint_step": int(meta["step"]),
    "num_examples": int(len(index)),
    "num_targets": int(len(pairs)),
    "classification": cls_metrics,
    "methods": {},
  }
  bs = int(ex.batch_size)
  segments_all = None
  if "lime" in ex.methods and ex.lime_segments == "slic":
    segments_all = attributions.superpixel_segments(images, int(ex.lime_superpixels))
  for name in ex.methods:
    spec = attributions.get_method(name)
    fn = make_attribute_fn(s.model, config, name, hw)
    member_maps, ens_maps, masses, others = [], [], [], {}
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(pairs), bs), desc=name, disable=not is_main, mininterval=2):
      p = pairs[start : start + bs]
      pad = bs - len(p)  # a fixed batch shape: one compilation per method
      p_full = np.concatenate([p, np.repeat(p[-1:], pad, 0)]) if pad else p
      xb = {m: jnp.asarray(v[p_full[:, 0]]) for m, v in x.items()}
      seg = None
      if name == "lime":
        seg = (
          jnp.asarray(segments_all[p_full[:, 0]])
          if segments_all is not None
          else jnp.asarray(
            np.broadcast_to(
              attributions.grid_segments(*hw, tuple(ex.lime_grid)), (len(p_full),) + hw
            )
          )
        )
      mm, em, mass, other = fn(stacked, xb, jnp.asarray(p_full[:, 1]), seg)
      keep = len(p)
      for m, v in other.items():
        others.setdefault(m, []).append(np.asarray(v[:keep], np.float32))
      member_maps.append(np.asarray(mm[:, :keep], np.float32))
      ens_maps.append(np.asarray(em[:keep], np.float32))
      if mass is not None:
        masses.append(np.asarray(mass[:, :keep]))
    seconds = time.perf_counter() - t0
    member_maps = np.concatenate(member_maps, axis=1)  # [E, P, H, W]
    ens_maps = np.concatenate(ens_maps)  # [P, H, W]
    ind = [_score_maps(m, ann_masks, keypoints, has_mask, ex) for m in member_maps]
    en = _score_maps(ens_maps, ann_masks, keypoints, has_mask, ex)
    compare = {}
    for metric, lower in METRICS:
      if np.isfinite(en[metric]).any():
        compare[metric] = xm.compare(
          np.stack([d[metric] for d in ind]), en[metric], lower_is_better=lower
        )
    curve = {}
    if size > 1:
      for metric, fn_metric in (
        ("iou", lambda mp: _score_maps(mp, ann_masks, keypoints, has_mask, ex)["iou"]),
        ("com_distance", lambda mp: xm.com_distance(mp, keypoints)),
      ):
        if metric in compare:
          c = xm.size_curve(member_maps, fn_metric, signed=spec.signed)
          curve[metric] = {k: np.asarray(v).tolist() for k, v in c.items()}
          if is_main:
            render.save_size_curve(
              os.path.join(out_dir, f"size_curve_{name}_{metric}.png"),
              c["k"],
              c["ens_avg"],
              c["ind_avg"],
              metric=metric,
              title=f"{name}: {metric} vs ensemble size",
            )
    results[name] = {
      "compare": compare,
      "size_curve": curve,
      "seconds": seconds,
      "targets_per_second": len(pairs) / max(seconds, 1e-9),
    }
    if masses:
      share = np.concatenate(masses, axis=1).mean(axis=(0, 1))
      results[name]["modality_share"] = dict(zip(sorted(x), share.tolist()))
    if is_main:
      np.savez_compressed(
        os.path.join(out_dir, f"maps_{name}.npz"),
        ensemble=ens_maps,
        members=member_maps[:, : int(ex.num_pictures)],
        pairs=pairs,
        index=index[pairs[:, 0]],
        keypoints=keypoints,
        **{f"member_{k}": np.stack([d[k] for d in ind]) for k, _ in METRICS},
        **{f"ensemble_{k}": v for k, v in en.items()},
        **{f"modality_{m}": np.concatenate(v) for m, v in others.items()},
      )
      _pictures(out_dir, name, images, pairs, names, member_maps, ens_maps, en, ind, ex, size)
      for m, v in others.items():  # the other image inputs' ensemble maps, first pictures
        k = min(len(pairs), int(ex.num_pictures))
        shown = _display_images(x[m][pairs[:k, 0]], s.stats["inputs"][m])
        render.save_heatmap_grid(
          os.path.join(out_dir, f"modality_{m}_{name}.png"),
          shown,
          np.concatenate(v)[:k],
          titles=[names[t] for t in pairs[:k, 1]],
        )
  summary["methods"] = results
  if is_main:
    table = _table(results)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
      json.dump(summary, f, indent=1, default=float)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
      f.write(table + "\n")
    _tensorboard(s.workdir, out_dir, ex)
    main = config.main_task
    lines = [
      table,
      "",
      f"Classification ({ex.split}, {main}): ensemble {_fmt(cls_metrics, main, s.main_key)}",
      f"Written to {out_dir}: results.json, table.md, maps_<method>.npz, "
      "members_<method>_*.png, arrows_<method>_*.png, size_curve_*.png",
    ]
    print("\n".join(lines), flush=True)
  return summary


def _fmt(metrics, main, main_key):
  metric = main_key.split("/", 1)[1]
  own = metrics.get(main_key, float("nan"))
  avg = metrics.get(f"members_mean/{main_key}")
  return f"{metric}={own:.4f}" + (f" vs average member {avg:.4f}" if avg is not None else "")


def _pictures(out_dir, name, images, pairs, names, member_maps, ens_maps, en, ind, ex, size):
  """Per-member panels for the first pairs, and one labelled-arrow picture per example."""
  shown = 0
  for p, (i, t) in enumerate(pairs[: int(ex.num_pictures)]):
    key = "iou" if np.isfinite(en["iou"][p]) else "com_distance"
    scored = np.isfinite(en[key][p])
    render.save_member_panels(
      os.path.join(out_dir, f"members_{name}_{p:03d}.png"),
      images[i],
      member_maps[:, p],
      ens_maps[p],
      title=f"{name}: {names[t]} (example {i})",
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
      arrows.append((label, tuple(xm.center_of_mass(ens_maps[p][None])[0])))
      member_points[label] = xm.center_of_mass(member_maps[:, p])
    render.save_labelled_arrows(
      os.path.join(out_dir, f"arrows_{name}_{i:03d}.png"),
      images[i],
      arrows,
      member_points=member_points,
      title=f"{name}: ensemble of {size}",
    )
    shown += 1


def _tensorboard(workdir, out_dir, ex):
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
