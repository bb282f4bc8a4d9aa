"""Synthetic BEN-GE archive in the real layout (see ``mtljax.data.benge.reader``) with planted truth.

Each patch gets a climate zone, and from the zone a land cover composition: a smooth random
field per WorldCover class plus the zone's log prior, arg-maxed per pixel, gives the land cover
map (water-only patches for zone 0; a no-data corner, code 0, in some patches). Then:

* Sentinel-2: each class has a 12-band spectral signature; vegetation classes brighten with the
  season; noise on top. Sentinel-1 VV/VH: class-specific backscatter (dB) plus speckle. So the map
  is recoverable per pixel from either image (S2 better than S1).
* elevation: a zone base height + class offsets (water low, snow and moss high) + a smooth field.
* season (0..1) is uniform; temperature = zone temperature + season + built-up share;
  relative humidity grows with the water/wetland share; the pressure level falls with elevation;
  wind is noise. Everything is written as BEN-GE's CSV tables and GeoTIFFs, the split as
  ``splits/<prefix>_{train,val,test}.csv`` (80/10/10).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data.benge import files as benge
from mtljax.data.synthetic import Generator

__all__ = ["write_synthetic_benge"]

GENERATOR_VERSION = 1
_K = len(benge.LULC_CODES)
_Z = len(benge.CLIMATE_ZONES)


def _tables() -> dict[str, np.ndarray]:
  """Fixed class signatures and zone priors (seed-independent planted truth)."""
  rng = np.random.default_rng(12345)
  s2 = rng.uniform(300, 4000, size=(_K, len(benge.S2_BANDS)))
  s2[7] = rng.uniform(50, 400, size=len(benge.S2_BANDS))  # water is dark
  s1 = np.stack([rng.uniform(-22, -4, _K), rng.uniform(-28, -10, _K)], axis=1)
  s1[7] = (-24.0, -30.0)
  prior = rng.normal(0, 1.2, size=(_Z, _K))
  prior[:, 9] -= 3.0  # mangroves are rare in Europe
  elev_zone = rng.uniform(50, 900, _Z)
  elev_class = np.zeros(_K)
  elev_class[[6, 10]] = (900.0, 600.0)  # snow and ice, moss and lichen: high
  elev_class[[7, 8]] = (-40.0, -20.0)  # water and wetland: low
  temp_zone = rng.uniform(270, 295, _Z)
  veg = np.zeros(_K)
  veg[[0, 1, 2, 3, 8, 9]] = 1.0
  return {
    "s2": s2,
    "s1": s1,
    "prior": prior,
    "elev_zone": elev_zone,
    "elev_class": elev_class,
    "temp_zone": temp_zone,
    "veg": veg,
  }


def _smooth(rng: np.random.Generator, k: int, size: int, cells: int = 4) -> np.ndarray:
  """``k`` smooth random fields ``[k, size, size]`` (bilinear upsampling of a coarse grid)."""
  from scipy import ndimage

  coarse = rng.normal(size=(k, cells, cells))
  return np.stack([ndimage.zoom(c, size / cells, order=1, mode="nearest") for c in coarse])


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
  n = x.shape[0] // f
  return x.reshape(n, f, n, f).mean(axis=(1, 3))


def _generate(out: Path, params: dict[str, Any]) -> None:
  import tifffile

  rng = np.random.default_rng(params["seed"])
  tab = _tables()
  size, prefix, n = params["size"], params["prefix"], params["num_patches"]
  out.mkdir(parents=True)
  for d in ("sentinel-2", "sentinel-1", "esaworldcover", "dem", "splits"):
    (out / d).mkdir()
  meta_rows, era_rows, wc_rows, ids = [], [], [], []
  for i in range(n):
    zone = int(rng.integers(_Z)) if rng.random() > 0.03 else 0
    day = int(rng.integers(1, 365))
    season = float(np.cos((day - 172) / 365.25 * 2 * np.pi) * 0.5 + 0.5)  # 1 at the solstice
    date = np.datetime64("2017-01-01") + np.timedelta64(day - 1, "D")
    stamp = str(date).replace("-", "") + f"T{rng.integers(9, 12):02d}{rng.integers(60):02d}31"
    pid = f"S2A_MSIL2A_{stamp}_{i // 100}_{i % 100}"
    sid = f"S1A_IW_GRDH_1SDV_{stamp}_29UPU_{i // 100}_{i % 100}"
    ids.append(pid)
    if zone == 0:
      cls = np.full((size, size), 7, np.int64)
    else:
      field = 1.5 * _smooth(rng, _K, size) + tab["prior"][zone][:, None, None]
      cls = field.argmax(0)
    codes = np.asarray(benge.LULC_CODES, np.uint8)[cls]
    if rng.random() < 0.2:  # a no-data corner
      c = size // 4
      codes[:c, :c] = 0
    veg = tab["veg"][cls]
    s2 = tab["s2"][cls] * (1.0 + 0.3 * (season - 0.5) * veg[..., None])
    s2 = s2 + rng.normal(0, 250, s2.shape)
    s1 = tab["s1"][cls] + rng.normal(0, 2.0, (size, size, 2))
    dem = (
      tab["elev_zone"][zone]
      + tab["elev_class"][cls]
      + 150 * _smooth(rng, 1, size)[0]
      + rng.normal(0, 5, (size, size))
    )
    frac = np.bincount(cls.ravel(), minlength=_K) / cls.size
    d2 = out / "sentinel-2" / pid
    d2.mkdir()
    for b, band in enumerate(benge.S2_BANDS):
      f = 1 if band in ("B02", "B03", "B04", "B08") else 6 if band in ("B01", "B09") else 2
      x = _block_mean(s2[..., b], f) if f > 1 else s2[..., b]
      tifffile.imwrite(d2 / f"{pid}_{band}.tif", np.clip(x, 0, 65535).astype(np.uint16))
    d1 = out / "sentinel-1" / sid
    d1.mkdir()
    for b, band in enumerate(benge.S1_BANDS):
      tifffile.imwrite(d1 / f"{sid}_{band}.tif", s1[..., b].astype(np.float32))
    tifffile.imwrite(out / "esaworldcover" / f"{pid}_esaworldcover.tif", codes)
    tifffile.imwrite(out / "dem" / f"{pid}_dem.tif", np.round(dem).astype(np.int16))
    temp = tab["temp_zone"][zone] + 12 * (season - 0.5) + 4 * frac[4] + rng.normal(0, 0.5)
    hum = 55 + 35 * (frac[7] + frac[8]) + rng.normal(0, 2)
    pres = 1013 - dem.mean() / 8.3 + rng.normal(0, 1)
    wu, wv = rng.normal(0, 3, 2)
    meta_rows.append(
      [
        i,
        pid,
        sid,
        stamp,
        stamp,
        f"{season:.6f}",
        f"{season:.6f}",
        f"{rng.uniform(-10, 30):.5f}",
        f"{rng.uniform(36, 70):.5f}",
        benge.CLIMATE_ZONES[zone],
      ]
    )
    era_rows.append(
      [
        i,
        pid,
        sid,
        f"{pres:.3f}",
        f"{temp:.3f}",
        f"{temp + rng.normal(0, 1):.3f}",
        f"{wu:.3f}",
        f"{wu:.3f}",
        f"{wv:.3f}",
        f"{wv:.3f}",
        f"{hum:.3f}",
        f"{hum:.3f}",
      ]
    )
    wc_rows.append([i, f"{pid}_esaworldcover.tif", pid] + [f"{v:.6f}" for v in frac])

  def write_csv(name: str, header: list[str], rows: list[list]) -> None:
    # pandas-style: a leading unnamed index column, as the released tables have.
    with open(out / name, "w") as f:
      f.write(",".join([""] + header) + "\n")
      f.writelines(",".join(str(v) for v in r) + "\n" for r in rows)

  write_csv(
    f"{prefix}_meta.csv",
    [
      "patch_id",
      "patch_id_s1",
      "timestamp_s2",
      "timestamp_s1",
      "season_s2",
      "season_s1",
      "lon",
      "lat",
      "climatezone",
    ],
    meta_rows,
  )
  write_csv(
    f"{prefix}_era-5.csv",
    [
      "patch_id",
      "patch_id_s1",
      "atmpressure_level",
      "temperature_s1",
      "temperature_s2",
      "wind-u_s1",
      "wind-u_s2",
      "wind-v_s1",
      "wind-v_s2",
      "relhumidity_s1",
      "relhumidity_s2",
    ],
    era_rows,
  )
  write_csv(
    f"{prefix}_esaworldcover.csv", ["filename", "patch_id"] + list(benge.LULC_NAMES), wc_rows
  )
  order = rng.permutation(n)
  a, b = int(round(0.8 * n)), int(round(0.9 * n))
  for split, sel in (("train", order[:a]), ("val", order[a:b]), ("test", order[b:])):
    (out / "splits" / f"{prefix}_{split}.csv").write_text(
      "".join(ids[j] + "\n" for j in sorted(sel))
    )


#: The generator: the synthetic archive's parameters and their defaults.
SYNTHETIC = Generator(
  # The generator's name before data/ had packages: a cache key in SYNTHETIC.txt, kept so
  # folders written before stay valid (and the written files byte-identical).
  key="mtljax.data.synthetic_benge.write_synthetic_benge",
  version=GENERATOR_VERSION,
  defaults=dict(num_patches=400, seed=0, size=120, prefix="ben-ge-8k"),
  description="Synthetic BEN-GE archive (mtljax, planted truth)",
)


def write_synthetic_benge(root: str | os.PathLike, *, overwrite: bool = False, **params) -> Path:
  """Write a synthetic BEN-GE archive (real layout, planted truth) under ``root``.

  Args:
    root: target folder; absent, empty, or written by a generator before (see ``write_once``).
    overwrite: regenerate even when the parameters match.
    **params: (defaults in ``SYNTHETIC.defaults``)
      num_patches: patches in all (split 80/10/10 into ``splits/``; at least 10).
      seed: sampling seed (signatures and priors are fixed).
      size: side of the 10 m rasters (the real archive: 120; must be a multiple of 6, the 60 m
        bands are ``size / 6``).
      prefix: release name in the file names.

  Returns:
    ``Path(root)``; read it with ``BenGeSource(root, split, prefix=prefix, image_size=...)``.
  """
  args = SYNTHETIC.arguments(params)
  num_patches, size = args["num_patches"], args["size"]
  if num_patches < 10:
    raise ValueError("num_patches must be >= 10 (80/10/10 split)")
  if size % 6 or size < 6:
    raise ValueError(f"size must be a positive multiple of 6 (60 m bands are size/6), got {size}")
  return SYNTHETIC.write(root, args, _generate, overwrite=overwrite)
