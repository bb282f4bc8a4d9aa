"""The written source contract: what a dataset reader offers, and the helpers every reader shares.

A *source* is one split of one dataset: a random-access sequence of examples (usable by
``grain.MapDataset.source``), built as ``Class(root, split, **kwargs)`` by the dataset's registry
entry (``mtljax.data.Dataset``). ``Source`` below lists what every source has; ``CAPABILITIES``
lists what a source may offer in addition, and ``capability(source, name)`` is the one way any
caller (training, evaluation, explanation, analysis, tests) asks for one. Capabilities of a whole
dataset rather than of one split (pictures of predictions, a label hierarchy) are fields of its
registry entry, ``None`` when absent.

One example (all numpy, see DESIGN.md)::

    {"inputs":  {name: float32 [...], ...},      one entry per ``input_fields`` key
     "targets": {task: int32 [] | float32 [...]}, one entry per ``target_fields`` key
     "mask":    {task: float32 [] | [...]},       1.0 = label present (same keys as targets)
     "meta":    {"index": int32 [], ...}}          the example's position in the split
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from mtljax.errors import DataError  # noqa: F401 (readers import it from here)

Example = dict[str, dict[str, Any]]


@runtime_checkable
class Source(Protocol):
  """Required members of every source (one split of one dataset).

  Attributes:
    split: the split name (``"train"``, ``"val"`` or ``"test"``).
    names: one name per example (file name, patch id, ...; ``len(names) == len(source)``),
      saved beside the predictions.
  """

  split: str
  names: Sequence[str]

  def __len__(self) -> int:
    """Number of examples N."""
    ...

  def __getitem__(self, index: int) -> Example:
    """Example ``index`` in ``[0, N)`` (``IndexError`` outside, see ``example_index``)."""
    ...

  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    """``{input: {"shape": tuple, "dtype": ..., "kind": "image" | "vector" | ..., ...}}``:
    what ``example["inputs"]`` holds (per-input extras such as band ``channels``)."""
    ...

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    """``{task: {"shape": tuple, "dtype": ..., "num_classes" | "num_outputs": int, ...}}``:
    what ``example["targets"]`` (and ``example["mask"]``) holds."""
    ...

  def label_arrays(self) -> dict[str, dict[str, Any]]:
    """Every example's labels without reading inputs: ``{"targets": {task: [N, ...]},
    "mask": {task: [N, ...]}}`` (dense targets may be left out)."""
    ...


#: Optional members of a source: name -> what it is. Ask for one with ``capability``.
CAPABILITIES: dict[str, str] = {
  "groups": "attribute, [N] group id per example (e.g. CropYield's field, a façade's block); "
  "saved as `group` with the predictions",
  "prediction_meta": "method () -> {key: [N]}: per-example context saved as `meta/<key>` with the "
  "predictions",
  "metric_strata": "method () -> {prefix: [N] labels}: regression metrics are also reported per "
  "label value as `<task>/<metric>_<prefix><value>`",
  "read_target": "method (task, index) -> (target, mask): one dense target without reading the "
  "inputs (for target statistics)",
  "explain_annotations": "method (index) -> {'masks': {name: bool [H, W]}, 'keypoints': {name: "
  "float [2] (y, x)}} (a name without annotation left out): evaluation-only annotations that "
  "explanations are scored against, matched to the explained targets by `annotation_owners`",
  "annotation_owners": "method () -> {annotation name: ((task, output index | None), ...)}: what "
  "each `explain_annotations` entry belongs to (mtljax.data.annotations.Owner): output k of a "
  "task (class k, or attribute k of a multilabel task) or, with None, the whole task whatever "
  "the class; an entry not named belongs to no target. Without it, the names in the tasks' "
  "`class_names` (and the task names) say it",
  "explanation_regions": "method () -> (relevant bool [N, H, W], decoy bool [N, H, W] | None): "
  "every example's true region and its shortcut region, for scoring explanation-guided training "
  "(mtljax/sweeps/egl.py)",
  "decoy_swapped": "method () -> a view of the split (same examples, names, labels and fields) "
  "whose decoy is repainted in another example's decoy colour (mtljax.data.decoys.DecoySwapped): "
  "the evaluation scores it too, as `<task>/<metric>_decoy_swapped` (a shortcut-free validation "
  "metric to select the best checkpoint by, `config.train.select_by`)",
  "stored_inputs": "method () -> a random-access view of the split (same length, same examples) "
  "whose array inputs may keep a narrower stored type (e.g. uint8 imagery, exact values); the "
  "training and evaluation pipelines read it instead of the source (their normalisation makes "
  "float32, so batches are the same) to skip a float32 copy per image (prepared datasets)",
  "day_reference": "attribute, str: what the `days` of time-series inputs count from (e.g. "
  "CropYield's 'seeding' or 'harvest')",
  "planted_truth": "method () -> dict | None: what a synthetic generator planted (None on real "
  "data), e.g. which input features carry the signal",
  "check_files": "method (*, progress=True, full=False) -> int: check every file the split "
  "reads, cheaply (exists, readable, header: shape, dtype, bands; pixel data present where the "
  "format says where it ends; `full=True` decodes every file as training does); raises DataError "
  "naming the first bad file and what was expected; returns the examples checked. Called for "
  "every split before the first step (mtljax.data.checks.check_inputs); a reader that reads and "
  "checks all its files when it is built (CropYield, façades) needs none",
}


def capability(source: Any, name: str) -> Any | None:
  """The optional member ``name`` of ``source`` (see ``CAPABILITIES``), or None when it has none.

  Methods come back bound (call them), attributes as their value. An unknown ``name`` is a
  programming error (``KeyError``), so a typo cannot silently turn a capability off.
  """
  if name not in CAPABILITIES:
    raise KeyError(f"unknown source capability {name!r}; known: {sorted(CAPABILITIES)}")
  return getattr(source, name, None)


def example_index(index, size: int) -> int:
  """`index` as an int in `[0, size)` (the bounds check of every source's `__getitem__`)."""
  i = int(index)
  if not 0 <= i < size:
    raise IndexError(f"index {index} out of range for {size} examples")
  return i


def check_option(name: str, value: Any, options: Sequence[Any]) -> None:
  """Raise ``ValueError`` unless ``value`` is one of ``options`` (a reader's or generator's
  argument check): "<name> must be 'a' or 'b', got ..." for two options, else "<name> must be one
  of <options>, got ..."."""
  if value not in options:
    allowed = " or ".join(map(repr, options)) if len(options) == 2 else f"one of {options}"
    raise ValueError(f"{name} must be {allowed}, got {value!r}")


_realpath = functools.lru_cache(maxsize=64)(os.path.realpath)


def _within(path: str, folder: str) -> bool:
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def inside_root(root, folder, name: str, where: str):
  """``folder / name`` for a ``name`` read from a data file (a list, a CSV or JSON label file),
  checked to stay inside the data ``root`` (``folder`` is the root or a folder under it), so that
  a hostile or mistaken list cannot make a reader open (or a writer named after an example write)
  a file elsewhere: not absolute, no ``..`` climbing out, and once resolved (symlinks followed)
  inside the root's or the folder's real path. A folder of the archive that is itself a link
  (e.g. an archive assembled from links to another disk) is the user's layout and is followed;
  a name reaching through a link to elsewhere is not. ``where``: the file and line the name came
  from, for the error.

  Raises:
    DataError: naming ``where``, the name and the root.
  """
  from pathlib import Path

  name = str(name)
  if not name or os.path.isabs(name) or name.startswith("~"):
    why = "an empty name" if not name else "an absolute path"
    raise DataError(f"{where}: {name!r} is {why}; names must be relative to the data root {root}")
  path = Path(folder) / name
  real_folder = _realpath(str(folder))
  if os.sep not in name and name not in (".", "..") and not os.path.islink(path):
    real = os.path.join(real_folder, name)  # one lstat for a plain name of a long list
  else:
    real = os.path.realpath(path)
  climbs = os.path.normpath(os.path.join(str(folder), name))
  if not _within(climbs, os.path.normpath(str(root))) or not (
    _within(real, _realpath(str(root))) or _within(real, real_folder)
  ):
    raise DataError(
      f"{where}: {name!r} leads outside the data root {root} (to {real}); names must stay inside it"
    )
  return path


def rgb_image_field(size: int) -> dict[str, Any]:
  """The ``input_fields`` entry of an RGB image resized to ``size x size``: float32 [size, size, 3]."""
  return {
    "kind": "image",
    "shape": (size, size, 3),
    "dtype": "float32",
    "channels": ("R", "G", "B"),
  }


def _split_rank(name: str, seed: int) -> bytes:
  """Seeded, platform- and version-independent sort key used to halve a list."""
  return hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=16).digest()


def split_test_list(
  names: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
  """Deterministically split an archive's test list into validation and test halves.

  Names are ranked by a seeded hash (the same on every machine and numpy version); the first
  ``round(val_fraction * n)`` go to validation. Both halves keep the list's original order.

  Returns:
    ``(val_positions, test_positions)``: sorted positions into ``names``.
  """
  if not 0.0 <= val_fraction <= 1.0:
    raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
  order = sorted(range(len(names)), key=lambda i: (_split_rank(names[i], seed), i))
  n_val = int(round(val_fraction * len(names)))
  return sorted(order[:n_val]), sorted(order[n_val:])
