"""Decoys swapped between examples: the shortcut-free view of a split whose images carry a decoy.

A decoy (a shortcut: a swatch whose shade or colour encodes the label in train and validation) is
neutralised by repainting each example's decoy region in the decoy colour of another example of
the split: the region's mean value per channel in that example (0 where it has none). The other
example is a seeded permutation of the split (`donors`), so the swap is deterministic and, on a
split whose decoy encodes the label, gives each image the decoy of a random other label, as on a
test split whose decoys are random. Accuracy on the swapped images measures what the model reads
from the object rather than the decoy without touching the test split.

One definition, two callers: `swap_decoys` (whole arrays; the explanation-guided comparison,
mtljax/sweeps/egl.py) and `DecoySwapped` (a source view, one example at a time; what a source's
`decoy_swapped` capability returns and the evaluation scores as `<task>/<metric>_decoy_swapped`).
Both paint with `colour` and `paint` and draw the donors with `donors`, so they give the same
images (standardising the inputs per channel commutes with the mean and the repainting).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The permutation's seed: one fixed swap of a split, whatever the run's seed, so that runs are
#: compared on the same images.
SEED = 0


def donors(n: int, seed: int = SEED) -> np.ndarray:
  """int [n]: the example whose decoy colour example i receives (a seeded permutation)."""
  return np.random.default_rng(seed).permutation(n)


def colour(x: np.ndarray, decoy: np.ndarray) -> np.ndarray:
  """The decoy's mean value per channel: x `[..., H, W, C]`, decoy bool `[..., H, W]` →
  `[..., C]` (0 where the decoy is empty)."""
  d = np.asarray(decoy).astype(np.float32)[..., None]
  return (x * d).sum((-3, -2)) / np.maximum(d.sum((-3, -2)), 1.0)


def paint(x: np.ndarray, decoy: np.ndarray, value: np.ndarray) -> np.ndarray:
  """x `[..., H, W, C]` with its decoy region (bool `[..., H, W]`) set to `value` `[..., C]`, in
  x's dtype."""
  d = np.asarray(decoy).astype(np.float32)[..., None]
  return (x * (1.0 - d) + d * np.asarray(value)[..., None, None, :]).astype(x.dtype)


def swap_decoys(x: np.ndarray, decoy: np.ndarray, seed: int = SEED) -> np.ndarray:
  """x `[N, H, W, C]` with each example's decoy (bool `[N, H, W]`) repainted in the colour of
  example `donors(N, seed)[i]`'s decoy."""
  return paint(x, decoy, colour(x, decoy)[donors(len(x), seed)])


class DecoySwapped:
  """`source` with input `input_name` of example i repainted as `swap_decoys` does: its decoy
  `decoy[i]` (bool `[N, H, W]`) in the colour of example `donors(N)[i]`'s. Same length, names,
  labels and fields as the source; it reads the source itself (not a `stored_inputs` view), two
  examples per example."""

  def __init__(self, source: Any, input_name: str, decoy: np.ndarray, seed: int = SEED):
    if len(decoy) != len(source):
      raise ValueError(f"{len(decoy)} decoy masks for {len(source)} examples")
    self.source, self.input_name, self.decoy = source, input_name, np.asarray(decoy, bool)
    self.donor = donors(len(source), seed)
    self.names = source.names

  @property
  def input_fields(self):
    return self.source.input_fields

  @property
  def target_fields(self):
    return self.source.target_fields

  def label_arrays(self):
    return self.source.label_arrays()

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    i = int(index)
    ex = self.source[i]
    j = int(self.donor[i])
    x = np.asarray(ex["inputs"][self.input_name])
    value = colour(np.asarray(self.source[j]["inputs"][self.input_name]), self.decoy[j])
    return {**ex, "inputs": {**ex["inputs"], self.input_name: paint(x, self.decoy[i], value)}}
