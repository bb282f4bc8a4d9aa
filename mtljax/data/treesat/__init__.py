"""TreeSatAI Benchmark Archive (Ahlswede et al., ESSD 2023): tree genera from aerial, S1 and S2.

``archive``: vocabularies, the L1 > L2 > L3 label hierarchy, bands and layout; ``labels``: the
labels JSON and side CSV; ``tiff``: checked GeoTIFF reading; ``reader``: ``TreeSatAISource``;
``synthetic`` (drawing in ``planted``): the synthetic archive with planted truth. ``DATASET`` is
its registry entry.
"""

from __future__ import annotations

from mtljax.data import Dataset
from mtljax.data.treesat.archive import label_hierarchy
from mtljax.data.treesat.reader import TreeSatAISource
from mtljax.data.treesat.synthetic import write_synthetic_treesat
from mtljax.data.treesat.tiff import read_input

DATASET = Dataset(
  "treesat", TreeSatAISource, write_synthetic_treesat,
  source_keys=("resolution", "l2_source", "age_source", "side_csv", "multi_threshold",
               "val_fraction", "split_seed", "aerial_size"),
  source_keys_if_set=("aerial_resize",),
  # Only the image modalities the model uses are opened: as inputs, and S2 as a target (its
  # mean spectrum) only when a task `s2` exists.
  used={"modalities": ("inputs", ("aerial", "s1", "s2")),
        "target_modalities": ("tasks", ("s2",))},
  synthetic_keys=("num_train", "num_test", "seed"), synthetic_data_keys=("aerial_size",),
  label_hierarchy=label_hierarchy,
  # New data: a table's patch files read as the archive's; a root without lists or labels opens.
  read_input=read_input, inputs_only_reader=True,
)  # fmt: skip
