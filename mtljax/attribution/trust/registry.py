"""The trust metrics by name (`config.explain.metrics`): each entry carries its function, what it
needs, which way is better and the `config.explain.trust` settings it reads.

| name | family | needs | better | value per (member or ensemble, target) |
|---|---|---|---|---|
| deletion | faithfulness | model | lower | RISE deletion AUC |
| insertion | faithfulness | model | higher | RISE insertion AUC |
| pixel_flipping | faithfulness | model | lower | area of Quantus's pixel-flipping curve / steps |
| region_perturbation | faithfulness | model | higher | AOPC over patch regions |
| faithfulness_correlation | faithfulness | model | higher | Bhatt et al.'s correlation |
| road | faithfulness | model | lower | mean score over ROAD's MoRF removals |
| mprt | randomisation | explain, layers | lower | Spearman of |maps| after the last stop |
| random_logit | randomisation | targets | lower | Spearman of |maps| of two targets |
| max_sensitivity | robustness | explain | lower | Yeh et al.'s max-sensitivity |
| local_lipschitz | robustness | explain | lower | local Lipschitz estimate |
| pointing_game, relevance_mass, relevance_rank | localisation | masks | higher | |
| sparseness | complexity | (maps only) | higher | Gini index |
| entropy | complexity | (maps only) | lower | entropy |

To add a metric: a function `fn(inputs: Inputs) -> [..., B]` and `register(name, TrustMetric(fn,
...))`; the explain run evaluates it by what the entry declares (`mtljax/explain/trust.py`).
Definitions and settings: `docs/trust.md`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mtljax.attribution.trust import faithfulness, map_metrics, ops, robustness, sanity

#: What an entry may need, and what the evaluation then provides in `Inputs`.
NEEDS = {
  "model": "`score`: the explained target's score; run for each member with its own model and "
  "for the ensemble with the mean of the members' scores",
  "explain": "`explain`: the attribution method re-run on (stacked params, images)",
  "targets": "`explain_target` and `targets`: the method on other targets (skipped for a task "
  "with one target)",
  "masks": "`masks`: ground-truth masks (an error when named on data without them)",
  "layers": "`layers`: the parameter-owning module groups, head first",
}


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What a metric's function gets for one batch of B explained targets.

  `maps [..., B, H, W]` (the run's normalised maps; a leading axis of members + ensemble for
  "explain"/"targets" metrics, none otherwise), `x [B, H, W, C]` the images, `params` one model's
  variables ("model": a member's, or the stacked members' for the ensemble) or the stacked
  members' ("explain"), `key` a key of its own, `settings` = `config.explain.trust`. The other
  fields are set where the entry's `needs` asks for them (`NEEDS`): `score(params, x [N, H, W,
  C]) -> [N]` for N any multiple of B (row r a copy of example r mod B: several perturbation
  steps in one model call, `faithfulness`), `explain(params, x) -> maps [..., B, H, W]`, `explain_target(params, x, idx [B]) -> maps`,
  `targets [B]` the explained targets of `num_targets`, `masks [B, H, W]` bool, `layers` a tuple
  of tuples of module paths.
  """

  maps: Any
  settings: Any
  x: Any = None
  params: Any = None
  key: Any = None
  score: Callable | None = None
  explain: Callable | None = None
  explain_target: Callable | None = None
  targets: Any = None
  num_targets: int = 1
  masks: Any = None
  layers: tuple = ()


@dataclasses.dataclass(frozen=True)
class TrustMetric:
  """`fn(Inputs) -> [..., B]` (or `(value, curve [L, ..., B])` with `curve`: one value per stop
  of `Inputs.layers`); `family`: faithfulness / randomisation / robustness / localisation /
  complexity; `needs`: a subset of `NEEDS` (none: the maps alone); `lower_is_better` orients the
  Ind-Avg vs Ens-Avg test; `settings`: the `config.explain.trust` keys `fn` reads."""

  fn: Callable
  family: str
  needs: frozenset = frozenset()
  lower_is_better: bool = False
  settings: tuple[str, ...] = ()
  curve: bool = False

  def __post_init__(self):
    object.__setattr__(self, "needs", frozenset(self.needs))
    unknown = set(self.needs) - set(NEEDS)
    if unknown:
      raise ValueError(f"TrustMetric needs {sorted(unknown)}; known: {', '.join(NEEDS)}")
    if "model" in self.needs and self.needs & {"explain", "targets"}:
      raise ValueError("a TrustMetric needs the model's score or the re-run method, not both")


def _chunk(s) -> int | None:
  return int(s.chunk) or None


def _deletion_insertion(i: Inputs):
  s = i.settings
  return faithfulness.deletion_insertion(
    i.score,
    i.params,
    i.x,
    i.maps,
    steps=int(s.steps),
    baseline=s.baseline,
    insert_baseline=s.insert_baseline,
    blur_sigma=float(s.blur_sigma),
    chunk=_chunk(s),
  )


def _pixel_flipping(i: Inputs):
  s, n = i.settings, i.x.shape[1] * i.x.shape[2]
  curve = faithfulness.pixel_flipping(
    i.score,
    i.params,
    i.x,
    i.maps,
    features_in_step=max(1, n // int(s.steps)),
    baseline=s.baseline,
    chunk=_chunk(s),
  )
  return ops.trapezoid(curve) / max(curve.shape[1] - 1, 1)


def _region_perturbation(i: Inputs):
  s = i.settings
  return faithfulness.region_perturbation(
    i.score,
    i.params,
    i.x,
    i.maps,
    patch=int(s.patch),
    regions=int(s.regions) or None,
    baseline=s.baseline,
    chunk=_chunk(s),
  )[0]


def _faithfulness_correlation(i: Inputs):
  s, n = i.settings, i.x.shape[1] * i.x.shape[2]
  size = max(1, int(n * float(s.subset_fraction)))
  subsets = faithfulness.random_subsets(i.key, i.x.shape[0], n, int(s.runs), size)
  return faithfulness.faithfulness_correlation(
    i.score, i.params, i.x, i.maps, subsets, baseline=s.baseline, chunk=_chunk(s)
  )


def _road(i: Inputs):
  s = i.settings
  noise = jax.random.normal(i.key, i.x.shape, i.x.dtype)
  return faithfulness.road(
    i.score,
    i.params,
    i.x,
    i.maps,
    noise,
    percentages=tuple(s.road_percentages),
    noise_scale=float(s.road_noise),
    chunk=_chunk(s),
  )[1]


def _mprt(i: Inputs):
  curve = sanity.mprt(
    i.explain,
    i.params,
    i.x,
    i.maps,
    i.key,
    layers=i.layers,
    similarity=i.settings.similarity,
  )  # [L, ..., B]: each stop traced on its own (`sanity.mprt`'s default)
  return curve[-1], curve


def _random_logit(i: Inputs):
  other = sanity.other_targets(i.key, i.targets, i.num_targets)
  return sanity.random_logit(
    i.explain_target, i.params, i.x, i.maps, other, similarity=i.settings.similarity
  )


def _max_sensitivity(i: Inputs):
  s = i.settings
  noise = robustness.uniform_noise(i.key, int(s.samples), i.x.shape, float(s.radius))
  return robustness.max_sensitivity(i.explain, i.params, i.x, i.maps, noise, chunk=_chunk(s))


def _local_lipschitz(i: Inputs):
  s = i.settings
  noise = robustness.gaussian_noise(i.key, int(s.samples), i.x.shape, float(s.lipschitz_std))
  return robustness.local_lipschitz(i.explain, i.params, i.x, i.maps, noise, chunk=_chunk(s))


_REMOVAL = ("steps", "chunk")
_MODEL, _MASKS = frozenset({"model"}), frozenset({"masks"})
TRUST_METRICS: dict[str, TrustMetric] = {
  "deletion": TrustMetric(
    lambda i: _deletion_insertion(i)[2], "faithfulness", _MODEL, True, (*_REMOVAL, "baseline")
  ),
  "insertion": TrustMetric(
    lambda i: _deletion_insertion(i)[3],
    "faithfulness",
    _MODEL,
    False,
    (*_REMOVAL, "insert_baseline", "blur_sigma"),
  ),
  "pixel_flipping": TrustMetric(
    _pixel_flipping, "faithfulness", _MODEL, True, (*_REMOVAL, "baseline")
  ),
  "region_perturbation": TrustMetric(
    _region_perturbation, "faithfulness", _MODEL, False, ("patch", "regions", "baseline", "chunk")
  ),
  "faithfulness_correlation": TrustMetric(
    _faithfulness_correlation,
    "faithfulness",
    _MODEL,
    False,
    ("runs", "subset_fraction", "baseline", "chunk"),
  ),
  "road": TrustMetric(
    _road, "faithfulness", _MODEL, True, ("road_percentages", "road_noise", "chunk")
  ),
  "mprt": TrustMetric(
    _mprt, "randomisation", {"explain", "layers"}, True, ("mprt_groups", "similarity"), curve=True
  ),
  "random_logit": TrustMetric(_random_logit, "randomisation", {"targets"}, True, ("similarity",)),
  "max_sensitivity": TrustMetric(
    _max_sensitivity, "robustness", {"explain"}, True, ("samples", "radius", "chunk")
  ),
  "local_lipschitz": TrustMetric(
    _local_lipschitz, "robustness", {"explain"}, True, ("samples", "lipschitz_std", "chunk")
  ),
  "pointing_game": TrustMetric(
    lambda i: map_metrics.pointing_game(i.maps, i.masks), "localisation", _MASKS
  ),
  "relevance_mass": TrustMetric(
    lambda i: map_metrics.relevance_mass(i.maps, i.masks), "localisation", _MASKS
  ),
  "relevance_rank": TrustMetric(
    lambda i: map_metrics.relevance_rank(i.maps, i.masks), "localisation", _MASKS
  ),
  "sparseness": TrustMetric(lambda i: map_metrics.sparseness(jnp.abs(i.maps)), "complexity"),
  "entropy": TrustMetric(
    lambda i: map_metrics.entropy(jnp.abs(i.maps)), "complexity", lower_is_better=True
  ),
}


def register(name: str, metric: TrustMetric) -> TrustMetric:
  """Adds trust metric `name` (ValueError if the name is taken); returns `metric`."""
  if name in TRUST_METRICS or name == "all":
    raise ValueError(f"trust metric {name!r} is already registered")
  TRUST_METRICS[name] = metric
  return metric


def resolve(names, *, has_masks: bool, settings=None) -> tuple[list[str], dict[str, str]]:
  """`(metrics to run, {skipped metric: why})` for `config.explain.metrics`.

  "all" (alone or among others) = every registered metric, where those needing masks are skipped
  with a reason on a dataset without them; named explicitly, such a metric is an error. With
  `settings` (`config.explain.trust`), every setting a wanted metric declares must be there.

  Raises:
    ValueError: an unknown name (listing the known ones), a named mask metric without masks, or a
      missing setting.
  """
  names = list(names)
  unknown = [n for n in names if n != "all" and n not in TRUST_METRICS]
  if unknown:
    raise ValueError(
      f"config.explain.metrics: unknown metric(s) {unknown}; known: all, "
      + ", ".join(TRUST_METRICS)
    )
  wanted = list(TRUST_METRICS) if "all" in names else list(dict.fromkeys(names))
  skipped = {}
  if not has_masks:
    masked = [n for n in wanted if "masks" in TRUST_METRICS[n].needs]
    if masked and "all" not in names:
      raise ValueError(
        f"config.explain.metrics: {masked} need ground-truth masks, which this dataset's "
        "split does not have (ask for 'all' to skip them with a note)"
      )
    skipped = {n: "no ground-truth masks in this dataset" for n in masked}
    wanted = [n for n in wanted if n not in skipped]
  if settings is not None:
    missing = [
      f"{n}: config.explain.trust.{k}"
      for n in wanted
      for k in TRUST_METRICS[n].settings
      if k not in settings
    ]
    if missing:
      raise ValueError(f"config.explain.metrics: missing settings ({', '.join(missing)})")
  return wanted, skipped
