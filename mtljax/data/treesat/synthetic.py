"""Synthetic TreeSatAI archive with planted truth, written in the real on-disk layout.

``write_synthetic_treesat(root)`` writes exactly what ``mtljax.data.treesat.reader`` reads (list files,
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
from pathlib import Path
from typing import Any

import numpy as np

from mtljax.data.source import check_option
from mtljax.data.synthetic import Generator
from mtljax.data.treesat.archive import (
  AERIAL_BANDS,
  GENERA,
  GENUS_TO_L1,
  GENUS_TO_L2,
  S1_BANDS,
  S2_BANDS,
  SIDE_CSV,
)
from mtljax.data.treesat.planted import (
  draw_aerial,
  draw_s1,
  draw_s2,
  name_prefix,
  prototypes,
  sample_patches,
)

#: Bump when the generated content changes, so cached synthetic folders are regenerated.
GENERATOR_VERSION = 2  # 2: genera share their stand type's signal (hierarchical prototypes)
TRUTH_FILE = "SYNTHETIC_TRUTH.json"
_RESOLUTION = "60m"
_LABELS_FILE = f"labels/TreeSatBA_v9_{_RESOLUTION}_multi_labels.json"
_SUFFIXES = ("WEFL_NLF", "BI_NLF")


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


#: The generator: the synthetic archive's parameters and their defaults.
SYNTHETIC = Generator(
  # The generator's name before data/ had packages: a cache key in SYNTHETIC.txt, kept so
  # folders written before stay valid (and the written files byte-identical).
  key="mtljax.data.synthetic.write_synthetic_treesat",
  version=GENERATOR_VERSION,
  defaults=dict(num_train=400, num_test=100, seed=0, aerial_size=304, s_size=6, planar="pixel"),
  description="SYNTHETIC data in the TreeSatAI archive layout, written by mtljax.data.synthetic.\n"
  "This is NOT the real TreeSatAI archive. Planted truth per file: " + TRUTH_FILE + "\n"
  "Planted hierarchy: each genus = its stand type's (L2) colour/texture/spectrum/radar signal "
  "plus a weaker genus-specific one, so genus confusions fall mostly inside the stand type.\n"
  f"bands: aerial {AERIAL_BANDS}, s1 {S1_BANDS}, s2 {S2_BANDS}",
)


def write_synthetic_treesat(root: str | os.PathLike, *, overwrite: bool = False, **params) -> Path:
  """Write a synthetic TreeSatAI archive (real layout, planted truth) under ``root``.

  Args:
    root: target folder. It must be absent, empty, or a synthetic folder written before (it
      holds ``SYNTHETIC.txt``; such a folder is replaced as a whole when the parameters change).
      A non-empty folder without the marker is never touched.
    overwrite: regenerate even if the marker matches.
    **params: (defaults in ``SYNTHETIC.defaults``)
      num_train, num_test: patches in ``train_filenames.lst`` / ``test_filenames.lst``.
      seed: sampling seed (class prototypes are fixed).
      aerial_size: aerial side length (the real archive: 304; read back with
        ``TreeSatAISource(..., aerial_size=...)`` when different).
      s_size: Sentinel side length (real 60 m archive: 6).
      planar: ``"pixel"`` (pixel-interleaved, GDAL's default) or ``"band"`` (band-interleaved).

  Returns:
    ``Path(root)``.

  Raises:
    FileExistsError: ``root`` is a non-empty folder that was not written by this generator.
  """
  args = SYNTHETIC.arguments(params)
  check_option("planar", args["planar"], ("pixel", "band"))
  if args["num_train"] < 1 or args["num_test"] < 1:
    raise ValueError("num_train and num_test must be >= 1")
  return SYNTHETIC.write(root, args, _generate, overwrite=overwrite)


def _generate(out: Path, params: dict[str, Any]) -> None:
  proto = prototypes()
  rng = np.random.default_rng(params["seed"])
  n_train, n_test = params["num_train"], params["num_test"]
  n = n_train + n_test
  asz, ssz, planar = params["aerial_size"], params["s_size"], params["planar"]
  s = sample_patches(n, rng, proto)

  ids = rng.choice(np.arange(1, 1_000_000), size=n, replace=False)
  suffix = rng.choice(_SUFFIXES, size=n)
  names = [
    f"{name_prefix(s['species'][i])}_{s['age'][i]}_{ids[i]}_{suffix[i]}.tif" for i in range(n)
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
    aerial = draw_aerial(s, idx, asz, rng, proto)
    s1 = draw_s1(s, idx, ssz, rng, proto)
    s2 = draw_s2(s, idx, ssz, rng, proto)
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
