"""Street-level façade images with five interdependent classification tasks (MTC-LIM paper §2).

The paper's Santiago de Chile data are not public; this is the documented on-disk format that
the reader targets and the synthetic generator writes::

    <root>/tasks.json     {"tasks": {task: [class name, ...], ...}, "image_size": S}
                          (the declared class set of each task, in class-index order)
    <root>/labels.csv     header: id,block,<task 1>,...,<task T>
                          one row per image: the image id, the spatial group (city block) id used
                          for group-disjoint splits, and each task's class *name*
    <root>/images/<id>.png  the façade image (RGB; resized to S × S on reading)

Strict reading: a class outside its task's declared set, an empty block id, an image file that
does not exist, a missing column — each is a ``DataError`` naming the file, the row (1-based data
row, header excluded), the id and the column.

Splits (paper §2.2, §3): the reader applies LPRUS (keep 85 %) to the whole table, then the
labelset-based, block-disjoint partition 65 / 17.5 / 17.5 (``mtljax.data.facades.labelsets``), both
seeded by ``split_seed``, and serves one split. Example (``source[i]``)::

    {"inputs": {"image": float32 [S, S, 3] in 0..255},
     "targets": {task: int32 []}, "mask": {task: float32 [] = 1},
     "meta": {"index": int32 []}}

The synthetic generator (``synthetic.write_synthetic_facades``) plants strong, asymmetric label
co-occurrences, like real façades (height ↔ structural type ↔ roof shape): the building type
(sbst) decides the roof shape with probability 0.9 (many-to-one: P(FLT | IND) ≈ 0.9, P(IND | FLT)
far lower) and, loosely, the height; roof and height together decide the material, type and
material the block position. Each task's image cue is the contrast of its own texture (stripes
of a given orientation and period in one colour channel), one level per class, with per-image
noise — except sbst, whose cue is the *number* of 4 × 4 marks scattered over the image. sbst and
height are seen clearly; roof and material barely (their own texture is nearly useless), so
they must be inferred from the other tasks — and the sbst levels are ordered so that the roof
classes zig-zag along the mark count (a union of non-adjacent intervals), which a linear head
on globally pooled image features (linear in the count) cannot carve but a head on the stacked
interim probabilities P(sbst | x) can (multitask stacking), while material needs the
*interaction* of height and roof (label interdependency modelling). ``DEFAULT_TASKS`` names the
five tasks after the paper's. With the default noise the Bayes-optimal κ (image cues and label
rules known) is about 0.93 / 0.73 / 0.90 / 0.80 / 0.78 (height, material, sbst, roof, blockpos;
pixel noise ignored), against 0.90 / 0.08 / 0.89 / 0.13 / 0.59 from each task's own cue alone.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtljax.data.attributes.common import read_rgb
from mtljax.data.facades import labelsets
from mtljax.data.source import DataError, example_index, inside_root, rgb_image_field

__all__ = ["FacadesSource", "read_table", "DEFAULT_TASKS", "FIXED_COLUMNS", "SPLITS"]

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: The five tasks (after the paper's Height, MatLLRS, SBST, RoofShp, BlockPos) and their classes.
DEFAULT_TASKS: dict[str, tuple[str, ...]] = {
  "height": ("H1", "H2", "H3-4", "H5+"),
  "material": ("MUR", "CR", "W"),
  "sbst": ("RES_LOW", "RES_MID", "COM", "IND", "INF"),
  "roof": ("FLT", "GBL", "HIP"),
  "blockpos": ("DET", "ADJ_END", "ADJ_MID"),
}
FIXED_COLUMNS = ("id", "block")


# ================================================================================== reading
def read_table(root: str | os.PathLike) -> dict[str, Any]:
  """Read and check ``tasks.json`` and ``labels.csv`` (every image must exist).

  Returns ``{"tasks": {task: (class names)}, "image_size": S, "ids": [N] str, "blocks": [N] str,
  "labels": int32 [N, T] (tasks in declared order), "paths": [N] Path}``.
  """
  root = Path(root).expanduser()
  tasks_path, csv_path = root / "tasks.json", root / "labels.csv"
  for p in (tasks_path, csv_path):
    if not p.is_file():
      raise DataError(
        f"{p}: missing file; a façade dataset root holds tasks.json, labels.csv and images/<id>.png"
      )
  try:
    spec = json.loads(tasks_path.read_text())
    tasks = {str(t): tuple(str(c) for c in cls) for t, cls in spec["tasks"].items()}
    image_size = int(spec.get("image_size", 0))
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise DataError(
      f'{tasks_path}: expected {{"tasks": {{task: [class, ...]}}, '
      f'"image_size": S}} ({type(e).__name__}: {e})'
    ) from e
  if not tasks:
    raise DataError(f"{tasks_path}: 'tasks' declares no task")
  for t, cls in tasks.items():
    if len(cls) < 2 or len(set(cls)) != len(cls):
      raise DataError(f"{tasks_path}: task {t!r} must declare >= 2 distinct classes, got {cls}")
  index = {t: {c: k for k, c in enumerate(cls)} for t, cls in tasks.items()}
  ids, blocks, rows, paths = [], [], [], []
  with open(csv_path, newline="") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    missing = [c for c in (*FIXED_COLUMNS, *tasks) if c not in header]
    if missing:
      raise DataError(f"{csv_path}: missing column(s) {missing}; header is {header}")
    for r, row in enumerate(reader, start=1):
      name = (row["id"] or "").strip()
      if not name:
        raise DataError(f"{csv_path}: row {r}, column 'id': empty image id")
      block = (row["block"] or "").strip()
      if not block:
        raise DataError(
          f"{csv_path}: row {r} (id {name!r}), column 'block': missing "
          "group (block) id; every image needs one for the group-disjoint split"
        )
      labels = []
      for t in tasks:
        value = (row[t] or "").strip()
        if value not in index[t]:
          raise DataError(
            f"{csv_path}: row {r} (id {name!r}), column {t!r}: class "
            f"{value!r} is not one of the declared {list(tasks[t])} "
            f"({tasks_path.name})"
          )
        labels.append(index[t][value])
      path = inside_root(root, root / "images", f"{name}.png", f"{csv_path}: row {r}")
      if not path.is_file():
        raise DataError(f"{path}: image file missing (row {r}, id {name!r} of {csv_path})")
      ids.append(name)
      blocks.append(block)
      rows.append(labels)
      paths.append(path)
  if not ids:
    raise DataError(f"{csv_path}: no rows")
  return {
    "tasks": tasks,
    "image_size": image_size,
    "ids": np.array(ids),
    "blocks": np.array(blocks),
    "labels": np.asarray(rows, np.int32).reshape(-1, len(tasks)),
    "paths": paths,
  }


@functools.lru_cache(maxsize=4)
def _load(
  root: str, mtime: float, lprus_keep: float, fractions: tuple, split_seed: int, image_size: int
):
  """Table + split assignment + all images of the dataset (small: read once per process)."""
  del mtime
  table = read_table(root)
  kept = labelsets.lprus(table["labels"], lprus_keep, seed=split_seed)
  split = labelsets.labelset_group_split(
    table["labels"][kept], table["blocks"][kept], fractions, seed=split_seed
  )
  size = image_size or table["image_size"] or 32
  images = np.stack([read_rgb(table["paths"][i], size) for i in kept])
  return table, kept, split, images


class FacadesSource:
  """Random-access split of a façade dataset (see the module docstring).

  Args:
    root: the dataset folder (tasks.json, labels.csv, images/).
    split: "train", "val" or "test".
    image_size: images are resized to this square size (0 = tasks.json's ``image_size``).
    lprus_keep: LPRUS keep percentage (1.0 = no undersampling).
    fractions: train / val / test shares of the labelset-based, block-disjoint partition.
    split_seed: seeds LPRUS and the partition.
  """

  dataset = "facades"

  def __init__(
    self,
    root: str | os.PathLike,
    split: str,
    *,
    image_size: int = 0,
    lprus_keep: float = 0.85,
    fractions: Sequence[float] = (0.65, 0.175, 0.175),
    split_seed: int = 0,
  ):
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    self.root, self.split = Path(root).expanduser(), split
    csv_path = self.root / "labels.csv"
    mtime = os.path.getmtime(csv_path) if csv_path.exists() else 0.0
    table, kept, assign, images = _load(
      str(self.root),
      mtime,
      float(lprus_keep),
      tuple(float(f) for f in fractions),
      int(split_seed),
      int(image_size),
    )
    rows = kept[assign == SPLITS.index(split)]
    sel = np.flatnonzero(assign == SPLITS.index(split))
    if len(rows) == 0:
      raise DataError(
        f"{csv_path}: the {split} split is empty (too few blocks for the "
        f"fractions {tuple(fractions)})"
      )
    self.tasks = table["tasks"]
    self.task_names = tuple(self.tasks)
    self.names = [str(x) for x in table["ids"][rows]]
    self.groups = table["blocks"][rows]
    self._labels = table["labels"][rows]
    self._images = images[sel]
    self.image_size = int(self._images.shape[1])

  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    return {"image": rgb_image_field(self.image_size)}

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    return {
      t: {
        "kind": "classification",
        "shape": (),
        "dtype": "int32",
        "num_classes": len(c),
        "class_names": c,
      }
      for t, c in self.tasks.items()
    }

  def label_arrays(self) -> dict[str, dict[str, np.ndarray]]:
    """All labels of the split: ``{"targets": {task: int32 [N]}, "mask": {task: ones [N]}}``."""
    return {
      "targets": {t: self._labels[:, k].copy() for k, t in enumerate(self.task_names)},
      "mask": {t: np.ones(len(self), np.float32) for t in self.task_names},
    }

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, index: int) -> dict[str, dict[str, np.ndarray]]:
    i = example_index(index, len(self))
    return {
      "inputs": {"image": self._images[i]},
      "targets": {
        t: np.asarray(self._labels[i, k], np.int32) for k, t in enumerate(self.task_names)
      },
      "mask": {t: np.asarray(1.0, np.float32) for t in self.task_names},
      "meta": {"index": np.asarray(i, np.int32)},
    }

  def __repr__(self) -> str:
    return (
      f"FacadesSource(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
      f"tasks={ {t: len(c) for t, c in self.tasks.items()} })"
    )
