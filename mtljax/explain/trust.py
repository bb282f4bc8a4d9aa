"""The trust metrics inside `--mode=explain`: every requested metric (`registry.resolve`) of each
member's maps (with that member's model) and of the ensemble's map (with the ensemble: the mean of
the members' scores, its explanation the run's averaged map), then Ind-Avg vs Ens-Avg (paired
t-test, `metrics.compare`) and the members' spread (uncertainty). Called by `run.py` per method."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from mtljax.attribution import localization as xm
from mtljax.attribution.trust import (
  faithfulness,
  map_metrics,
  ops,
  robustness,
  sanity,
)
from mtljax.attribution.trust.registry import TRUST_METRICS
from mtljax.explain import memory


def _model_metrics(names, tc, score, params, x, maps, key, chunk):
  """`{metric: [B]}` of the "model" metrics for one model (`score`, `params`) and its maps;
  `chunk` perturbation steps per vectorised call (None = all)."""
  out = {}
  if "deletion" in names or "insertion" in names:
    _, _, d, i = faithfulness.deletion_insertion(
      score,
      params,
      x,
      maps,
      steps=int(tc.steps),
      baseline=tc.baseline,
      insert_baseline=tc.insert_baseline,
      blur_sigma=float(tc.blur_sigma),
      chunk=chunk,
    )
    out["deletion"], out["insertion"] = d, i
  if "pixel_flipping" in names:
    n = x.shape[1] * x.shape[2]
    step = max(1, n // int(tc.steps))
    curve = faithfulness.pixel_flipping(
      score, params, x, maps, features_in_step=step, baseline=tc.baseline, chunk=chunk
    )
    out["pixel_flipping"] = ops.trapezoid(curve) / max(curve.shape[1] - 1, 1)
  if "region_perturbation" in names:
    out["region_perturbation"] = faithfulness.region_perturbation(
      score,
      params,
      x,
      maps,
      patch=int(tc.patch),
      regions=int(tc.regions) or None,
      baseline=tc.baseline,
      chunk=chunk,
    )[0]
  k1, k2 = jax.random.split(key)
  if "faithfulness_correlation" in names:
    n = x.shape[1] * x.shape[2]
    subsets = faithfulness.random_subsets(
      k1, x.shape[0], n, int(tc.runs), max(1, int(n * float(tc.subset_fraction)))
    )
    out["faithfulness_correlation"] = faithfulness.faithfulness_correlation(
      score, params, x, maps, subsets, baseline=tc.baseline, chunk=chunk
    )
  if "road" in names:
    out["road"] = faithfulness.road(
      score,
      params,
      x,
      maps,
      jax.random.normal(k2, x.shape, x.dtype),
      percentages=tuple(tc.road_percentages),
      noise_scale=float(tc.road_noise),
      chunk=chunk,
    )[1]
  return out


#: The metrics of the maps alone (and masks): their ensemble-size curve costs no model call.
_MAP_METRICS = {
  "sparseness": lambda m, s: map_metrics.sparseness(jnp.abs(m)),
  "entropy": lambda m, s: map_metrics.entropy(jnp.abs(m)),
  "pointing_game": map_metrics.pointing_game,
  "relevance_mass": map_metrics.relevance_mass,
  "relevance_rank": map_metrics.relevance_rank,
}


def _size_curves(names, member_maps, masks, has_mask) -> dict[str, dict]:
  """`metrics.size_curve` (Ens-Avg and Ind-Avg against the number of members averaged) of each
  requested map-only metric, for ensembles of more than one member."""
  if member_maps.shape[0] < 2:
    return {}
  keep = np.asarray(has_mask, bool)
  curves = {}
  for n in names:
    fn = _MAP_METRICS.get(n)
    if fn is None:
      continue
    masked = TRUST_METRICS[n].needs == "masks"
    maps = member_maps[:, keep] if masked else member_maps
    if not maps.shape[1]:
      continue
    mk = jnp.asarray(masks[keep] if masked else masks)
    c = xm.size_curve(maps, lambda m, fn=fn, mk=mk: np.asarray(fn(jnp.asarray(m), mk)), signed=True)
    curves[n] = {k: np.asarray(v).tolist() for k, v in c.items()}
  return curves


def _sized_chunk(
  make_faith, chunk, tc, stacked, x, modality, member_maps, batch_size, budget
) -> int | None:
  """Perturbation steps per call of the model metrics that fit `budget` (compiled bytes of one
  batch, `memory.plan`); at most `chunk` (None = every step: `tc.steps`, pixel flipping's or
  the regions' count bounded by the image's pixels)."""
  largest = chunk or int(np.prod(x[modality].shape[1:3]))

  def spec(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)

  def measure(c):
    xb = {m: spec((batch_size,) + v.shape[1:], v.dtype) for m, v in x.items()}
    args = (
      jax.tree.map(lambda a: spec(np.shape(a), jnp.result_type(a)), stacked),
      xb,
      spec((batch_size,), jnp.int32),
      spec((member_maps.shape[0], batch_size) + member_maps.shape[2:], jnp.float32),
      spec((batch_size,) + member_maps.shape[2:], jnp.float32),
      jax.random.key(0),
    )
    return memory.program_bytes(make_faith(c["chunk"]), *args)

  key = ("trust", str(sorted(tc.items())), str([(m, v.shape[1:]) for m, v in sorted(x.items())]))
  key = (key, member_maps.shape[0], batch_size)
  sized = memory.plan(key, [("chunk", largest)], measure, budget)["chunk"]
  return chunk if sized == largest else sized


def evaluate_method(
  names,
  skipped,
  tc,
  *,
  attribute_fn: Callable,
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
    attribute_fn: the run's jitted `(stacked, inputs, idx, segments) -> (member maps [E, B, H,
      W], ensemble map [B, H, W], ...)` (`run.make_attribute_fn`).
    member_score: `(variables, inputs, idx [B]) -> [B]`, one member's score of the targets.
    x: all inputs `{modality: [N, ...]}`; pairs `[P, 2]` (example, target); member_maps
      `[E, P, H, W]`, ens_maps `[P, H, W]` (normalised, as the run's); masks `[P, H, W]`,
      has_mask `[P]`.
    layers: the model's parameter-owning module paths ("params/...") in call order (MPRT
      randomises them from the last).
    budget: bytes the model metrics' program may take (`memory.plan` sizes the perturbation
      steps per call, `config.explain.trust.chunk` at most, to fit); None = as configured.

  Returns:
    `{"compare": {metric: Ind-Avg vs Ens-Avg}, "member": {metric: [E, P]}, "ensemble": {metric:
    [P]}, "skipped": {metric: why}, "mprt_curve": {"ensemble": [L], "members": [L]},
    "uncertainty": {"std": [P, H, W], "agreement": [P]}}`.
  """
  num, size = len(pairs), member_maps.shape[0]
  model_names = [n for n in names if TRUST_METRICS[n].needs == "model"]
  groups = sanity.group_layers(list(reversed(layers)), int(tc.mprt_groups))

  def ens_score(params, inputs, idx):
    return jax.vmap(lambda v: member_score(v, inputs, idx))(params).mean(0)

  faiths = {}  # one program per chunk: the one measured is the one run

  def make_faith(chunk):
    if chunk in faiths:
      return faiths[chunk]

    @jax.jit
    def faith(stacked, xb, idx, mm, em, key):
      def with_image(fn):
        return lambda p, img: fn(p, {**xb, modality: img}, idx)

      img = xb[modality]
      members = jax.vmap(
        lambda v, m: _model_metrics(
          model_names, tc, with_image(member_score), v, img, m, key, chunk
        )
      )(stacked, mm)
      ens = _model_metrics(model_names, tc, with_image(ens_score), stacked, img, em, key, chunk)
      return members, ens

    return faiths.setdefault(chunk, faith)

  chunk = int(tc.chunk) or None
  if model_names and budget is not None and chunk != 1:
    chunk = _sized_chunk(
      make_faith, chunk, tc, stacked, x, modality, member_maps, batch_size, budget
    )
  faith = make_faith(chunk)

  def explain_all(stacked, xb, idx, seg):
    def explain(params, img):
      mm, em = attribute_fn(params, {**xb, modality: img}, idx, seg)[:2]
      return jnp.concatenate([mm, em[None]], 0)  # [E + 1, B, H, W]

    return explain

  values: dict[str, list] = {n: [] for n in names}
  curves = []
  key = jax.random.key(seed)
  for start in tqdm(range(0, num, batch_size), desc=desc, mininterval=2):
    p = pairs[start : start + batch_size]
    pad = batch_size - len(p)
    sel = np.concatenate([np.arange(start, start + len(p)), np.repeat(start + len(p) - 1, pad)])
    pf = pairs[sel]
    xb = {m: jnp.asarray(v[pf[:, 0]]) for m, v in x.items()}
    idx = jnp.asarray(pf[:, 1])
    seg = segments(pf[:, 0]) if segments is not None else None
    mm, em = jnp.asarray(member_maps[:, sel]), jnp.asarray(ens_maps[sel])
    both = jnp.concatenate([mm, em[None]], 0)
    key, k_faith, k_rob, k_mprt, k_logit = jax.random.split(key, 5)
    got: dict[str, Any] = {}
    if model_names:
      members, ens = faith(stacked, xb, idx, mm, em, k_faith)
      got.update({n: jnp.concatenate([members[n], ens[n][None]], 0) for n in model_names})
    explain = explain_all(stacked, xb, idx, seg)
    img = xb[modality]
    if "max_sensitivity" in names:
      noise = robustness.uniform_noise(k_rob, int(tc.samples), img.shape, float(tc.radius))
      got["max_sensitivity"] = robustness.max_sensitivity(
        explain, stacked, img, both, noise, chunk=chunk
      )
    if "local_lipschitz" in names:
      noise = robustness.gaussian_noise(k_rob, int(tc.samples), img.shape, float(tc.lipschitz_std))
      got["local_lipschitz"] = robustness.local_lipschitz(
        explain, stacked, img, both, noise, chunk=chunk
      )
    if "mprt" in names:
      curve = sanity.mprt(
        explain, stacked, img, both, k_mprt, layers=groups, similarity=tc.similarity, chunk=1
      )  # [L, E + 1, B]
      curves.append(np.asarray(curve)[..., : len(p)])  # without the batch's padding rows
      got["mprt"] = curve[-1]
    if "random_logit" in names and num_targets > 1:
      other = sanity.other_targets(k_logit, idx, num_targets)

      def explain_target(params, img, t):
        mm, em = attribute_fn(params, {**xb, modality: img}, t, seg)[:2]
        return jnp.concatenate([mm, em[None]], 0)

      got["random_logit"] = sanity.random_logit(
        explain_target, stacked, img, both, other, similarity=tc.similarity
      )
    if "pointing_game" in names or "relevance_mass" in names or "relevance_rank" in names:
      mk = jnp.asarray(masks[sel])
      for n, fn in (
        ("pointing_game", map_metrics.pointing_game),
        ("relevance_mass", map_metrics.relevance_mass),
        ("relevance_rank", map_metrics.relevance_rank),
      ):
        if n in names:
          got[n] = jax.vmap(lambda m, fn=fn: fn(m, mk))(both)
    if "sparseness" in names:
      got["sparseness"] = jax.vmap(map_metrics.sparseness)(jnp.abs(both))
    if "entropy" in names:
      got["entropy"] = jax.vmap(map_metrics.entropy)(jnp.abs(both))
    for n in names:
      v = got.get(n)
      values[n].append(
        np.full((size + 1, len(p)), np.nan) if v is None else np.asarray(v, np.float64)[:, : len(p)]
      )
  if "random_logit" in names and num_targets <= 1:
    skipped = {**skipped, "random_logit": "the task has one target"}
  out: dict[str, Any] = {"compare": {}, "member": {}, "ensemble": {}, "skipped": dict(skipped)}
  for n in names:
    if n in out["skipped"]:
      continue
    v = np.concatenate(values[n], axis=1)
    if n in ("pointing_game", "relevance_mass", "relevance_rank"):
      v[:, ~np.asarray(has_mask, bool)] = np.nan
    out["member"][n], out["ensemble"][n] = v[:size], v[size]
    if np.isfinite(v[size]).any():
      out["compare"][n] = xm.compare(
        v[:size], v[size], lower_is_better=TRUST_METRICS[n].lower_is_better
      )
  if curves:
    c = np.concatenate(curves, axis=-1)  # [L, E + 1, P]
    out["mprt_curve"] = {
      "layers": [" + ".join(g) for g in groups],
      "members": np.nanmean(c[:, :size], axis=(1, 2)).tolist(),
      "ensemble": np.nanmean(c[:, size], axis=-1).tolist(),
    }
  out["size_curves"] = _size_curves(names, member_maps, masks, has_mask)
  std, agree = map_metrics.member_spread(jnp.asarray(member_maps))
  out["uncertainty"] = {"std": np.asarray(std, np.float32), "agreement": np.asarray(agree)}
  return out
