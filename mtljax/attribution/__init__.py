"""Framework-agnostic attributions on score functions, ensemble averaging and explanation metrics.

The package re-exports the attribution registry and every method (`methods.__all__`, the one
list of them), the ensemble helpers and `make_score_fn`."""

from mtljax.attribution import methods
from mtljax.attribution.ensemble import ensemble_attribute, ensemble_heatmaps, normalize, to_heatmap
from mtljax.attribution.methods import *  # noqa: F403 (the names are methods.__all__)
from mtljax.attribution.targets import make_score_fn

__all__ = [
  *methods.__all__,
  "ensemble_attribute",
  "ensemble_heatmaps",
  "normalize",
  "to_heatmap",
  "make_score_fn",
]
