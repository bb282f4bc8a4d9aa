"""`--mode=explain`: ensemble explanations of a trained workdir, measured and drawn.

For `config.explain.max_examples` examples of `config.explain.split`, picked in turn from each
class of the explained task (`setup.explained_examples`: true labels, split order within a
class; `results.json`'s `examples` and the maps' `index` name them in the split), each explained
target (every present attribute of a multilabel task, the true class of a classification task,
the value of a regression task) is attributed by every member of the ensemble with each method of `config.explain.methods`; the
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

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtljax import interrupts, train
from mtljax.attribution import methods
from mtljax.explain import batches, memory, setup, timeseries, trust
from mtljax.explain import image_report as report
from mtljax.explain import page as trust_page
from mtljax.explain.setup import ExplainError, explained_targets
from mtljax.models import convolution

__all__ = ["ExplainError", "explain_workdir", "explained_targets"]


# ============================================================================ segments
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


def explain_workdir(
  config: ml_collections.ConfigDict, workdir: str, *, checked: bool = False
) -> dict[str, Any]:
  """Explain the ensemble of a trained workdir (see the module docstring); `checked`: the caller
  ran `configlib.check(config)` (see `train.setup`)."""
  if config.explain.get("kind") == "time_series":  # CropYield: importance over steps/features
    return timeseries.explain_workdir(config, workdir, checked=checked)
  # The model's convolutions also decide how the members are batched (`ensemble.resolve_strategy`:
  # oneDNN's kernels take the member axis in one call).
  with convolution.use(config.get("conv", "xla")):
    return _explain_images(config, workdir, checked=checked)


def _explain_images(config: ml_collections.ConfigDict, workdir: str, *, checked: bool):
  s = train.setup(config, workdir, write_config=False, checked=checked)
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

  # Up to max_examples examples spread over the explained task's classes (not the split's first,
  # often one class); `index` maps each row of every file written below back to the split.
  picked = setup.explained_examples(config, src, int(ex.max_examples))
  data = setup.collect(s, ex.split, len(picked), int(ex.batch_size), indices=picked)
  x, index = data["inputs"], data["index"]
  # (example, target) pairs of every task of config.explain.tasks (targets in the heads' joint
  # index space; `labels` name the head of each target when there are several).
  pairs, names, labels, per_task = setup.explained_pairs(config, src, data)
  hw = tuple(x[ex.modality].shape[1:3])
  ann = report.annotations(src, index, pairs, setup.target_owners(config), hw)
  keypoints, has_mask = ann[1], ann[2]
  trust_wanted, trust_skipped = trust.request(config, has_mask)
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
    "modality": ex.modality,
    "targets_per_task": per_task,
    "ensemble_size": size,
    "checkpoint_step": int(meta["step"]),
    "num_examples": int(len(index)),
    "examples": [int(i) for i in index],  # each row's example in the split, as maps' `index`
    "num_targets": int(len(pairs)),
    "classification": cls_metrics,
    "methods": {},
  }
  specs = {name: methods.get_method(name) for name in ex.methods}
  channels = {m: f.get("channels") for m, f in s.sources["train"].input_fields.items()}
  pair_bands: dict[str, dict] = {}
  segments, num_segments = None, None
  if any(p.needs_segments for p in specs.values()):
    segments, num_segments = _segments(ex, images, hw)
  for name, spec in specs.items():
    interrupts.set_phase(f"explain ({name})")
    t0 = time.perf_counter()
    with memory.guard(f"{name} (config.explain.methods)", _METHOD_KNOBS):
      # every target of an example in one call, its chunks sized to the memory budget
      fn, bs, chunks, largest = batches.sized_attribute_fn(
        s.model, config, name, hw, num_segments, stacked, x, pairs
      )
      if is_main and chunks != largest:
        print(f"{name}: {_chunk_line(chunks, largest)} per call (memory budget)", flush=True)
      member_maps, ens_maps, masses, others, bands = batches.attribute_examples(
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
        scores = trust.run_method(
          config,
          s,
          stacked,
          x,
          pairs,
          ann,
          member_maps,
          ens_maps,
          trust_wanted,
          trust_skipped,
          name=name,
          image_hw=hw,
          segments=segments if spec.needs_segments else None,
          num_segments=num_segments,
        )
      results[name]["trust"] = trust.summary(scores)
      if is_main:
        trust.save(out_dir, name, scores)
    results[name].update(trust_page.attribution_shares(masses, bands, pairs, labels, channels, x))
    if masses:
      pair_bands[name] = bands
    if is_main:
      report.save_maps(
        out_dir, name, ens_maps, member_maps, pairs, index, ann, ind, en, others, ex, labels
      )
      report.pictures(
        out_dir, name, images, pairs, labels, member_maps, ens_maps, en, ind, ex, size, index
      )
      report.save_other_modalities(out_dir, name, x, s.stats["inputs"], others, pairs, labels, ex)
    # Written after every method, so that a later method's failure keeps this one's results.
    summary["methods"] = results
    _write_tables(out_dir, summary, results)
  if ex.get("textual"):  # sentences grounded by saliency (mtljax/egl/textual.py)
    from mtljax.egl import textual

    summary["textual"] = textual.explain(
      config, s, stacked, data, images, src, out_dir, write=is_main
    )
  table = _write_tables(out_dir, summary, results)
  if is_main:
    trust_page.write(
      out_dir,
      summary,
      images,
      pairs,
      labels,
      bands=pair_bands,
      channels=channels,
      count=int(ex.num_pictures),
    )
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
