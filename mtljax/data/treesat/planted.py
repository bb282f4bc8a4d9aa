"""The planted structure of the synthetic TreeSatAI archive: fixed class prototypes and drawing.

See ``mtljax.data.treesat.synthetic`` for what is planted; this module draws the patches
(``sample_patches``) and their images (``draw_aerial``, ``draw_s1``, ``draw_s2``) from the
prototypes (``prototypes()``, independent of the sampling seed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtljax.data.treesat.archive import (
  GENERA,
  GENUS_TO_L1,
  GENUS_TO_L2,
  S1_NODATA,
  S2_BANDS,
  SPECIES,
  STAND_TYPES,
)

#: Strength of the genus-specific signal on top of the shared stand-type (L2) signal.
#: Strength of the genus-specific signal on top of the shared stand-type (L2) signal.
CHILD_COLOUR_STD = 4.0  # aerial mean colour offset per band (the stand-type offset: 15)
CHILD_ANGLE_DEG = (
  9.0  # texture orientation offset of the outermost siblings (stand types: 45 apart)
)
CHILD_PERIOD_SCALE = 0.12  # texture period scale of the outermost siblings
CHILD_SPECTRUM_STD = 0.03  # S2 band profile per genus (the stand-type profile: 0.09)
_NUM_G = len(GENERA)


# --------------------------------------------------------------------------------------------------
# Fixed class prototypes (independent of the sampling seed)
# --------------------------------------------------------------------------------------------------
def prototypes() -> dict[str, np.ndarray]:
  r = np.random.default_rng(20230611)
  leaf = np.array([GENUS_TO_L1[g] for g in GENERA])
  conifer, cleared = leaf == "conifer", leaf == "none"
  # Hierarchy: every genus inherits its stand type's (L2 parent's) signal and adds a weaker
  # child-specific one, as real TreeSAT siblings (e.g. Acer / Fraxinus / Tilia / Prunus) look alike.
  parent = np.array([STAND_TYPES.index(GENUS_TO_L2[g]) for g in GENERA])
  num_p = len(STAND_TYPES)
  sib_rank = np.array(
    [np.sum(parent[:i] == parent[i]) for i in range(_NUM_G)]
  )  # 0, 1, ... among siblings
  sib_count = np.bincount(parent, minlength=num_p)[parent]
  sib_pos = np.where(
    sib_count > 1, sib_rank / np.maximum(sib_count - 1, 1) * 2.0 - 1.0, 0.0
  )  # in [-1, 1]

  # Genus frequencies: 1 / (1 + 0.2 rank) over a fixed random ranking.
  rank = r.permutation(_NUM_G)
  p = 1.0 / (1.0 + 0.2 * rank)

  # Aerial mean colour, bands IR, G, B, R (colour-infrared: vegetation bright in IR): leaf-type
  # base + a stand-type offset (std 15) + a weaker genus offset (std CHILD_COLOUR_STD).
  base = np.where(conifer[:, None], [[125, 85, 68, 70]], [[165, 95, 72, 78]]).astype(np.float64)
  base[cleared] = [95, 110, 100, 115]
  colour = (
    base + r.normal(0.0, 15.0, (num_p, 4))[parent] + r.normal(0.0, CHILD_COLOUR_STD, (_NUM_G, 4))
  )

  # Texture: orientation x period per stand type (9 distinct pairs); siblings differ by a small
  # orientation offset (up to +-CHILD_ANGLE_DEG) and period scale (up to +-CHILD_PERIOD_SCALE).
  p_angle = (np.arange(num_p) % 4) * 45.0 + r.uniform(-5, 5, num_p)
  angle = np.deg2rad(p_angle[parent] + CHILD_ANGLE_DEG * sib_pos)
  period_frac = np.array([1 / 6, 1 / 9, 1 / 13])[np.arange(num_p) // 4][parent]
  period_frac = period_frac * (1.0 - CHILD_PERIOD_SCALE * sib_pos)
  band_amp = np.array([22.0, 12.0, 9.0, 11.0])  # texture strongest in IR

  # S2 spectra in archive band order B02 B03 B04 B08 B05 B06 B07 B8A B11 B12 B01 B09: leaf-type
  # profile x stand-type band profile (9 %) x weaker genus band profile (CHILD_SPECTRUM_STD).
  broad = np.array([350, 650, 400, 3300, 950, 2400, 3000, 3400, 1700, 800, 300, 3200], np.float64)
  conif = np.array([250, 450, 270, 2200, 650, 1600, 2000, 2300, 1100, 500, 220, 2100], np.float64)
  clear = np.array([600, 850, 900, 2200, 1200, 1800, 2000, 2300, 2500, 1700, 500, 2100], np.float64)
  spec = np.where(conifer[:, None], conif, broad)
  spec[cleared] = clear
  spec = spec * (1.0 + r.normal(0.0, 0.09, (num_p, 12)))[parent]
  spec = spec * (1.0 + r.normal(0.0, CHILD_SPECTRUM_STD, (_NUM_G, 12)))

  # S1: weak mean offsets (dB) and speckle strength per stand type, smaller genus offsets.
  s1_mean = np.stack([-9.0 + r.normal(0, 0.8, num_p), -15.5 + r.normal(0, 0.8, num_p)], axis=1)[
    parent
  ]
  s1_mean = s1_mean + r.normal(0, 0.25, (_NUM_G, 2))
  s1_speckle = r.uniform(1.0, 2.5, num_p)[parent] * (1.0 + r.normal(0, 0.05, _NUM_G))

  # Age class mean per genus (Cleared young).
  age_mean = r.uniform(2.5, 10.0, _NUM_G)
  age_mean[cleared] = 1.5
  return {
        "p": p / p.sum(), "colour": colour, "angle": angle, "period_frac": period_frac,
        "band_amp": band_amp, "spec": spec, "s1_mean": s1_mean, "s1_speckle": s1_speckle,
        "age_mean": age_mean,
    }  # fmt: skip


_NIR = np.array([b in ("B08", "B8A", "B07", "B09") for b in S2_BANDS])
_SPECIES_BY_GENUS = {g: [s for s in SPECIES if s.split("_")[0] == g.lower()] for g in GENERA}
assert all(_SPECIES_BY_GENUS.values()), "every genus needs at least one species"


def name_prefix(species: str) -> str:
  """``"alnus_spec"`` -> ``"Alnus_spec."``, ``"picea_abies"`` -> ``"Picea_abies"``."""
  parts = species.split("_")
  parts[0] = parts[0].capitalize()
  return "_".join(p + "." if p == "spec" else p for p in parts)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------
def sample_patches(
  n: int, rng: np.random.Generator, proto: dict[str, np.ndarray]
) -> dict[str, Any]:
  """Labels and per-patch nuisance parameters for n patches."""
  genus = rng.choice(_NUM_G, size=n, p=proto["p"])
  mixed = rng.random(n) < 0.2
  second = (genus + rng.integers(1, _NUM_G, n)) % _NUM_G  # != genus
  share2 = np.where(mixed, np.round(rng.uniform(0.08, 0.45, n), 2), 0.0)
  tiny = (rng.random(n) < 0.1) & (share2 < 0.4)
  third = (genus + rng.integers(1, _NUM_G, n)) % _NUM_G
  third = np.where(third == second, (third + 1) % _NUM_G, third)
  third = np.where(third == genus, (third + 1) % _NUM_G, third)
  share3 = np.where(tiny, np.round(rng.uniform(0.01, 0.06, n), 2), 0.0)
  age = np.clip(np.round(rng.normal(proto["age_mean"][genus], 1.5)), 1, 12).astype(int)
  species = [rng.choice(_SPECIES_BY_GENUS[GENERA[g]]) for g in genus]
  return {
        "genus": genus, "second": second, "share2": share2, "third": third, "share3": share3,
        "mixed": mixed, "age": age, "species": species,
        "side": rng.integers(0, 4, n),  # where the second genus' strip lies: left/right/top/bottom
        "phase": rng.uniform(0, 2 * np.pi, (n, 2)),
        "illum": rng.normal(1.0, 0.06, n), "jitter": rng.normal(0.0, 8.0, (n, 4)),
        "s2_illum": rng.normal(1.0, 0.08, n), "s2_jitter": rng.normal(1.0, 0.06, (n, 12)),
        "s1_offset": rng.normal(0.0, 0.7, (n, 1)),
        "s1_dead": rng.random(n) < 0.01,
        "year": rng.integers(2011, 2021, n),
        "x": rng.uniform(350_000, 600_000, n).round(1), "y": rng.uniform(5_700_000, 5_950_000, n).round(1),
    }  # fmt: skip


def _strip_mask(size: int, share2: np.ndarray, side: np.ndarray) -> np.ndarray:
  """bool [n, size, size]: True where the second genus lies (a strip of width share2 * size)."""
  width = np.round(share2 * size).astype(int)[:, None, None]
  ii = np.arange(size)
  rows, cols = ii[None, :, None], ii[None, None, :]
  side = side[:, None, None]
  return (
    ((side == 0) & (cols < width))
    | ((side == 1) & (cols >= size - width))
    | ((side == 2) & (rows < width))
    | ((side == 3) & (rows >= size - width))
  )


def draw_aerial(
  s: dict[str, Any], idx: slice, size: int, rng: np.random.Generator, proto
) -> np.ndarray:
  """uint8 [n, size, size, 4] for patches idx."""
  g1 = s["genus"][idx]
  n = len(g1)
  yy, xx = np.meshgrid(
    np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="ij"
  )
  age_scale = 1.0 + 0.04 * (s["age"][idx] - 6.0)  # older stands: coarser texture

  def texture(g, phase, scale):
    period = np.maximum(proto["period_frac"][g] * size * scale, 3.0).astype(np.float32)[
      :, None, None
    ]
    ang = proto["angle"][g].astype(np.float32)[:, None, None]
    t = xx[None] * np.cos(ang) + yy[None] * np.sin(ang)
    t *= np.float32(2 * np.pi) / period
    t += phase.astype(np.float32)[:, None, None]
    return np.sin(t, out=t)

  # Per-patch colour (illumination, jitter) and main-genus texture, all float32 and in place.
  colour = proto["colour"][g1] * s["illum"][idx][:, None] + s["jitter"][idx]  # [n, 4]
  tex = texture(g1, s["phase"][idx, 0], age_scale)
  mixed = np.flatnonzero(s["mixed"][idx])
  if mixed.size:  # second genus: its colour and texture inside its strip
    g2 = s["second"][idx][mixed]
    where2 = _strip_mask(size, s["share2"][idx][mixed], s["side"][idx][mixed])
    tex[mixed] = np.where(
      where2, texture(g2, s["phase"][idx, 1][mixed], age_scale[mixed]), tex[mixed]
    )
  # Pixel noise: uniform with std 18 (from raw random bytes: much faster than Gaussian draws).
  img = (
    np.frombuffer(rng.bytes(n * size * size * 4), np.uint8)
    .reshape(n, size, size, 4)
    .astype(np.float32)
  )
  img -= np.float32(127.5)
  img *= np.float32(18.0 / 73.9)  # std of uniform bytes = 73.9
  img += tex[..., None] * proto["band_amp"].astype(np.float32)
  img += colour.astype(np.float32)[:, None, None, :]
  if mixed.size:
    delta = (proto["colour"][g2] - proto["colour"][g1[mixed]]) * s["illum"][idx][mixed][:, None]
    img[mixed] += where2[..., None] * delta.astype(np.float32)[:, None, None, :]
  np.clip(img, 0, 255, out=img)
  return np.rint(img, out=img).astype(np.uint8)


def draw_s2(
  s: dict[str, Any], idx: slice, size: int, rng: np.random.Generator, proto
) -> np.ndarray:
  """uint16 [n, size, size, 12] for patches idx."""
  g1, g2 = s["genus"][idx], np.where(s["mixed"][idx], s["second"][idx], s["genus"][idx])
  n = len(g1)
  where2 = _strip_mask(size, s["share2"][idx], s["side"][idx])[..., None]
  spec = np.where(where2, proto["spec"][g2][:, None, None, :], proto["spec"][g1][:, None, None, :])
  nir_age = 1.0 - 0.015 * (s["age"][idx] - 6.0)[:, None, None, None] * _NIR
  img = spec * nir_age * (s["s2_illum"][idx][:, None] * s["s2_jitter"][idx])[:, None, None, :]
  img = img * (1.0 + 0.04 * rng.standard_normal((n, size, size, 12))) + rng.normal(
    0, 60, (n, size, size, 12)
  )
  return np.clip(np.round(img), 0, 65535).astype(np.uint16)


def draw_s1(
  s: dict[str, Any], idx: slice, size: int, rng: np.random.Generator, proto
) -> np.ndarray:
  """float32 [n, size, size, 3] (VV, VH, VV/VH in dB) with nodata for patches idx."""
  g = s["genus"][idx]
  n = len(g)
  speckle = proto["s1_speckle"][g][:, None, None, None]
  vv_vh = proto["s1_mean"][g][:, None, None, :] + s["s1_offset"][idx][:, None, None, :]
  vv_vh = vv_vh + speckle * rng.standard_normal((n, size, size, 2))
  img = np.concatenate([vv_vh, vv_vh[..., :1] - vv_vh[..., 1:]], axis=-1).astype(np.float32)
  u = rng.random((n, size, size))
  img[u < 0.02] = S1_NODATA
  img[(u >= 0.02) & (u < 0.03)] = np.nan
  img[s["s1_dead"][idx]] = S1_NODATA
  return img
