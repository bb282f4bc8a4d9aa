"""Framework-agnostic attributions on score functions, ensemble averaging and explanation metrics.

The package re-exports the attribution registry and every method (`attributions.__all__`, the one
list of them), the ensemble helpers and `make_score_fn`."""

from mtljax.explain import attributions
from mtljax.explain.attributions import *  # noqa: F403 (the names are attributions.__all__)
from mtljax.explain.ensemble import ensemble_attribute, ensemble_heatmaps, normalize, to_heatmap
from mtljax.explain.targets import make_score_fn

__all__ = [
  *attributions.__all__,
  "ensemble_attribute",
  "ensemble_heatmaps",
  "normalize",
  "to_heatmap",
  "make_score_fn",
]
