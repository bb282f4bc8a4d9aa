"""The trust metrics by name (`config.explain.metrics`): what each needs and which way is better.

| name | family | needs | better | value per (member or ensemble, target) |
|---|---|---|---|---|
| deletion | faithfulness | model | lower | RISE deletion AUC |
| insertion | faithfulness | model | higher | RISE insertion AUC |
| pixel_flipping | faithfulness | model | lower | area of Quantus's pixel-flipping curve / steps |
| region_perturbation | faithfulness | model | higher | AOPC over patch regions |
| faithfulness_correlation | faithfulness | model | higher | Bhatt et al.'s correlation |
| road | faithfulness | model | lower | mean score over ROAD's MoRF removals |
| mprt | randomisation | explain | lower | Spearman of |maps| after the last randomised layer |
| random_logit | randomisation | explain | lower | Spearman of |maps| of two targets |
| max_sensitivity | robustness | explain | lower | Yeh et al.'s max-sensitivity |
| local_lipschitz | robustness | explain | lower | local Lipschitz estimate |
| pointing_game, relevance_mass, relevance_rank | localisation | masks | higher | |
| sparseness | complexity | map | higher | Gini index |
| entropy | complexity | map | lower | entropy |

Definitions and settings: `docs/trust.md`. To add a metric: a function in a family module and an
entry here; `evaluate.py` calls it by its family.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrustMetric:
  """`family`: faithfulness / randomisation / robustness / localisation / complexity; `needs`:
  "map" (the maps alone), "masks" (ground-truth masks), "model" (the score function) or "explain"
  (re-running the attribution method); `lower_is_better` orients the Ind-Avg vs Ens-Avg test."""

  family: str
  needs: str
  lower_is_better: bool


TRUST_METRICS: dict[str, TrustMetric] = {
  "deletion": TrustMetric("faithfulness", "model", True),
  "insertion": TrustMetric("faithfulness", "model", False),
  "pixel_flipping": TrustMetric("faithfulness", "model", True),
  "region_perturbation": TrustMetric("faithfulness", "model", False),
  "faithfulness_correlation": TrustMetric("faithfulness", "model", False),
  "road": TrustMetric("faithfulness", "model", True),
  "mprt": TrustMetric("randomisation", "explain", True),
  "random_logit": TrustMetric("randomisation", "explain", True),
  "max_sensitivity": TrustMetric("robustness", "explain", True),
  "local_lipschitz": TrustMetric("robustness", "explain", True),
  "pointing_game": TrustMetric("localisation", "masks", False),
  "relevance_mass": TrustMetric("localisation", "masks", False),
  "relevance_rank": TrustMetric("localisation", "masks", False),
  "sparseness": TrustMetric("complexity", "map", False),
  "entropy": TrustMetric("complexity", "map", True),
}


def resolve(names, *, has_masks: bool) -> tuple[list[str], dict[str, str]]:
  """`(metrics to run, {skipped metric: why})` for `config.explain.metrics`.

  "all" (alone or among others) = every registered metric, where those needing masks are skipped
  with a reason on a dataset without them; named explicitly, such a metric is an error.

  Raises:
    ValueError: an unknown name (listing the known ones), or a named mask metric without masks.
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
    masked = [n for n in wanted if TRUST_METRICS[n].needs == "masks"]
    if masked and "all" not in names:
      raise ValueError(
        f"config.explain.metrics: {masked} need ground-truth masks, which this dataset's "
        "split does not have (ask for 'all' to skip them with a note)"
      )
    skipped = {n: "no ground-truth masks in this dataset" for n in masked}
    wanted = [n for n in wanted if n not in skipped]
  return wanted, skipped
