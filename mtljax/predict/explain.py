"""`--config.predict.explain=True`: the predictions of new inputs explained, without annotations.

After the predictions are written, `config.predict.explain_examples` inputs picked across the
predicted classes (`setup.pick_across`, most confident first within a class) are explained for
what the ensemble predicted for `config.explain.task`: the predicted class (classification), each
predicted label (multilabel: probability >= 0.5, else the most probable one), output 0 (a
value). The explain runner's pieces do the work, unchanged: `batches.sized_attribute_fn` (every
method of `config.explain.methods`, every member, sized to the memory budget), `trust.run_method`
(the `config.explain.metrics` that need no mask, "auto" by default: faithfulness, sanity,
complexity; the members' per-pixel spread and agreement) and `page.write`. Written to
`<workdir>/predict/<name>/explanations/`: `maps_<method>.npz` (ensemble maps, pairs, the
inputs' indices), `trust_<method>.npz`, `results.json`, `glance_*.png` and one `index.html`;
rerunning the same command rewrites them.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from mtljax import fileio, tasks, train
from mtljax.attribution import methods
from mtljax.attribution import targets as targets_lib
from mtljax.data import pipeline
from mtljax.explain import batches, memory, setup, trust
from mtljax.explain import image_report as report
from mtljax.explain import page as page_lib
from mtljax.explain.run import _METHOD_KNOBS, _TRUST_KNOBS, _segments


def predicted_targets(task_cfg, arrays: dict, task: str) -> list[list[int]]:
  """Per input, the outputs of `task` its prediction names (module docstring)."""
  kind = tasks.of(task_cfg)
  if kind.target == tasks.VALUE:
    return [[0] for _ in range(len(arrays[f"{task}/value"]))]
  prob = np.asarray(arrays[f"{task}/prob"])
  if kind.target == tasks.LABELS:
    return [list(np.flatnonzero(p >= 0.5)) or [int(p.argmax())] for p in prob]
  return [[int(p.argmax())] for p in prob]


def _inputs(s, source, batch_size: int) -> dict:
  parts = []
  for b in pipeline.eval_batches(
    source, input_names=s.input_names, task_names=(), stats=s.stats["inputs"], batch_size=batch_size
  ):
    keep = np.asarray(b["valid"]) > 0
    parts.append(jax.tree.map(lambda v: np.asarray(v)[keep], b["inputs"]))
  return jax.tree.map(lambda *v: np.concatenate(v), *parts)


def explain_predictions(
  config, s, inp, state, meta, arrays: dict, out_dir: str, class_names: list[str]
) -> dict[str, Any]:
  """Explains the predictions `arrays` (predictions.npz) of the inputs `inp` into
  `<out_dir>/explanations/`; `class_names` of `config.explain.task` (`run.class_names`); returns
  the summary written to results.json."""
  ex, p = config.explain, config.predict
  task = ex.task
  stacked = {"params": state["params"], "batch_stats": state["batch_stats"]}
  setup.check_request(config, s, stacked=stacked)
  size = train.ensemble_size(config)
  names = [task] if tasks.of(config.tasks[task]).target == tasks.VALUE else list(class_names)
  offset = targets_lib.head_offsets(setup.explain_heads(config)).get(task, 0)
  chosen = predicted_targets(config.tasks[task], arrays, task)
  kind = tasks.of(config.tasks[task])
  conf = None if kind.target == tasks.VALUE else np.asarray(arrays[f"{task}/prob"]).max(-1)
  keys = [";".join(names[t] for t in c) for c in chosen]
  picked = setup.pick_across(
    keys, int(p.explain_examples), None if conf is None else np.argsort(-conf, kind="stable")
  )
  batch_size = int(p.batch_size or config.eval.batch_size)
  x = _inputs(s, setup.Subset(inp.source, picked), batch_size)
  pairs = np.asarray([(n, t) for n, i in enumerate(picked) for t in chosen[i]], np.int32)
  leads = [_lead(config.tasks[task], arrays, task, names, picked[n], t) for n, t in pairs]
  pairs = pairs + np.asarray([0, offset], np.int32)
  labels = [""] * offset + names  # the heads' joint index space (config.explain.tasks)
  hw = tuple(x[ex.modality].shape[1:3])
  ann = (
    np.zeros((len(pairs),) + hw, bool),
    np.full((len(pairs), 2), np.nan, np.float32),
    np.zeros(len(pairs), bool),
  )
  wanted, skipped = trust.request(config, ann[2])
  images = report.display_images(x[ex.modality], s.stats["inputs"][ex.modality])
  exp_dir = os.path.join(out_dir, "explanations")
  os.makedirs(exp_dir, exist_ok=True)
  channels = {m: f.get("channels") for m, f in s.input_fields.items()}
  specs = {name: methods.get_method(name) for name in ex.methods}
  segments = num_segments = None
  if any(spec.needs_segments for spec in specs.values()):
    segments, num_segments = _segments(ex, images, hw)
  results, pair_bands = {}, {}
  summary = {
    "split": inp.name,
    "task": task,
    "modality": ex.modality,
    "inputs": inp.what,
    "ensemble_size": size,
    "checkpoint_step": int(meta.get("step", -1)),
    "num_examples": int(len(picked)),
    "num_targets": int(len(pairs)),
    "examples": [int(i) for i in picked],
    "methods": results,
  }
  for name, spec in specs.items():
    with memory.guard(f"{name} (config.explain.methods)", _METHOD_KNOBS):
      fn, bs, _, _ = batches.sized_attribute_fn(
        s.model, config, name, hw, num_segments, stacked, x, pairs
      )
      member_maps, ens_maps, masses, _, bands = batches.attribute_examples(
        fn, spec, stacked, x, pairs, bs, segments, desc=f"explain {name}"
      )
    results[name] = {}
    if wanted:
      with memory.guard(f"{name}'s trust metrics", _TRUST_KNOBS):
        scores = trust.run_method(
          config, s, stacked, x, pairs, ann, member_maps, ens_maps, wanted, skipped,
          name=name, image_hw=hw, segments=segments if spec.needs_segments else None,
          num_segments=num_segments,
        )  # fmt: skip
      results[name]["trust"] = trust.summary(scores)
      trust.save(exp_dir, name, scores)
    results[name].update(page_lib.attribution_shares(masses, bands, pairs, labels, channels, x))
    if masses:
      pair_bands[name] = bands
    fileio.savez(
      os.path.join(exp_dir, f"maps_{name}.npz"),
      ensemble=ens_maps,
      members=member_maps[:, : int(ex.num_pictures)],
      pairs=pairs,
      index=np.asarray(picked)[pairs[:, 0]],
      target_names=np.asarray([labels[t] for t in pairs[:, 1]]),
    )
    fileio.write_json(os.path.join(exp_dir, "results.json"), summary, default=float)
  page_lib.write(
    exp_dir, summary, images, pairs, labels, leads=leads, bands=pair_bands, channels=channels,
    count=int(ex.num_pictures),
  )  # fmt: skip
  print(f"explanations of {len(picked)} inputs in {exp_dir}/index.html", flush=True)
  return summary


def _lead(task_cfg, arrays, task, names, i, t) -> str:
  """What a sentence starts with: the prediction and its uncertainty."""
  if tasks.of(task_cfg).target == tasks.VALUE:
    v, sd = np.asarray(arrays[f"{task}/value"])[i], np.asarray(arrays[f"{task}/spread"])[i]
    v, sd = np.ravel(v)[0], np.ravel(sd)[0]
    return f"Predicted {task} {v:.3g} (members' spread {sd:.2g})"
  prob = float(np.asarray(arrays[f"{task}/prob"])[i, t])
  mi = float(np.asarray(arrays[f"{task}/mutual_information"])[i])
  return f"Predicted {names[t]} (p={prob:.2f}; the members' disagreement {mi:.2f} nats)"
