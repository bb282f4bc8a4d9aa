"""Statistics of a training split that the pipeline and the losses standardise with: the mean and
std of each standardised regression target (the inputs' statistics are
`mtljax.data.pipeline.compute_stats`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mtljax.data.source import capability


def regression_target_stats(source, config, standardized: Mapping[str, bool]) -> dict[str, tuple]:
  """Mean and std of each standardised target over the training split (labels only, no images).

  A per-example target `[N, D]` gets per-output lists (e.g. weather in K, %, hPa); a dense target
  one mean/std over the labelled pixels of up to `config.data.stats_examples` training examples
  (read with `source.read_target(task, i)` when the source has it). A task with `normalize=False`
  is left in its own units. Which tasks are standardised, and whether each is dense, is
  `standardized` (`{task: dense}`, from `mtljax.tasks.standardized_targets(config)`).
  """
  if not config.train.normalize_regression_targets:
    return {}
  out = {}
  labels = source.label_arrays() if not all(standardized.values()) else None
  for t, dense in standardized.items():
    if not dense:
      vals = np.asarray(labels["targets"][t], np.float64)[np.asarray(labels["mask"][t]) > 0]
    else:
      n = min(len(source), int(config.data.get("stats_examples", 2048)))
      rows = np.random.default_rng(int(config.seed)).permutation(len(source))[:n]

      def read(i):
        if (read_target := capability(source, "read_target")) is not None:  # no input rasters
          return read_target(t, i)
        example = source[i]
        return example["targets"][t], example["mask"][t]

      pairs = [read(int(i)) for i in rows]
      vals = np.concatenate([np.asarray(y, np.float64)[np.asarray(m) > 0] for y, m in pairs])
    if vals.size == 0:
      raise ValueError(f"regression task {t!r}: no training example has a label")
    if vals.ndim > 1:  # a vector target [N, D] (CropYield's DEM): per-column statistics
      out[t] = (vals.mean(0).tolist(), np.maximum(vals.std(0), 1e-6).tolist())
      continue
    out[t] = (float(vals.mean()), float(max(vals.std(), 1e-6)))
  return out
