"""What `run.py` calls for the trust metrics: the request check (before any attribution), the
per-method evaluation with the run's model and maps, and the saved arrays. Kept apart from
`run.py` so the explain run only gains a few lines."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from mtljax import fileio
from mtljax.attribution import layers
from mtljax.attribution import targets as targets_lib
from mtljax.attribution.trust import registry, sanity
from mtljax.explain import memory, render, setup, trust
from mtljax.explain.setup import ExplainError


def request(config, has_mask) -> tuple[list[str], dict[str, str]]:
  """The metrics `config.explain.metrics` asks for and those skipped (with why); one
  ExplainError for an unknown name or a mask metric on data without masks."""
  names = tuple(config.explain.get("metrics") or ())
  try:
    return registry.resolve(names, has_masks=bool(np.any(has_mask)))
  except ValueError as e:
    raise ExplainError(str(e)) from None


def run_method(
  config,
  s,
  stacked,
  x,
  pairs,
  ann,
  member_maps,
  ens_maps,
  attribute_fn,
  wanted,
  skipped,
  segments=None,
  *,
  name: str,
) -> dict[str, Any]:
  """`trust.evaluate_method` for method `name` of the explain run (see there)."""
  ex = config.explain
  heads = setup.explain_heads(config)  # the targets of config.explain.tasks, in one index space
  num_outputs = sum(n for _, _, n in heads)

  def member_score(variables, inputs, idx):
    outputs = lambda v, xx: s.model.apply(v, xx, train=False)[0]  # noqa: E731
    return targets_lib.make_pair_scores(outputs, heads, idx)(variables, inputs)

  member0 = jax.tree.map(lambda a: a[0], stacked)
  order = layers.module_paths(lambda v, xx: member_score(v, xx, 0), member0, s.example_inputs)
  layer_names = [
    "params/" + p if p else "params" for p in sanity.param_layers(member0["params"], order)
  ]
  return trust.evaluate_method(
    wanted,
    skipped,
    ex.trust,
    attribute_fn=attribute_fn,
    member_score=member_score,
    stacked=stacked,
    x=x,
    modality=ex.modality,
    pairs=pairs,
    member_maps=member_maps,
    ens_maps=ens_maps,
    masks=ann[0],
    has_mask=ann[2],
    num_targets=num_outputs,
    layers=layer_names,
    batch_size=int(ex.batch_size),
    segments=segments,
    seed=int(config.seed),
    desc=f"{name} trust",
    budget=memory.budget_bytes(ex.get("memory_budget", 0.5)),
  )


def save(out_dir: str, name: str, trust: dict[str, Any]) -> None:
  """`trust_<name>.npz`: every metric per member (`member_<m>` [E, P]) and of the ensemble
  (`ensemble_<m>` [P]), the members' per-pixel std `[P, H, W]` and agreement `[P]`; and
  `size_curve_<name>_<metric>.png` of the map-only metrics (shown on the page)."""
  for metric, c in (trust.get("size_curves") or {}).items():
    render.save_method_size_curve(out_dir, name, metric, c)
  fileio.savez(
    os.path.join(out_dir, f"trust_{name}.npz"),
    **{f"member_{k}": v for k, v in trust["member"].items()},
    **{f"ensemble_{k}": v for k, v in trust["ensemble"].items()},
    uncertainty_std=trust["uncertainty"]["std"],
    uncertainty_agreement=trust["uncertainty"]["agreement"],
  )


def summary(trust: dict[str, Any]) -> dict[str, Any]:
  """The JSON part of a method's trust result (no per-pair arrays)."""
  agree = trust["uncertainty"]["agreement"]
  return {
    "compare": trust["compare"],
    "skipped": trust["skipped"],
    "mprt_curve": trust.get("mprt_curve"),
    "size_curves": trust.get("size_curves") or {},
    "agreement_mean": float(np.nanmean(agree)) if np.isfinite(agree).any() else float("nan"),
  }
