"""TreeSatAI label files: the split lists (``*.lst``), the multi-label genus shares JSON and the
optional side CSV (``name,stand_type,age``), read with checks (every problem is a ``DataError``
naming the file)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtljax.data.source import DataError, inside_root
from mtljax.data.treesat.archive import (
  GENERA,
  GENUS_INDEX,
  GENUS_L1,
  GENUS_L2,
  L2_INDEX,
  SPECIES_INDEX,
  STAND_TYPES,
  parse_name,
)


def read_list(root: Path, path: Path, folders: Sequence[Path]) -> list[str]:
  """Names in a ``*.lst`` file: one per line, whitespace stripped, blank lines skipped; each must
  stay inside ``root`` in every image folder (``inside_root``)."""
  names = []
  for n, line in enumerate(path.read_text().splitlines(), 1):
    line = line.strip()
    if line:
      names.append(line if line.lower().endswith((".tif", ".tiff")) else line + ".tif")
      for folder in folders:
        inside_root(root, folder, names[-1], f"{path}, line {n}")
  return names


def patch_names(folders: Sequence[Path]) -> list[str]:
  """The ``*.tif`` names present in every one of ``folders``, sorted: the patches of a root that
  has no split lists (new data read for its inputs only)."""
  found = [{p.name for p in Path(f).iterdir() if p.suffix.lower() in (".tif", ".tiff")}
           for f in folders]  # fmt: skip
  return sorted(set.intersection(*found)) if found else []


def read_labels_json(
  path: Path, names: Sequence[str], multi_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The labels JSON's entries of ``names``: ``(l3 int32 [N], l3_multi float32 [N, 15], shares
  float32 [N, 15])``: the dominant genus (ties: first in ``GENERA``), the genera with share >
  ``multi_threshold`` (the dominant one always), and the area shares as written."""
  if not path.is_file():
    raise DataError(f"labels JSON {path} does not exist")
  try:
    table = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise DataError(f"labels JSON {path} is not valid JSON: {e}") from e
  n = len(names)
  l3 = np.zeros(n, np.int32)
  multi = np.zeros((n, len(GENERA)), np.float32)
  shares_all = np.zeros((n, len(GENERA)), np.float32)
  for i, name in enumerate(names):
    entry = table.get(name)
    if entry is None:
      raise DataError(f"labels JSON {path} has no entry for {name}")
    if not entry:
      raise DataError(f"labels JSON {path}: empty label list for {name}")
    for item in entry:
      try:
        genus, share = item
        share = float(share)
      except (TypeError, ValueError) as e:
        raise DataError(f"labels JSON {path}: malformed entry {item!r} for {name}") from e
      g = GENUS_INDEX.get(genus)
      if g is None:
        raise DataError(f"labels JSON {path}: unknown genus {genus!r} for {name}; known: {GENERA}")
      shares_all[i, g] += share
    # Dominant genus; ties go to the first in GENERA order (np.argmax).
    l3[i] = int(np.argmax(shares_all[i]))
    multi[i] = shares_all[i] > multi_threshold
    multi[i, l3[i]] = 1.0
  return l3, multi, shares_all


def read_side_csv(
  path: Path, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
  """The side CSV's stand type and age of ``names``: ``(l2 int32 [N], l2_mask float32 [N],
  age float32 [N], age_mask float32 [N], absent)``; an empty cell or a name without a row gives
  mask 0 (``absent`` counts the names without a row)."""
  if not path.is_file():
    raise DataError(f"side CSV {path} does not exist (needed by l2_source/age_source='csv')")
  rows: dict[str, tuple[str, str]] = {}
  with path.open(newline="") as f:
    reader = csv.DictReader(f)
    missing = {"name", "stand_type", "age"} - set(reader.fieldnames or ())
    if missing:
      raise DataError(
        f"side CSV {path}: header lacks columns {sorted(missing)} (found {reader.fieldnames})"
      )
    for row in reader:
      name = (row["name"] or "").strip()
      if not name:
        continue
      if not name.lower().endswith((".tif", ".tiff")):
        name += ".tif"
      rows[name] = ((row["stand_type"] or "").strip(), (row["age"] or "").strip())
  n = len(names)
  l2, l2_mask = np.zeros(n, np.int32), np.zeros(n, np.float32)
  age, age_mask = np.zeros(n, np.float32), np.zeros(n, np.float32)
  absent = 0
  for i, name in enumerate(names):
    row = rows.get(name)
    if row is None:
      absent += 1
      continue
    stand, age_s = row
    if stand:
      if stand not in L2_INDEX:
        raise DataError(
          f"side CSV {path}: unknown stand_type {stand!r} for {name}; known: {STAND_TYPES}"
        )
      l2[i], l2_mask[i] = L2_INDEX[stand], 1.0
    if age_s:
      try:
        age[i], age_mask[i] = float(age_s), 1.0
      except ValueError as e:
        raise DataError(f"side CSV {path}: age {age_s!r} of {name} is not a number") from e
  return l2, l2_mask, age, age_mask, absent


def species_and_age(names: Sequence[str]):
  """From the file names: ``(species int32 [N], its mask, age float32 [N], its mask, unknown)``,
  the species of the name's prefix (``SPECIES_INDEX``; an unknown prefix is masked and listed,
  sorted, in ``unknown``) and the name's first integer token as the age (masked when absent)."""
  species = np.zeros(len(names), np.int32)
  species_mask = np.zeros(len(names), np.float32)
  age = np.zeros(len(names), np.float32)
  age_mask = np.zeros(len(names), np.float32)
  unknown: set[str] = set()
  for i, name in enumerate(names):
    prefix, token = parse_name(name)
    s = SPECIES_INDEX.get(prefix)
    if s is None:
      unknown.add(prefix)
    else:
      species[i], species_mask[i] = s, 1.0
    if token is not None:
      age[i], age_mask[i] = token, 1.0
  return species, species_mask, age, age_mask, sorted(unknown)


def targets_and_masks(names, l3, l3_multi, csv_l2=None, csv_age=None):
  """Every task's targets and masks ``({task: [N, ...]}, {task: float32 [N]}, unknown)`` of
  ``names`` from the labels JSON's ``l3`` and ``l3_multi`` (None: a root without labels, whose
  every target is 0 with mask 0), the names (species, age) and, where given, the side CSV's
  ``(values, mask)`` pairs; ``unknown``: the names' species prefixes not in ``SPECIES``."""
  n = len(names)
  ones = np.ones(n, np.float32)
  if l3 is None:  # no labels: nothing is a label, not even what a new patch's name may say
    zero = np.zeros(n, np.float32)
    l3, l3_multi = np.zeros(n, np.int32), np.zeros((n, len(GENERA)), np.float32)
    targets = {"l3": l3, "l2": l3.copy(), "l1": l3.copy(), "age": zero, "species": l3.copy(),
               "l3_multi": l3_multi}  # fmt: skip
    return targets, {k: zero.copy() for k in targets}, []
  species, species_mask, age, age_mask, unknown = species_and_age(names)
  l2, l2_mask = csv_l2 if csv_l2 is not None else (GENUS_L2[l3], ones)
  if csv_age is not None:
    age, age_mask = csv_age
  targets = {"l3": l3, "l2": l2.astype(np.int32), "l1": GENUS_L1[l3],
             "age": age.astype(np.float32), "species": species, "l3_multi": l3_multi}  # fmt: skip
  masks = {"l3": ones, "l2": l2_mask.astype(np.float32), "l1": ones,
           "age": age_mask.astype(np.float32), "species": species_mask, "l3_multi": ones}  # fmt: skip
  return targets, masks, unknown
