"""Synthetic CUB-200-2011 archive with planted attributes (see ``attributes.synthetic``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data.attributes import synthetic as draw
from mtljax.data.synthetic import Generator

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
  cv: draw.Canvas, rng: np.random.Generator, present: np.ndarray
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
    h, w = draw.image_hw(rng, params["image_size"])
    cv = draw.Canvas(h, w, rng)
    draw.decoys(cv, rng, min(h, w))
    bird_before = cv.img.copy()
    parts = _draw_bird(cv, rng, attrs[j])
    (base / "images" / class_dirs[c]).mkdir(exist_ok=True)
    draw.save_jpeg(base / "images" / rel, cv.img, rng)
    for a, (attr_id, *_rest) in enumerate(CUB_PLANTED):
      if attrs[j, a]:
        path = base / "attribute_masks" / f"{rel[:-4]}__{attr_id}.png"
        path.parent.mkdir(exist_ok=True)
        draw.save_mask(path, cv.owner == a)
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


#: The generator: the synthetic ``CUB_200_2011`` archive's parameters and their defaults.
CUB_SYNTHETIC = Generator(
  # The generator's name before data/ had packages: a cache key in SYNTHETIC.txt, kept so
  # folders written before stay valid (and the written files byte-identical).
  key="mtljax.data.synthetic_attributes.write_synthetic_cub",
  version=draw.GENERATOR_VERSION,
  defaults=dict(num_train=1200, num_test=300, seed=0, image_size=64, num_classes=10, flip=0.08),
  description="SYNTHETIC data in the CUB-200-2011 layout, written by mtljax.data.synthetic_attributes.\n"
  "This is NOT the real CUB-200-2011. Planted attributes (each drawn at its part, mask in "
  "CUB_200_2011/attribute_masks/): " + ", ".join(p[1] for p in CUB_PLANTED) + ".\n"
  "Class prototypes: SYNTHETIC_PROTOTYPES.json",
)


def write_synthetic_cub(root: str | os.PathLike, *, overwrite: bool = False, **params) -> Path:
  """Write a synthetic CUB-200-2011 archive (real layout, planted attributes) under ``root``.

  Args:
    root: target folder; absent, empty, or written by a generator before (see ``write_once``).
    overwrite: regenerate even when the parameters match.
    **params: (defaults in ``CUB_SYNTHETIC.defaults``)
      num_train, num_test: images with ``is_training`` 1 / 0.
      seed: sampling seed (the class prototypes are fixed).
      image_size: the training size; files are about twice that, with varied sizes.
      num_classes: classes (each an attribute prototype).
      flip: probability that an image's attribute differs from its class prototype.

  Returns:
    ``Path(root)``; read it with ``CUB200Source(root, split, image_size=image_size)``.
  """
  args = CUB_SYNTHETIC.arguments(params)
  if args["num_train"] < 1 or args["num_test"] < 1:
    raise ValueError("num_train and num_test must be >= 1")
  return CUB_SYNTHETIC.write(root, args, _generate_cub, overwrite=overwrite)
