"""Reader for the TreeSatAI Benchmark Archive (Ahlswede et al., ESSD 2023).

On-disk layout (the real archive; ``mtljax.data.treesat.synthetic`` writes the same)::

    ROOT/
      train_filenames.lst, test_filenames.lst     one <NAME>.tif per line
      labels/TreeSatBA_v9_60m_multi_labels.json   {"<NAME>.tif": [["Picea", 0.79], ["Fagus", 0.21]], ...}
      labels/stand_type_age.csv                   optional side CSV: name,stand_type,age
      aerial/60m/<NAME>.tif   304x304 uint8, 4 bands IR, G, B, R
      s1/60m/<NAME>.tif       6x6 float32 dB, 3 bands VV, VH, VV/VH, nodata -9999 (NaN also occurs)
      s2/60m/<NAME>.tif       6x6 uint16 reflectance*10000, 12 bands (archive order, see S2_BANDS)

One example (all numpy; see ``TreeSatAISource.__getitem__``)::

    {"inputs":  {"aerial": float32 [A, A, 4], "s1": float32 [S, S, 3], "s2": float32 [S, S, 12],
                 "age": float32 [1]},
     "targets": {"l3": int32 [], "l2": int32 [], "l1": int32 [], "age": float32 [],
                 "species": int32 [], "l3_multi": float32 [15], "s2": float32 [12]},
     "mask":    {same keys as targets: float32 [], 1.0 = label present},
     "meta":    {"index": int32 []}}

with A = 304 and S = 6 at 60 m (S = 20 at 200 m). The target ``s2`` (the patch's mean spectrum,
per band, in the input's units: reflectance*10000) is there only when ``target_modalities``
asks for it: S2 as an auxiliary *target*, whose files a model trained that way never needs at
prediction time.

Vocabularies, the label hierarchy and the layout constants: ``mtljax.data.treesat.archive``.

Unconfirmed facts about the real archive are configurable rather than hard-coded:

* ``l2_source``: where the stand type comes from. ``"genus"`` (default) derives it from the genus via
  ``GENUS_TO_L2``; ``"csv"`` reads the ``stand_type`` column of a side CSV.
* ``age_source``: ``"name"`` (default) takes the first integer token after the species prefix of the
  file name (``Picea_abies_3_46636_WEFL_NLF.tif`` -> 3). The archive's naming *seems* to carry an age
  class there, but this is unconfirmed. ``"csv"`` reads the ``age`` column of the side CSV.
* ``labels_file``: the labels JSON, ``{resolution}`` is substituted (the 200 m name is a guess).

New data (``inputs_only=True``, what predict mode opens): a root without split lists is every patch
found in all the opened modality folders, and a root without the labels JSON has no labels
(every target 0 with mask 0). ``tiff.read_input`` reads one patch file as the source reads its own (the
registry entry's hook for a table of new inputs, ``mtljax.data.new_inputs``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data.source import DataError, check_option, example_index, split_test_list
from mtljax.data.treesat.archive import (
  GENERA,
  LABELS_FILE,
  LEAF_TYPES,
  MODALITIES,
  SIDE_CSV,
  SPECIES,
  SPLIT_LISTS,
  SPLITS,
  STAND_TYPES,
)
from mtljax.data.treesat.labels import (
  patch_names,
  read_labels_json,
  read_list,
  read_side_csv,
  targets_and_masks,
)
from mtljax.data.treesat.tiff import band_means, check_image, patch_side, read_input
from mtljax.data.values import DEFAULT_MAX_IMAGE_SIDE

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------------

#: Target (task) names every example carries.
TARGETS: tuple[str, ...] = ("l3", "l2", "l1", "age", "species", "l3_multi")
#: Image modalities that can also be targets (``target_modalities``): the patch's mean spectrum.
TARGET_MODALITIES: tuple[str, ...] = ("s2",)


class TreeSatAISource:
  """Random-access TreeSatAI split (usable by ``grain.MapDataset.source``).

  Construction reads only the list files, the labels JSON and (if used) the side CSV, and checks
  that every requested modality folder exists. Images are read lazily in ``__getitem__``. The
  object is picklable (it holds paths and small numpy arrays only).

  Args:
    root: archive root.
    split: ``"train"`` (``train_filenames.lst``), or ``"val"`` / ``"test"``: the two halves of
      ``test_filenames.lst`` (see ``split_test_list``).
    resolution: resolution folder, ``"60m"`` or ``"200m"``.
    l2_source: ``"genus"`` (stand type derived from the genus by ``GENUS_TO_L2``) or ``"csv"``
      (``stand_type`` column of ``side_csv``; a missing row or empty cell gives mask 0).
    age_source: ``"name"`` (first integer token of the file name after the species prefix;
      unconfirmed that this is the age class) or ``"csv"`` (``age`` column of ``side_csv``;
      a missing row or empty cell gives mask 0).
    side_csv: CSV with header ``name,stand_type,age`` (relative to root, or absolute).
    labels_file: labels JSON (relative to root, or absolute); ``{resolution}`` is filled in.
    multi_threshold: a genus is positive in ``l3_multi`` if its share is > this. The dominant
      genus is always positive, so no example has an all-zero multi-hot vector.
    val_fraction: fraction of the test list that goes to ``val``.
    split_seed: seed of the val/test split.
    modalities: image modalities to read (``"aerial"``, ``"s1"``, ``"s2"``); others are never opened.
    target_modalities: image modalities that are also targets (``"s2"``: its per-band mean over
      the patch, float32 [12], mask 1 when finite); their folders are opened too. A modality in
      both ``modalities`` and here is a field of role "both" (like ``age``).
    aerial_size: override of the aerial side length (default from ``AERIAL_SIZES``).
    s_size: override of the Sentinel side length (default from ``S_SIZES``).
    aerial_resize: read aerial files of any square size, area-averaged to ``aerial_size``.
    max_image_side: with ``aerial_resize``, the largest side read (from the header, before
      decoding; ``config.data.max_image_side``).
    inputs_only: opened for the inputs alone (new data): without its split list the split is
      ``"all"``, every patch in all the opened folders, sorted (one warning says so); without the labels
      JSON (or the side CSV) the labels are absent (mask 0) instead of an error.

  Raises:
    DataError: the archive does not look like TreeSatAI (see messages).
  """

  def __init__(
    self,
    root: str | os.PathLike,
    split: str,
    *,
    resolution: str = "60m",
    l2_source: str = "genus",
    age_source: str = "name",
    side_csv: str | os.PathLike = SIDE_CSV,
    labels_file: str | os.PathLike = LABELS_FILE,
    multi_threshold: float = 0.07,
    val_fraction: float = 0.5,
    split_seed: int = 0,
    modalities: Sequence[str] = ("aerial", "s1", "s2"),
    target_modalities: Sequence[str] = (),
    aerial_size: int | None = None,
    s_size: int | None = None,
    aerial_resize: bool = False,
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
    inputs_only: bool = False,
  ):
    self.root = Path(root).expanduser()
    check_option("split", split, SPLITS)
    check_option("l2_source", l2_source, ("genus", "csv"))
    check_option("age_source", age_source, ("name", "csv"))
    unknown = [m for m in modalities if m not in MODALITIES]
    unknown += [m for m in target_modalities if m not in TARGET_MODALITIES]
    if unknown:
      known = f"{tuple(MODALITIES)}, as targets {TARGET_MODALITIES}"
      raise ValueError(f"unknown modalities {unknown}; known: {known}")
    self.split = split
    self.resolution = resolution
    self.l2_source = l2_source
    self.age_source = age_source
    self.multi_threshold = float(multi_threshold)
    self.modalities = tuple(dict.fromkeys(modalities))
    self.target_modalities = tuple(dict.fromkeys(target_modalities))
    # Every folder this split reads: the inputs', then the targets' not already among them.
    self._folders = tuple(dict.fromkeys(self.modalities + self.target_modalities))
    #: target modality -> (band means [N, C], mask [N]), read on the first `label_arrays`.
    self._spectra: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    self.aerial_resize, self.max_image_side = bool(aerial_resize), int(max_image_side)

    if not self.root.is_dir():
      raise DataError(f"TreeSatAI root {self.root} does not exist or is not a directory")

    # Image geometry.
    self.s_size = patch_side("s1", resolution, s_size=s_size)
    if self.s_size is None and ({"s1", "s2"} & set(self._folders)):
      raise DataError(f"unknown Sentinel patch size for resolution {resolution!r}: pass s_size")
    self.aerial_size = patch_side("aerial", resolution, aerial_size)
    if self.aerial_size is None and "aerial" in self.modalities:
      raise DataError(f"unknown aerial patch size for resolution {resolution!r}: pass aerial_size")
    for m in self._folders:
      folder = self.root / m / resolution
      if not folder.is_dir():
        raise DataError(f"image folder {folder} for modality {m!r} does not exist")

    # Names of this split.
    list_path = self.root / SPLIT_LISTS[split]
    folders = [self.root / m / resolution for m in self._folders]
    if list_path.is_file():
      names = read_list(self.root, list_path, folders)
      if split != "train":
        val_pos, test_pos = split_test_list(names, val_fraction, split_seed)
        names = [names[i] for i in (val_pos if split == "val" else test_pos)]
    elif inputs_only:  # new patches: every one present in all the folders read, split "all"
      names, self.split = patch_names(folders), "all"
      where = ", ".join(str(f.relative_to(self.root)) for f in folders)
      log.warning("TreeSatAI root %s has no split lists: all %d patches in %s are read (no "
                  "split)", self.root, len(names), where)  # fmt: skip
    else:
      raise DataError(f"split list {list_path} does not exist")
    self.names: list[str] = names
    self._load_labels(labels_file, side_csv, inputs_only)

  # ---------------------------------------------------------------------------------- labels
  def _resolve(self, p: str | os.PathLike) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else self.root / p

  def _load_labels(self, labels_file, side_csv, inputs_only: bool) -> None:
    """``self._targets`` / ``self._masks`` ({task: [N, ...]}) from the labels JSON, the names and
    the side CSV (with ``l2_source``/``age_source="csv"``); for ``inputs_only`` a missing file
    is no labels (mask 0) rather than an error."""
    path = self._labels_path = self._resolve(str(labels_file).format(resolution=self.resolution))
    n, labelled = len(self.names), path.is_file() or not inputs_only
    l3 = multi = None
    #: float32 [N, 15]: genus area shares of every example, as in the labels JSON (0: no labels).
    self.shares = np.zeros((n, len(GENERA)), np.float32)
    if labelled:
      l3, multi, self.shares = read_labels_json(path, self.names, self.multi_threshold)
    side, csv_l2, csv_age = self._resolve(side_csv), None, None
    if labelled and "csv" in (self.l2_source, self.age_source):
      if side.is_file() or not inputs_only:
        l2, l2_mask, age, age_mask, absent = read_side_csv(side, self.names)
      else:  # new data without its side CSV: those labels are absent (mask 0)
        (l2, l2_mask, age, age_mask), absent = (np.zeros(n, np.float32) for _ in range(4)), 0
      if absent:
        log.warning("side CSV %s has no row for %d of %d %s names (masked)", side, absent, n,
                    self.split)  # fmt: skip
      csv_l2 = (l2, l2_mask) if self.l2_source == "csv" else None
      csv_age = (age, age_mask) if self.age_source == "csv" else None
    self._targets, self._masks, unknown = targets_and_masks(self.names, l3, multi, csv_l2, csv_age)
    if unknown:
      log.warning("TreeSatAI %s: unknown species prefixes (masked): %s", self.split, unknown)

  # -------------------------------------------------------------------------------- contract
  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    """Inputs an example carries: name -> {kind, shape, dtype, channels}."""
    out: dict[str, dict[str, Any]] = {}
    for m in self.modalities:
      size = self.aerial_size if m == "aerial" else self.s_size
      bands = MODALITIES[m]["bands"]
      out[m] = {
        "kind": MODALITIES[m]["kind"],
        "shape": (size, size, len(bands)),
        "dtype": "float32",
        "channels": bands,
      }
    out["age"] = {"kind": "tabular", "shape": (1,), "dtype": "float32", "channels": ("age",)}
    return out

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    """Targets an example carries: name -> {kind, shape, dtype, num_classes, class_names}."""

    def cls(names):
      return {"kind": "classification", "shape": (), "dtype": "int32",
                    "num_classes": len(names), "class_names": tuple(names)}  # fmt: skip

    return {
            "l3": cls(GENERA),
            "l2": cls(STAND_TYPES),
            "l1": cls(LEAF_TYPES),
            "age": {"kind": "regression", "shape": (), "dtype": "float32", "num_outputs": 1},
            "species": cls(SPECIES),
            "l3_multi": {
                "kind": "multilabel", "shape": (len(GENERA),), "dtype": "float32",
                "num_classes": len(GENERA), "class_names": GENERA, "threshold": self.multi_threshold,
            },
            **{m: {"kind": "regression", "shape": (len(MODALITIES[m]["bands"]),),
                   "dtype": "float32", "num_outputs": len(MODALITIES[m]["bands"]),
                   "channels": MODALITIES[m]["bands"], "units": "reflectance*10000"}
               for m in self.target_modalities},
        }  # fmt: skip

  @property
  def fields(self) -> dict[str, dict[str, Any]]:
    """Every field by name, each with ``role`` in {"input", "target", "both"}.

    A field that is both (``age``) is described as the target (``kind="regression"``, shape
    ``()``) and carries its input description under ``"input"`` (``kind="tabular"``, shape
    ``(1,)``). ``input_fields`` / ``target_fields`` give the per-role views.
    """
    inputs, targets = self.input_fields, self.target_fields
    out: dict[str, dict[str, Any]] = {}
    for k, v in inputs.items():
      out[k] = {**v, "role": "input"}
    for k, v in targets.items():
      if k in out:
        out[k] = {**v, "role": "both", "input": inputs[k]}
      else:
        out[k] = {**v, "role": "target"}
    return out

  def label_arrays(self) -> dict[str, dict[str, np.ndarray]]:
    """All labels of the split without reading images (but the target modalities' files: their
    band means are read once, on the first call).

    Returns:
      ``{"targets": {task: [N, ...]}, "mask": {task: float32 [N]}}`` (copies).
    """
    out = {
      "targets": {k: v.copy() for k, v in self._targets.items()},
      "mask": {k: v.copy() for k, v in self._masks.items()},
    }
    for m in self.target_modalities:
      if m not in self._spectra:
        pairs = [band_means(self.read_modality(m, i)) for i in range(len(self.names))]
        shape = (0, len(MODALITIES[m]["bands"]))
        means = np.stack([p[0] for p in pairs]) if pairs else np.zeros(shape, np.float32)
        self._spectra[m] = (means, np.asarray([p[1] for p in pairs], np.float32))
      out["targets"][m], out["mask"][m] = (a.copy() for a in self._spectra[m])
    return out

  def image_path(self, modality: str, index_or_name: int | str) -> Path:
    """Path of one image file."""
    name = (
      self.names[index_or_name] if isinstance(index_or_name, (int, np.integer)) else index_or_name
    )
    return self.root / modality / self.resolution / name

  def read_modality(self, modality: str, index: int) -> np.ndarray:
    """One image as float32 [H, W, C] (``read_input``); S1 nodata (-9999, NaN, inf) NaN."""
    return read_input(modality, self.image_path(modality, index), resolution=self.resolution,
                      aerial_size=self.aerial_size, s_size=self.s_size,
                      aerial_resize=self.aerial_resize, max_image_side=self.max_image_side)  # fmt: skip

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, index: int) -> dict[str, dict[str, np.ndarray]]:
    """One example, see the module docstring for keys, shapes and dtypes."""
    i = example_index(index, len(self.names))
    inputs = {m: self.read_modality(m, i) for m in self.modalities}
    age_ok = self._masks["age"][i] > 0
    inputs["age"] = np.array([self._targets["age"][i] if age_ok else np.nan], np.float32)
    targets = {k: np.array(v[i]) for k, v in self._targets.items()}
    mask = {k: np.asarray(v[i], np.float32) for k, v in self._masks.items()}
    for m in self.target_modalities:  # the image read for the input, if it is one, else its own
      image = inputs[m] if m in inputs else self.read_modality(m, i)
      targets[m], mask[m] = (np.asarray(a) for a in band_means(image))
    return {"inputs": inputs, "targets": targets, "mask": mask,
            "meta": {"index": np.asarray(i, np.int32)}}  # fmt: skip

  def check_files(self, max_files: int | None = None, *, progress=True, full=False) -> int:
    """Check every image of the split (or of the first ``max_files`` names) from its TIFF header
    (band count, size, dtype, pixel data inside the file), or decoded (``full``); returns the
    count. Raises DataError for the first file that is missing or malformed."""
    n = len(self.names) if max_files is None else min(max_files, len(self.names))
    it = range(n)
    if progress and n > 200:
      from tqdm.auto import tqdm

      it = tqdm(it, desc=f"checking TreeSatAI {self.split} files", unit="patch", mininterval=1.0)
    for i in it:
      for m in self._folders:
        if full:
          self.read_modality(m, i)
          continue
        size = self.s_size if m != "aerial" else None if self.aerial_resize else self.aerial_size
        bands, dtype = len(MODALITIES[m]["bands"]), MODALITIES[m]["dtype"]
        path, bound = self.image_path(m, i), self.max_image_side
        check_image(path, bands=bands, size=size, dtype=dtype, max_side=bound)
    return n

  def __repr__(self) -> str:
    return (
      f"TreeSatAISource(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
      f"resolution={self.resolution!r}, modalities={self.modalities}, "
      f"target_modalities={self.target_modalities}, l2_source={self.l2_source!r}, "
      f"age_source={self.age_source!r})"
    )
