"""The planted CUB data with a shortcut, and explanation annotations for training.

``write_shortcut_cub`` writes the synthetic CUB archive (``synthetic_cub``) and then paints a
decoy square in a random corner of every image whose colour encodes the class in the training
half (train and validation: a perfect shortcut) and is a random class's colour in the test half.
Beside the archive it writes:

    CUB_200_2011/shortcut_masks/<image path without .jpg>.png   the decoy square (scoring only)
    text_c10/<class dir>/<image file stem>.txt                   a textual rationale per image,
                                                                 generated from the planted
                                                                 attributes: "red bill, blue wing"

``ShortcutCUBSource`` (the CUB reader plus annotations) puts into every training example's
``meta`` (``mtljax.data.annotations``): the relevant region for ``mask_fraction`` of the
examples — ``mask_region="attributes"``: the union of the image's present attributes' masks
(``attribute_masks/``); ``"box"``: the bird's bounding box (``bounding_boxes.txt``, what real
CUB gives for every image); ``"all_but_decoy"``: everything but the decoy square (the annotator
marks the shortcut as irrelevant, Ross et al.'s annotation A) — and a rationale
(attributes named) for ``rationale_fraction`` of them, with its part regions (discs of the
reader's part radius around the keypoints, ``parts/part_locs.txt``, of the parts the named
attributes describe: what real CUB gives for every image). Rationales come from ``text_c10/`` where
that folder exists (one line of comma-separated attribute phrases per file, each phrase an
attribute of the vocabulary: ``"<value> <part>"``, from ``has_<part>_<property>::<value>``), and
otherwise from the archive's own attribute labels (``image_attribute_labels.txt``: what real CUB
gives). Free-text captions (Reed et al.'s CUB captions) are not parsed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtljax.data import Dataset, annotations, decoys
from mtljax.data.annotations import phrase
from mtljax.data.attributes import synthetic as draw
from mtljax.data.attributes import synthetic_cub
from mtljax.data.attributes.common import disc_mask, image_size_of, read_mask
from mtljax.data.attributes.cub import CUB200Source
from mtljax.data.source import DataError
from mtljax.data.synthetic import write_once

SHORTCUT_DIR, CAPTIONS_DIR = "shortcut_masks", "text_c10"
#: What a training mask marks as relevant (``ShortcutCUBSource(mask_region=...)``).
MASK_REGIONS = ("attributes", "box", "all_but_decoy")
VERSION = 2

#: One decoy colour per class (distinct from the attributes' colours).
_PALETTE = np.array(
  [(255, 0, 255), (0, 255, 255), (128, 0, 0), (0, 128, 128), (128, 128, 255), (255, 128, 0),
   (0, 0, 128), (255, 255, 255), (0, 0, 0), (128, 255, 128), (64, 64, 64), (192, 64, 128)],
  np.float32,
)  # fmt: skip


def _generate(tmp: Path, p: dict) -> None:
  from PIL import Image

  cub = {k: p[k] for k in ("num_train", "num_test", "seed", "image_size", "num_classes", "flip")}
  synthetic_cub._generate_cub(tmp, {**synthetic_cub.CUB_SYNTHETIC.defaults, **cub})
  base = tmp / "CUB_200_2011"
  rng = np.random.default_rng(p["seed"] + 1)
  rows = lambda name: [ln.split() for ln in (base / name).read_text().splitlines() if ln]  # noqa: E731
  paths = {int(r[0]): r[1] for r in rows("images.txt")}
  labels = {int(r[0]): int(r[1]) - 1 for r in rows("image_class_labels.txt")}
  train = {int(r[0]): int(r[1]) for r in rows("train_test_split.txt")}
  names = {aid: name for aid, name, *_ in synthetic_cub.CUB_PLANTED}
  present: dict[int, list[str]] = {}
  for r in rows("attributes/image_attribute_labels.txt"):
    if int(r[2]):
      present.setdefault(int(r[0]), []).append(phrase(names[int(r[1])]))
  for image_id, rel in paths.items():
    path = base / "images" / rel
    img = np.asarray(Image.open(path).convert("RGB"), np.float32)
    h, w = img.shape[:2]
    k = int(round(p["decoy_size"] * min(h, w)))
    c = labels[image_id] if train[image_id] else int(rng.integers(p["num_classes"]))
    corner = int(rng.integers(4))
    y0, x0 = (0 if corner < 2 else h - k), (0 if corner % 2 == 0 else w - k)
    if k:
      img[y0 : y0 + k, x0 : x0 + k] = _PALETTE[c % len(_PALETTE)]
      draw.save_jpeg(path, img, rng)
    m = np.zeros((h, w), bool)
    m[y0 : y0 + k, x0 : x0 + k] = True
    (base / SHORTCUT_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
    draw.save_mask((base / SHORTCUT_DIR / rel).with_suffix(".png"), m)
    caption = tmp / CAPTIONS_DIR / Path(rel).with_suffix(".txt")
    caption.parent.mkdir(parents=True, exist_ok=True)
    caption.write_text(", ".join(present.get(image_id, [])) + "\n")


def write_shortcut_cub(
  root, *, num_train, num_test, seed, image_size, decoy_size=0.2, num_classes=10, flip=0.08
) -> Path:
  """Write the shortcut CUB archive into ``root`` once (module docstring); ``decoy_size`` is the
  square's side as a fraction of the image's shorter side (0 = no decoy: the clean reference);
  ``num_classes`` attribute prototypes (at most 12: one decoy colour each), each image's
  attributes its class's prototype with each bit flipped with probability ``flip``."""
  if not 1 <= int(num_classes) <= len(_PALETTE):
    raise ValueError(f"num_classes={num_classes}: the shortcut data has 1..{len(_PALETTE)}")
  params = dict(
    version=VERSION, num_train=int(num_train), num_test=int(num_test), seed=int(seed),
    image_size=int(image_size), decoy_size=float(decoy_size), num_classes=int(num_classes),
    flip=float(flip),
  )  # fmt: skip
  return write_once(
    Path(root), params, _generate, description="SYNTHETIC CUB layout with a class-coloured decoy"
  )


class ShortcutCUBSource(CUB200Source):
  """The CUB reader with explanation annotations in ``meta`` (module docstring)."""

  def __init__(
    self, root, split, *, mask_fraction=0.0, rationale_fraction=0.0, mask_region="attributes",
    **kwargs,
  ):  # fmt: skip
    if mask_region not in MASK_REGIONS:
      raise DataError(
        f"data.mask_region={mask_region!r}: expected one of {', '.join(MASK_REGIONS)} "
        "(the present attributes' masks, the bird's bounding box, or everything but the decoy)"
      )
    super().__init__(root, split, **kwargs)
    n, s = len(self), self.image_size
    self._relevant = np.zeros((n, s, s), bool)
    self._decoy = np.zeros((n, s, s), bool)
    rationales = self._rationales()
    parts = np.zeros((n, s, s), bool)  # the rationale's part regions (keypoint discs)
    for i in range(n):
      ann_i = self.explain_annotations(i)
      for m in ann_i["masks"].values():
        self._relevant[i] |= m
      named = [self.attribute_names[a] for a in np.flatnonzero(rationales[i])]
      pts = [ann_i["keypoints"][a] for a in named if a in ann_i["keypoints"]]
      if pts:
        parts[i] = disc_mask(s, pts, self._part_radius_px(i))
      dpath = (self.base / SHORTCUT_DIR / self.names[i]).with_suffix(".png")
      if dpath.is_file():
        self._decoy[i] = read_mask(dpath, s)
      elif mask_region == "all_but_decoy":
        raise DataError(
          f"{dpath}: no such file; data.mask_region='all_but_decoy' needs the decoy's mask of "
          f"every image in {self.base / SHORTCUT_DIR}/<image path>.png"
        )
    train = split == "train"
    if mask_region == "box":
      given = self._boxes()
    elif mask_region == "all_but_decoy":  # the annotation marks the decoy irrelevant (Ross's A)
      given = ~self._decoy
    else:
      given = self._relevant
    has_mask = annotations.annotated(n, float(mask_fraction) if train else 0.0)
    has_rationale = annotations.annotated(n, float(rationale_fraction) if train else 0.0, seed=7)
    self._annot = annotations.MaskAnnotations(
      given, has_mask, self._classes, len(self.class_names), rationales, has_rationale,
      rationale_regions=parts,
    )  # fmt: skip

  def _boxes(self) -> np.ndarray:
    """bool [N, H, W]: each image's bounding box (``bounding_boxes.txt``) in the resized image,
    every pixel the box touches."""
    s = self.image_size
    out = np.zeros((len(self), s, s), bool)
    for i in range(len(self)):
      x, y, w, h = self._arc["boxes"][self._rows[i]]
      if not (np.all(np.isfinite([x, y, w, h])) and w > 0 and h > 0):
        raise DataError(
          f"{self.base / 'bounding_boxes.txt'}: no box for image {self.names[i]!r}; "
          "data.mask_region='box' needs one '<image_id> <x> <y> <w> <h>' line per image"
        )
      ih, iw = image_size_of(self._paths[i])
      x0, x1 = int(np.floor(x * s / iw)), int(np.ceil((x + w) * s / iw))
      y0, y1 = int(np.floor(y * s / ih)), int(np.ceil((y + h) * s / ih))
      out[i, max(y0, 0) : y1, max(x0, 0) : x1] = True
    return out

  def _part_radius_px(self, i: int) -> float:
    """The reader's part-region radius (``part_radius`` × √(box area)) in pixels of the resized
    image (what ``explain_annotations`` draws where an attribute has no mask file)."""
    x, y, w, h = self._arc["boxes"][self._rows[i]]
    hw = image_size_of(self._paths[i])
    r = self.part_radius * np.sqrt(max(w * h, 0.0)) * self.image_size / np.sqrt(hw[0] * hw[1])
    return float(r) if np.isfinite(r) else 0.0

  def _rationales(self) -> np.ndarray:
    """[N, A] 0/1: the attributes each example's rationale names (module docstring)."""
    folder = self.root / CAPTIONS_DIR
    if not folder.is_dir():
      return self._attributes.copy()
    vocab = {phrase(n): a for a, n in enumerate(self.attribute_names)}
    known = {str(Path(p).with_suffix("")) for p in self._arc["paths"]}
    out = np.zeros((len(self), len(vocab)), np.float32)
    mine = {str(Path(p).with_suffix("")): i for i, p in enumerate(self.names)}
    for path in sorted(folder.rglob("*.txt")):
      key = str(path.relative_to(folder).with_suffix(""))
      if key not in known:
        raise DataError(
          f"{path}: a rationale for an unknown image {key!r} (not in "
          f"{self.base / 'images.txt'}); expected {CAPTIONS_DIR}/<class dir>/<image stem>.txt"
        )
      if key not in mine:
        continue
      for word in filter(None, (w.strip() for w in path.read_text().replace("\n", ",").split(","))):
        if word not in vocab:
          raise DataError(
            f"{path}: rationale word {word!r} is not an attribute of the vocabulary "
            f"(known: {', '.join(sorted(vocab))})"
          )
        out[mine[key], vocab[word]] = 1.0
    return out

  def __getitem__(self, index):
    ex = super().__getitem__(index)
    ex["meta"].update(self._annot.meta(int(index)))
    return ex

  def explanation_regions(self):
    return self._relevant, self._decoy

  def decoy_swapped(self):
    """This split with each decoy square repainted in another example's decoy colour
    (mtljax/data/decoys.py)."""
    return decoys.DecoySwapped(self, "image", self._decoy)


CUB_SHORTCUT = Dataset(
  "cub_shortcut", ShortcutCUBSource, write_shortcut_cub,
  source_keys=(
    "image_size", "val_fraction", "split_seed", "mask_fraction", "rationale_fraction",
    "mask_region",
  ),
  source_keys_if_set=("attributes",),
  synthetic_keys=("num_train", "num_test", "seed", "decoy_size", "num_classes", "flip"),
  synthetic_data_keys=("image_size",),
)  # fmt: skip
