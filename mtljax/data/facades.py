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
labelset-based, block-disjoint partition 65 / 17.5 / 17.5 (``mtljax.data.labelsets``), both
seeded by ``split_seed``, and serves one split. Example (``source[i]``)::

    {"inputs": {"image": float32 [S, S, 3] in 0..255},
     "targets": {task: int32 []}, "mask": {task: float32 [] = 1},
     "meta": {"index": int32 []}}

The synthetic generator (``write_synthetic_facades``) plants strong, asymmetric label
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

from mtljax.data import labelsets
from mtljax.data.attributes import read_rgb
from mtljax.data.treesat import DataError, example_index

__all__ = ["FacadesSource", "write_synthetic_facades", "read_table", "DEFAULT_TASKS", "SPLITS"]

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: The five tasks (after the paper's Height, MatLLRS, SBST, RoofShp, BlockPos) and their classes.
DEFAULT_TASKS: dict[str, tuple[str, ...]] = {
  "height": ("H1", "H2", "H3-4", "H5+"),
  "material": ("MUR", "CR", "W"),
  "sbst": ("RES_LOW", "RES_MID", "COM", "IND", "INF"),
  "roof": ("FLT", "GBL", "HIP"),
  "blockpos": ("DET", "ADJ_END", "ADJ_MID"),
}
_FIXED_COLUMNS = ("id", "block")


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
    missing = [c for c in (*_FIXED_COLUMNS, *tasks) if c not in header]
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
      path = root / "images" / f"{name}.png"
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
    s = self.image_size
    return {
      "image": {
        "kind": "image",
        "shape": (s, s, 3),
        "dtype": "float32",
        "channels": ("R", "G", "B"),
      }
    }

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


# ================================================================================== synthetic
#: Planted label rules (paper Fig. 4-like, strong and asymmetric). Tasks in DEFAULT_TASKS order.
_H = np.array([0, 1, 3, 2, 0])  # sbst -> height
_R = np.array([1, 2, 0, 0, 1])  # sbst -> roof (COM and IND: flat)
_M = np.array([[0, 2, 0], [2, 0, 1], [1, 1, 0], [1, 2, 1]])  # (height, roof) -> material
_P = np.array([[0, 0, 2], [2, 1, 0], [1, 0, 1], [0, 2, 0], [1, 2, 2]])  # (sbst, material)
#: Probability that height does NOT follow the building type (a uniform draw instead): height is
#: only loosely tied to sbst, so material = M[height, roof] is an interaction of two tasks.
_HEIGHT_FREE = 0.5
#: Image cue of each task: its class levels lowest to highest (a class order along the cue
#: axis), and the per-image cue noise in units of the level spacing (times ``cue_noise``). sbst
#: and height are seen clearly; roof and material barely (their own cue is nearly useless), so
#: they must be inferred through the label rules. The sbst order (IND, RES_LOW, RES_MID, COM,
#: INF) makes roof zig-zag along the sbst cue (FLT, GBL, HIP, FLT, GBL).
_LEVEL_ORDER = {
  "height": (2, 0, 3, 1),
  "material": (0, 1, 2),
  "sbst": (3, 0, 1, 2, 4),
  "roof": (0, 1, 2),
  "blockpos": (1, 0, 2),
}
#: Tasks whose cue is a *count* of marks (4 × 4 bright squares in the task's colour
#: channel, scattered over the image: 1 + level rank, plus noise) instead of a texture contrast.
#: Features that a CNN pools globally (GAP) are linear in such a count, so a linear head on them
#: carves it only into ordered intervals: fine for sbst itself, not for roof's zig-zag, which
#: the softmax of the interim P(sbst | x) gives to a stacked (MS) head.
_COUNT_TASKS = ("sbst",)
_CUE_SCALE = {"height": 0.5, "material": 4.0, "sbst": 0.5, "roof": 4.0, "blockpos": 1.0}


def _planted_labels(rng: np.random.Generator, n: int, noise: float) -> np.ndarray:
  """``[n, 5]`` labels (height, material, sbst, roof, blockpos) with planted dependencies.

  sbst ~ prior; roof = R[sbst] (many-to-one, so e.g. P(FLT | IND) = 0.9 but P(IND | FLT) is
  far lower); height = H[sbst] only with probability 1 − ``_HEIGHT_FREE`` (else uniform);
  material = M[height, roof]; blockpos = P[sbst, material]; the roof, material and blockpos
  rules hold with probability 1 − noise, else the class is uniform.
  """

  def noisy(rule, k, p=noise):
    flip = rng.random(n) < p
    return np.where(flip, rng.integers(0, k, n), rule)

  sbst = rng.choice(5, size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
  roof = noisy(_R[sbst], 3)
  height = noisy(_H[sbst], 4, _HEIGHT_FREE)
  material = noisy(_M[height, roof], 3)
  blockpos = noisy(_P[sbst, material], 3)
  return np.stack([height, material, sbst, roof, blockpos], axis=1).astype(np.int32)


def _patterns(s: int) -> np.ndarray:
  """Five zero-mean ±1 textures ``[5, s, s]`` that small convolutions tell apart: vertical and
  horizontal stripes of period 2, a checkerboard, vertical and horizontal stripes of period 4."""
  y, x = np.mgrid[0:s, 0:s]
  p4 = lambda v: np.where((v // 2) % 2 == 0, 1.0, -1.0)
  return np.stack([(-1.0) ** x, (-1.0) ** y, (-1.0) ** (x + y), p4(x), p4(y)])


def write_synthetic_facades(
  root: str | os.PathLike,
  *,
  num_images: int = 4000,
  num_blocks: int = 200,
  image_size: int = 16,
  cue_noise: float = 0.6,
  label_noise: float = 0.1,
  seed: int = 0,
) -> Path:
  """Write a synthetic façade dataset in the documented layout (skipped if already there with
  the same parameters); returns ``root``.

  Image cue of task t: a texture of its own (``_patterns``) in colour channel ``t mod 3``, whose
  contrast (amplitude) is ``level_t[class] + cue_noise · _CUE_SCALE[t] · spacing · N(0, 1)``
  (per image); the levels of each task are evenly spaced from 6 to 30 grey levels in the class
  order ``_LEVEL_ORDER[t]``. For the tasks of ``_COUNT_TASKS`` the cue is instead
  ``round(1 + rank + cue_noise · _CUE_SCALE[t] · N(0, 1))`` marks (4 × 4 squares, +60 grey
  levels) at random places. Pixel noise (σ = 12) is added on top. With ``cue_noise`` 0.6 the
  sbst marks and the height texture alone are right about 90 % of the time, the roof and
  material textures barely above chance: those tasks are learnt through the label rules.
  """
  root = Path(root)
  params = dict(
    num_images=num_images,
    num_blocks=num_blocks,
    image_size=image_size,
    cue_noise=cue_noise,
    label_noise=label_noise,
    seed=seed,
    version=5,
  )
  marker = root / "synthetic.json"
  if marker.is_file() and json.loads(marker.read_text()) == params:
    return root
  from PIL import Image

  rng = np.random.default_rng(seed)
  tasks = DEFAULT_TASKS
  labels = _planted_labels(rng, num_images, label_noise)
  blocks = rng.integers(0, num_blocks, num_images)
  (root / "images").mkdir(parents=True, exist_ok=True)
  s = image_size
  patterns = _patterns(s)
  lo, hi = 6.0, 30.0  # texture amplitudes (grey levels)
  levels = []
  for t, c in tasks.items():
    rank = np.empty(len(c))
    rank[list(_LEVEL_ORDER[t])] = np.arange(len(c))
    levels.append(lo + (hi - lo) * rank / (len(c) - 1))
  scale = [cue_noise * _CUE_SCALE[t] for t in tasks]
  counted = [t in _COUNT_TASKS for t in tasks]
  cells = (s // 4) ** 2  # 4 × 4 cells that hold one mark each
  ids = [f"fac{i:05d}" for i in range(num_images)]
  for i in range(num_images):
    img = 128 + rng.normal(0, 12, (s, s, 3))
    for t in range(len(tasks)):
      spacing = (hi - lo) / (len(levels[t]) - 1)
      if counted[t]:  # 1 + rank marks, the rank noisy by scale · N(0, 1) (rounded)
        rank = (levels[t][labels[i, t]] - lo) / spacing
        n = int(np.clip(np.rint(1 + rank + scale[t] * rng.normal()), 0, cells))
        for c in rng.choice(cells, n, replace=False):
          y, x = 4 * (c // (s // 4)), 4 * (c % (s // 4))
          img[y : y + 4, x : x + 4, t % 3] += 60.0
        continue
      amp = levels[t][labels[i, t]] + scale[t] * spacing * rng.normal()
      img[..., t % 3] += amp * patterns[t]
    Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(
      root / "images" / f"{ids[i]}.png"
    )
  (root / "tasks.json").write_text(
    json.dumps({"tasks": {t: list(c) for t, c in tasks.items()}, "image_size": s}, indent=1)
  )
  names = list(tasks)
  with open(root / "labels.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([*_FIXED_COLUMNS, *names])
    for i in range(num_images):
      w.writerow(
        [ids[i], f"B{blocks[i]:04d}", *(tasks[t][labels[i, k]] for k, t in enumerate(names))]
      )
  marker.write_text(json.dumps(params))
  return root
