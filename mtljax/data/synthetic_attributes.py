"""Synthetic attribute datasets with planted truth, written in the real CUB-200-2011 and ISIC 2018
Task 2 layouts (read back by ``mtljax.data.cub`` / ``mtljax.data.isic``).

Each attribute is drawn in a known region of the image, and that region is written as the
attribute's mask (ISIC: its ``_attribute_<name>.png``; CUB: the project's
``CUB_200_2011/attribute_masks/`` extension) beside its part keypoint (CUB ``part_locs.txt``), so
explanations can be scored. Masks and keypoints are evaluation-only: the readers never put them in a
training example. Everything else about an image is nuisance: its size and aspect ratio vary, the
bird (lesion) moves and scales, the background has a smooth random colour field, pixel noise, and
decoy blobs in colours no attribute uses. ``SYNTHETIC.txt`` in the root says the data is synthetic
and records the parameters (generation is skipped when they match, see ``synthetic.write_once``).

**CUB** (``write_synthetic_cub``): side-view "birds" (body, head, eye, legs, tail, beak, wing in
a per-image body colour) facing left or right; seven CUB attributes (names from CUB's vocabulary)
change the colour or pattern of their part: red bill, yellow crown, orange throat, blue wing,
spotted breast, green belly, striped tail. The class depends on the attributes only: each of
``num_classes`` classes has a fixed attribute prototype, and an image's attributes are its class's
prototype with each bit flipped with probability ``flip``.

**ISIC** (``write_synthetic_isic``): skin with one brown lesion; each of the five Task 2
attributes, when present, is drawn in its own disc inside (streaks: at the rim of) the lesion:
pigment network (dark mesh), negative network (light mesh), globules (dark dots), milia-like cysts
(bright dots), streaks (radial dark lines). Prevalences are higher than the real ones (so that a
small validation split has positives of every attribute).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data import isic
from mtljax.data.synthetic import MARKER, marker_text, write_once

__all__ = [
  "write_synthetic_cub",
  "write_synthetic_isic",
  "CUB_PARTS",
  "CUB_PLANTED",
  "ISIC_PREVALENCE",
]

GENERATOR_VERSION = 1

#: CUB's 15 parts, in ``parts/parts.txt`` order (part id = position + 1).
CUB_PARTS: tuple[str, ...] = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
    "nape", "right eye", "right leg", "right wing", "tail", "throat",
)  # fmt: skip

#: Part positions (x, y) in bird units for a bird facing right (x mirrors when it faces left).
_PART_XY: dict[str, tuple[float, float]] = {
    "back": (-0.02, -0.14), "beak": (0.45, -0.15), "belly": (0.0, 0.11), "breast": (0.17, 0.03),
    "crown": (0.30, -0.26), "forehead": (0.38, -0.22), "left eye": (0.34, -0.17),
    "left leg": (0.04, 0.26), "left wing": (-0.06, -0.03), "nape": (0.21, -0.21),
    "right eye": (0.34, -0.17), "right leg": (-0.05, 0.26), "right wing": (-0.03, -0.01),
    "tail": (-0.40, 0.0), "throat": (0.30, -0.07),
}  # fmt: skip

#: The planted attributes, by id: (CUB attribute id, name, part, how it is drawn, RGB).
CUB_PLANTED: tuple[tuple[int, str, str, str, tuple[int, int, int]], ...] = (
    (10, "has_wing_color::blue", "left wing", "wing", (40, 80, 225)),
    (56, "has_breast_pattern::spotted", "breast", "spots", (25, 20, 15)),
    (131, "has_throat_color::orange", "throat", "disc", (245, 135, 20)),
    (206, "has_belly_color::green", "belly", "belly", (50, 170, 60)),
    (243, "has_tail_pattern::striped", "tail", "stripes", (245, 245, 245)),
    (292, "has_bill_color::red", "beak", "disc", (215, 30, 30)),
    (300, "has_crown_color::yellow", "crown", "disc", (245, 220, 40)),
)  # fmt: skip

#: Decoy colours: none is an attribute's.
_DECOYS = np.array(
  [(125, 60, 145), (230, 150, 190), (105, 75, 45), (128, 128, 128), (60, 60, 90)], np.float32
)

#: Prevalence of each ISIC attribute in the synthetic data (``isic.ATTRIBUTES`` order).
ISIC_PREVALENCE: tuple[float, ...] = (0.35, 0.35, 0.3, 0.55, 0.3)


# ================================================================================ drawing
class _Canvas:
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


def _decoys(cv: _Canvas, rng: np.random.Generator, scale: float) -> None:
  for _ in range(int(rng.integers(2, 5))):
    cx, cy = rng.uniform(0, cv.w), rng.uniform(0, cv.h)
    ax, ay = rng.uniform(0.03, 0.09) * scale, rng.uniform(0.03, 0.09) * scale
    cv.paint(
      cv.ellipse(cx, cy, ax, ay, rng.uniform(0, np.pi)),
      _DECOYS[rng.integers(len(_DECOYS))] + rng.normal(0, 8, 3),
    )


def _save_jpeg(path: Path, img: np.ndarray, rng: np.random.Generator) -> None:
  from PIL import Image

  noisy = img + rng.normal(0, 4, size=img.shape)
  Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=92)


def _save_mask(path: Path, mask: np.ndarray) -> None:
  from PIL import Image

  Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def _image_hw(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
  """Varied file sizes about twice the training size, landscape like most photographs."""
  h = int(round(2 * image_size * rng.uniform(0.9, 1.1)))
  return h, int(round(h * rng.uniform(1.0, 1.3)))


# ================================================================================ CUB
def _cub_prototypes(num_classes: int) -> np.ndarray:
  """Fixed class prototypes ``[C, A]``: distinct, pairwise Hamming distance >= 2 while possible."""
  rng = np.random.default_rng(20110707)
  a = len(CUB_PLANTED)
  protos: list[np.ndarray] = []
  tries = 0
  while len(protos) < num_classes:
    p = rng.random(a) < 0.5
    tries += 1
    dist = min((int(np.sum(p != q)) for q in protos), default=a)
    if dist >= (2 if tries < 10_000 else 1):
      protos.append(p)
    if tries > 100_000:
      raise ValueError(f"cannot draw {num_classes} distinct prototypes over {a} attributes")
  return np.array(protos)


def _draw_bird(
  cv: _Canvas, rng: np.random.Generator, present: np.ndarray
) -> dict[str, tuple[float, float]]:
  """Draw one bird with the planted attributes ``present [A]``; returns part pixel positions (x, y)."""
  # The bird spans about 1.05 s (tail tip to beak) by 0.62 s (crown to feet): keep it inside.
  s = rng.uniform(0.75, 0.88) * min(cv.h, cv.w)
  d = 1.0 if rng.random() < 0.5 else -1.0
  cx = cv.w / 2 + rng.uniform(-1, 1) * max(0.0, cv.w - 1.07 * s) / 2
  cy = cv.h / 2 + 0.035 * s + rng.uniform(-1, 1) * max(0.0, cv.h - 0.66 * s) / 2
  tilt = rng.uniform(-0.12, 0.12)

  def at(x: float, y: float) -> tuple[float, float]:
    x, y = d * x, y
    c, sn = np.cos(tilt), np.sin(tilt)
    return cx + s * (c * x - sn * y), cy + s * (sn * x + c * y)

  body = np.array([rng.uniform(95, 165), rng.uniform(80, 130), rng.uniform(55, 105)], np.float32)
  dark = body * 0.7
  parts = {p: at(*xy) for p, xy in _PART_XY.items()}
  k = {name: i for i, (_, name, *_rest) in enumerate(CUB_PLANTED)}

  # Legs, tail, body, head.
  for leg in ("left leg", "right leg"):
    x0, y0 = at(_PART_XY[leg][0], 0.12)
    x1, y1 = parts[leg]
    t = np.clip(
      ((cv.xx - x0) * (x1 - x0) + (cv.yy - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2),
      0,
      1,
    )
    near = (cv.xx - x0 - t * (x1 - x0)) ** 2 + (cv.yy - y0 - t * (y1 - y0)) ** 2 <= (0.012 * s) ** 2
    cv.paint(near, (60, 45, 35))
  tx, ty = parts["tail"]
  tail = cv.ellipse(tx, ty, 0.13 * s, 0.055 * s, tilt)
  if present[k["has_tail_pattern::striped"]]:
    u = (cv.xx - tx) * np.cos(tilt) + (cv.yy - ty) * np.sin(tilt)
    stripe = np.floor(u / (0.07 * s)) % 2 == 0
    cv.paint(
      tail & stripe,
      CUB_PLANTED[k["has_tail_pattern::striped"]][4],
      k["has_tail_pattern::striped"],
      tail,
    )
    cv.paint(tail & ~stripe, (35, 35, 35), k["has_tail_pattern::striped"], tail)
  else:
    cv.paint(tail, dark)
  bx, by = at(0.0, 0.0)
  cv.paint(cv.ellipse(bx, by, 0.30 * s, 0.17 * s, tilt), body)
  hx, hy = at(0.30, -0.16)
  cv.paint(cv.disc(hx, hy, 0.12 * s), body)

  # Belly, breast, wing.
  i = k["has_belly_color::green"]
  belly = cv.ellipse(*parts["belly"], 0.13 * s, 0.065 * s, tilt) & (cv.owner == -1)
  if present[i]:
    cv.paint(belly, CUB_PLANTED[i][4], i)
  i = k["has_breast_pattern::spotted"]
  if present[i]:
    region = cv.disc(*parts["breast"], 0.085 * s)
    spots = np.zeros_like(region)
    for _ in range(7):
      ang, rad = rng.uniform(0, 2 * np.pi), 0.06 * s * np.sqrt(rng.random())
      spots |= cv.disc(
        parts["breast"][0] + rad * np.cos(ang), parts["breast"][1] + rad * np.sin(ang), 0.025 * s
      )
    cv.paint(spots & region, CUB_PLANTED[i][4], i, region)
  i = k["has_wing_color::blue"]
  wing = cv.ellipse(*parts["left wing"], 0.17 * s, 0.085 * s, tilt - d * 0.15)
  cv.paint(wing, CUB_PLANTED[i][4] if present[i] else dark * 0.9, i if present[i] else -1)

  # Throat, crown, beak, eye.
  for name, r in (("has_throat_color::orange", 0.075), ("has_crown_color::yellow", 0.085)):
    i = k[name]
    if present[i]:
      part = CUB_PLANTED[i][2]
      cv.paint(cv.disc(*parts[part], r * s) & cv.disc(hx, hy, 0.14 * s), CUB_PLANTED[i][4], i)
  i = k["has_bill_color::red"]
  beak = cv.ellipse(*parts["beak"], 0.075 * s, 0.045 * s, tilt)
  cv.paint(beak, CUB_PLANTED[i][4] if present[i] else (70, 65, 60), i if present[i] else -1)
  cv.paint(cv.disc(*parts["left eye"], 0.02 * s), (10, 10, 10))
  return parts


def _generate_cub(out: Path, params: dict[str, Any]) -> None:
  t0 = time.perf_counter()
  rng = np.random.default_rng(params["seed"])
  n_train, n = params["num_train"], params["num_train"] + params["num_test"]
  protos = _cub_prototypes(params["num_classes"])
  classes = rng.integers(0, len(protos), size=n)
  attrs = protos[classes] ^ (rng.random((n, len(CUB_PLANTED))) < params["flip"])
  is_train = np.zeros(n, int)
  is_train[rng.permutation(n)[:n_train]] = 1
  order = np.argsort(
    classes, kind="stable"
  )  # images.txt lists images class by class, as the real one

  base = out / "CUB_200_2011"
  for d in ("images", "parts", "attributes", "attribute_masks"):
    (base / d).mkdir(parents=True)
  class_dirs = [f"{c + 1:03d}.Synthetic_bird_{c + 1:02d}" for c in range(len(protos))]
  lines: dict[str, list[str]] = {
    k: [] for k in ("images", "labels", "split", "boxes", "locs", "attrs")
  }
  for image_id, j in enumerate(order, 1):
    c = int(classes[j])
    rel = f"{class_dirs[c]}/Synthetic_Bird_{c + 1:02d}_{image_id:04d}.jpg"
    h, w = _image_hw(rng, params["image_size"])
    cv = _Canvas(h, w, rng)
    _decoys(cv, rng, min(h, w))
    bird_before = cv.img.copy()
    parts = _draw_bird(cv, rng, attrs[j])
    (base / "images" / class_dirs[c]).mkdir(exist_ok=True)
    _save_jpeg(base / "images" / rel, cv.img, rng)
    for a, (attr_id, *_rest) in enumerate(CUB_PLANTED):
      if attrs[j, a]:
        path = base / "attribute_masks" / f"{rel[:-4]}__{attr_id}.png"
        path.parent.mkdir(exist_ok=True)
        _save_mask(path, cv.owner == a)
    changed = np.any(np.abs(cv.img - bird_before) > 0, axis=-1)
    ys, xs = np.nonzero(changed)
    lines["images"].append(f"{image_id} {rel}")
    lines["labels"].append(f"{image_id} {c + 1}")
    lines["split"].append(f"{image_id} {is_train[j]}")
    lines["boxes"].append(
      f"{image_id} {xs.min():.1f} {ys.min():.1f} {xs.max() - xs.min() + 1:.1f} "
      f"{ys.max() - ys.min() + 1:.1f}"
    )
    for p, part in enumerate(CUB_PARTS, 1):
      x, y = parts[part]
      visible = part != "right eye" and 0 <= x < w and 0 <= y < h
      lines["locs"].append(
        f"{image_id} {p} {x:.1f} {y:.1f} 1" if visible else f"{image_id} {p} 0.0 0.0 0"
      )
    for a, (attr_id, *_rest) in enumerate(CUB_PLANTED):
      certainty = int(rng.integers(3, 5)) if attrs[j, a] else int(rng.integers(1, 5))
      extra = " 0" if (image_id * 7 + a) % 53 == 0 else ""  # the real file's odd sixth field
      lines["attrs"].append(
        f"{image_id} {attr_id} {int(attrs[j, a])} {certainty} {rng.uniform(2, 30):.3f}{extra}"
      )

  def write(path: Path, rows: list[str]) -> None:
    path.write_text("\n".join(rows) + "\n")

  write(base / "images.txt", lines["images"])
  write(base / "image_class_labels.txt", lines["labels"])
  write(base / "classes.txt", [f"{c + 1} {d}" for c, d in enumerate(class_dirs)])
  write(base / "train_test_split.txt", lines["split"])
  write(base / "bounding_boxes.txt", lines["boxes"])
  write(base / "parts" / "parts.txt", [f"{p} {name}" for p, name in enumerate(CUB_PARTS, 1)])
  write(base / "parts" / "part_locs.txt", lines["locs"])
  write(base / "attributes" / "image_attribute_labels.txt", lines["attrs"])
  write(out / "attributes.txt", [f"{attr_id} {name}" for attr_id, name, *_rest in CUB_PLANTED])
  (out / "SYNTHETIC_PROTOTYPES.json").write_text(
    json.dumps(
      {d: [CUB_PLANTED[a][1] for a in np.flatnonzero(p)] for d, p in zip(class_dirs, protos)},
      indent=1,
    )
  )
  (out / MARKER).write_text(
    marker_text(
      "SYNTHETIC data in the CUB-200-2011 layout, written by mtljax.data.synthetic_attributes.\n"
      "This is NOT the real CUB-200-2011. Planted attributes (each drawn at its part, mask in "
      "CUB_200_2011/attribute_masks/): " + ", ".join(p[1] for p in CUB_PLANTED) + ".\n"
      "Class prototypes: SYNTHETIC_PROTOTYPES.json",
      params,
      time.perf_counter() - t0,
    )
  )


def write_synthetic_cub(
  root: str | os.PathLike,
  *,
  num_train: int = 1200,
  num_test: int = 300,
  seed: int = 0,
  image_size: int = 64,
  num_classes: int = 10,
  flip: float = 0.08,
  overwrite: bool = False,
) -> Path:
  """Write a synthetic CUB-200-2011 archive (real layout, planted attributes) under ``root``.

  Args:
    root: target folder; absent, empty, or written by a generator before (see ``write_once``).
    num_train, num_test: images with ``is_training`` 1 / 0.
    seed: sampling seed (the class prototypes are fixed).
    image_size: the training size; files are about twice that, with varied sizes.
    num_classes: classes (each an attribute prototype).
    flip: probability that an image's attribute differs from its class prototype.
    overwrite: regenerate even when the parameters match.

  Returns:
    ``Path(root)``; read it with ``CUB200Source(root, split, image_size=image_size)``.
  """
  if num_train < 1 or num_test < 1:
    raise ValueError("num_train and num_test must be >= 1")
  params = {
    "generator": "mtljax.data.synthetic_attributes.write_synthetic_cub",
    "version": GENERATOR_VERSION,
    "num_train": int(num_train),
    "num_test": int(num_test),
    "seed": int(seed),
    "image_size": int(image_size),
    "num_classes": int(num_classes),
    "flip": float(flip),
  }
  return write_once(Path(root), params, _generate_cub, overwrite=overwrite)


# ================================================================================ ISIC
def _draw_lesion(cv: _Canvas, rng: np.random.Generator, present: np.ndarray) -> None:
  size = min(cv.h, cv.w)
  lx = cv.w / 2 + rng.uniform(-0.08, 0.08) * cv.w
  ly = cv.h / 2 + rng.uniform(-0.08, 0.08) * cv.h
  ax, ay, ang = rng.uniform(0.27, 0.36) * size, rng.uniform(0.22, 0.3) * size, rng.uniform(0, np.pi)
  lesion = cv.ellipse(lx, ly, ax, ay, ang)
  cv.paint(lesion, np.array([140, 90, 62]) + rng.normal(0, 10, 3))
  inner = cv.ellipse(lx, ly, ax * 0.55, ay * 0.55, ang)
  cv.paint(inner, np.array([112, 70, 48]) + rng.normal(0, 8, 3))
  # Each attribute gets its own sector of the lesion (a random rotation of five slots).
  slots = (rng.permutation(5) + rng.uniform(-0.2, 0.2, 5)) * 2 * np.pi / 5 + rng.uniform(
    0, 2 * np.pi
  )
  r = 0.1 * size
  for a, name in enumerate(isic.ATTRIBUTES):
    if not present[a]:
      continue
    t = slots[a]
    rim = name == "streaks"
    f = 0.95 if rim else 0.5
    cx = lx + f * (ax * np.cos(t) * np.cos(ang) - ay * np.sin(t) * np.sin(ang))
    cy = ly + f * (ax * np.cos(t) * np.sin(ang) + ay * np.sin(t) * np.cos(ang))
    region = cv.disc(cx, cy, r)
    if name in ("pigment_network", "negative_network"):
      period = rng.uniform(0.035, 0.05) * size
      rot = rng.uniform(0, np.pi)
      u = (cv.xx * np.cos(rot) + cv.yy * np.sin(rot)) % period
      v = (-cv.xx * np.sin(rot) + cv.yy * np.cos(rot)) % period
      lines = (u < 0.3 * period) | (v < 0.3 * period)
      colour = (60, 35, 25) if name == "pigment_network" else (215, 175, 150)
      cv.paint(region & lines, colour, a, region)
    elif name in ("globules", "milia_like_cyst"):
      dots = np.zeros_like(region)
      for _ in range(int(rng.integers(6, 10))):
        q, rad = rng.uniform(0, 2 * np.pi), 0.8 * r * np.sqrt(rng.random())
        dots |= cv.disc(cx + rad * np.cos(q), cy + rad * np.sin(q), 0.016 * size)
      colour = (55, 30, 20) if name == "globules" else (250, 245, 215)
      cv.paint(dots & region, colour, a, region)
    else:  # streaks: radial dark lines across the rim
      phi = np.arctan2(cv.yy - ly, cv.xx - lx)
      lines = np.abs(((phi * 40 / (2 * np.pi)) % 1.0) - 0.5) < 0.14
      cv.paint(region & lines, (50, 28, 18), a, region)


def _generate_isic(out: Path, params: dict[str, Any]) -> None:
  t0 = time.perf_counter()
  rng = np.random.default_rng(params["seed"])
  counts = {"train": params["num_train"], "val": params["num_val"], "test": params["num_test"]}
  image_id = 0
  for split, count in counts.items():
    images, truth = out / isic.input_dir(split), out / isic.truth_dir(split)
    images.mkdir(parents=True)
    truth.mkdir(parents=True)
    for d in (images, truth):
      (d / "ATTRIBUTION.txt").write_text(
        "Synthetic images written by mtljax; no attribution needed.\n"
      )
      (d / "LICENSE.txt").write_text("CC0: synthetic data.\n")
    for _ in range(count):
      image_id += 1
      name = f"ISIC_{image_id:07d}"
      h, w = _image_hw(rng, params["image_size"])
      cv = _Canvas(h, w, rng)
      cv.img = cv.img * 0.25 + (np.array([228, 185, 158]) + rng.normal(0, 10, 3)) * 0.75
      _decoys(cv, rng, 0.6 * min(h, w))
      present = rng.random(len(isic.ATTRIBUTES)) < np.asarray(ISIC_PREVALENCE)
      _draw_lesion(cv, rng, present)
      _save_jpeg(images / f"{name}.jpg", cv.img, rng)
      for a, attr in enumerate(isic.ATTRIBUTES):
        _save_mask(truth / f"{name}_attribute_{attr}.png", cv.owner == a)
  (out / MARKER).write_text(
    marker_text(
      "SYNTHETIC data in the ISIC 2018 Task 1-2 layout, written by mtljax.data.synthetic_attributes.\n"
      "This is NOT the ISIC archive. Every present attribute is drawn in its own region of the "
      "lesion; the masks are those regions.",
      params,
      time.perf_counter() - t0,
    )
  )


def write_synthetic_isic(
  root: str | os.PathLike,
  *,
  num_train: int = 1200,
  num_val: int = 150,
  num_test: int = 300,
  seed: int = 0,
  image_size: int = 64,
  overwrite: bool = False,
) -> Path:
  """Write a synthetic ISIC 2018 Task 2 archive (real layout, planted attributes) under ``root``.

  Args:
    root: target folder; absent, empty, or written by a generator before (see ``write_once``).
    num_train, num_val, num_test: images in the Training / Validation / Test folders.
    seed: sampling seed.
    image_size: the training size; files are about twice that, with varied sizes.
    overwrite: regenerate even when the parameters match.

  Returns:
    ``Path(root)``; read it with ``ISIC2018Source(root, split, image_size=image_size)``.
  """
  if min(num_train, num_val, num_test) < 1:
    raise ValueError("num_train, num_val and num_test must be >= 1")
  params = {
    "generator": "mtljax.data.synthetic_attributes.write_synthetic_isic",
    "version": GENERATOR_VERSION,
    "num_train": int(num_train),
    "num_val": int(num_val),
    "num_test": int(num_test),
    "seed": int(seed),
    "image_size": int(image_size),
  }
  return write_once(Path(root), params, _generate_isic, overwrite=overwrite)
