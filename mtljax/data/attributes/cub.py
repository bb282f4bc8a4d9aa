"""CUB-200-2011 reader (the real archive layout, see ``DATA_FORMATS.md``): class + 312 attributes.

``root`` is the folder that holds ``CUB_200_2011/`` (or that folder itself)::

    CUB_200_2011/images.txt                   <image_id> <relative path under images/>
    CUB_200_2011/images/<class dir>/<file>.jpg
    CUB_200_2011/image_class_labels.txt       <image_id> <class_id>
    CUB_200_2011/classes.txt                  <class_id> <name>
    CUB_200_2011/train_test_split.txt         <image_id> <is_training 0|1>
    CUB_200_2011/bounding_boxes.txt           <image_id> <x> <y> <w> <h>
    CUB_200_2011/parts/parts.txt              <part_id> <name>
    CUB_200_2011/parts/part_locs.txt          <image_id> <part_id> <x> <y> <visible>
    CUB_200_2011/attributes/image_attribute_labels.txt
                                              <image_id> <attribute_id> <is_present> <certainty> <time>
    attributes.txt  (beside CUB_200_2011/, or in it, or in its attributes/ folder)
                                              <attribute_id> <name>

Splits: ``test`` is the archive's test half (``is_training 0``); ``val`` is a seeded, hash-ranked
``val_fraction`` of the training half (the same on every machine) and ``train`` the rest.

Labels: the class (0-based, in ``classes.txt`` order) and the selected attributes' ``is_present``
(a multilabel target). Label lines are parsed tolerantly (some carry a sixth field).

Annotations (explain mode only, never in training): an attribute's keypoint is the mean of the
visible locations of the parts its name refers to (``has_bill_color`` → beak, ``has_wing_*`` →
both wings, ...; ``has_size``/``has_shape``/``has_primary_color`` have none); its mask is
``CUB_200_2011/attribute_masks/<image path without .jpg>__<attribute_id>.png`` where that file
exists (a project extension: the synthetic generator writes it, real CUB has no masks), otherwise
the discs of radius ``part_radius`` × √(bounding-box area) around those parts, for a present
attribute with a visible part.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtljax.data.attributes.common import (
  AttributeImageSource,
  disc_mask,
  image_size_of,
  read_mask,
  scale_points,
)
from mtljax.data.source import DataError, inside_root, split_test_list

__all__ = ["CUB200Source", "attribute_parts", "SPLITS"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
ARCHIVE = "CUB_200_2011"
MASK_DIR = "attribute_masks"

#: The part(s) an attribute's body part word refers to (names as in ``parts/parts.txt``).
_PART_WORDS: dict[str, tuple[str, ...]] = {
    "bill": ("beak",), "wing": ("left wing", "right wing"), "upperparts": ("back",),
    "underparts": ("breast", "belly"), "breast": ("breast",), "back": ("back",),
    "tail": ("tail",), "upper_tail": ("tail",), "under_tail": ("tail",), "head": ("crown",),
    "throat": ("throat",), "eye": ("left eye", "right eye"), "forehead": ("forehead",),
    "nape": ("nape",), "belly": ("belly",), "leg": ("left leg", "right leg"), "crown": ("crown",),
}  # fmt: skip
_PROPERTIES = ("_color", "_shape", "_pattern", "_length")


def attribute_parts(name: str) -> tuple[str, ...]:
  """The CUB parts an attribute refers to: ``"has_bill_color::red"`` → ``("beak",)``; ``()`` for
  whole-bird attributes (size, shape, primary colour)."""
  word = name.split("::")[0]
  word = word[4:] if word.startswith("has_") else word
  for suffix in _PROPERTIES:
    if word.endswith(suffix):
      word = word[: -len(suffix)]
      break
  return _PART_WORDS.get(word, ())


def _rows(path: Path, min_fields: int, what: str) -> list[list[str]]:
  """Whitespace-separated rows of a CUB text file (blank lines skipped; extra fields kept)."""
  if not path.is_file():
    raise DataError(f"{path}: missing ({what})")
  rows = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for n, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) < min_fields:
        raise DataError(f"{path}, line {n}: expected {what}, got {line.strip()!r}")
      rows.append(parts)
  return rows


def _int(path: Path, row: list[str], k: int) -> int:
  try:
    return int(float(row[k]))
  except ValueError:
    raise DataError(f"{path}: field {k + 1} of {' '.join(row)!r} is not a number") from None


def _id_name_rows(path: Path, what: str) -> dict[int, str]:
  """``<id> <name with possible spaces>`` rows → {id: name}."""
  out = {}
  for row in _rows(path, 2, f"'<id> <name>' lines ({what})"):
    out[_int(path, row, 0)] = " ".join(row[1:])
  return out


@functools.lru_cache(maxsize=4)
def _load_archive(base: str, mtime: float) -> dict[str, Any]:
  """Parse the archive's text files once per process (``mtime`` keys the cache)."""
  del mtime
  b = Path(base)
  images = {}
  for row in _rows(b / "images.txt", 2, "'<image_id> <relative path>' lines"):
    images[_int(b / "images.txt", row, 0)] = row[1]
  ids = np.array(sorted(images), np.int64)
  pos = {int(i): k for k, i in enumerate(ids)}

  def per_image(path: Path, min_fields: int, what: str, cols: int, dtype) -> np.ndarray:
    out = np.full((len(ids), cols), -1, dtype)
    for row in _rows(path, min_fields, what):
      k = pos.get(_int(path, row, 0))
      if k is None:
        raise DataError(f"{path}: image id {row[0]} is not in images.txt")
      try:
        out[k] = [float(v) for v in row[1 : 1 + cols]]
      except ValueError:
        raise DataError(f"{path}: non-numeric values in {' '.join(row)!r}") from None
    return out

  labels = per_image(b / "image_class_labels.txt", 2, "'<image_id> <class_id>' lines", 1, np.int64)[
    :, 0
  ]
  is_train = per_image(
    b / "train_test_split.txt", 2, "'<image_id> <is_training>' lines", 1, np.int64
  )[:, 0]
  for arr, name in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
    if (arr < 0).any():
      missing = ids[arr < 0][:5].tolist()
      raise DataError(f"{b / name}: no line for image ids {missing}...")
  boxes = (
    per_image(b / "bounding_boxes.txt", 5, "'<image_id> <x> <y> <w> <h>' lines", 4, np.float64)
    if (b / "bounding_boxes.txt").is_file()
    else np.full((len(ids), 4), np.nan)
  )

  parts = (
    _id_name_rows(b / "parts" / "parts.txt", "part names")
    if (b / "parts" / "parts.txt").is_file()
    else {}
  )
  part_ids = sorted(parts)
  part_locs = np.zeros((len(ids), len(part_ids), 3))  # x, y, visible
  locs_path = b / "parts" / "part_locs.txt"
  if parts and locs_path.is_file():
    part_pos = {p: k for k, p in enumerate(part_ids)}
    for row in _rows(locs_path, 5, "'<image_id> <part_id> <x> <y> <visible>' lines"):
      k, p = pos.get(_int(locs_path, row, 0)), part_pos.get(_int(locs_path, row, 1))
      if k is None or p is None:
        raise DataError(f"{locs_path}: unknown image or part id in {' '.join(row)!r}")
      part_locs[k, p] = [float(row[2]), float(row[3]), float(row[4])]

  attr_path = b / "attributes" / "image_attribute_labels.txt"
  rows = _rows(attr_path, 3, "'<image_id> <attribute_id> <is_present> ...' lines")
  try:
    table = np.array([[int(r[0]), int(r[1]), int(r[2])] for r in rows], np.int64).reshape(-1, 3)
  except ValueError:
    bad = next(r for r in rows if not all(v.lstrip("-").isdigit() for v in r[:3]))
    raise DataError(f"{attr_path}: non-integer fields in {' '.join(bad)!r}") from None
  return {
    "ids": ids,
    "paths": [images[int(i)] for i in ids],
    "labels": labels,
    "is_train": is_train,
    "boxes": boxes,
    "part_names": [parts[p].strip().lower() for p in part_ids],
    "part_locs": part_locs,
    "attribute_table": table,
  }


def _find_attribute_names(base: Path) -> tuple[Path, dict[int, str]]:
  for p in (
    base.parent / "attributes.txt",
    base / "attributes.txt",
    base / "attributes" / "attributes.txt",
  ):
    if p.is_file():
      return p, _id_name_rows(p, "attribute names")
  raise DataError(
    f"attributes.txt not found beside {base} (looked in {base.parent}, {base} and "
    f"{base / 'attributes'})"
  )


class CUB200Source(AttributeImageSource):
  """Random-access CUB-200-2011 split, see the module docstring.

  Args:
    root: the folder holding ``CUB_200_2011/`` (or that folder).
    split: ``"train"``, ``"val"`` or ``"test"``.
    image_size: images (and masks, keypoints) are resized to this square size.
    val_fraction: share of the archive's training half held out as ``val``.
    split_seed: seed of that hold-out.
    attributes: attribute ids (ints or digit strings) or names to use, in that order; empty = all
      of ``attributes.txt``.
    part_radius: radius of a part region, as a fraction of √(bounding-box area).
  """

  dataset = "CUB-200-2011"

  def __init__(
    self,
    root: str | os.PathLike,
    split: str,
    *,
    image_size: int = 224,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    attributes: Sequence[int | str] = (),
    part_radius: float = 0.15,
  ):
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root).expanduser()
    base = root / ARCHIVE if (root / ARCHIVE / "images.txt").is_file() else root
    if not (base / "images.txt").is_file():
      raise DataError(
        f"{root}: no {ARCHIVE}/images.txt (nor images.txt) here; expected the "
        f"folder holding {ARCHIVE}/ of the CUB-200-2011 archive"
      )
    self.root, self.base, self.split = root, base, split
    self.image_size, self.part_radius = int(image_size), float(part_radius)
    arc = _load_archive(str(base), os.path.getmtime(base / "images.txt"))
    self._arc = arc

    # ---------------------------------------------------------------- split
    train_pool = np.flatnonzero(arc["is_train"] == 1)
    if split == "test":
      rows = np.flatnonzero(arc["is_train"] == 0)
    else:
      val_pos, train_pos = split_test_list(
        [arc["paths"][k] for k in train_pool], val_fraction, split_seed
      )
      rows = train_pool[val_pos if split == "val" else train_pos]
    self._rows = rows
    self.names = [arc["paths"][k] for k in rows]
    where = f"{base / 'images.txt'}: image id"
    self._paths = [
      inside_root(base, base / "images", arc["paths"][k], f"{where} {arc['ids'][k]}") for k in rows
    ]

    # ---------------------------------------------------------------- classes
    classes_path = base / "classes.txt"
    classes = _id_name_rows(classes_path, "class names")
    class_ids = sorted(classes)
    self.class_names = tuple(classes[c] for c in class_ids)
    class_pos = {c: k for k, c in enumerate(class_ids)}
    bad = sorted({int(c) for c in arc["labels"][rows] if int(c) not in class_pos})
    if bad:
      raise DataError(
        f"{base / 'image_class_labels.txt'}: class ids {bad[:5]} are not in {classes_path}"
      )
    self._classes = np.array([class_pos[int(c)] for c in arc["labels"][rows]], np.int32)

    # ---------------------------------------------------------------- attributes
    names_path, all_names = _find_attribute_names(base)
    by_name = {v: k for k, v in all_names.items()}
    chosen = []
    for a in attributes or sorted(all_names):
      if isinstance(a, (int, np.integer)) or str(a).isdigit():
        if int(a) not in all_names:
          raise DataError(f"config.data.attributes: attribute id {a} is not in {names_path}")
        chosen.append(int(a))
      elif a in by_name:
        chosen.append(by_name[a])
      else:
        raise DataError(
          f"config.data.attributes: no attribute named {a!r} in {names_path} "
          f"(e.g. {list(by_name)[:3]})"
        )
    self.attribute_ids = tuple(chosen)
    self.attribute_names = tuple(all_names[a] for a in chosen)
    table = arc["attribute_table"]
    col = {a: k for k, a in enumerate(chosen)}
    pos_in_split = np.full(len(arc["ids"]), -1, np.int64)
    pos_in_split[rows] = np.arange(len(rows))
    img_pos = np.searchsorted(arc["ids"], table[:, 0])
    img_pos = np.clip(img_pos, 0, len(arc["ids"]) - 1)
    known = arc["ids"][img_pos] == table[:, 0]
    r = np.where(known, pos_in_split[img_pos], -1)
    c = (
      np.array([col.get(int(a), -1) for a in table[:, 1]], np.int64) if len(table) else table[:, 1]
    )
    keep = (r >= 0) & (c >= 0)
    self._attributes = np.zeros((len(rows), len(chosen)), np.float32)
    self._attributes[r[keep], c[keep]] = (table[keep, 2] > 0).astype(np.float32)
    seen = np.zeros(len(rows), bool)
    seen[r[keep]] = True
    self._attribute_mask = seen.astype(np.float32)  # an image with no attribute line is unlabelled

    # ---------------------------------------------------------------- parts per attribute
    part_index = {n: k for k, n in enumerate(arc["part_names"])}
    self._attribute_part_index = [
      [part_index[p] for p in attribute_parts(n) if p in part_index] for n in self.attribute_names
    ]

  # -------------------------------------------------------------------------- annotations
  def mask_path(self, index: int, attribute_id: int) -> Path:
    rel = Path(self.names[int(index)]).with_suffix("")
    return self.base / MASK_DIR / f"{rel}__{attribute_id}.png"

  def explain_annotations(self, index: int) -> dict[str, dict[str, np.ndarray | None]]:
    i = int(index)
    row = self._rows[i]
    s = self.image_size
    image_hw = None
    locs = self._arc["part_locs"][row]  # [P, 3] x, y, visible
    x, y, w, h = self._arc["boxes"][row]
    radius_px = self.part_radius * np.sqrt(max(w * h, 0.0)) if np.isfinite(w) else np.nan
    masks, keypoints = {}, {}
    for a, (aid, name) in enumerate(zip(self.attribute_ids, self.attribute_names)):
      parts = [p for p in self._attribute_part_index[a] if locs[p, 2] > 0]
      present = self._attributes[i, a] > 0
      if not parts and not present:
        continue
      if image_hw is None:
        image_hw = image_size_of(self._paths[i])
      if parts:
        pts = scale_points(locs[parts][:, [1, 0]], image_hw, s)
        keypoints[name] = pts.mean(axis=0)
      if not present:
        continue
      mpath = self.mask_path(i, aid)
      if mpath.is_file():
        masks[name] = read_mask(mpath, s, expect_hw=image_hw, image_path=self._paths[i])
      elif parts and np.isfinite(radius_px):
        r = radius_px * s / np.sqrt(image_hw[0] * image_hw[1])
        masks[name] = disc_mask(s, pts, r)
    return {"masks": masks, "keypoints": keypoints}
