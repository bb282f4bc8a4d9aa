"""Synthetic TreeSatAI archive with planted truth, written in the real on-disk layout.

``write_synthetic_treesat(root)`` writes exactly what ``mtljax.data.treesat`` reads (list files,
labels JSON, side CSV, ``aerial/60m``, ``s1/60m``, ``s2/60m`` GeoTIFFs, ``geojson/bb_60m.GeoJSON``)
plus two files the real archive does not have:

* ``SYNTHETIC.txt``: says the data is synthetic and records the generator parameters. If it exists
  with the same parameters, generation is skipped (cheap to call on every start).
* ``SYNTHETIC_TRUTH.json``: the planted truth per file name (genus, species, stand type, leaf type,
  age class, genus shares, split), written independently of the reader's label parsing.

Planted structure (class prototypes are fixed, independent of ``seed``; ``seed`` draws the patches):

* hierarchy: as in the real archive, genera of one forest stand type (the L2 parent, e.g. Acer,
  Fraxinus, Tilia and Prunus in ``valuable_broadleaf``) look alike. Every genus prototype (colour,
  texture, spectrum, radar) is its stand type's prototype plus a weaker genus-specific part
  (``CHILD_*`` constants), so a model's genus confusions fall mostly inside the parent.
* genus: mild imbalance (most/least frequent about 3.8:1); about 20 % of patches have a second
  genus with share in [0.08, 0.45] occupying a strip of that width along one side of the patch,
  and about 10 % carry a small third share below the 0.07 threshold (so the JSON looks real).
* aerial (uint8 IR, G, B, R): mean colour (leaf-type base + stand-type offset, std 15 per band, +
  genus offset, std 4) plus an oriented sinusoidal texture (4 orientations x 3 periods per stand
  type, periods 1/13 .. 1/6 of the patch, so the signal survives 4x average pooling; siblings
  differ by up to +-9 degrees and +-12 % period), with per-patch illumination / colour jitter and
  pixel noise.
* s2 (uint16, archive band order): spectrum = leaf-type base profile x stand-type band profile (9 %)
  x genus band profile (3 %), per-patch illumination and per-band jitter, pixel noise; NIR bands dim
  slightly with age.
* s1 (float32 dB, VV, VH, VV/VH): weak signal (mean offsets and speckle strength per stand type,
  smaller genus offsets), noise, 2 % pixels -9999, 1 % pixels NaN, 1 % patches entirely -9999.
* L2/L1 follow from the genus (``GENUS_TO_L2``, ``GENUS_TO_L1``); age class 1..12 drawn per genus
  around its own mean, written both as the name token and in the side CSV (4 % of CSV age cells empty).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtljax.data.treesat import (
  AERIAL_BANDS,
  GENERA,
  GENUS_TO_L1,
  GENUS_TO_L2,
  S1_BANDS,
  S1_NODATA,
  S2_BANDS,
  SIDE_CSV,
  SPECIES,
  STAND_TYPES,
)

__all__ = ["write_synthetic_treesat", "write_tiny_treesat", "load_truth", "MARKER", "TRUTH_FILE"]

#: Bump when the generated content changes, so cached synthetic folders are regenerated.
GENERATOR_VERSION = 2  # 2: genera share their stand type's signal (hierarchical prototypes)
#: Strength of the genus-specific signal on top of the shared stand-type (L2) signal.
CHILD_COLOUR_STD = 4.0  # aerial mean colour offset per band (the stand-type offset: 15)
CHILD_ANGLE_DEG = (
  9.0  # texture orientation offset of the outermost siblings (stand types: 45 apart)
)
CHILD_PERIOD_SCALE = 0.12  # texture period scale of the outermost siblings
CHILD_SPECTRUM_STD = 0.03  # S2 band profile per genus (the stand-type profile: 0.09)
MARKER = "SYNTHETIC.txt"
TRUTH_FILE = "SYNTHETIC_TRUTH.json"
_RESOLUTION = "60m"
_LABELS_FILE = f"labels/TreeSatBA_v9_{_RESOLUTION}_multi_labels.json"
_SUFFIXES = ("WEFL_NLF", "BI_NLF")
_NUM_G = len(GENERA)


# --------------------------------------------------------------------------------------------------
# Fixed class prototypes (independent of the sampling seed)
# --------------------------------------------------------------------------------------------------
def _prototypes() -> dict[str, np.ndarray]:
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


def _name_prefix(species: str) -> str:
  """``"alnus_spec"`` -> ``"Alnus_spec."``, ``"picea_abies"`` -> ``"Picea_abies"``."""
  parts = species.split("_")
  parts[0] = parts[0].capitalize()
  return "_".join(p + "." if p == "spec" else p for p in parts)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------
def _sample_patches(
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


def _aerial(
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


def _s2(s: dict[str, Any], idx: slice, size: int, rng: np.random.Generator, proto) -> np.ndarray:
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


def _s1(s: dict[str, Any], idx: slice, size: int, rng: np.random.Generator, proto) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _geotags(x: float, y: float, pixel: float, nodata: str | None) -> list[tuple]:
  """Minimal GeoTIFF tags: pixel scale, tie point, EPSG:25832 key directory, GDAL nodata."""
  tags = [
    (33550, 12, 3, (pixel, pixel, 0.0), True),  # ModelPixelScaleTag
    (33922, 12, 6, (0.0, 0.0, 0.0, x, y, 0.0), True),  # ModelTiepointTag (upper-left corner)
    # GeoKeyDirectory: version 1.1.0, 3 keys: projected model, pixel-is-area, EPSG 25832.
    (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 25832), True),
  ]
  if nodata is not None:
    tags.append((42113, 2, 0, nodata, True))  # GDAL_NODATA
  return tags


def _write_tif(path: Path, arr_hwc: np.ndarray, planar: str, extratags: list[tuple]) -> None:
  import tifffile

  # Always pass planarconfig explicitly: with photometric='minisblack' alone, tifffile would
  # store an (H, W, C) array as H pages of W x C images.
  if planar == "band":
    tifffile.imwrite(path, np.ascontiguousarray(np.moveaxis(arr_hwc, -1, 0)), photometric="minisblack",
                         planarconfig="separate", metadata=None, extratags=extratags)  # fmt: skip
  else:
    tifffile.imwrite(path, arr_hwc, photometric="minisblack", planarconfig="contig", metadata=None,
                         extratags=extratags)  # fmt: skip


def _marker_params(path: Path) -> dict[str, Any] | None:
  marker = path / MARKER
  if not marker.is_file():
    return None
  for line in marker.read_text().splitlines():
    if line.startswith("parameters: "):
      try:
        return json.loads(line[len("parameters: ") :])
      except json.JSONDecodeError:
        return None
  return None


def write_once(
  root: Path,
  params: dict[str, Any],
  generate: Callable[[Path, dict[str, Any]], None],
  *,
  overwrite: bool = False,
) -> Path:
  """Write a synthetic dataset folder ``root`` with ``generate(tmp, params)`` unless it is there.

  ``generate`` must write ``MARKER`` last, with a ``parameters: <json>`` line (see
  ``marker_text``). A folder whose marker holds the same parameters is kept as is (cheap to call
  on every start); one with other parameters is replaced as a whole; a non-empty folder without
  the marker is never touched. The new folder is built beside ``root`` and swapped in with
  renames, so readers (and other processes calling this concurrently, e.g. several local jax
  processes) never see a half-written dataset.

  Raises:
    FileExistsError: ``root`` is a non-empty folder that was not written by a generator.
  """
  root = Path(root).expanduser()
  if root.exists():
    old = _marker_params(root)
    if old is None and any(root.iterdir()):
      raise FileExistsError(
        f"{root} is not empty and has no {MARKER}: refusing to write synthetic data there"
      )
    if old == params and not overwrite:
      return root
  tmp = root.with_name(f".{root.name}.tmp{os.getpid()}")
  trash = root.with_name(f".{root.name}.old{os.getpid()}")
  for p in (tmp, trash):
    if p.exists():
      shutil.rmtree(p)
  root.parent.mkdir(parents=True, exist_ok=True)
  try:
    generate(tmp, params)
    if root.exists():
      old = _marker_params(root)
      if old == params and not overwrite:  # another process finished first
        return root
      if old is None and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and has no {MARKER}: refusing to replace it")
      root.rename(trash)  # ours (marker present) or empty
    try:
      tmp.rename(root)
    except OSError:
      if _marker_params(root) == params:  # lost a race to an identical dataset
        return root
      raise
  finally:
    for p in (tmp, trash):
      if p.exists():
        shutil.rmtree(p, ignore_errors=True)
  return root


def marker_text(description: str, params: dict[str, Any], seconds: float) -> str:
  """The content of ``MARKER``: what the folder is, and the parameters ``write_once`` compares."""
  return (
    f"{description}\ngenerated in {seconds:.1f} s\n"
    "parameters: " + json.dumps(params, sort_keys=True) + "\n"
  )


def write_synthetic_treesat(
  root: str | os.PathLike,
  *,
  num_train: int = 400,
  num_test: int = 100,
  seed: int = 0,
  aerial_size: int = 304,
  s_size: int = 6,
  planar: str = "pixel",
  overwrite: bool = False,
) -> Path:
  """Write a synthetic TreeSatAI archive (real layout, planted truth) under ``root``.

  Args:
    root: target folder. It must be absent, empty, or a synthetic folder written before (it
      holds ``SYNTHETIC.txt``; such a folder is replaced as a whole when the parameters change).
      A non-empty folder without the marker is never touched.
    num_train, num_test: patches in ``train_filenames.lst`` / ``test_filenames.lst``.
    seed: sampling seed (class prototypes are fixed).
    aerial_size: aerial side length (the real archive: 304; read back with
      ``TreeSatAISource(..., aerial_size=...)`` when different).
    s_size: Sentinel side length (real 60 m archive: 6).
    planar: ``"pixel"`` (pixel-interleaved, GDAL's default) or ``"band"`` (band-interleaved).
    overwrite: regenerate even if the marker matches.

  Returns:
    ``Path(root)``.

  Raises:
    FileExistsError: ``root`` is a non-empty folder that was not written by this generator.
  """
  if planar not in ("pixel", "band"):
    raise ValueError(f"planar must be 'pixel' or 'band', got {planar!r}")
  if num_train < 1 or num_test < 1:
    raise ValueError("num_train and num_test must be >= 1")
  root = Path(root).expanduser()
  params = {
        "generator": "mtljax.data.synthetic.write_synthetic_treesat", "version": GENERATOR_VERSION,
        "num_train": int(num_train), "num_test": int(num_test), "seed": int(seed),
        "aerial_size": int(aerial_size), "s_size": int(s_size), "planar": planar,
    }  # fmt: skip
  return write_once(root, params, _generate, overwrite=overwrite)


def _generate(out: Path, params: dict[str, Any]) -> None:
  t0 = time.perf_counter()
  proto = _prototypes()
  rng = np.random.default_rng(params["seed"])
  n_train, n_test = params["num_train"], params["num_test"]
  n = n_train + n_test
  asz, ssz, planar = params["aerial_size"], params["s_size"], params["planar"]
  s = _sample_patches(n, rng, proto)

  ids = rng.choice(np.arange(1, 1_000_000), size=n, replace=False)
  suffix = rng.choice(_SUFFIXES, size=n)
  names = [
    f"{_name_prefix(s['species'][i])}_{s['age'][i]}_{ids[i]}_{suffix[i]}.tif" for i in range(n)
  ]
  split = np.array(["train"] * n_train + ["test"] * n_test)

  for d in ("aerial", "s1", "s2"):
    (out / d / _RESOLUTION).mkdir(parents=True)
  (out / "labels").mkdir()
  (out / "geojson").mkdir()

  # Images, in chunks to bound memory.
  chunk = max(1, min(n, (64 * 304 * 304) // (asz * asz)))
  for start in range(0, n, chunk):
    idx = slice(start, min(n, start + chunk))
    aerial = _aerial(s, idx, asz, rng, proto)
    s1 = _s1(s, idx, ssz, rng, proto)
    s2 = _s2(s, idx, ssz, rng, proto)
    for j, i in enumerate(range(idx.start, idx.stop)):
      x, y = float(s["x"][i]), float(s["y"][i])
      _write_tif(
        out / "aerial" / _RESOLUTION / names[i], aerial[j], planar, _geotags(x, y, 60.8 / asz, None)
      )
      _write_tif(
        out / "s1" / _RESOLUTION / names[i], s1[j], planar, _geotags(x, y, 60.0 / ssz, "-9999")
      )
      _write_tif(
        out / "s2" / _RESOLUTION / names[i], s2[j], planar, _geotags(x, y, 60.0 / ssz, None)
      )

  # Labels JSON: [[genus, share], ...] largest share first, shares sum to 1.
  labels, truth = {}, {}
  for i, name in enumerate(names):
    g = GENERA[s["genus"][i]]
    extra = []
    if s["share2"][i] > 0:
      extra.append([GENERA[s["second"][i]], float(s["share2"][i])])
    if s["share3"][i] > 0:
      extra.append([GENERA[s["third"][i]], float(s["share3"][i])])
    main_share = round(1.0 - sum(e[1] for e in extra), 2)
    labels[name] = [[g, main_share]] + extra
    truth[name] = {
      "split": str(split[i]),
      "genus": g,
      "species": str(s["species"][i]),
      "stand_type": GENUS_TO_L2[g],
      "leaf_type": GENUS_TO_L1[g],
      "age": int(s["age"][i]),
      "shares": labels[name],
      "s1_all_nodata": bool(s["s1_dead"][i]),
    }
  (out / _LABELS_FILE).write_text(json.dumps(labels))
  (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1))

  # Side CSV: name,stand_type,age (some age cells empty).
  empty_age = rng.random(n) < 0.04
  lines = ["name,stand_type,age"]
  for i, name in enumerate(names):
    lines.append(
      f"{name},{GENUS_TO_L2[GENERA[s['genus'][i]]]},{'' if empty_age[i] else s['age'][i]}"
    )
  (out / SIDE_CSV).write_text("\n".join(lines) + "\n")

  # Split lists (sorted, as a directory listing would be) with a trailing blank line.
  (out / "train_filenames.lst").write_text("\n".join(sorted(names[:n_train])) + "\n\n")
  (out / "test_filenames.lst").write_text("\n".join(sorted(names[n_train:])) + "\n")

  # Bounding boxes (EPSG:25832), properties as in the archive.
  features = []
  for i, name in enumerate(names):
    x, y = float(s["x"][i]), float(s["y"][i])
    ring = [[x, y], [x + 60.8, y], [x + 60.8, y - 60.8], [x, y - 60.8], [x, y]]
    features.append({
            "type": "Feature",
            "properties": {"IMG_ID": name, "SPLIT": str(split[i]), "YEAR": int(s["year"][i])},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        })  # fmt: skip
  geo = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::25832"}},
           "features": features}  # fmt: skip
  (out / "geojson" / f"bb_{_RESOLUTION}.GeoJSON").write_text(json.dumps(geo))

  # Marker last: its presence means the folder is complete.
  (out / MARKER).write_text(
    "SYNTHETIC data in the TreeSatAI archive layout, written by mtljax.data.synthetic.\n"
    "This is NOT the real TreeSatAI archive. Planted truth per file: " + TRUTH_FILE + "\n"
    "Planted hierarchy: each genus = its stand type's (L2) colour/texture/spectrum/radar signal "
    "plus a weaker genus-specific one, so genus confusions fall mostly inside the stand type.\n"
    f"bands: aerial {AERIAL_BANDS}, s1 {S1_BANDS}, s2 {S2_BANDS}\n"
    f"generated in {time.perf_counter() - t0:.1f} s\n"
    "parameters: " + json.dumps(params, sort_keys=True) + "\n"
  )


def write_tiny_treesat(root: str | os.PathLike, *, seed: int = 0, planar: str = "pixel") -> Path:
  """A small fixture for tests: 48 train + 24 test patches, aerial 32x32, Sentinel 6x6.

  Read it with ``TreeSatAISource(root, split, aerial_size=32)``.
  """
  return write_synthetic_treesat(root, num_train=48, num_test=24, seed=seed, aerial_size=32, s_size=6,
                                   planar=planar)  # fmt: skip


def load_truth(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
  """The planted truth of a synthetic archive: file name -> {split, genus, species, stand_type,
  leaf_type, age, shares, s1_all_nodata}."""
  return json.loads((Path(root) / TRUTH_FILE).read_text())
