"""Per-time-step and per-feature importance of time-series inputs (e.g. CropYield).

Attribution methods return attributions shaped like the inputs, so a padded time series
`{"values": [B, T, F], "days": [B, T], "mask": [B, T]}` gets `{"values": [B, T, F], ...}` (the
integer `days`/`mask` leaves are held fixed and get zeros). `series_importance` reduces them over
features (→ per time step) and over the real time steps (→ per feature); since steps are
irregular, `bin_by_day` summarises the per-step importance by each step's day value.

`explain_workdir` (`--mode=explain` with `config.explain.kind = "time_series"`) attributes the
regression output of `config.explain.task` (or the true class of a classification task) for
`config.explain.max_examples` examples of `config.explain.split` (spread over the target's
quantiles or the task's classes, `setup.explained_examples`) with each method of
`config.explain.methods` (the registered methods with `time_series=True`: saliency,
input_x_gradient, integrated_gradients, smoothgrad, gradient_shap), averages over ensemble members (Eq. 1 of the ensembles paper), and
writes (on process 0) to `<workdir>/explanations/<split>/`:

  importance.json                 per method: each input's share of the attribution mass, its
                                  per-feature importance and per-day-bin importance; on planted
                                  synthetic data the share on the planted relevant S2 features
  features_<method>.csv           modality, feature, importance (sums to 1 per modality)
  time_<method>.csv               modality, day_bin_start, day_bin_end, importance, steps
  importance_<method>.png         bars per feature and a curve over days, per time-series input
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtljax import fileio, tasks, train
from mtljax.attribution import ensemble as ens_lib
from mtljax.attribution import methods
from mtljax.attribution import targets as targets_lib
from mtljax.data.source import capability
from mtljax.explain import memory, setup, trust


def is_series(x) -> bool:
  return isinstance(x, Mapping) and {"values", "mask"} <= set(x)


def series_importance(values_attr, mask) -> tuple[np.ndarray, np.ndarray]:
  """Importance of each time step and each feature of one time-series input.

  Args:
    values_attr: attributions of `values`, `[B, T, F]` (signed or not: magnitudes are used).
    mask: `[B, T]`, 1 = real step.

  Returns:
    `(per_step [B, T], per_feature [B, F])`: `Σ_f |a|` (0 on padded steps) and `Σ_t |a|` over
    the real steps.
  """
  a = np.abs(np.asarray(values_attr, np.float64)) * (np.asarray(mask)[..., None] > 0)
  return a.sum(-1), a.sum(-2)


def bin_by_day(per_step, days, mask, bin_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean per-step importance in day bins `[k·w, (k+1)·w)` over the real steps of all examples.

  Returns `(bin_starts [K], mean_importance [K], steps [K])` for the bins that hold a real step.
  """
  per_step, days = np.asarray(per_step, np.float64), np.asarray(days)
  real = np.asarray(mask) > 0
  b = np.floor_divide(days[real], int(bin_width))
  v = per_step[real]
  bins = np.unique(b)
  sums = np.array([v[b == k].sum() for k in bins])
  counts = np.array([(b == k).sum() for k in bins])
  return bins * int(bin_width), sums / np.maximum(counts, 1), counts


def _normalise_rows(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(x.sum(-1, keepdims=True), 1e-12)


def summarize(
  attr: Mapping[str, Any],
  inputs: Mapping[str, Any],
  channels: Mapping[str, Sequence[str]],
  bin_width: int,
) -> dict[str, Any]:
  """Importance summary of one method's (member-averaged) attributions `{modality: attr}`.

  Each example's importance is normalised to sum 1 before averaging, so examples weigh equally.
  """
  mass = {}
  out: dict[str, Any] = {"modalities": {}}
  for m, a in attr.items():
    x = inputs[m]
    if is_series(x):
      per_step, per_feature = series_importance(a["values"], x["mask"])
      mass[m] = per_feature.sum(-1)
      feat = _normalise_rows(per_feature).mean(0)
      starts, imp, counts = bin_by_day(_normalise_rows(per_step), x["days"], x["mask"], bin_width)
      out["modalities"][m] = {
        "features": dict(zip(channels[m], feat.tolist())),
        "time": {
          "bin_start": starts.tolist(),
          "bin_width": int(bin_width),
          "importance": imp.tolist(),
          "steps": counts.tolist(),
        },
      }
    else:
      a = np.abs(np.asarray(a, np.float64)).reshape(len(a), -1)
      mass[m] = a.sum(-1)
      out["modalities"][m] = {
        "features": dict(zip(channels[m], _normalise_rows(a).mean(0).tolist()))
      }
  total = sum(mass.values()) + 1e-12
  out["mass_share"] = {m: float(np.mean(v / total)) for m, v in mass.items()}
  return out


def _plot(
  path: str, summary: Mapping[str, Any], title: str, truth: Mapping[str, Any] | None
) -> np.ndarray:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  mods = [m for m, v in summary["modalities"].items() if "time" in v]
  fig, axes = plt.subplots(len(mods), 2, figsize=(12, 3.2 * len(mods)), dpi=80, squeeze=False)
  relevant = set((truth or {}).get("s2_relevant_features", ()))
  for row, m in zip(axes, mods):
    v = summary["modalities"][m]
    names, imp = list(v["features"]), list(v["features"].values())
    colors = ["tab:red" if (m == "s2" and n in relevant) else "tab:blue" for n in names]
    row[0].bar(range(len(names)), imp, color=colors)
    row[0].set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    row[0].set_title(
      f"{m}: importance per feature" + (" (red: planted)" if relevant and m == "s2" else ""),
      fontsize=9,
    )
    t = v["time"]
    row[1].plot(np.asarray(t["bin_start"]) + t["bin_width"] / 2, t["importance"], marker="o")
    row[1].set_xlabel("day (bin centre)")
    row[1].set_title(f"{m}: mean importance per time step, {t['bin_width']}-day bins", fontsize=9)
    row[1].grid(alpha=0.3)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  fig.savefig(path)
  plt.close(fig)
  return image


def _write_csvs(out_dir: str, name: str, summary: Mapping[str, Any]) -> None:
  """`features_<name>.csv` and `time_<name>.csv` of one method's summary."""
  rows = [["modality", "feature", "importance"]]
  for m, v in summary["modalities"].items():
    rows += [[m, k, f"{val:.6g}"] for k, val in v["features"].items()]
  fileio.write_csv(os.path.join(out_dir, f"features_{name}.csv"), rows)
  rows = [["modality", "day_bin_start", "day_bin_end", "importance", "steps"]]
  for m, v in summary["modalities"].items():
    if "time" in v:
      t = v["time"]
      rows += [
        [m, b, b + t["bin_width"], f"{i:.6g}", c]
        for b, i, c in zip(t["bin_start"], t["importance"], t["steps"])
      ]
  fileio.write_csv(os.path.join(out_dir, f"time_{name}.csv"), rows)


_KNOBS = (
  "--config.explain.memory_budget=<a smaller fraction or bytes>",
  "--config.explain.batch_size=<fewer examples per call>",
)


def _sized(config, name, spec, apply_fn, ctx, stacked, x, index, num_outputs):
  """`(run, examples per call)`: `run(stacked, inputs, idx) -> the members' mean attribution`,
  jitted, with the method's steps / samples, the members (vmapped) and the examples per call
  sized to `config.explain.memory_budget` (`memory.plan`; the same numbers up to rounding)."""
  ex, task_cfg = config.explain, config.tasks[config.explain.task]
  size = jax.tree.leaves(stacked)[0].shape[0]
  dims = [("steps", spec.chunks(ctx)[1])] if spec.chunks is not None else []
  dims += [("members", size), ("examples", int(ex.batch_size))]
  largest = dict(dims)
  built = {}

  def build(c):
    key = tuple(sorted(c.items()))
    if key not in built:
      cctx = dataclasses.replace(ctx, chunk=c.get("steps"))
      member_chunk = c["members"] if c["members"] < size else None

      def run(stacked, inputs, idx):
        def method(variables, xx):
          f = targets_lib.make_score_fn(
            apply_fn, ex.task, task_cfg.kind, idx, num_outputs=num_outputs
          )
          return methods.attribute(spec, f, variables, xx, cctx)

        return ens_lib.ensemble_attribute(
          method, stacked, inputs, strategy="vmap", member_chunk=member_chunk
        )[1]

      built[key] = jax.jit(run)
    return built[key]

  def measure(c):
    b = c["examples"]
    idx = index if isinstance(index, int) else memory.abstract(index, b)
    return memory.program_bytes(build(c), memory.abstract(stacked), memory.abstract(x, b), idx)

  shapes = tuple((k, np.shape(v)[1:]) for k, v in jax.tree.leaves_with_path(x))
  key = ("series", name, str(shapes), size, str(sorted(ex.items())))
  chunks = memory.plan(key, dims, measure, memory.budget_bytes(ex.get("memory_budget", 0.5)))
  if chunks != largest and setup.is_main():
    text = ", ".join(f"{chunks[k]} of {largest[k]} {k}" for k in largest)
    print(f"{name}: {text} per call (memory budget)", flush=True)
  return build(chunks), chunks["examples"]


def explain_workdir(
  config: ml_collections.ConfigDict, workdir: str, *, checked: bool = False
) -> dict[str, Any]:
  """Time-series importance of a trained workdir (see the module docstring)."""
  s = train.setup(config, workdir, write_config=False, checked=checked)
  ex = config.explain
  setup.check_request(config, s, time_series=True)
  trust.request(config, (), time_series=True)  # trust metrics are image-only: one clear error
  state, meta = setup.restore(config, s, workdir)
  stacked = {"params": state["params"], "batch_stats": state["batch_stats"]}
  task_cfg = config.tasks[ex.task]
  src = s.sources[ex.split]
  picked = setup.explained_examples(config, src, int(ex.max_examples))  # spread over the task
  data = setup.collect(s, ex.split, len(picked), int(ex.batch_size), indices=picked)
  x = data["inputs"]
  fields = src.input_fields
  channels = {
    m: tuple(fields[m].get("channels") or range(int(np.prod(fields[m]["shape"]))))
    for m in s.input_names
  }
  num_outputs = int(task_cfg.get("num_classes") or task_cfg.get("num_outputs") or 1)
  # One class per example: explain its true class (whatever config.explain.target says);
  # otherwise the output index config.explain.target (-1: output 0).
  index = (
    data["targets"][ex.task].astype(np.int32)
    if tasks.is_per_example_class(task_cfg.kind)
    else int(ex.target)
    if int(ex.target) >= 0
    else 0
  )
  planted_truth = capability(src, "planted_truth")
  truth = planted_truth() if planted_truth is not None else None

  def apply_fn(variables, inputs):
    return s.model.apply(variables, inputs, train=False)[0]

  # Integrated Gradients runs unsplit here (no `affine_layers`): the plain path integral over
  # every input, as this run has always computed it.
  ctx = methods.Context(explain=ex, rng=jax.random.key(int(config.seed)))
  is_main = setup.is_main()
  out_dir = os.path.join(s.workdir, "explanations", ex.split)
  writer = None
  if is_main:
    os.makedirs(out_dir, exist_ok=True)
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(os.path.join(s.workdir, "tensorboard", f"explain_{ex.split}"))
  results: dict[str, Any] = {
    "split": ex.split,
    "task": ex.task,
    "num_examples": int(len(data["index"])),
    "examples": [int(i) for i in data["index"]],
    "checkpoint_step": int(meta["step"]),
    "methods": {},
  }
  for name in ex.methods:
    spec = methods.get_method(name)
    with memory.guard(f"{name} (config.explain.methods)", _KNOBS):
      run, bs = _sized(config, name, spec, apply_fn, ctx, stacked, x, index, num_outputs)
      chunks = []
      n = len(data["index"])
      for start in range(0, n, bs):
        sl = slice(start, min(start + bs, n))
        xb = jax.tree.map(lambda v: jnp.asarray(v[sl]), x)
        idx = index if isinstance(index, int) else jnp.asarray(index[sl])
        chunks.append(jax.tree.map(np.asarray, run(stacked, xb, idx)))
    attr = jax.tree.map(lambda *v: np.concatenate(v), *chunks)
    summary = summarize(attr, x, channels, int(ex.day_bin))
    if truth and "s2" in summary["modalities"]:
      feats = summary["modalities"]["s2"]["features"]
      rel = truth["s2_relevant_features"]
      summary["planted_s2_share"] = float(sum(feats[b] for b in rel))
      summary["planted_s2_share_uniform"] = len(rel) / len(feats)
    results["methods"][name] = summary
    if not is_main:
      continue
    _write_csvs(out_dir, name, summary)
    image = _plot(
      os.path.join(out_dir, f"importance_{name}.png"),
      summary,
      f"{name}: {ex.task} ({ex.split}, {n} examples, days: {capability(src, 'day_reference') or 'day'})",
      truth,
    )
    writer.add_image(
      f"explain/importance_{name}", image, global_step=int(meta["step"]), dataformats="HWC"
    )
    share = summary.get("planted_s2_share")
    print(
      f"{name}: input mass shares {summary['mass_share']}"
      + (
        f"; planted S2 features hold {share:.2f} of the S2 importance "
        f"(uniform {summary['planted_s2_share_uniform']:.2f})"
        if share is not None
        else ""
      ),
      flush=True,
    )
  if writer is not None:
    writer.close()
  setup.write_json(os.path.join(out_dir, "importance.json"), results)
  return results
