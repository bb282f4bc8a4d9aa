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
(Figs. 4, 14). Everything goes to `<workdir>/explanations/<split>/` and TensorBoard, written by
process 0. Methods are called through the registry (`methods.attribute`); the shared
restore / collect / checks are in `setup.py`, the scores and pictures in `image_report.py`.
With `config.explain.kind = "time_series"` the run is `timeseries.explain_workdir`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from mtljax import train
from mtljax.attribution import ensemble as ens_lib
from mtljax.attribution import methods
from mtljax.attribution import targets as targets_lib
from mtljax.explain import batches, memory, setup, timeseries, trust_hook
from mtljax.explain import image_report as report
from mtljax.explain import page as trust_page
from mtljax.explain.setup import ExplainError, explained_targets

__all__ = ["ExplainError", "explain_workdir", "explained_targets", "make_attribute_fn"]


# ============================================================================ attribution
def make_attribute_fn(
  model,
  config: ml_collections.ConfigDict,
  name: str,
  image_hw: tuple[int, int],
  num_segments: int | None = None,
) -> Callable:
  """`(stacked_variables, inputs, idx, segments) -> (member_maps [E,B,H,W], ens [B,H,W], mass,
  others)`, jitted; for methods that attribute every input, `mass` is each input modality's share
  of the attribution mass `[E, B, M]` and `others` the ensemble map `[B, h, w]` of every other
  image input (otherwise None and {}). `num_segments`: how many labels the segments of
  `needs_segments` methods hold (they are traced under jit)."""
  ex = config.explain
  spec = methods.get_method(name)
  modality = ex.modality
  heads = setup.explain_heads(config)

  def outputs(variables, x):
    return model.apply(variables, x, train=False)[0]

  affine = batches.affine_input_layers(config)
  ctx = methods.Context(
    explain=ex,
    rng=jax.random.key(int(config.seed)),
    modality=modality,
    layer=ex.layer,
    image_hw=image_hw,
    affine_layers=tuple(affine),
    num_segments=num_segments,
  )

  def attribute_member(variables, x, idx, segments):
    f = targets_lib.make_pair_scores(outputs, heads, idx)
    return methods.attribute(spec, f, variables, x, dataclasses.replace(ctx, segments=segments))

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


def _segments(ex, images, hw) -> tuple[Callable[[np.ndarray], jax.Array], int]:
  """`(segments, num_segments)` for `needs_segments` methods: `segments(examples [B]) ->
  [B, H, W]` labels in `[0, num_segments)`, SLIC superpixels of the display images
  (`config.explain.lime_segments = "slic"`, computed once; the count is the largest image's) or
  a grid of `config.explain.lime_grid` cells."""
  if ex.lime_segments == "slic":
    labels = methods.superpixel_segments(images, int(ex.lime_superpixels))
    return (lambda i: jnp.asarray(labels[i])), int(labels.max()) + 1
  grid = methods.grid_segments(*hw, tuple(ex.lime_grid))
  rows, cols = tuple(ex.lime_grid)
  return (lambda i: jnp.asarray(np.broadcast_to(grid, (len(i),) + hw))), int(rows * cols)


def _attribute_pairs(fn, spec, stacked, x, pairs, bs, segments, *, desc):
  """`fn` over the pairs in batches of `bs`: member maps `[E, P, H, W]`, ensemble maps
  `[P, H, W]`, modality shares (list of `[E, b, M]`) and the other inputs' maps `{m: [...]}`."""
  member_maps, ens_maps, masses, others = [], [], [], {}
  for start in tqdm(
    range(0, len(pairs), bs), desc=desc, disable=not setup.is_main(), mininterval=2
  ):
    p = pairs[start : start + bs]
    pad = bs - len(p)  # a fixed batch shape: one compilation per method
    p_full = np.concatenate([p, np.repeat(p[-1:], pad, 0)]) if pad else p
    xb = {m: jnp.asarray(v[p_full[:, 0]]) for m, v in x.items()}
    seg = segments(p_full[:, 0]) if spec.needs_segments else None
    mm, em, mass, other = fn(stacked, xb, jnp.asarray(p_full[:, 1]), seg)
    keep = len(p)
    for m, v in other.items():
      others.setdefault(m, []).append(np.asarray(v[:keep], np.float32))
    member_maps.append(np.asarray(mm[:, :keep], np.float32))
    ens_maps.append(np.asarray(em[:keep], np.float32))
    if mass is not None:
      masses.append(np.asarray(mass[:, :keep]))
  return np.concatenate(member_maps, axis=1), np.concatenate(ens_maps), masses, others


# ============================================================================ the run
#: What lowers the memory of the trust metrics (docs/explanations.md).
_TRUST_KNOBS = (
  "--config.explain.memory_budget=<a smaller fraction or bytes>",
  "--config.explain.trust.chunk=<fewer perturbation steps together>",
  "--config.explain.batch_size=<fewer examples per call>",
)


#: What lowers the memory of an attribution method's calls.
_METHOD_KNOBS = (
  "--config.explain.memory_budget=<a smaller fraction or bytes>",
  "--config.explain.batch_size=<fewer examples per call>",
)


def _chunk_line(chunks, largest) -> str:
  return ", ".join(f"{chunks[k]} of {largest[k]} {k}" for k in largest)


def _write_tables(out_dir: str, summary: dict[str, Any], results: dict[str, Any]) -> str:
  """`results.json` and `table.md` of the methods in `results` (process 0); returns the table."""
  table = report.table(results)
  trusted = {m: {"compare": r["trust"]["compare"]} for m, r in results.items() if "trust" in r}
  if trusted:  # the trust metrics' own table below the localisation one
    table += "\n\nTrust metrics (docs/trust.md):\n\n" + report.table(trusted)
  setup.write_json(os.path.join(out_dir, "results.json"), summary, default=float)
  setup.write_text(os.path.join(out_dir, "table.md"), table + "\n")
  return table


def explain_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Explain the ensemble of a trained workdir (see the module docstring)."""
  if config.explain.get("kind") == "time_series":  # CropYield: importance over steps/features
    return timeseries.explain_workdir(config, workdir)
  s = train.setup(config, workdir, write_config=False)
  ex = config.explain
  state, meta = setup.restore(config, s, workdir)
  stacked = {"params": state["params"], "batch_stats": state["batch_stats"]}
  size = train.ensemble_size(config)
  setup.check_request(config, s, stacked=stacked)
  src = s.sources[ex.split]
  out_dir = os.path.join(s.workdir, "explanations", ex.split)
  is_main = setup.is_main()
  if is_main:
    os.makedirs(out_dir, exist_ok=True)

  data = setup.collect(s, ex.split, int(ex.max_examples), int(ex.batch_size))
  x, index = data["inputs"], data["index"]
  # (example, target) pairs of every task of config.explain.tasks (targets in the heads' joint
  # index space; `labels` name the head of each target when there are several).
  pairs, names, labels, per_task = setup.explained_pairs(config, src, data)
  hw = tuple(x[ex.modality].shape[1:3])
  ann = report.annotations(src, index, pairs, names, hw)
  keypoints, has_mask = ann[1], ann[2]
  trust_wanted, trust_skipped = trust_hook.request(config, has_mask)
  images = report.display_images(x[ex.modality], s.stats["inputs"][ex.modality])
  if is_main:
    print(
      f"Explaining {len(pairs)} targets of {len(index)} {ex.split} examples (per task: "
      f"{per_task}) with an ensemble of {size}, methods {list(ex.methods)}; "
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
    "targets_per_task": per_task,
    "ensemble_size": size,
    "checkpoint_step": int(meta["step"]),
    "num_examples": int(len(index)),
    "num_targets": int(len(pairs)),
    "classification": cls_metrics,
    "methods": {},
  }
  specs = {name: methods.get_method(name) for name in ex.methods}
  segments, num_segments = None, None
  if any(p.needs_segments for p in specs.values()):
    segments, num_segments = _segments(ex, images, hw)
  for name, spec in specs.items():
    t0 = time.perf_counter()
    with memory.guard(f"{name} (config.explain.methods)", _METHOD_KNOBS):
      if ex.get("multi_target", True):  # every target of an example in one call (issue 18)
        fn, bs, chunks, largest = batches.sized_attribute_fn(
          s.model, config, name, hw, num_segments, stacked, x, pairs
        )
        attribute_rows = batches.attribute_examples
        if is_main and chunks != largest:
          print(f"{name}: {_chunk_line(chunks, largest)} per call (memory budget)", flush=True)
      else:  # one (example, target) pair per row, as before
        fn, bs = make_attribute_fn(s.model, config, name, hw, num_segments), int(ex.batch_size)
        attribute_rows = _attribute_pairs
      member_maps, ens_maps, masses, others = attribute_rows(
        fn, spec, stacked, x, pairs, bs, segments, desc=name
      )
    seconds = time.perf_counter() - t0
    ind, en, compare, curve = report.compare(
      member_maps,
      ens_maps,
      ann,
      ex,
      name=name,
      signed=spec.signed,
      out_dir=out_dir if is_main else None,
    )
    results[name] = {
      "compare": compare,
      "size_curve": curve,
      "seconds": seconds,
      "targets_per_second": len(pairs) / max(seconds, 1e-9),
    }
    if trust_wanted:
      with memory.guard(f"{name}'s trust metrics", _TRUST_KNOBS):
        trust = trust_hook.run_method(
          config,
          s,
          stacked,
          x,
          pairs,
          ann,
          member_maps,
          ens_maps,
          fn,
          trust_wanted,
          trust_skipped,
          segments if spec.needs_segments else None,
          name=name,
        )
      results[name]["trust"] = trust_hook.summary(trust)
      if is_main:
        trust_hook.save(out_dir, name, trust)
    if masses:
      share = np.concatenate(masses, axis=1).mean(axis=(0, 1))
      results[name]["modality_share"] = dict(zip(sorted(x), share.tolist()))
    if is_main:
      report.save_maps(
        out_dir, name, ens_maps, member_maps, pairs, index, ann, ind, en, others, ex, labels
      )
      report.pictures(
        out_dir, name, images, pairs, labels, member_maps, ens_maps, en, ind, ex, size
      )
      report.save_other_modalities(out_dir, name, x, s.stats["inputs"], others, pairs, labels, ex)
    # Written after every method, so that a later method's failure keeps this one's results.
    summary["methods"] = results
    _write_tables(out_dir, summary, results)
  if ex.get("textual"):  # sentences grounded by saliency (issue 19, mtljax/egl/textual.py)
    from mtljax.egl import textual

    summary["textual"] = textual.explain(
      config, s, stacked, data, images, src, out_dir, write=is_main
    )
  table = _write_tables(out_dir, summary, results)
  if is_main:
    trust_page.write(out_dir, summary, images, pairs, names)
    report.tensorboard(s.workdir, out_dir, ex)
    main = config.main_task
    lines = [
      table,
      "",
      f"Classification ({ex.split}, {main}): ensemble "
      f"{report.fmt_classification(cls_metrics, main, s.main_key)}",
      f"Written to {out_dir}: results.json, table.md, maps_<method>.npz, "
      "members_<method>_*.png, arrows_<method>_*.png, size_curve_*.png, index.html",
    ]
    print("\n".join(lines), flush=True)
  return summary
