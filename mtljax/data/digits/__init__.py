"""Decoy digits: scikit-learn's bundled handwritten digits (8×8, 1797 images, offline) with
DecoyMNIST-style decoys (Ross et al. 2017), the setting in which "right for the right reasons"
(RRR) was published.

Each 8×8 digit (grey levels 0..16) is placed in the centre of a ``size × size`` canvas (default
12: a 2-pixel border). With ``decoy`` on, a ``patch × patch`` swatch sits in a corner chosen at
random per image; its shade encodes the label in train and validation (``16 · (1 − y/9)``:
a perfect shortcut) and is random in test, so a model that reads the swatch instead of the
digit fails on test. The relevant region of every image (its explanation mask) is the 8×8 digit
box; the swatch lies outside it.

Layout written once by ``write_digits`` (the "synthetic" writer: it materialises the bundled
data with the decoys; ``SYNTHETIC.txt`` records the parameters)::

    <root>/<split>.npz   image uint8 [N, S, S], label int32 [N], decoy bool [N, S, S],
                         relevant bool [N, S, S], source_index int32 [N]

Example (``source[i]``)::

    {"inputs": {"image": float32 [S, S, 1]},
     "targets": {"digit": int32 []}, "mask": {"digit": float32 []},
     "meta": {"index": int32 [], **explanation annotations (mtljax.data.annotations)}}

Training examples carry the relevant-region mask as an explanation annotation for a
``mask_fraction`` of them (``mtljax.data.annotations.annotated``); validation and test carry
none (their regions are scored by ``explain_annotations``: ``digit`` = the box, owned by the task
``digit`` so that every explained class is scored against it; ``decoy`` = the swatch, owned by no
target).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtljax.data import Dataset, annotations, decoys
from mtljax.data.source import DataError, example_index
from mtljax.data.synthetic import write_once

SPLITS = ("train", "val", "test")
VERSION = 1


def _generate(tmp: Path, p: dict) -> None:
  from sklearn.datasets import load_digits  # bundled with scikit-learn: nothing is downloaded

  d = load_digits()
  images, labels = d.images.astype(np.float32), d.target.astype(np.int32)
  rng = np.random.default_rng(p["seed"])
  order = rng.permutation(len(labels))
  n_train, n_val = p["num_train"], p["num_val"]
  parts = {
    "train": order[:n_train],
    "val": order[n_train : n_train + n_val],
    "test": order[n_train + n_val :],
  }
  s, k, off = p["size"], p["patch"], (p["size"] - 8) // 2
  tmp.mkdir(parents=True, exist_ok=True)
  for split, idx in parts.items():
    n = len(idx)
    canvas = np.zeros((n, s, s), np.float32)
    canvas[:, off : off + 8, off : off + 8] = images[idx]
    relevant = np.zeros((n, s, s), bool)
    relevant[:, off : off + 8, off : off + 8] = True
    decoy = np.zeros((n, s, s), bool)
    if p["decoy"]:
      corners = rng.integers(0, 4, n)
      shades = (
        16.0 * (1.0 - labels[idx] / 9.0) if split != "test" else rng.uniform(0, 16, n)
      ).astype(np.float32)
      for i in range(n):
        y0 = 0 if corners[i] < 2 else s - k
        x0 = 0 if corners[i] % 2 == 0 else s - k
        canvas[i, y0 : y0 + k, x0 : x0 + k] = shades[i]
        decoy[i, y0 : y0 + k, x0 : x0 + k] = True
    np.savez(
      tmp / f"{split}.npz",
      image=np.round(canvas * 255.0 / 16.0).astype(np.uint8),
      label=labels[idx],
      decoy=decoy,
      relevant=relevant,
      source_index=idx.astype(np.int32),
    )


def write_digits(root, *, num_train, num_val, size, patch, decoy, seed) -> Path:
  """Write the decoy digits' npz files into ``root`` once (see the module docstring)."""
  if size < 8 + 2 * patch:
    raise ValueError(f"size={size} must leave room for the {patch}-pixel decoy: >= {8 + 2 * patch}")
  if num_train + num_val >= 1797:
    raise ValueError(f"num_train + num_val = {num_train + num_val}: the digits set has 1797")
  params = dict(
    version=VERSION, num_train=int(num_train), num_val=int(num_val), size=int(size),
    patch=int(patch), decoy=bool(decoy), seed=int(seed),
  )  # fmt: skip
  return write_once(
    Path(root), params, _generate, description="scikit-learn digits with DecoyMNIST decoys"
  )


class DigitsSource:
  """One split of the decoy digits (module docstring)."""

  def __init__(self, root, split: str, mask_fraction: float = 0.0):
    path = Path(root) / f"{split}.npz"
    if not path.is_file():
      raise DataError(f"{path}: missing (the decoy digits' {split} split)")
    with np.load(path) as z:
      self._x = z["image"].astype(np.float32)[..., None]
      self._y, self._decoy, self._relevant = z["label"], z["decoy"], z["relevant"]
    self.split = split
    self.names = [f"{split}_{i:04d}" for i in range(len(self._y))]
    fraction = float(mask_fraction) if split == "train" else 0.0
    self._annot = annotations.MaskAnnotations(
      self._relevant, annotations.annotated(len(self._y), fraction), self._y, 10
    )

  @property
  def input_fields(self):
    s = self._x.shape[1]
    return {"image": {"kind": "image", "shape": (s, s, 1), "dtype": "float32", "channels": ("L",)}}

  @property
  def target_fields(self):
    return {"digit": {"kind": "classification", "shape": (), "dtype": "int32", "num_classes": 10}}

  def label_arrays(self):
    return {
      "targets": {"digit": self._y.copy()},
      "mask": {"digit": np.ones(len(self._y), np.float32)},
    }

  def __len__(self) -> int:
    return len(self._y)

  def __getitem__(self, index):
    i = example_index(index, len(self))
    return {
      "inputs": {"image": self._x[i]},
      "targets": {"digit": np.asarray(self._y[i], np.int32)},
      "mask": {"digit": np.asarray(1.0, np.float32)},
      "meta": {"index": np.asarray(i, np.int32), **self._annot.meta(i)},
    }

  def explain_annotations(self, index):
    i = example_index(index, len(self))
    return {"masks": {"digit": self._relevant[i], "decoy": self._decoy[i]}, "keypoints": {}}

  def annotation_owners(self):
    """The digit box belongs to the task ``digit`` whatever the class (the evidence for any digit
    lies there); the decoy swatch belongs to no target."""
    return {"digit": (annotations.Owner("digit"),)}

  def explanation_regions(self):
    """``(relevant [N, S, S], decoy [N, S, S])`` bool, for the comparison's metrics."""
    return self._relevant, self._decoy

  def decoy_swapped(self):
    """This split with each swatch repainted in another example's shade (mtljax/data/decoys.py)."""
    return decoys.DecoySwapped(self, "image", self._decoy)


DATASET = Dataset(
  "digits",
  DigitsSource,
  write_digits,
  source_keys=("mask_fraction",),
  synthetic_keys=("num_train", "num_val", "seed"),
  synthetic_data_keys=("size", "patch", "decoy"),
)
