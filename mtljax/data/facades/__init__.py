"""Street-level façades: five interdependent classification tasks (MTC-LIM paper).

``reader``: the documented format (its docstring) and ``FacadesSource``; ``labelsets``: LPRUS and
the labelset-based, block-disjoint split; ``synthetic``: the generator with planted label
interdependencies. ``DATASET`` is its registry entry.
"""

from __future__ import annotations

from mtljax.data import Dataset
from mtljax.data.facades.reader import FacadesSource
from mtljax.data.facades.synthetic import write_synthetic_facades

DATASET = Dataset(
  "facades", FacadesSource, write_synthetic_facades,
  source_keys=("image_size", "lprus_keep", "fractions", "split_seed"),
  synthetic_keys=("num_images", "num_blocks", "cue_noise", "label_noise", "seed"),
  synthetic_data_keys=("image_size",),
)  # fmt: skip
