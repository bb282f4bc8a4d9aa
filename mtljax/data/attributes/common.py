"""Attribute image datasets: what the CUB-200-2011 and ISIC 2018 Task 2 readers share.

An example is one RGB image with binary attributes (a multilabel target) and, where the dataset
has one, a class label. Evaluation-only annotations (attribute masks and keypoints) are never
part of an example; the explain mode asks for them with ``source.explain_annotations(index)``.

Example (``source[i]``)::

    {"inputs": {"image": float32 [S, S, 3] in 0..255},
     "targets": {"attributes": float32 [A] (0/1), "class": int32 [] (CUB only)},
     "mask": {task: float32 [] (1 = labelled)},
     "meta": {"index": int32 []}}

Images are resized to ``S × S`` (``image_size``) without keeping the aspect ratio, as is usual for
these datasets; masks and keypoints are mapped the same way, so they stay aligned with the image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtljax.data.annotations import Owner
from mtljax.data.source import DataError, example_index, rgb_image_field

__all__ = [
  "AttributeImageSource",
  "read_rgb",
  "read_mask",
  "image_size_of",
  "scale_points",
  "disc_mask",
]

#: Mask pixels above this value are inside (the ISIC 2018 scorer's rule, > 128 of 255).
MASK_THRESHOLD = 128


def _open(path: Path, what: str):
  from PIL import Image, UnidentifiedImageError  # local import: keeps `import mtljax.data` light

  if not path.is_file():
    raise DataError(f"{path}: {what} file missing")
  try:
    return Image.open(path)
  except (UnidentifiedImageError, OSError) as e:
    raise DataError(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from e


def image_size_of(path: str | os.PathLike) -> tuple[int, int]:
  """``(height, width)`` of an image file from its header (the pixels are not decoded)."""
  with _open(Path(path), "image") as im:
    return im.size[1], im.size[0]


def read_rgb(path: str | os.PathLike, size: int) -> np.ndarray:
  """An image file as float32 ``[size, size, 3]`` in 0..255 (greyscale and RGBA become RGB)."""
  from PIL import Image

  path = Path(path)
  try:
    with _open(path, "image") as im:
      im = im.convert("RGB").resize((size, size), Image.BILINEAR)
      return np.asarray(im, np.float32)
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 - truncated files fail at decode time
    raise DataError(f"{path}: cannot decode the image ({type(e).__name__}: {e})") from e


def read_mask(
  path: str | os.PathLike,
  size: int | None,
  *,
  expect_hw: tuple[int, int] | None = None,
  image_path: Any = None,
) -> np.ndarray:
  """A single-channel mask file as bool ``[size, size]`` (pixel > 128 = inside).

  ``expect_hw``: the ``(height, width)`` of the mask's image; a mask of another size is a
  ``DataError`` naming both files. ``size=None`` keeps the file's resolution.
  """
  from PIL import Image

  path = Path(path)
  with _open(path, "mask") as im:
    hw = (im.size[1], im.size[0])
    if expect_hw is not None and hw != tuple(expect_hw):
      raise DataError(
        f"{path}: mask is {hw[0]}×{hw[1]} (height×width) but its image "
        f"{image_path or ''} is {expect_hw[0]}×{expect_hw[1]}; a mask must "
        "have its image's size"
      )
    try:
      arr = np.asarray(im.convert("L"), np.uint8)
    except Exception as e:  # noqa: BLE001
      raise DataError(f"{path}: cannot decode the mask ({type(e).__name__}: {e})") from e
  inside = arr > MASK_THRESHOLD
  if size is None or inside.shape == (size, size):
    return inside
  # Area-weighted resize of the 0/255 mask, then majority: thin structures survive downsampling
  # about as well as they would in the image.
  small = Image.fromarray(inside.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)
  return np.asarray(small) >= 128


def scale_points(points_yx: np.ndarray, image_hw: tuple[int, int], size: int) -> np.ndarray:
  """Pixel coordinates ``(y, x)`` (pixel centres at integers) in an image of ``image_hw`` mapped
  to the ``size × size`` resized image."""
  points = np.asarray(points_yx, np.float64)
  scale = size / np.asarray(image_hw, np.float64)
  return (points + 0.5) * scale - 0.5


def disc_mask(size: int, centres_yx: Sequence[Sequence[float]], radius: float) -> np.ndarray:
  """bool ``[size, size]``: the union of discs of ``radius`` pixels around the centres."""
  yy, xx = np.mgrid[0:size, 0:size]
  out = np.zeros((size, size), bool)
  for cy, cx in centres_yx:
    out |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
  return out


class AttributeImageSource:
  """Random-access attribute dataset split (usable by ``grain.MapDataset.source``).

  Subclasses fill, in ``__init__``: ``root``, ``split``, ``image_size``, ``names`` (one id per
  example, shown in saved predictions), ``_paths`` (image files), ``attribute_names``,
  ``_attributes`` (float32 ``[N, A]``), ``_attribute_mask`` (float32 ``[N]``, 1 = labelled) and,
  for datasets with classes, ``class_names`` and ``_classes`` (int32 ``[N]``); and implement
  ``explain_annotations``.
  """

  dataset: str = "attributes"
  root: Path
  split: str
  image_size: int
  names: list[str]
  _paths: list[Path]
  attribute_names: tuple[str, ...]
  _attributes: np.ndarray
  _attribute_mask: np.ndarray
  class_names: tuple[str, ...] | None = None
  _classes: np.ndarray | None = None

  # -------------------------------------------------------------------------------- contract
  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    """Inputs an example carries: name -> {kind, shape, dtype, channels}."""
    return {"image": rgb_image_field(self.image_size)}

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    """Targets an example carries: name -> {kind, shape, dtype, num_classes, class_names}."""
    a = len(self.attribute_names)
    out = {
      "attributes": {
        "kind": "multilabel",
        "shape": (a,),
        "dtype": "float32",
        "num_classes": a,
        "class_names": tuple(self.attribute_names),
        "threshold": 0.5,
      }
    }
    if self.class_names is not None:
      out["class"] = {
        "kind": "classification",
        "shape": (),
        "dtype": "int32",
        "num_classes": len(self.class_names),
        "class_names": tuple(self.class_names),
      }
    return out

  @property
  def fields(self) -> dict[str, dict[str, Any]]:
    """Every field by name with its ``role`` ("input" or "target")."""
    out = {k: {**v, "role": "input"} for k, v in self.input_fields.items()}
    out.update({k: {**v, "role": "target"} for k, v in self.target_fields.items()})
    return out

  def _target_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    targets = {"attributes": self._attributes}
    masks = {"attributes": self._attribute_mask}
    if self._classes is not None:
      targets["class"] = self._classes
      masks["class"] = np.ones(len(self._classes), np.float32)
    return targets, masks

  def label_arrays(self) -> dict[str, dict[str, np.ndarray]]:
    """All labels of the split without reading images: ``{"targets": {task: [N, ...]},
    "mask": {task: float32 [N]}}`` (copies)."""
    targets, masks = self._target_arrays()
    return {
      "targets": {k: v.copy() for k, v in targets.items()},
      "mask": {k: v.copy() for k, v in masks.items()},
    }

  def image_path(self, index: int) -> Path:
    return self._paths[int(index)]

  def read_image(self, index: int) -> np.ndarray:
    """One image as float32 ``[S, S, 3]`` in 0..255."""
    return read_rgb(self._paths[int(index)], self.image_size)

  def __len__(self) -> int:
    return len(self._paths)

  def __getitem__(self, index: int) -> dict[str, dict[str, np.ndarray]]:
    i = example_index(index, len(self._paths))
    targets, masks = self._target_arrays()
    return {
      "inputs": {"image": self.read_image(i)},
      "targets": {k: np.array(v[i]) for k, v in targets.items()},
      "mask": {k: np.asarray(v[i], np.float32) for k, v in masks.items()},
      "meta": {"index": np.asarray(i, np.int32)},
    }

  def explain_annotations(self, index: int) -> dict[str, dict[str, np.ndarray | None]]:
    """Evaluation-only annotations of example ``index`` at ``image_size``: ``{"masks": {attribute
    name: bool [S, S]}, "keypoints": {attribute name: float [2] (y, x)}}``; an attribute with no
    annotation is left out."""
    raise NotImplementedError

  def annotation_owners(self) -> dict[str, tuple[Owner, ...]]:
    """An attribute's mask and keypoint belong to that attribute of the task ``attributes``."""
    return {name: (Owner("attributes", a),) for a, name in enumerate(self.attribute_names)}

  def check_files(
    self, max_files: int | None = None, *, progress: bool = True, full: bool = False
  ) -> int:
    """Check every image of the split (or the first ``max_files``): its header (exists, a
    readable image of non-zero size), or decoded (``full``); returns the count. (ISIC's masks
    are read when the source is built.)

    Raises:
      DataError: for the first file that is missing or unreadable.
    """
    n = len(self) if max_files is None else min(max_files, len(self))
    it = range(n)
    if progress and n > 200:
      from tqdm.auto import tqdm

      it = tqdm(
        it, desc=f"checking {self.dataset} {self.split} files", unit="image", mininterval=1.0
      )
    for i in it:
      if full:
        self.read_image(i)
        continue
      h, w = image_size_of(self._paths[i])
      if h < 1 or w < 1:
        raise DataError(f"{self._paths[i]}: image of size {h}×{w}; expected a non-empty image")
    return n

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
      f"attributes={len(self.attribute_names)}, image_size={self.image_size})"
    )
