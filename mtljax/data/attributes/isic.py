"""ISIC 2018 Task 2 (lesion attribute detection) reader, the real archive layout::

    ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_<7 digits>.jpg
    ISIC2018_Task2_Training_GroundTruth_v3/ISIC_<7 digits>_attribute_<attr>.png
    ISIC2018_Task2_{Validation,Test}_GroundTruth/ISIC_<7 digits>_attribute_<attr>.png

(each folder may also hold ATTRIBUTION.txt and LICENSE.txt). Splits are the archive's: training
(2594 images), validation (100) and test (1000). Following the ensembles paper, an attribute is
present where its mask has a pixel above 128 (the official scorer's rule); the masks themselves
are used only for evaluation (``explain_annotations``), where each present attribute's keypoint is
the centre of mass of its mask. A mask whose size differs from its image is an error.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mtljax.data.attributes.common import AttributeImageSource, image_size_of, read_mask
from mtljax.data.source import DataError

__all__ = ["ISIC2018Source", "ATTRIBUTES", "SPLITS", "input_dir", "truth_dir"]

#: The five Task 2 attributes, in the archive's (alphabetical) order.
ATTRIBUTES: tuple[str, ...] = (
  "globules",
  "milia_like_cyst",
  "negative_network",
  "pigment_network",
  "streaks",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
_FOLDER = {"train": "Training", "val": "Validation", "test": "Test"}


def input_dir(split: str) -> str:
  return f"ISIC2018_Task1-2_{_FOLDER[split]}_Input"


def truth_dir(split: str) -> str:
  return f"ISIC2018_Task2_{_FOLDER[split]}_GroundTruth" + ("_v3" if split == "train" else "")


@functools.lru_cache(maxsize=8)
def _presence(
  images: tuple[str, ...], masks_dir: str, attributes: tuple[str, ...], mtime: float
) -> np.ndarray:
  """Attribute presence ``[N, A]`` from the masks (each read once per process)."""
  del mtime
  out = np.zeros((len(images), len(attributes)), np.float32)
  it = enumerate(images)
  if len(images) > 200:
    from tqdm.auto import tqdm

    it = tqdm(
      it, total=len(images), desc=f"ISIC 2018 labels from {Path(masks_dir).name}", unit="image"
    )
  for i, img in it:
    image_hw = image_size_of(img)
    stem = Path(img).stem
    for a, attr in enumerate(attributes):
      m = read_mask(
        Path(masks_dir) / f"{stem}_attribute_{attr}.png", None, expect_hw=image_hw, image_path=img
      )
      out[i, a] = float(m.any())
  return out


class ISIC2018Source(AttributeImageSource):
  """Random-access ISIC 2018 Task 2 split, see the module docstring.

  Args:
    root: the folder holding the ``ISIC2018_Task*`` folders.
    split: ``"train"``, ``"val"`` or ``"test"`` (the archive's Training/Validation/Test).
    image_size: images and masks are resized to this square size.
    attributes: names of the attributes to use (default: all five).
    val_fraction, split_seed: unused (the archive has its own validation split); accepted so that
      every attribute dataset takes the same arguments.
  """

  dataset = "ISIC 2018 Task 2"

  def __init__(
    self,
    root: str | os.PathLike,
    split: str,
    *,
    image_size: int = 224,
    attributes: Sequence[str] = (),
    val_fraction: float = 0.0,
    split_seed: int = 0,
  ):
    del val_fraction, split_seed
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    self.root, self.split, self.image_size = Path(root).expanduser(), split, int(image_size)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
      raise DataError(
        f"config.data.attributes: {unknown} are not ISIC 2018 attributes {ATTRIBUTES}"
      )
    self.attribute_names = tuple(attributes) or ATTRIBUTES
    images = self.root / input_dir(split)
    masks = self.root / truth_dir(split)
    if split == "train" and not masks.is_dir() and (self.root / truth_dir(split)[:-3]).is_dir():
      masks = self.root / truth_dir(split)[:-3]  # the pre-v3 release
    for d, what in ((images, "input images"), (masks, "ground-truth attribute masks")):
      if not d.is_dir():
        raise DataError(
          f"{d}: missing folder ({what} of the {split} split); expected the "
          "ISIC 2018 Task 1-2 input and Task 2 ground-truth folders under "
          f"{self.root}"
        )
    self._paths = sorted(images.glob("ISIC_*.jpg"))
    if not self._paths:
      raise DataError(f"{images}: no ISIC_<id>.jpg images")
    self.names = [p.stem for p in self._paths]
    self.masks_dir = masks
    self._attributes = _presence(
      tuple(str(p) for p in self._paths), str(masks), self.attribute_names, os.path.getmtime(masks)
    )
    self._attribute_mask = np.ones(len(self._paths), np.float32)

  def mask_path(self, index: int, attribute: str) -> Path:
    return self.masks_dir / f"{self.names[int(index)]}_attribute_{attribute}.png"

  def explain_annotations(self, index: int) -> dict[str, dict[str, np.ndarray | None]]:
    i = int(index)
    image_hw = image_size_of(self._paths[i])
    s = self.image_size
    yy, xx = np.mgrid[0:s, 0:s]
    masks, keypoints = {}, {}
    for a, name in enumerate(self.attribute_names):
      if self._attributes[i, a] <= 0:
        continue
      m = read_mask(self.mask_path(i, name), s, expect_hw=image_hw, image_path=self._paths[i])
      masks[name] = m
      if m.any():
        keypoints[name] = np.array([yy[m].mean(), xx[m].mean()])
    return {"masks": masks, "keypoints": keypoints}
