"""The runners' config sections: `config.explain` (and its `trust`), `config.predict`,
`config.analysis`. Re-exported by `mtljax.config_blocks`, where the configs take them from.
"""

from __future__ import annotations

import ml_collections


# ------------------------------------------------------------------------------ explain, analyze
def trust_config() -> ml_collections.ConfigDict:
  """`config.explain.trust`: the settings of the trust metrics (docs/trust.md)."""
  return ml_collections.ConfigDict(
    {
      # Removal baseline of deletion / pixel flipping / regions / faithfulness correlation
      # ("zero", "min", "max", "mean", "blur"); insertion's start image; its blur.
      "baseline": "zero",
      "insert_baseline": "blur",
      "blur_sigma": 5.0,
      # Deletion/insertion fractions (steps + 1 points; pixel flipping: H*W/steps pixels a step);
      # region perturbation's patch (pixels) and regions (0 = all); faithfulness correlation's
      # runs and fraction of pixels removed per run.
      "steps": 16,
      "patch": 8,
      "regions": 16,
      "runs": 16,
      "subset_fraction": 0.1,
      # ROAD: percentages removed (most relevant first) and the imputation noise.
      "road_percentages": (10, 30, 50, 70, 90),
      "road_noise": 0.01,
      # Robustness: samples, max-sensitivity's uniform radius, local Lipschitz's Gaussian std;
      # randomisation: similarity of |maps| ("spearman", "pearson"), MPRT stops (0 = each layer);
      # perturbation steps / samples evaluated together (0 = all at once).
      "samples": 4,
      "radius": 0.05,
      "lipschitz_std": 0.05,
      "similarity": "spearman",
      "mprt_groups": 4,
      "chunk": 8,
    }
  )


def explain_config(
  *,
  task: str,
  modality: str,
  layer: str,
  methods=("saliency", "integrated_gradients", "grad_cam"),
  max_examples: int = 128,
) -> ml_collections.ConfigDict:
  """`config.explain`: what `--mode=explain` attributes, with which methods and settings."""
  return ml_collections.ConfigDict(
    {
      # Split, checkpoint ("best" or "latest") and how many of the split's examples to explain.
      "split": "test",
      "checkpoint": "best",
      "max_examples": max_examples,
      # Task whose output is explained; target -1 = every present label of a multilabel task,
      # the true class of a classification task (or a fixed output index for every example).
      "task": task,
      "target": -1,
      # Several task heads explained in one call, e.g. ("class", "attributes"): each
      # example's targets of every one of them; () = just `task`.
      "tasks": (),
      # Image input whose attributions are drawn and scored; Grad-CAM's layer (module path).
      "modality": modality,
      "layer": layer,
      # Any of mtljax.attribution.methods.METHODS.
      "methods": tuple(methods),
      # Ensemble strategy of mtljax.attribution.ensemble.ensemble_attribute ("auto", "vmap",
      # "loop", "map", "tune") and targets per attribution batch. "auto": vmap on GPU/TPU; on
      # CPU lax.map for dense models, and for conv models with oneDNN's convolutions vmap or one
      # member at a time by the share of a member's parameters in its work
      # (`ensemble.resolve_strategy`).
      "strategy": "auto",
      "batch_size": 16,
      # Targets: every target of an example is explained in one call (batch_size counts
      # examples), sharing the forward pass. target_chunk: targets per compiled sub-call (0 = all;
      # bounds memory). target_form: how gradient methods share the forward ("auto", "grads",
      # "vjp").
      "target_chunk": 0,
      "target_form": "auto",
      # Integrated Gradients: steps, rule ("riemann_left/right/middle/trapezoid",
      # "gausslegendre"), steps per gradient batch (0 = all at once).
      "ig_steps": 32,
      "ig_method": "riemann_middle",
      "ig_batch_steps": 0,
      # Memory of one attribution / trust call (docs/explanations.md): a fraction (<= 1) of the
      # free memory of the device (on CPU: the host's available memory) or bytes (> 1); the
      # steps, samples, targets, members and examples evaluated together are sized from XLA's
      # compiled memory analysis to fit it. 0 = no sizing (the settings above as they are).
      "memory_budget": 0.5,
      # SmoothGrad / Gradient SHAP: samples and noise (fraction of the input's value range).
      "samples": 16,
      "noise": 0.15,
      # Occlusion window and stride (pixels); LIME samples and segments ("grid" or "slic").
      "occlusion_window": 8,
      "occlusion_stride": 4,
      "lime_samples": 256,
      "lime_segments": "grid",
      "lime_grid": (8, 8),
      "lime_superpixels": 50,
      # Explanation metrics (ensembles paper §3.2): IoU threshold, Pearson grid.
      "iou_threshold": 0.3,
      "pearson_size": 14,
      # Examples drawn as member panels and labelled-arrow pictures.
      "num_pictures": 8,
      # A classification task: also write sentences naming its predicted class and the
      # supporting attributes of `task` (multilabel) with their locations (mtljax/egl/textual.py);
      # "" = none.
      "textual": "",
      # Trust metrics (mtljax.attribution.trust.registry, or "all"; docs/trust.md) and their
      # settings. "auto": the cheap ones that need no mask (deletion, insertion, random_logit,
      # sparseness; with masks also relevance_mass: mtljax/explain/trust.py AUTO);
      # () = only the localisation table above.
      "metrics": ("auto",),
      "trust": trust_config(),
      # Labelled arrows point at the whole map's centre of mass ("com", the paper's) or at the
      # centre of its strongest region holding the top `arrow_top` of its mass ("top_mass").
      "arrow_at": "com",
      "arrow_top": 0.1,
    }
  )


def predict_config() -> ml_collections.ConfigDict:
  """`config.predict`: what `--mode=predict` applies the trained workdir to and `--mode=export`
  exports (docs/use-a-trained-model.md)."""
  return ml_collections.ConfigDict(
    {
      # The inputs: a data root of the config's dataset (`root`; opened for the inputs alone: a
      # TreeSAT root without split lists or labels is every patch, unsplit) or a prepared folder
      # (`prepared`), its split `split`; all empty = split `split` of the workdir's dataset.
      "root": "",
      "prepared": "",
      # A table of new inputs (CSV/JSON Lines, no labels or split): a manifest run's input
      # columns, or for a registered dataset one column per input of the model, a path read as
      # its reader reads that modality (numbers for a vector input); other columns are kept.
      "manifest": "",
      "split": "test",
      # Outputs go to <workdir>/predict/<name>/ ("" = named after the inputs).
      "name": "",
      # "best" or "latest" checkpoint.
      "checkpoint": "best",
      # Examples per forward pass (0 = config.eval.batch_size) and per resumable part file.
      "batch_size": 0,
      "chunk": 256,
      # Large rasters (`raster`: a GeoTIFF file larger than the model's image input, or a folder
      # of them): predicted in tiles of the model's input size every `stride` pixels (0 = half a
      # tile), dense outputs blended with a weight falling towards each tile's border.
      "raster": "",
      "modality": "",
      "stride": 0,
      # Also explain the predictions (config.explain's methods and trust metrics, no annotation
      # needed): `explain_examples` inputs picked across the predicted classes, each explained
      # for its predicted class (labels), into <workdir>/predict/<name>/explanations/index.html.
      "explain": False,
      "explain_examples": 16,
    }
  )


def analysis_config(**overrides) -> ml_collections.ConfigDict:
  """`config.analysis`: what `--mode=analyze` reads and shows (mtl-explainability paper §4.2, App. C).

  Empty strings / tuples mean "choose from the run" (see mtljax/analysis/report.py)."""
  c = ml_collections.ConfigDict(
    {
      # Split whose per-epoch predictions are analysed (<workdir>/predictions/<split>/).
      "split": "test",
      # Main task (empty = config.main_task).
      "main_task": "",
      # Two classification tasks whose correct/false combinations are counted, first letter = first
      # task (Figs. 6, 7, 12); empty = (first classification auxiliary, main task) when both exist.
      "pair": ("", ""),
      # Hierarchy adherence of the pair (Fig. 7): "auto" (when the dataset defines one between the
      # pair's tasks), "on" (an error when it does not), "off".
      "hierarchy": "auto",
      # Regression auxiliary whose error is averaged per combination (Fig. 12); empty = the first.
      "regression_task": "",
      # Epochs drawn as pie charts (Fig. 7), scatter panels (Fig. 8) and error maps (Figs. 5, 10);
      # empty = the first, the middle and the best (by final_metrics.json) epoch.
      "epochs": (),
      # Fraction of the split's examples (seeded draw, the same every epoch) used for the error
      # correlation (Fig. 4; the paper uses 0.1 of a large test set).
      "correlation_fraction": 1.0,
      "seed": 0,
      # Classification error per example: "prob" (1 - p(true class)) or "zero_one".
      "classification_error": "prob",
      # Regression error in the correlation: "absolute" or "relative" (|e| / |target|).
      "regression_error": "absolute",
      # Main-task error split by auxiliary correctness (Figs. 2, 8): "relative" or "absolute".
      "split_error": "relative",
      # Points per side (correct / wrong) and epoch drawn in Fig. 2.
      "max_points": 300,
      # Examples drawn as error maps of dense tasks (Figs. 5, 10).
      "num_maps": 4,
    }
  )
  c.update(overrides)
  return c
