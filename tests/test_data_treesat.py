"""TreeSatAI reader and synthetic generator: layout, planted truth, hierarchy, splits, errors."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mtljax.data import get_dataset
from mtljax.data.source import DataError
from mtljax.data.synthetic import MARKER
from mtljax.data.treesat.archive import (
  GENERA,
  GENUS_TO_L1,
  GENUS_TO_L2,
  L2_TO_L1,
  LEAF_TYPES,
  S2_BANDS,
  SPECIES,
  STAND_TYPES,
  hierarchy,
  parse_name,
)
from mtljax.data.treesat.reader import TreeSatAISource
from mtljax.data.treesat.synthetic import load_truth, write_synthetic_treesat, write_tiny_treesat
from mtljax.data.treesat.tiff import read_image

A = 32  # aerial side of the tiny fixture
LABELS = "labels/TreeSatBA_v9_60m_multi_labels.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
  return write_tiny_treesat(tmp_path_factory.mktemp("treesat") / "tiny")


@pytest.fixture()
def copy(tiny, tmp_path) -> Path:
  """A private copy of the fixture that a test may break."""
  dst = tmp_path / "copy"
  shutil.copytree(tiny, dst)
  return dst


def src(root, split="train", **kw) -> TreeSatAISource:
  return TreeSatAISource(root, split, aerial_size=A, **kw)


def test_vocabularies():
  assert len(GENERA) == 15 and len(SPECIES) == 20 and len(STAND_TYPES) == 9 and len(LEAF_TYPES) == 3
  assert GENERA[0] == "Abies" and GENERA[8] == "Picea" and GENERA[-1] == "Tilia"
  assert S2_BANDS[:4] == ("B02", "B03", "B04", "B08") and S2_BANDS[-2:] == ("B01", "B09")
  conifers = {g for g, l1 in GENUS_TO_L1.items() if l1 == "conifer"}
  assert conifers == {"Abies", "Larix", "Picea", "Pinus", "Pseudotsuga"}
  assert GENUS_TO_L1["Cleared"] == "none" and GENUS_TO_L1["Fagus"] == "broadleaf"
  h = hierarchy()
  assert h["l2"]["parent_of_l3"].shape == (15,) and h["l1"]["parent_of_l2"].shape == (9,)
  for g, genus in enumerate(GENERA):
    stand = STAND_TYPES[h["l2"]["parent_of_l3"][g]]
    assert stand == GENUS_TO_L2[genus]
    assert (
      LEAF_TYPES[h["l1"]["parent_of_l2"][STAND_TYPES.index(stand)]]
      == GENUS_TO_L1[genus]
      == L2_TO_L1[stand]
    )


@pytest.mark.parametrize(
  "name, expected",
  [
    ("Picea_abies_3_46636_WEFL_NLF.tif", ("picea_abies", 3)),
    ("Alnus_spec._5_13114_WEFL_NLF.tif", ("alnus_spec", 5)),
    ("Pseudotsuga_menziesii_1_339575_BI_NLF.tif", ("pseudotsuga_menziesii", 1)),
    ("Cleared_2_1234_BI_NLF.tif", ("cleared", 2)),
    ("Weird_name.tif", ("weird_name", None)),
  ],
)
def test_parse_name(name, expected):
  assert parse_name(name) == expected


def test_layout(tiny):
  for p in ["train_filenames.lst", "test_filenames.lst", LABELS, "labels/stand_type_age.csv",
              "geojson/bb_60m.GeoJSON", MARKER]:  # fmt: skip
    assert (tiny / p).is_file(), p
  names = [n for n in (tiny / "train_filenames.lst").read_text().split() if n]
  with tifffile.TiffFile(tiny / "aerial" / "60m" / names[0]) as t:
    assert t.is_geotiff and t.series[0].shape == (A, A, 4) and t.series[0].dtype == np.uint8
  geo = json.loads((tiny / "geojson" / "bb_60m.GeoJSON").read_text())
  props = geo["features"][0]["properties"]
  assert set(props) >= {"IMG_ID", "SPLIT", "YEAR"}
  assert {f["properties"]["IMG_ID"] for f in geo["features"]} == set(load_truth(tiny))


def test_read_back_matches_planted_truth(tiny):
  truth = load_truth(tiny)
  h = hierarchy()
  for split in ("train", "val", "test"):
    s = src(tiny, split)
    assert len(s) > 0
    for i, name in enumerate(s.names):
      ex = s[i]
      t = truth[name]
      assert (
        ex["inputs"]["aerial"].shape == (A, A, 4) and ex["inputs"]["aerial"].dtype == np.float32
      )
      assert ex["inputs"]["s1"].shape == (6, 6, 3) and ex["inputs"]["s1"].dtype == np.float32
      assert ex["inputs"]["s2"].shape == (6, 6, 12) and ex["inputs"]["s2"].dtype == np.float32
      assert ex["inputs"]["age"].shape == (1,) and ex["inputs"]["age"][0] == t["age"]
      tg, m = ex["targets"], ex["mask"]
      assert tg["l3"].dtype == np.int32 and tg["l3"].shape == ()
      assert GENERA[tg["l3"]] == t["genus"]
      assert STAND_TYPES[tg["l2"]] == t["stand_type"]
      assert LEAF_TYPES[tg["l1"]] == t["leaf_type"]
      assert SPECIES[tg["species"]] == t["species"]
      assert tg["age"] == t["age"] and tg["age"].dtype == np.float32
      want = np.zeros(15, np.float32)
      for genus, share in t["shares"]:
        want[GENERA.index(genus)] = share > 0.07
      np.testing.assert_array_equal(tg["l3_multi"], want)
      assert tg["l3_multi"].dtype == np.float32
      # Hierarchy: l2 is the parent of l3, l1 the parent of l2.
      assert tg["l2"] == h["l2"]["parent_of_l3"][tg["l3"]]
      assert tg["l1"] == h["l1"]["parent_of_l2"][tg["l2"]]
      assert set(m) == set(tg) and all(v.dtype == np.float32 and v == 1.0 for v in m.values())
      assert ex["meta"]["index"] == i and ex["meta"]["index"].dtype == np.int32
      # Raw values: aerial uint8 range, s2 uint16 range, both integral.
      a = ex["inputs"]["aerial"]
      assert a.min() >= 0 and a.max() <= 255 and np.all(a == np.round(a))


def test_label_arrays_agree_with_examples(tiny):
  s = src(tiny, "val")
  arrays = s.label_arrays()
  for i in range(len(s)):
    ex = s[i]
    for k in ex["targets"]:
      np.testing.assert_array_equal(arrays["targets"][k][i], ex["targets"][k])
      assert arrays["mask"][k][i] == ex["mask"][k]


def test_fields(tiny):
  s = src(tiny)
  f = s.fields
  assert f["aerial"] == {**f["aerial"], "kind": "image", "shape": (A, A, 4), "role": "input"}
  assert f["s1"]["kind"] == "small_image" and f["s1"]["shape"] == (6, 6, 3)
  assert f["s2"]["shape"] == (6, 6, 12) and f["s2"]["channels"] == S2_BANDS
  assert (
    f["l3"]["kind"] == "classification"
    and f["l3"]["num_classes"] == 15
    and f["l3"]["class_names"] == GENERA
  )
  assert (
    f["l2"]["num_classes"] == 9
    and f["l1"]["num_classes"] == 3
    and f["species"]["num_classes"] == 20
  )
  assert f["l3_multi"]["kind"] == "multilabel" and f["l3_multi"]["shape"] == (15,)
  assert f["age"]["kind"] == "regression" and f["age"]["role"] == "both"
  assert f["age"]["input"] == {**f["age"]["input"], "kind": "tabular", "shape": (1,)}
  ex = s[0]
  for k, v in s.input_fields.items():
    assert ex["inputs"][k].shape == v["shape"]
  for k, v in s.target_fields.items():
    assert ex["targets"][k].shape == v["shape"]


def test_s1_nodata_becomes_nan(tiny):
  s = src(tiny)
  found = 0
  for i, name in enumerate(s.names):
    raw = tifffile.imread(tiny / "s1" / "60m" / name)
    nodata = (raw == -9999) | np.isnan(raw)
    if nodata.any():
      got = s[i]["inputs"]["s1"]
      assert np.all(np.isnan(got[nodata])) and not np.isnan(got[~nodata]).any()
      assert not np.any(got == -9999)
      found += 1
  assert found > 0, "the fixture should contain S1 nodata"


def test_band_and_pixel_interleaved_read_the_same(tiny, tmp_path):
  band = write_tiny_treesat(tmp_path / "band", planar="band")  # same seed, band-interleaved files
  name = src(tiny).names[0]
  with tifffile.TiffFile(band / "s2" / "60m" / name) as t:
    assert t.series[0].shape == (12, 6, 6)  # really stored (bands, H, W)
  a, b = src(tiny), src(band)
  for i in range(5):
    ea, eb = a[i], b[i]
    for k in ea["inputs"]:
      np.testing.assert_array_equal(ea["inputs"][k], eb["inputs"][k])
  # One page per band also reads as [H, W, C].
  arr = tifffile.imread(tiny / "s2" / "60m" / name)
  pages = tmp_path / "pages.tif"
  with tifffile.TiffWriter(pages) as w:
    for c in range(12):
      w.write(arr[..., c], photometric="minisblack")
  np.testing.assert_array_equal(read_image(pages, bands=12, size=6, dtype=np.uint16), arr)


def test_splits(tiny):
  test_list = [
    n.strip() for n in (tiny / "test_filenames.lst").read_text().splitlines() if n.strip()
  ]
  val, test = src(tiny, "val"), src(tiny, "test")
  assert set(val.names).isdisjoint(test.names)
  assert sorted(val.names + test.names) == sorted(test_list)
  assert len(val) == round(0.5 * len(test_list))
  assert val.names == [n for n in test_list if n in set(val.names)]  # list order kept
  assert src(tiny, "val").names == val.names  # deterministic
  assert src(tiny, "val", split_seed=1).names != val.names
  assert len(src(tiny, "val", val_fraction=0.25)) == round(0.25 * len(test_list))
  train = src(tiny, "train")
  assert set(train.names).isdisjoint(test_list)


def test_csv_sources(tiny):
  s = src(tiny, "train", l2_source="csv", age_source="csv")
  g = src(tiny, "train")
  rows = {}
  for line in (tiny / "labels/stand_type_age.csv").read_text().splitlines()[1:]:
    name, stand, age = line.split(",")
    rows[name] = (stand, age)
  la, lg = s.label_arrays(), g.label_arrays()
  np.testing.assert_array_equal(
    la["targets"]["l2"], lg["targets"]["l2"]
  )  # generator: CSV == genus map
  for i, name in enumerate(s.names):
    ex = s[i]
    if rows[name][1] == "":
      assert (
        ex["mask"]["age"] == 0 and ex["targets"]["age"] == 0 and np.isnan(ex["inputs"]["age"][0])
      )
    else:
      assert ex["mask"]["age"] == 1 and ex["targets"]["age"] == float(rows[name][1])


def test_unknown_species_is_masked_not_an_error(copy):
  lst = copy / "train_filenames.lst"
  names = [n for n in lst.read_text().split() if n]
  old = names[0]
  new = "Abies_unknownii_" + old.split("_", 2)[2]
  labels = json.loads((copy / LABELS).read_text())
  labels[new] = labels[old]
  (copy / LABELS).write_text(json.dumps(labels))
  for m in ("aerial", "s1", "s2"):
    shutil.copy(copy / m / "60m" / old, copy / m / "60m" / new)
  lst.write_text("\n".join([new] + names[1:]) + "\n")
  ex = src(copy)[0]
  assert ex["mask"]["species"] == 0 and ex["mask"]["l3"] == 1


def test_modality_subset_never_opens_other_folders(copy):
  shutil.rmtree(copy / "aerial")
  s = TreeSatAISource(copy, "train", modalities=("s2",))  # aerial size unknown and irrelevant
  ex = s[0]
  assert set(ex["inputs"]) == {"s2", "age"}
  assert set(s.input_fields) == {"s2", "age"}


def test_s2_as_a_target_is_its_mean_spectrum(copy):
  """`target_modalities=("s2",)`: the target `s2` is the patch's per-band mean in the units the
  input path reads; the same from an example and from `label_arrays`; a role "both" field when
  S2 is an input too; no S2 target (and no S2 folder opened) unless asked."""
  target = src(copy, "val", modalities=("aerial", "s1"), target_modalities=("s2",))
  both = src(copy, "val", target_modalities=("s2",))
  labels = target.label_arrays()
  for i in range(len(target)):
    ex, ex_both = target[i], both[i]
    want = both.read_modality("s2", i).mean((0, 1))
    assert "s2" not in ex["inputs"] and ex["targets"]["s2"].dtype == np.float32
    np.testing.assert_allclose(ex["targets"]["s2"], want, rtol=1e-6)
    np.testing.assert_array_equal(ex_both["targets"]["s2"], ex["targets"]["s2"])
    np.testing.assert_array_equal(labels["targets"]["s2"][i], ex["targets"]["s2"])
    assert ex["mask"]["s2"] == labels["mask"]["s2"][i] == 1.0
  assert labels["targets"]["s2"].max() > 100  # reflectance*10000, as the input reads it
  field = target.fields["s2"]
  assert field == {**field, "kind": "regression", "shape": (12,), "num_outputs": 12}
  assert field["role"] == "target" and field["channels"] == S2_BANDS
  assert both.fields["s2"]["role"] == "both" and both.fields["s2"]["input"]["shape"] == (6, 6, 12)
  plain = src(copy, "val", modalities=("aerial", "s1"))
  assert "s2" not in plain.target_fields and "s2" not in plain[0]["targets"]
  shutil.rmtree(copy / "s2")
  src(copy, "val", modalities=("aerial", "s1"))  # never opens s2/
  with pytest.raises(DataError, match=r"s2/60m for modality 's2' does not exist"):
    src(copy, "val", modalities=("aerial", "s1"), target_modalities=("s2",))


def test_pickle_roundtrip(tiny):
  s = src(tiny, "val")
  s2 = pickle.loads(pickle.dumps(s))
  np.testing.assert_array_equal(s[1]["inputs"]["s2"], s2[1]["inputs"]["s2"])
  assert s2.names == s.names


def test_registry(tiny):
  spec = get_dataset("treesat")
  assert spec.source_cls is TreeSatAISource
  assert spec.write_synthetic is write_synthetic_treesat
  with pytest.raises(KeyError, match="unknown dataset"):
    get_dataset("nope")


# ------------------------------------------------------------------------------------------ errors
def _names(root: Path) -> list[str]:
  return [n for n in (root / "train_filenames.lst").read_text().split() if n]


def test_error_missing_root(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    TreeSatAISource(tmp_path / "nowhere", "train")


def test_error_missing_list(copy):
  (copy / "test_filenames.lst").unlink()
  with pytest.raises(DataError, match="test_filenames.lst"):
    src(copy, "val")


def test_new_data_opens_a_root_without_lists_or_labels(copy, caplog):
  """Opened for its inputs alone (predict mode's `inputs_only`), a root without split lists is
  every patch in all its folders, unsplit, and one without the labels JSON has no labels; a
  training source on it is still refused."""
  everything = sorted(set(_names(copy)) | set((copy / "test_filenames.lst").read_text().split()))
  for f in ("train_filenames.lst", "test_filenames.lst", LABELS):
    (copy / f).unlink()
  with pytest.raises(DataError, match="train_filenames.lst does not exist"):
    src(copy, "train")
  with caplog.at_level("WARNING"):
    new = src(copy, "test", modalities=("aerial", "s1"), inputs_only=True)
  assert new.names == everything and f"all {len(everything)} patches" in caplog.text
  assert new.split == "all"
  labels = new.label_arrays()
  assert set(labels["mask"]) == {"l3", "l2", "l1", "age", "species", "l3_multi"}
  assert all(not m.any() for m in labels["mask"].values())
  with pytest.raises(DataError, match="labels JSON"):  # (lists back, labels still absent)
    (copy / "test_filenames.lst").write_text("\n".join(everything))
    src(copy, "test", modalities=("aerial", "s1"))


def test_read_input_reads_a_patch_as_the_source(tiny):
  """The registry entry's hook (a table of new inputs) gives what the source gives."""
  from mtljax.data.treesat.tiff import read_input

  s = src(tiny, modalities=("aerial", "s1", "s2"))
  for m in ("aerial", "s1", "s2"):
    want = s.read_modality(m, 1)
    got = read_input(m, s.image_path(m, 1), aerial_size=A, l2_source="ignored")
    np.testing.assert_array_equal(got, want, err_msg=m)
  assert get_dataset("treesat").read_input is read_input
  with pytest.raises(DataError, match="expected 3 bands"):
    read_input("s1", s.image_path("aerial", 1), aerial_size=A)


def test_error_missing_label_entry(copy):
  labels = json.loads((copy / LABELS).read_text())
  name = _names(copy)[3]
  del labels[name]
  (copy / LABELS).write_text(json.dumps(labels))
  with pytest.raises(DataError, match=f"has no entry for {name}"):
    src(copy)


def test_error_unknown_genus(copy):
  labels = json.loads((copy / LABELS).read_text())
  name = _names(copy)[0]
  labels[name] = [["Eucalyptus", 1.0]]
  (copy / LABELS).write_text(json.dumps(labels))
  with pytest.raises(DataError, match="unknown genus 'Eucalyptus'"):
    src(copy)


def test_error_missing_modality_folder(copy):
  shutil.rmtree(copy / "s1" / "60m")
  with pytest.raises(DataError, match="s1"):
    src(copy)


def test_error_missing_image(copy):
  name = _names(copy)[2]
  (copy / "s2" / "60m" / name).unlink()
  s = src(copy)
  with pytest.raises(DataError, match=f"s2/60m/{name}.*missing"):
    s[2]
  with pytest.raises(DataError, match=name):
    s.check_files()


@pytest.mark.parametrize(
  "modality, shape, dtype, match",
  [
    (
      "s2",
      (6, 6, 10),
      np.uint16,
      r"s2/60m/{name}: expected 12 bands of 6×6 uint16, found \(6, 6, 10\) uint16",
    ),
    (
      "aerial",
      (A + 2, A + 2, 4),
      np.uint8,
      rf"aerial/60m/{{name}}: expected 4 bands of {A}×{A} uint8, found",
    ),
    ("s1", (6, 6, 3), np.float64, r"float32, found \(6, 6, 3\) float64"),
  ],
  ids=["wrong_band_count", "wrong_size", "wrong_dtype"],
)
def test_error_wrong_raster(copy, modality, shape, dtype, match):
  name = _names(copy)[1]
  tifffile.imwrite(copy / modality / "60m" / name, np.zeros(shape, dtype), photometric="minisblack",
                     planarconfig="contig")  # fmt: skip
  with pytest.raises(DataError, match=match.format(name=name)):
    src(copy)[1]


def test_real_aerial_size_is_checked_by_default(tiny):
  with pytest.raises(DataError, match="304×304"):
    TreeSatAISource(tiny, "train")[0]  # the fixture's aerial is 32×32


def test_check_files_ok(tiny):
  assert src(tiny, "val").check_files() == len(src(tiny, "val"))


# ------------------------------------------------------------------------------------ generator
def test_generator_skips_when_unchanged_and_refuses_foreign_dirs(tmp_path):
  root = write_synthetic_treesat(tmp_path / "g", num_train=4, num_test=2, aerial_size=16)
  marker = root / MARKER
  stamp = marker.stat().st_mtime_ns
  write_synthetic_treesat(root, num_train=4, num_test=2, aerial_size=16)
  assert marker.stat().st_mtime_ns == stamp  # skipped
  write_synthetic_treesat(root, num_train=5, num_test=2, aerial_size=16)
  assert len(_names(root)) == 5  # regenerated with new parameters
  foreign = tmp_path / "real"
  foreign.mkdir()
  (foreign / "train_filenames.lst").write_text("x.tif\n")
  with pytest.raises(FileExistsError):
    write_synthetic_treesat(foreign, num_train=4, num_test=2)
  assert (foreign / "train_filenames.lst").read_text() == "x.tif\n"
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_generator_is_deterministic(tmp_path):
  a = write_synthetic_treesat(tmp_path / "a", num_train=6, num_test=3, aerial_size=16, seed=3)
  b = write_synthetic_treesat(tmp_path / "b", num_train=6, num_test=3, aerial_size=16, seed=3)
  assert load_truth(a) == load_truth(b)
  name = _names(a)[0]
  for m in ("aerial", "s1", "s2"):
    np.testing.assert_array_equal(
      tifffile.imread(a / m / "60m" / name), tifffile.imread(b / m / "60m" / name)
    )


def test_planted_signal_is_learnable(tmp_path):
  """A linear model on per-band S2 means (and, separately, aerial colour + texture) beats chance."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  root = write_synthetic_treesat(tmp_path / "m", num_train=300, num_test=100, aerial_size=32)
  tr = TreeSatAISource(root, "train", aerial_size=32)
  te = TreeSatAISource(root, "test", aerial_size=32, val_fraction=0.0)
  ytr, yte = tr.label_arrays()["targets"]["l3"], te.label_arrays()["targets"]["l3"]
  chance = np.bincount(yte).max() / len(yte)

  def s2_means(s):
    return np.stack([s.read_modality("s2", i).mean(axis=(0, 1)) for i in range(len(s))])

  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
  pred = model.fit(s2_means(tr), ytr).predict(s2_means(te))
  acc = np.mean(pred == yte)
  assert acc > max(0.6, 3 * chance), (acc, chance)
  # Genera share their stand type's signal: most genus confusions are siblings in the true L2
  # parent (a uniformly wrong guess lands there about 1 time in 10).
  parent = hierarchy()["l2"]["parent_of_l3"]
  wrong = pred != yte
  inside = np.sum(wrong & (parent[pred] == parent[yte])) / max(1, wrong.sum())
  assert wrong.sum() >= 5 and inside > 0.4, (wrong.sum(), inside)

  def aerial_feats(s):
    out = []
    for i in range(len(s)):
      x = s.read_modality("aerial", i)
      spec = np.abs(np.fft.rfft2(x[..., 0] - x[..., 0].mean()))[:8, :8]
      out.append(np.concatenate([x.mean(axis=(0, 1)), np.log1p(spec.ravel())]))
    return np.stack(out)

  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
  acc = model.fit(aerial_feats(tr), ytr).score(aerial_feats(te), yte)
  assert acc > 2 * chance, (acc, chance)


# ------------------------------------------------------------------------ tiny on real-size data
def test_area_resize():
  from mtljax.data.treesat.tiff import area_resize

  rng = np.random.default_rng(0)
  x = rng.random((12, 12, 2))
  np.testing.assert_allclose(area_resize(x, 4), x.reshape(4, 3, 4, 3, 2).mean((1, 3)), rtol=1e-6)
  big = rng.integers(0, 255, (304, 304, 4)).astype(np.uint8)
  small = area_resize(big, 32)
  assert small.shape == (32, 32, 4) and small.dtype == np.float32
  np.testing.assert_allclose(small.mean((0, 1)), big.mean((0, 1)), rtol=1e-5)
  np.testing.assert_allclose(area_resize(np.full((304, 304, 1), 7.0), 32), 7.0, rtol=1e-6)


@pytest.mark.slow  # ~40 s on an idle 2-core CPU (two train steps, compile included)
def test_tiny_config_trains_on_real_size_patches(tmp_path):
  """`configs/treesat.py:tiny` reads a root of real-size 304×304 aerial patches with no override
  (area-averaged to 32×32) and trains; a strict reader (aerial_resize off) names the size."""
  from configs import treesat as treesat_config
  from mtljax import train

  root = write_synthetic_treesat(tmp_path / "real", num_train=32, num_test=8, aerial_size=304)
  c = treesat_config.get_config("tiny")
  c.data.root = str(root)
  c.train.num_epochs = 1
  c.eval.batch_size = 8
  spec = get_dataset("treesat")
  s = spec.source_cls(str(root), "val", **spec.source_kwargs(c))
  assert s[0]["inputs"]["aerial"].shape == (32, 32, 4) and s.check_files() == len(s)
  strict = TreeSatAISource(root, "val", aerial_size=32)
  with pytest.raises(DataError, match=r"expected 4 bands of 32×32 uint8, found \(304, 304, 4\)"):
    strict.check_files()
  results = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert results["best_step"] == 2 and np.isfinite(results["test"]["l3/accuracy"])
