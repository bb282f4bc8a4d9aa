"""Framework-agnostic attributions on score functions, ensemble averaging and explanation metrics."""

from mtljax.explain.attributions import (
  METHODS,
  MethodSpec,
  get_method,
  grad_cam,
  gradient_shap,
  grid_segments,
  guided_backprop,
  guided_grad_cam,
  guided_relu,
  input_x_gradient,
  integrated_gradients,
  integration_points,
  lime,
  occlusion,
  saliency,
  smoothgrad,
  superpixel_segments,
)
from mtljax.explain.ensemble import ensemble_attribute, ensemble_heatmaps, normalize, to_heatmap
from mtljax.explain.targets import make_score_fn

__all__ = [
  "METHODS",
  "MethodSpec",
  "get_method",
  "grad_cam",
  "gradient_shap",
  "grid_segments",
  "guided_backprop",
  "guided_grad_cam",
  "guided_relu",
  "input_x_gradient",
  "integrated_gradients",
  "integration_points",
  "lime",
  "occlusion",
  "saliency",
  "smoothgrad",
  "superpixel_segments",
  "ensemble_attribute",
  "ensemble_heatmaps",
  "normalize",
  "to_heatmap",
  "make_score_fn",
]
