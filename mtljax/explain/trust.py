"""The trust metrics inside `--mode=explain`: the request check (before any attribution), then per
method every requested metric (`registry.resolve`) of each member's maps (with that member's model)
and of the ensemble's map (with the ensemble: the mean of the members' scores, its explanation the
run's averaged map), Ind-Avg vs Ens-Avg (paired t-test, `localization.compare`), the members' spread
(uncertainty), and the saved arrays.

A metric is evaluated by what its registry entry declares (`registry.NEEDS`), never by its name:
"model" metrics run in one jitted program per batch, vmapped over the members; metrics that re-run
the attribution ("explain", "targets") get all members and the ensemble at once; the others (maps,
masks) run in one jitted program per batch. The time-series run refuses them (they perturb pixels)."""

from __future__ import annotations

import os
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from mtljax import fileio, interrupts
from mtljax.attribution import layers as layers_lib
from mtljax.attribution import localization as xm
from mtljax.attribution import targets as targets_lib
from mtljax.attribution.trust import map_metrics, ops, sanity
from mtljax.attribution.trust.registry import TRUST_METRICS, Inputs, resolve
from mtljax.explain import batches, memory, render, setup
from mtljax.explain.setup import ExplainError

_RERUN = frozenset({"explain", "targets"})


#: `config.explain.metrics = ("auto",)` (the default): cheap metrics read on any data: faithfulness,
#: sanity (one more attribution per method), complexity; with masks a map-only localisation one.
AUTO, AUTO_MASKS = ("deletion", "insertion", "random_logit", "sparseness"), ("relevance_mass",)


def request(config, has_mask, *, time_series: bool = False) -> tuple[list[str], dict[str, str]]:
  """The metrics `config.explain.metrics` asks for and those skipped (with why); one ExplainError
  for an unknown name, a mask metric on data without masks, a missing setting, or any metric in
  the time-series run (the metrics perturb image pixels). "auto": `AUTO` (+ `AUTO_MASKS`)."""
  names = tuple(config.explain.get("metrics") or ())
  if "auto" in names:
    auto = () if time_series else AUTO + (AUTO_MASKS if np.any(has_mask) else ())
    names = tuple(dict.fromkeys(n for m in names for n in (auto if m == "auto" else (m,))))
  masks = time_series or bool(np.any(has_mask))
  try:
    wanted, skipped = resolve(names, has_masks=masks, settings=config.explain.get("trust"))
  except ValueError as e:
    raise ExplainError(str(e)) from None
  if time_series and names:
    raise ExplainError(
      f"config.explain.metrics={list(names)}: the trust metrics take image inputs; the "
      "time-series explain run (config.explain.kind='time_series') computes none of them "
      "(leave config.explain.metrics empty)"
    )
  return wanted, skipped


def _call(entry, inputs: Inputs):
  """`(value [..., B], curve [L, ..., B] or None)` of one entry."""
  out = entry.fn(inputs)
  return out if entry.curve else (out, None)


def _with_ensemble(members, ens):
  """`{n: (value [E + 1, B], curve [L, E + 1, B] or None)}` of per-member `([E, B], [E, L, B])`
  and ensemble `([B], [L, B])` results."""
  out = {}
  for n, (v, c) in members.items():
    ev, ec = ens[n]
    curve = None if c is None else jnp.concatenate([jnp.moveaxis(c, 0, 1), ec[:, None]], 1)
    out[n] = (jnp.concatenate([v, ev[None]], 0), curve)
  return out


def _size_curves(names, tc, member_maps, masks, has_mask) -> dict[str, dict]:
  """`localization.size_curve` (Ens-Avg and Ind-Avg against the number of members averaged) of
  each requested metric of the maps alone (and masks), for ensembles of more than one member."""
  if member_maps.shape[0] < 2:
    return {}
  keep = np.asarray(has_mask, bool)
  curves = {}
  for n in names:
    entry = TRUST_METRICS[n]
    if entry.needs - {"masks"}:
      continue
    masked = "masks" in entry.needs
    maps = member_maps[:, keep] if masked else member_maps
    if not maps.shape[1]:
      continue
    mk = jnp.asarray(masks[keep]) if masked else None

    def fn(m, entry=entry, mk=mk):
      inputs = Inputs(maps=jnp.asarray(m), settings=tc, masks=mk, key=jax.random.key(0))
      return np.asarray(_call(entry, inputs)[0])

    c = xm.size_curve(maps, fn, signed=True)
    curves[n] = {k: np.asarray(v).tolist() for k, v in c.items()}
  return curves


def _sized_model_program(
  make_program, tc, stacked, x, modality, member_maps, batch_size, budget, names
) -> Callable:
  """The model metrics' program with the perturbation steps per call (`tc.chunk` at most; 0 =
  every step, bounded by the image's pixels) that fit `budget` (compiled bytes of one batch,
  `memory.plan`); the configured program when it fits."""
  largest = int(tc.chunk) or int(np.prod(x[modality].shape[1:3]))
  programs = {}

  def program(c):
    if c not in programs:
      settings = tc.copy_and_resolve_references()
      settings.chunk = 0 if c == largest and not int(tc.chunk) else c
      programs[c] = make_program(settings)
    return programs[c]

  def measure(c):
    e = member_maps.shape[0]
    args = (
      memory.abstract(stacked),
      memory.abstract(x, batch_size),
      jax.ShapeDtypeStruct((batch_size,), jnp.int32),
      jax.ShapeDtypeStruct((e, batch_size) + member_maps.shape[2:], jnp.float32),
      jax.ShapeDtypeStruct((batch_size,) + member_maps.shape[2:], jnp.float32),
      {n: jax.random.key(0) for n in names},
    )
    return memory.program_bytes(program(c["chunk"]), *args)

  key = ("trust", str(sorted(tc.items())), str([(m, v.shape[1:]) for m, v in sorted(x.items())]))
  key = (key, member_maps.shape[0], batch_size, tuple(names))
  return program(memory.plan(key, [("chunk", largest)], measure, budget)["chunk"])


def evaluate_method(
  names,
  skipped,
  tc,
  *,
  explain_pairs: Callable,
  member_score: Callable,
  stacked,
  x,
  modality,
  pairs,
  member_maps,
  ens_maps,
  masks,
  has_mask,
  num_targets: int,
  layers,
  batch_size: int,
  segments=None,
  seed: int = 0,
  desc: str = "trust",
  budget: int | None = None,
) -> dict[str, Any]:
  """Runs the metrics `names` (already resolved) for one method.

  Args:
    tc: `config.explain.trust` (settings of every metric).
    explain_pairs: `(stacked, inputs, idx [B], segments) -> (member maps [E, B, H, W], ensemble
      map [B, H, W])`, the run's method on one target per row (`pair_attribute_fn`).
    member_score: `(variables, inputs, idx [B]) -> [B]`, one member's score of the targets.
    x: all inputs `{modality: [N, ...]}`; pairs `[P, 2]` (example, target); member_maps
      `[E, P, H, W]`, ens_maps `[P, H, W]` (normalised, as the run's); masks `[P, H, W]`,
      has_mask `[P]`.
    layers: the model's parameter-owning module paths ("params/...") in call order (MPRT
      randomises them from the last).
    budget: bytes the model metrics' program may take (`memory.plan` sizes their perturbation
      steps per call, `config.explain.trust.chunk` at most, to fit); None = as configured.

  Returns:
    `{"compare": {metric: Ind-Avg vs Ens-Avg}, "member": {metric: [E, P]}, "ensemble": {metric:
    [P]}, "skipped": {metric: why}, "<metric>_curve": {"layers", "members": [L], "ensemble":
    [L]} (metrics with a curve), "size_curves", "uncertainty": {"std": [P, H, W], "agreement":
    [P]}}`.
  """
  size = member_maps.shape[0]
  skipped = dict(skipped)
  if num_targets < 2:
    one = {n: "the task has one target" for n in names if "targets" in TRUST_METRICS[n].needs}
    skipped.update(one)
  names = [n for n in names if n not in skipped]
  entries = {n: TRUST_METRICS[n] for n in names}
  by_model = [n for n, e in entries.items() if "model" in e.needs]
  by_rerun = [n for n, e in entries.items() if e.needs & _RERUN]
  by_maps = [n for n in names if n not in by_model and n not in by_rerun]
  groups = tuple(sanity.group_layers(list(reversed(layers)), int(tc.mprt_groups)))

  def ens_score(params, inputs, idx):
    return jax.vmap(lambda v: member_score(v, inputs, idx))(params).mean(0)

  def make_model_program(settings):
    @jax.jit
    def model_program(stacked, xb, idx, mm, em, keys):
      def run(score, params, maps):
        image_score = lambda p, im: score(p, *ops.tile_rows(({**xb, modality: im}, idx), len(im)))  # noqa: E731
        return {
          n: _call(
            entries[n],
            Inputs(
              maps=maps,
              settings=settings,
              x=xb[modality],
              params=params,
              key=keys[n],
              score=image_score,
            ),
          )
          for n in by_model
        }

      members = jax.vmap(lambda v, m: run(member_score, v, m))(stacked, mm)
      return _with_ensemble(members, run(ens_score, stacked, em))

    return model_program

  model_program = make_model_program(tc)
  if by_model and budget is not None and int(tc.chunk) != 1:
    model_program = _sized_model_program(
      make_model_program, tc, stacked, x, modality, member_maps, batch_size, budget, by_model
    )

  @jax.jit
  def maps_program(both, mk, keys):
    def run(m, n):
      fields = {"masks": mk} if "masks" in entries[n].needs else {}
      return _call(entries[n], Inputs(maps=m, settings=tc, key=keys[n], **fields))

    out = {}
    for n in by_maps:
      v, c = jax.vmap(lambda m, n=n: run(m, n))(both)
      out[n] = (v, None if c is None else jnp.moveaxis(c, 0, 1))
    return out

  @jax.jit  # one compilation per method: the cascade and the noise loops traced once
  def rerun_program(stacked, xb, idx, seg, both, keys):
    def explain_target(params, img, t):
      mm, em = explain_pairs(params, {**xb, modality: img}, t, seg)
      return jnp.concatenate([mm, em[None]], 0)  # [E + 1, B, H, W]

    provided = {
      "explain": {"explain": lambda params, img: explain_target(params, img, idx)},
      "targets": {"explain_target": explain_target, "targets": idx, "num_targets": num_targets},
      "layers": {"layers": groups},
    }
    out = {}
    for n in by_rerun:
      fields = {k: v for need in entries[n].needs for k, v in provided[need].items()}
      inputs = Inputs(maps=both, settings=tc, x=xb[modality], params=stacked, key=keys[n], **fields)
      out[n] = _call(entries[n], inputs)
    return out

  values: dict[str, list] = {n: [] for n in names}
  curves: dict[str, list] = {}
  key = jax.random.key(seed)
  for start in tqdm(range(0, len(pairs), batch_size), desc=desc, mininterval=2):
    interrupts.check()  # SIGTERM/SIGINT: stop before the next batch
    p = pairs[start : start + batch_size]
    pad = batch_size - len(p)
    sel = np.concatenate([np.arange(start, start + len(p)), np.repeat(start + len(p) - 1, pad)])
    pf = pairs[sel]
    xb = {m: jnp.asarray(v[pf[:, 0]]) for m, v in x.items()}
    idx = jnp.asarray(pf[:, 1])
    seg = segments(pf[:, 0]) if segments is not None else None
    mm, em = jnp.asarray(member_maps[:, sel]), jnp.asarray(ens_maps[sel])
    both = jnp.concatenate([mm, em[None]], 0)
    key, batch_key = jax.random.split(key)
    # Each metric's own draws, whichever others run beside it.
    keys = {n: jax.random.fold_in(batch_key, zlib.crc32(n.encode())) for n in names}
    got: dict[str, Any] = {}
    if by_model:
      got.update(model_program(stacked, xb, idx, mm, em, {n: keys[n] for n in by_model}))
    if by_maps:
      got.update(maps_program(both, jnp.asarray(masks[sel]), {n: keys[n] for n in by_maps}))
    if by_rerun:
      got.update(rerun_program(stacked, xb, idx, seg, both, {n: keys[n] for n in by_rerun}))
    for n, (v, c) in got.items():
      values[n].append(np.asarray(v, np.float64)[:, : len(p)])
      if c is not None:  # without the batch's padding rows
        curves.setdefault(n, []).append(np.asarray(c, np.float64)[..., : len(p)])
  out: dict[str, Any] = {"compare": {}, "member": {}, "ensemble": {}, "skipped": skipped}
  for n in names:
    v = np.concatenate(values[n], axis=1)
    if "masks" in entries[n].needs:
      v[:, ~np.asarray(has_mask, bool)] = np.nan
    out["member"][n], out["ensemble"][n] = v[:size], v[size]
    if np.isfinite(v[size]).any():
      out["compare"][n] = xm.compare(v[:size], v[size], lower_is_better=entries[n].lower_is_better)
  for n, parts in curves.items():
    c = np.concatenate(parts, axis=-1)  # [L, E + 1, P]
    out[f"{n}_curve"] = {
      "layers": [" + ".join(g) for g in groups],
      "members": np.nanmean(c[:, :size], axis=(1, 2)).tolist(),
      "ensemble": np.nanmean(c[:, size], axis=-1).tolist(),
    }
  out["size_curves"] = _size_curves(names, tc, member_maps, masks, has_mask)
  std, agree = map_metrics.member_spread(jnp.asarray(member_maps))
  out["uncertainty"] = {"std": np.asarray(std, np.float32), "agreement": np.asarray(agree)}
  return out


def pair_attribute_fn(model, config, name: str, image_hw, num_segments=None) -> Callable:
  """`(stacked, inputs, idx [B], segments) -> (member maps [E, B, H, W], ensemble [B, H, W])`:
  the run's attribution (`batches.make_targets_attribute_fn`) with one target per row."""
  fn = batches.make_targets_attribute_fn(model, config, name, image_hw, num_segments)

  def explain_pairs(stacked, inputs, idx, segments):
    valid = jnp.ones((idx.shape[0], 1), bool)
    mm, em = fn(stacked, inputs, idx[:, None], valid, segments)[:2]
    return mm[:, :, 0], em[:, 0]

  return explain_pairs


def run_method(
  config,
  s,
  stacked,
  x,
  pairs,
  ann,
  member_maps,
  ens_maps,
  wanted,
  skipped,
  *,
  name: str,
  image_hw,
  segments=None,
  num_segments=None,
) -> dict[str, Any]:
  """`evaluate_method` for method `name` of the explain run (`s` the run's `train.Setup`)."""
  ex = config.explain
  heads = setup.explain_heads(config)  # the targets of config.explain.tasks, in one index space
  num_outputs = sum(n for _, _, n in heads)

  def member_score(variables, inputs, idx):
    outputs = lambda v, xx: s.model.apply(v, xx, train=False)[0]  # noqa: E731
    return targets_lib.make_pair_scores(outputs, heads, idx)(variables, inputs)

  member0 = jax.tree.map(lambda a: a[0], stacked)
  order = layers_lib.module_paths(lambda v, xx: member_score(v, xx, 0), member0, s.example_inputs)
  layer_names = [
    "params/" + p if p else "params" for p in sanity.param_layers(member0["params"], order)
  ]
  return evaluate_method(
    wanted,
    skipped,
    ex.trust,
    explain_pairs=pair_attribute_fn(s.model, config, name, image_hw, num_segments),
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
  curves = {k: v for k, v in trust.items() if k.endswith("_curve")}
  return {
    "compare": trust["compare"],
    "skipped": trust["skipped"],
    **curves,
    "size_curves": trust.get("size_curves") or {},
    "agreement_mean": float(np.nanmean(agree)) if np.isfinite(agree).any() else float("nan"),
  }
