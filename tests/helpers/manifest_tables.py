"""Manifests written by the tests: scikit-learn's digits as PNG files, and a three-sensor GeoTIFF
table (three sizes, types and band counts) with planted targets and missing labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

GENERA = ("abies", "fagus", "picea")


def write_csv(path: Path, header, rows) -> Path:
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


def write_digits(root: Path, n_train: int = 1200, n_val: int = 250, n: int = 1797) -> Path:
  """``n`` of sklearn's 1797 digits (a seeded draw) as 8×8 grey PNGs under ``root/img`` and
  ``root/digits.csv`` (id, image, label n0..n9, split)."""
  from PIL import Image
  from sklearn.datasets import load_digits

  d = load_digits()
  (root / "img").mkdir(parents=True, exist_ok=True)
  order = np.random.default_rng(0).permutation(len(d.target))[:n]
  rows = []
  for k, i in enumerate(order):
    Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).save(root / f"img/{i}.png")
    split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
    rows.append([f"d{i}", f"img/{i}.png", f"n{d.target[i]}", split])
  return write_csv(root / "digits.csv", ["id", "image", "label", "split"], rows)


def write_sensors(root: Path, n: int = 96, seed: int = 0) -> Path:
  """``root/patches.csv``: aerial (16×16×4 uint8), s2 (8×8×6 uint16), s1 (4×4×2 float32)
  GeoTIFFs per row; genus (a name) planted in the aerial's first band, age (a float) in the
  s2's mean, s1 a smooth function of both; every 7th genus and every 5th age empty; no split
  column (the seeded draw)."""
  import tifffile

  rng = np.random.default_rng(seed)
  for s in ("aerial", "s2", "s1"):
    (root / s).mkdir(parents=True, exist_ok=True)
  rows = []
  for i in range(n):
    g = i % 3
    age = float(rng.uniform(10, 90))
    aerial = rng.integers(0, 60, (16, 16, 4)).astype(np.uint8)
    aerial[..., 0] += np.uint8(60 * g)
    s2 = (rng.normal(1000, 50, (8, 8, 6)) + 20 * age).astype(np.uint16)
    yy = np.linspace(0, 1, 4)[:, None]
    s1 = np.stack([yy * g + 0 * yy.T, yy.T * age / 90.0 + 0 * yy], -1).astype(np.float32)
    tifffile.imwrite(root / f"aerial/{i}.tif", aerial, photometric="rgb", planarconfig="contig")
    tifffile.imwrite(root / f"s2/{i}.tif", np.moveaxis(s2, -1, 0))  # bands first, as GDAL
    tifffile.imwrite(root / f"s1/{i}.tif", s1, planarconfig="contig", photometric="minisblack")
    genus = "" if i % 7 == 3 else GENERA[g]
    rows.append([f"p{i}", f"aerial/{i}.tif", f"s2/{i}.tif", f"s1/{i}.tif", genus,
                 "" if i % 5 == 2 else f"{age:.2f}"])  # fmt: skip
  return write_csv(root / "patches.csv", ["id", "aerial", "s2", "s1", "genus", "age"], rows)
