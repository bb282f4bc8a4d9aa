"""Synthetic attribute datasets with planted truth, written in the real CUB-200-2011 and ISIC 2018
Task 2 layouts (read back by ``mtljax.data.attributes.cub`` / ``.isic``). This module holds the
drawing both generators share; ``synthetic_cub`` and ``synthetic_isic`` write the datasets.

Each attribute is drawn in a known region of the image, and that region is written as the
attribute's mask (ISIC: its ``_attribute_<name>.png``; CUB: the project's
``CUB_200_2011/attribute_masks/`` extension) beside its part keypoint (CUB ``part_locs.txt``), so
explanations can be scored. Masks and keypoints are evaluation-only: the readers never put them in a
training example. Everything else about an image is nuisance: its size and aspect ratio vary, the
bird (lesion) moves and scales, the background has a smooth random colour field, pixel noise, and
decoy blobs in colours no attribute uses. ``SYNTHETIC.txt`` in the root says the data is synthetic
and records the parameters (generation is skipped when they match, see
``mtljax.data.synthetic.write_once``).

**CUB** (``synthetic_cub.write_synthetic_cub``): side-view "birds" (body, head, eye, legs, tail,
beak, wing in a per-image body colour) facing left or right; seven CUB attributes (names from CUB's
vocabulary) change the colour or pattern of their part: red bill, yellow crown, orange throat, blue
wing, spotted breast, green belly, striped tail. The class depends on the attributes only: each of
``num_classes`` classes has a fixed attribute prototype, and an image's attributes are its class's
prototype with each bit flipped with probability ``flip``.

**ISIC** (``synthetic_isic.write_synthetic_isic``): skin with one brown lesion; each of the five
Task 2 attributes, when present, is drawn in its own disc inside (streaks: at the rim of) the
lesion: pigment network (dark mesh), negative network (light mesh), globules (dark dots), milia-like
cysts (bright dots), streaks (radial dark lines). Prevalences are higher than the real ones (so that
a small validation split has positives of every attribute).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1

#: Decoy colours: none is an attribute's.
_DECOYS = np.array(
  [(125, 60, 145), (230, 150, 190), (105, 75, 45), (128, 128, 128), (60, 60, 90)], np.float32
)


class Canvas:
  """An RGB float image with an owner map: which planted attribute (index) a pixel shows."""

  def __init__(self, h: int, w: int, rng: np.random.Generator):
    self.h, self.w = h, w
    self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
    self.img = _smooth_field(h, w, rng)
    self.owner = np.full((h, w), -1, np.int16)

  def paint(self, where: np.ndarray, rgb, owner: int = -1, region: np.ndarray | None = None):
    """Colour ``where``; the pixels of ``region`` (default ``where``) now belong to ``owner``."""
    self.img[where] = np.asarray(rgb, np.float32)
    self.owner[where if region is None else region] = owner

  def ellipse(self, cx, cy, ax, ay, angle=0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = self.xx - cx, self.yy - cy
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0

  def disc(self, cx, cy, r) -> np.ndarray:
    return (self.xx - cx) ** 2 + (self.yy - cy) ** 2 <= r * r


def _smooth_field(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
  """A desaturated, smoothly varying background colour field with pixel noise, float [h, w, 3]."""
  from PIL import Image

  base = rng.uniform(95, 175) + rng.uniform(-18, 18, size=3)
  grid = (base + rng.normal(0, 22, size=(4, 4, 3))).clip(0, 255).astype(np.uint8)
  field = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32)
  return field + rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)


def decoys(cv: Canvas, rng: np.random.Generator, scale: float) -> None:
  for _ in range(int(rng.integers(2, 5))):
    cx, cy = rng.uniform(0, cv.w), rng.uniform(0, cv.h)
    ax, ay = rng.uniform(0.03, 0.09) * scale, rng.uniform(0.03, 0.09) * scale
    cv.paint(
      cv.ellipse(cx, cy, ax, ay, rng.uniform(0, np.pi)),
      _DECOYS[rng.integers(len(_DECOYS))] + rng.normal(0, 8, 3),
    )


def save_jpeg(path: Path, img: np.ndarray, rng: np.random.Generator) -> None:
  from PIL import Image

  noisy = img + rng.normal(0, 4, size=img.shape)
  Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=92)


def save_mask(path: Path, mask: np.ndarray) -> None:
  from PIL import Image

  Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def image_hw(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
  """Varied file sizes about twice the training size, landscape like most photographs."""
  h = int(round(2 * image_size * rng.uniform(0.9, 1.1)))
  return h, int(round(h * rng.uniform(1.0, 1.3)))
