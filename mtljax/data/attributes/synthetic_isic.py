"""Synthetic ISIC 2018 Task 2 archive with planted attributes (see ``attributes.synthetic``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data.attributes import isic
from mtljax.data.attributes import synthetic as draw
from mtljax.data.synthetic import Generator

#: Prevalence of each ISIC attribute in the synthetic data (``isic.ATTRIBUTES`` order).
ISIC_PREVALENCE: tuple[float, ...] = (0.35, 0.35, 0.3, 0.55, 0.3)


def _draw_lesion(cv: draw.Canvas, rng: np.random.Generator, present: np.ndarray) -> None:
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
      h, w = draw.image_hw(rng, params["image_size"])
      cv = draw.Canvas(h, w, rng)
      cv.img = cv.img * 0.25 + (np.array([228, 185, 158]) + rng.normal(0, 10, 3)) * 0.75
      draw.decoys(cv, rng, 0.6 * min(h, w))
      present = rng.random(len(isic.ATTRIBUTES)) < np.asarray(ISIC_PREVALENCE)
      _draw_lesion(cv, rng, present)
      draw.save_jpeg(images / f"{name}.jpg", cv.img, rng)
      for a, attr in enumerate(isic.ATTRIBUTES):
        draw.save_mask(truth / f"{name}_attribute_{attr}.png", cv.owner == a)


#: The generator: the synthetic ISIC 2018 archive's parameters and their defaults.
ISIC_SYNTHETIC = Generator(
  # The generator's name before data/ had packages: a cache key in SYNTHETIC.txt, kept so
  # folders written before stay valid (and the written files byte-identical).
  key="mtljax.data.synthetic_attributes.write_synthetic_isic",
  version=draw.GENERATOR_VERSION,
  defaults=dict(num_train=1200, num_val=150, num_test=300, seed=0, image_size=64),
  description="SYNTHETIC data in the ISIC 2018 Task 1-2 layout, written by mtljax.data.synthetic_attributes.\n"
  "This is NOT the ISIC archive. Every present attribute is drawn in its own region of the "
  "lesion; the masks are those regions.",
)


def write_synthetic_isic(root: str | os.PathLike, *, overwrite: bool = False, **params) -> Path:
  """Write a synthetic ISIC 2018 Task 2 archive (real layout, planted attributes) under ``root``.

  Args:
    root: target folder; absent, empty, or written by a generator before (see ``write_once``).
    overwrite: regenerate even when the parameters match.
    **params: (defaults in ``ISIC_SYNTHETIC.defaults``)
      num_train, num_val, num_test: images in the Training / Validation / Test folders.
      seed: sampling seed.
      image_size: the training size; files are about twice that, with varied sizes.

  Returns:
    ``Path(root)``; read it with ``ISIC2018Source(root, split, image_size=image_size)``.
  """
  args = ISIC_SYNTHETIC.arguments(params)
  if min(args["num_train"], args["num_val"], args["num_test"]) < 1:
    raise ValueError("num_train, num_val and num_test must be >= 1")
  return ISIC_SYNTHETIC.write(root, args, _generate_isic, overwrite=overwrite)
