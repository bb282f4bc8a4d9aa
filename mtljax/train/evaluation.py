"""Evaluation: one pass of the eval step over a split → metrics and the prediction arrays; the
prediction files, the split's optional per-example context, and the pictures of a run.

What each task's prediction is, how it is saved and scored comes from its kind (mtljax/tasks.py):
`saved_as` (`prob/<t>` or `pred/<t>`), `hard_labels` (argmax labels saved beside probabilities),
`metrics`.

A split whose source offers `decoy_swapped` (a dataset with a decoy: mtljax/data/decoys.py) is
scored a second time on that view, each metric logged again as `<name>_decoy_swapped` (e.g.
`digit/accuracy_decoy_swapped`): a validation metric the decoy cannot inflate, to select the
best checkpoint by (`config.train.select_by`). `metric_directions` lists every name an evaluation
logs, with its direction, before anything is evaluated.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Mapping

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from mtljax import dense_pictures, fileio, hierarchy, interrupts, parallel, tasks
from mtljax.data.source import capability
from mtljax.train.state import ensemble_size


def _task_metrics(config, out, pred_of) -> dict[str, float]:
  """Metrics of every task, `pred_of(task)` giving the probabilities or regression values."""
  metrics = {}
  for t, tcfg in config.tasks.items():
    m = tasks.of(tcfg).metrics(
      out[f"target/{t}"], pred_of(t), out[f"mask/{t}"], tcfg.get("num_classes")
    )
    metrics.update({f"{t}/{k}": v for k, v in m.items()})
  return metrics


#: What the metrics of a split's decoy-swapped view are logged as: `<name><SWAPPED>`.
SWAPPED = "_decoy_swapped"


def evaluate(
  eval_fn,
  state,
  batches,
  config: ml_collections.ConfigDict,
  mesh,
  desc: str = "eval",
  source=None,
  batches_of: Callable[[object], Iterator] | None = None,
  dataset=None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """One pass over `batches`; returns `(metrics, predictions)` with every real example once.

  predictions `[N, ...]`: `index`, and per task `target/<t>`, `mask/<t>` and the prediction
  under its kind's `saved_as` key, `prob/<t>` (classification, multilabel) or `pred/<t>`
  (regression values, segmentation labels); classification also gets its argmax labels as
  `pred/<t>` (`hard_labels`).
  An ensemble (E > 1) adds each member's `member_prob/<t>` / `member_pred/<t>` `[N, E, ...]`;
  its metrics are the ensemble's (averaged probabilities), each member's as `member<k>/...` and
  their mean over members as `members_mean/...` (the paper's Ind-Avg).
  With the split's `source`, its optional per-example context is added (`_source_context`);
  with `batches_of(source) -> batches` too, a source's `decoy_swapped` view is scored as well
  (its metrics, counts left out, as `<name>_decoy_swapped`; its predictions are not kept).
  `dataset`: the run's registry entry (`Setup.dataset`), for the hierarchy's class maps.
  """
  size = ensemble_size(config)
  hierarchy_pairs = hierarchy.pairs(config, dataset)
  saved_as = {t: tasks.of(c).saved_as for t, c in config.tasks.items()}
  chunks: dict[str, list] = {}
  for batch in tqdm(
    batches, desc=desc, leave=False, disable=jax.process_index() != 0, mininterval=2.0
  ):
    interrupts.point("eval.batch")
    interrupts.check()  # SIGTERM/SIGINT: stop before the next batch (a collective, as `gather`)
    out = parallel.gather(eval_fn(state, parallel.shard_batch(batch, mesh)))
    valid = out["valid"] > 0
    chunks.setdefault("index", []).append(out["index"][valid])
    for t in config.tasks:
      chunks.setdefault(f"target/{t}", []).append(out["targets"][t][valid])
      chunks.setdefault(f"mask/{t}", []).append(out["mask"][t][valid])
      chunks.setdefault(f"{saved_as[t]}/{t}", []).append(out["pred"][t][valid])
      if size > 1:
        chunks.setdefault(f"member_{saved_as[t]}/{t}", []).append(out["member_pred"][t][valid])
  out = {k: np.concatenate(v) for k, v in chunks.items()}

  def score(prefix, member=None):
    def pred_of(t):
      key = f"{prefix}{saved_as[t]}/{t}"
      return out[key] if member is None else out[key][:, member]

    m = _task_metrics(config, out, pred_of)
    m.update(hierarchy.metrics(config, pred_of, hierarchy_pairs))  # hierarchy/<child>_in_<parent>
    # Optional `config.train.select_task_mean` (multitask tables): that metric's mean over all
    # tasks as `task_mean/<metric>`, the best-checkpoint score instead of the main task's.
    name = config.train.get("select_task_mean", "")
    if name:
      m[f"task_mean/{name}"] = float(np.mean([m[f"{t}/{name}"] for t in config.tasks]))
    return m

  metrics = score("")
  for t, tcfg in config.tasks.items():
    labels = tasks.of(tcfg).hard_labels(out[f"{saved_as[t]}/{t}"])
    if labels is not None:
      out[f"pred/{t}"] = labels
  if size > 1:
    members = [score("member_", k) for k in range(size)]
    for k, m in enumerate(members):
      metrics.update({f"member{k}/{name}": v for name, v in m.items()})
    metrics.update(
      {f"members_mean/{name}": float(np.mean([m[name] for m in members])) for name in members[0]}
    )
  if source is not None:
    _source_context(config, source, out, metrics)
    view = capability(source, "decoy_swapped")
    if view is not None and batches_of is not None:
      swapped, _ = evaluate(eval_fn, state, batches_of(view()), config, mesh, f"{desc} swapped")
      metrics.update({k + SWAPPED: v for k, v in swapped.items() if not k.endswith("/count")})
  return metrics, out


def metric_directions(
  config: ml_collections.ConfigDict, source=None, dataset=None
) -> dict[str, bool]:
  """`{name: larger is better}` of every metric `evaluate` logs for `config` on `source` (with
  `batches_of`), counts left out: each task's (its kind's `metric_directions`), the hierarchy's,
  `task_mean/<metric>`, each member's and their mean, the decoy-swapped ones and the strata."""
  per_task = {t: tasks.of(c).metric_directions(c) for t, c in config.tasks.items()}
  one = {f"{t}/{m}": up for t, d in per_task.items() for m, up in d.items()}
  one.update({f"hierarchy/{c}_in_{p}": True for c, p, _ in hierarchy.pairs(config, dataset)})
  if name := config.train.get("select_task_mean", ""):
    one[f"task_mean/{name}"] = next((d[name] for d in per_task.values() if name in d), True)
  out = dict(one)
  if (size := ensemble_size(config)) > 1:
    for prefix in [f"member{k}/" for k in range(size)] + ["members_mean/"]:
      out.update({prefix + k: up for k, up in one.items()})
  if source is None:
    return out
  if capability(source, "decoy_swapped") is not None:
    out.update({k + SWAPPED: up for k, up in out.items()})
  if (metric_strata := capability(source, "metric_strata")) is not None:
    for prefix, labels in metric_strata().items():
      for t, tcfg in config.tasks.items():
        if tasks.is_per_example_value(tcfg.kind):
          for value in np.unique(np.asarray(labels)):
            out.update({f"{t}/{m}_{prefix}{value}": up for m, up in per_task[t].items()})
  return out


def _source_context(config, source, out, metrics) -> None:
  """Optional per-example context a source offers (all indexed by `out["index"]`): `groups`
  (e.g. CropYield's field id) → `out["group"]`; `prediction_meta()` → `out["meta/<key>"]`;
  `metric_strata()` `{prefix: labels [N]}` → every per-example value task's metrics per label
  value, `<task>/<metric>_<prefix><value>` (e.g. `yield/r2_corn`, Table 6 of the paper)."""
  idx = out["index"]
  if (groups := capability(source, "groups")) is not None:
    out["group"] = np.asarray(groups)[idx]
  if (prediction_meta := capability(source, "prediction_meta")) is not None:
    out.update({f"meta/{k}": np.asarray(v)[idx] for k, v in prediction_meta().items()})
  if (metric_strata := capability(source, "metric_strata")) is not None:
    for prefix, labels in metric_strata().items():
      labels = np.asarray(labels)[idx]
      for t, tcfg in config.tasks.items():
        if not tasks.is_per_example_value(tcfg.kind):
          continue
        key = f"{tasks.of(tcfg).saved_as}/{t}"
        for value in np.unique(labels):
          sel = labels == value
          m = tasks.of(tcfg).metrics(out[f"target/{t}"][sel], out[key][sel], out[f"mask/{t}"][sel])
          metrics.update({f"{t}/{k}_{prefix}{value}": v for k, v in m.items() if k != "count"})


def save_predictions(
  workdir: str, split: str, epoch: int, preds: Mapping[str, np.ndarray], names
) -> str:
  """`<workdir>/predictions/<split>/epoch_<NNN>.npz` (+ the example names of the split)."""
  if jax.process_index() != 0:
    return ""
  folder = os.path.join(workdir, "predictions", split)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"epoch_{epoch:03d}.npz")
  names = np.asarray(names)
  return fileio.savez(
    path, fault="predictions.rename", name=names[preds["index"]], epoch=np.int32(epoch), **preds
  )


def pictures_folder(workdir: str, split: str) -> str:
  """Every picture a run writes of `split` goes here: `<workdir>/pictures/<split>/`."""
  return os.path.join(workdir, "pictures", split)


def write_pictures(config, workdir, split, preds, source, writer, step, *, dataset=None) -> None:
  """Pictures of `preds` under `pictures_folder(workdir, split)` and as TensorBoard images:
  truth, prediction and error maps of the dense tasks (`dense_<k>.png`), then the dataset's own
  (its registry entry's `pictures_fn`, e.g. CropYield's `yield_map_<field>.png`; `dataset`: the
  run's entry, `Setup.dataset`, else looked up). Process 0 only."""
  if jax.process_index() != 0:
    return
  dense_pictures.write_dense_pictures(
    workdir, preds, config, split=split, names=source.names, tb_writer=writer, step=step
  )
  if dataset is None:
    from mtljax.data import get_dataset

    dataset = get_dataset(config.data.name)
  fn = dataset.pictures_fn
  if fn is None:
    return
  for tag, image in fn(preds, source, pictures_folder(workdir, split)):
    writer.image(step, f"{split}/{tag}", image)
