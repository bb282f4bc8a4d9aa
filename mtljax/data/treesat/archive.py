"""What the TreeSatAI archive is: class vocabularies, the label hierarchy, bands and folder layout.

Label hierarchy: L1 (leaf type, 3) > L2 (forest stand type, 9) > L3 (genus, 15); ``GENUS_TO_L2`` and
``L2_TO_L1`` make it strict. ``label_hierarchy`` is the dataset's hierarchy capability (its registry
entry's ``label_hierarchy``, read by ``mtljax.analysis``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------------

#: L3: the 15 genera, in the archive's order (class index = position).
GENERA: tuple[str, ...] = (
    "Abies", "Acer", "Alnus", "Betula", "Cleared", "Fagus", "Fraxinus", "Larix", "Picea",
    "Pinus", "Populus", "Prunus", "Pseudotsuga", "Quercus", "Tilia",
)  # fmt: skip

#: The 20 species (the file name's prefix, lower-cased, dots dropped).
SPECIES: tuple[str, ...] = (
    "abies_alba", "acer_pseudoplatanus", "alnus_spec", "betula_spec", "cleared",
    "fagus_sylvatica", "fraxinus_excelsior", "larix_decidua", "larix_kaempferi", "picea_abies",
    "pinus_nigra", "pinus_strobus", "pinus_sylvestris", "populus_spec", "prunus_spec",
    "pseudotsuga_menziesii", "quercus_petraea", "quercus_robur", "quercus_rubra", "tilia_spec",
)  # fmt: skip

#: L1: leaf type.
LEAF_TYPES: tuple[str, ...] = ("broadleaf", "conifer", "none")

_CONIFERS = frozenset({"Abies", "Larix", "Picea", "Pinus", "Pseudotsuga"})

#: genus -> leaf type (conifer = Abies, Larix, Picea, Pinus, Pseudotsuga; none = Cleared; else broadleaf).
GENUS_TO_L1: dict[str, str] = {
  g: ("conifer" if g in _CONIFERS else "none" if g == "Cleared" else "broadleaf") for g in GENERA
}

#: L2: forest stand types (9). The default (``l2_source="genus"``) derives them from the genus.
STAND_TYPES: tuple[str, ...] = (
    "spruce_fir", "pine", "larch", "douglas_fir", "beech", "oak", "valuable_broadleaf",
    "softwood_broadleaf", "cleared",
)  # fmt: skip

#: genus -> stand type. Together with ``L2_TO_L1`` this makes L1 > L2 > L3 a strict hierarchy.
GENUS_TO_L2: dict[str, str] = {
  "Abies": "spruce_fir",
  "Picea": "spruce_fir",
  "Pinus": "pine",
  "Larix": "larch",
  "Pseudotsuga": "douglas_fir",
  "Fagus": "beech",
  "Quercus": "oak",
  "Acer": "valuable_broadleaf",
  "Fraxinus": "valuable_broadleaf",
  "Tilia": "valuable_broadleaf",
  "Prunus": "valuable_broadleaf",
  "Alnus": "softwood_broadleaf",
  "Betula": "softwood_broadleaf",
  "Populus": "softwood_broadleaf",
  "Cleared": "cleared",
}

#: stand type -> leaf type.
L2_TO_L1: dict[str, str] = {
  "spruce_fir": "conifer",
  "pine": "conifer",
  "larch": "conifer",
  "douglas_fir": "conifer",
  "beech": "broadleaf",
  "oak": "broadleaf",
  "valuable_broadleaf": "broadleaf",
  "softwood_broadleaf": "broadleaf",
  "cleared": "none",
}

#: Sentinel-2 bands in the archive's (non-standard) order; B10 is absent.
S2_BANDS: tuple[str, ...] = (
    "B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09",
)  # fmt: skip
#: Sentinel-1 bands (dB).
S1_BANDS: tuple[str, ...] = ("VV", "VH", "VV/VH")
#: Aerial (colour-infrared) bands, in file order.
AERIAL_BANDS: tuple[str, ...] = ("IR", "G", "B", "R")
#: S1 nodata value (NaN also occurs in the archive).
S1_NODATA = -9999.0

#: Image modalities: band names and on-disk dtype.
MODALITIES: dict[str, dict[str, Any]] = {
  "aerial": {"bands": AERIAL_BANDS, "dtype": np.dtype(np.uint8), "kind": "image"},
  "s1": {"bands": S1_BANDS, "dtype": np.dtype(np.float32), "kind": "small_image"},
  "s2": {"bands": S2_BANDS, "dtype": np.dtype(np.uint16), "kind": "small_image"},
}
#: Side length of the Sentinel patches per resolution folder.
S_SIZES: dict[str, int] = {"60m": 6, "200m": 20}
#: Side length of the aerial patches per resolution folder (only 60 m is known).
AERIAL_SIZES: dict[str, int] = {"60m": 304}

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: split -> list file; ``val`` and ``test`` are the two halves of the archive's test list.
SPLIT_LISTS: dict[str, str] = {
  "train": "train_filenames.lst",
  "val": "test_filenames.lst",
  "test": "test_filenames.lst",
}
#: Labels JSON relative to the root; ``{resolution}`` is filled in.
LABELS_FILE = "labels/TreeSatBA_v9_{resolution}_multi_labels.json"
#: Default side CSV (``name,stand_type,age``).
SIDE_CSV = "labels/stand_type_age.csv"

GENUS_INDEX = {g: i for i, g in enumerate(GENERA)}
SPECIES_INDEX = {s: i for i, s in enumerate(SPECIES)}
L2_INDEX = {s: i for i, s in enumerate(STAND_TYPES)}
L1_INDEX = {s: i for i, s in enumerate(LEAF_TYPES)}
GENUS_L2 = np.array([L2_INDEX[GENUS_TO_L2[g]] for g in GENERA], np.int32)
GENUS_L1 = np.array([L1_INDEX[GENUS_TO_L1[g]] for g in GENERA], np.int32)
L2_L1 = np.array([L1_INDEX[L2_TO_L1[s]] for s in STAND_TYPES], np.int32)
assert np.array_equal(L2_L1[GENUS_L2], GENUS_L1), "GENUS_TO_L2 / L2_TO_L1 disagree with GENUS_TO_L1"


def hierarchy() -> dict[str, dict[str, np.ndarray]]:
  """Parent indices of the default label hierarchy L1 > L2 > L3.

  Returns:
    ``{"l2": {"parent_of_l3": int32 [15]}, "l1": {"parent_of_l2": int32 [9]}}``: entry ``g`` of
    ``parent_of_l3`` is the stand-type index of genus ``g``; entry ``s`` of ``parent_of_l2`` is
    the leaf-type index of stand type ``s``.
  """
  return {"l2": {"parent_of_l3": GENUS_L2.copy()}, "l1": {"parent_of_l2": L2_L1.copy()}}


def label_hierarchy(child: str, parent: str) -> np.ndarray | None:
  """``child -> parent`` class-index map between two hierarchy levels, by task name.

  ``label_hierarchy("l3", "l2")`` is int32 [15] (genus -> stand type), ``("l2", "l1")`` [9] and
  ``("l3", "l1")`` [15]; ``None`` when ``parent`` is not an ancestor level of ``child``. Read by
  the intrinsic analysis (``mtljax.analysis``) for the hierarchy adherence of Fig. 7.
  """
  maps = {("l3", "l2"): GENUS_L2, ("l2", "l1"): L2_L1, ("l3", "l1"): GENUS_L1}
  m = maps.get((child, parent))
  return None if m is None else m.copy()


# --------------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------------


def parse_name(name: str) -> tuple[str, int | None]:
  """Split a patch file name into its species prefix and its first integer token.

  ``"Picea_abies_3_46636_WEFL_NLF.tif"`` -> ``("picea_abies", 3)``;
  ``"Alnus_spec._5_13114_WEFL_NLF.tif"`` -> ``("alnus_spec", 5)``. The species prefix is every
  token before the first all-digit token, lower-cased and with dots removed. The integer is
  ``None`` when the name has no all-digit token.
  """
  stem = Path(name).name
  if stem.lower().endswith((".tif", ".tiff")):
    stem = stem[: stem.rfind(".")]
  tokens = stem.split("_")
  for i, tok in enumerate(tokens):
    if tok.isdigit():
      prefix = "_".join(tokens[:i])
      return prefix.lower().replace(".", ""), int(tok)
  return stem.lower().replace(".", ""), None
