"""Synthetic façades with planted label interdependencies, in the format of ``reader``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from mtljax.data.facades.reader import DEFAULT_TASKS, FIXED_COLUMNS

#: Planted label rules (paper Fig. 4-like, strong and asymmetric). Tasks in DEFAULT_TASKS order.
_H = np.array([0, 1, 3, 2, 0])  # sbst -> height
_R = np.array([1, 2, 0, 0, 1])  # sbst -> roof (COM and IND: flat)
_M = np.array([[0, 2, 0], [2, 0, 1], [1, 1, 0], [1, 2, 1]])  # (height, roof) -> material
_P = np.array([[0, 0, 2], [2, 1, 0], [1, 0, 1], [0, 2, 0], [1, 2, 2]])  # (sbst, material)
#: Probability that height does NOT follow the building type (a uniform draw instead): height is
#: only loosely tied to sbst, so material = M[height, roof] is an interaction of two tasks.
_HEIGHT_FREE = 0.5
#: Image cue of each task: its class levels lowest to highest (a class order along the cue
#: axis), and the per-image cue noise in units of the level spacing (times ``cue_noise``). sbst
#: and height are seen clearly; roof and material barely (their own cue is nearly useless), so
#: they must be inferred through the label rules. The sbst order (IND, RES_LOW, RES_MID, COM,
#: INF) makes roof zig-zag along the sbst cue (FLT, GBL, HIP, FLT, GBL).
_LEVEL_ORDER = {
  "height": (2, 0, 3, 1),
  "material": (0, 1, 2),
  "sbst": (3, 0, 1, 2, 4),
  "roof": (0, 1, 2),
  "blockpos": (1, 0, 2),
}
#: Tasks whose cue is a *count* of marks (4 × 4 bright squares in the task's colour
#: channel, scattered over the image: 1 + level rank, plus noise) instead of a texture contrast.
#: Features that a CNN pools globally (GAP) are linear in such a count, so a linear head on them
#: carves it only into ordered intervals: fine for sbst itself, not for roof's zig-zag, which
#: the softmax of the interim P(sbst | x) gives to a stacked (MS) head.
_COUNT_TASKS = ("sbst",)
_CUE_SCALE = {"height": 0.5, "material": 4.0, "sbst": 0.5, "roof": 4.0, "blockpos": 1.0}


def _planted_labels(rng: np.random.Generator, n: int, noise: float) -> np.ndarray:
  """``[n, 5]`` labels (height, material, sbst, roof, blockpos) with planted dependencies.

  sbst ~ prior; roof = R[sbst] (many-to-one, so e.g. P(FLT | IND) = 0.9 but P(IND | FLT) is
  far lower); height = H[sbst] only with probability 1 − ``_HEIGHT_FREE`` (else uniform);
  material = M[height, roof]; blockpos = P[sbst, material]; the roof, material and blockpos
  rules hold with probability 1 − noise, else the class is uniform.
  """

  def noisy(rule, k, p=noise):
    flip = rng.random(n) < p
    return np.where(flip, rng.integers(0, k, n), rule)

  sbst = rng.choice(5, size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
  roof = noisy(_R[sbst], 3)
  height = noisy(_H[sbst], 4, _HEIGHT_FREE)
  material = noisy(_M[height, roof], 3)
  blockpos = noisy(_P[sbst, material], 3)
  return np.stack([height, material, sbst, roof, blockpos], axis=1).astype(np.int32)


def _patterns(s: int) -> np.ndarray:
  """Five zero-mean ±1 textures ``[5, s, s]`` that small convolutions tell apart: vertical and
  horizontal stripes of period 2, a checkerboard, vertical and horizontal stripes of period 4."""
  y, x = np.mgrid[0:s, 0:s]
  p4 = lambda v: np.where((v // 2) % 2 == 0, 1.0, -1.0)
  return np.stack([(-1.0) ** x, (-1.0) ** y, (-1.0) ** (x + y), p4(x), p4(y)])


def write_synthetic_facades(
  root: str | os.PathLike,
  *,
  num_images: int = 4000,
  num_blocks: int = 200,
  image_size: int = 16,
  cue_noise: float = 0.6,
  label_noise: float = 0.1,
  seed: int = 0,
) -> Path:
  """Write a synthetic façade dataset in the documented layout (skipped if already there with
  the same parameters); returns ``root``.

  Image cue of task t: a texture of its own (``_patterns``) in colour channel ``t mod 3``, whose
  contrast (amplitude) is ``level_t[class] + cue_noise · _CUE_SCALE[t] · spacing · N(0, 1)``
  (per image); the levels of each task are evenly spaced from 6 to 30 grey levels in the class
  order ``_LEVEL_ORDER[t]``. For the tasks of ``_COUNT_TASKS`` the cue is instead
  ``round(1 + rank + cue_noise · _CUE_SCALE[t] · N(0, 1))`` marks (4 × 4 squares, +60 grey
  levels) at random places. Pixel noise (σ = 12) is added on top. With ``cue_noise`` 0.6 the
  sbst marks and the height texture alone are right about 90 % of the time, the roof and
  material textures barely above chance: those tasks are learnt through the label rules.
  """
  root = Path(root)
  params = dict(
    num_images=num_images,
    num_blocks=num_blocks,
    image_size=image_size,
    cue_noise=cue_noise,
    label_noise=label_noise,
    seed=seed,
    version=5,
  )
  marker = root / "synthetic.json"
  if marker.is_file() and json.loads(marker.read_text()) == params:
    return root
  from PIL import Image

  rng = np.random.default_rng(seed)
  tasks = DEFAULT_TASKS
  labels = _planted_labels(rng, num_images, label_noise)
  blocks = rng.integers(0, num_blocks, num_images)
  (root / "images").mkdir(parents=True, exist_ok=True)
  s = image_size
  patterns = _patterns(s)
  lo, hi = 6.0, 30.0  # texture amplitudes (grey levels)
  levels = []
  for t, c in tasks.items():
    rank = np.empty(len(c))
    rank[list(_LEVEL_ORDER[t])] = np.arange(len(c))
    levels.append(lo + (hi - lo) * rank / (len(c) - 1))
  scale = [cue_noise * _CUE_SCALE[t] for t in tasks]
  counted = [t in _COUNT_TASKS for t in tasks]
  cells = (s // 4) ** 2  # 4 × 4 cells that hold one mark each
  ids = [f"fac{i:05d}" for i in range(num_images)]
  for i in range(num_images):
    img = 128 + rng.normal(0, 12, (s, s, 3))
    for t in range(len(tasks)):
      spacing = (hi - lo) / (len(levels[t]) - 1)
      if counted[t]:  # 1 + rank marks, the rank noisy by scale · N(0, 1) (rounded)
        rank = (levels[t][labels[i, t]] - lo) / spacing
        n = int(np.clip(np.rint(1 + rank + scale[t] * rng.normal()), 0, cells))
        for c in rng.choice(cells, n, replace=False):
          y, x = 4 * (c // (s // 4)), 4 * (c % (s // 4))
          img[y : y + 4, x : x + 4, t % 3] += 60.0
        continue
      amp = levels[t][labels[i, t]] + scale[t] * spacing * rng.normal()
      img[..., t % 3] += amp * patterns[t]
    Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(
      root / "images" / f"{ids[i]}.png"
    )
  (root / "tasks.json").write_text(
    json.dumps({"tasks": {t: list(c) for t, c in tasks.items()}, "image_size": s}, indent=1)
  )
  names = list(tasks)
  with open(root / "labels.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([*FIXED_COLUMNS, *names])
    for i in range(num_images):
      w.writerow(
        [ids[i], f"B{blocks[i]:04d}", *(tasks[t][labels[i, k]] for k, t in enumerate(names))]
      )
  marker.write_text(json.dumps(params))
  return root
