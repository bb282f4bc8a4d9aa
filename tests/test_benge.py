"""BEN-GE: reader on a generated archive in the real layout, bad-input errors, U-Net / spatial
fusion / head shapes, segmentation and dense-regression losses and metrics against scikit-learn,
and the tiny config learning above the majority-class baseline on planted data."""

import glob
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sklearn.metrics as skm

from configs import benge as benge_config
from mtljax import losses, metrics, tasks, train
from mtljax.data import pipeline, statistics
from mtljax.data.benge import reader as benge
from mtljax.data.benge.synthetic import write_synthetic_benge
from mtljax.models import spatial
from mtljax.models.multitask import build_model


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return write_synthetic_benge(tmp_path_factory.mktemp("benge") / "data", num_patches=60, size=12)


def _copy(root, tmp_path):
  dst = tmp_path / "copy"
  shutil.copytree(root, dst)
  return dst


# ------------------------------------------------------------------------------------ reader
def test_reader_real_layout_fields_and_split(root):
  srcs = {s: benge.BenGeSource(root, s, image_size=12) for s in ("train", "val", "test")}
  assert [len(srcs[s]) for s in ("train", "val", "test")] == [48, 6, 6]  # 80/10/10
  names = [set(srcs[s].names) for s in srcs]
  assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
  # Files are where the real layout puts them, at their native resolutions.
  p = srcs["train"].names[0]
  assert benge.read_raster(root / "sentinel-2" / p / f"{p}_B05.tif").shape == (6, 6)
  assert benge.read_raster(root / "sentinel-2" / p / f"{p}_B01.tif").shape == (2, 2)
  assert srcs["train"].s1_path(0, "VV").parent.name.startswith("S1A_IW_GRDH_1SDV_")
  ex = srcs["train"][0]
  shapes = {g: {k: np.shape(v) for k, v in ex[g].items()} for g in ("inputs", "targets", "mask")}
  assert shapes["inputs"] == {
    "s1": (12, 12, 2),
    "s2": (12, 12, 12),
    "elevation": (12, 12, 1),
    "climate_zone": (1,),
    "season": (1,),
    "weather": (5,),
  }
  assert shapes["targets"] == {
    "lulc": (12, 12),
    "elevation": (12, 12),
    "climate_zone": (),
    "season": (),
    "weather": (3,),
  }
  assert shapes["mask"]["lulc"] == (12, 12) and ex["targets"]["lulc"].dtype == np.int32
  # Land cover: codes → class indices, code 0 → masked.
  codes = benge.read_raster(srcs["train"].lulc_path(0))
  cls, ok = srcs["train"].read_lulc(0)
  np.testing.assert_array_equal(ok, codes != 0)
  np.testing.assert_array_equal(np.asarray(benge.LULC_CODES)[cls][ok > 0], codes[codes != 0])
  # Weather: the input's 5 columns, the target's 3 (no wind), from the s2 columns of the CSV.
  w_in, w_out = ex["inputs"]["weather"], ex["targets"]["weather"]
  np.testing.assert_allclose(w_out, w_in[[0, 3, 4]])
  assert 0 <= ex["inputs"]["season"][0] <= 1
  # Resampled to another grid, and elevation stacked onto S2.
  small = benge.BenGeSource(root, "val", image_size=6, stack_elevation=True)[0]
  assert small["inputs"]["s2"].shape == (6, 6, 13) and small["targets"]["lulc"].shape == (6, 6)
  np.testing.assert_allclose(small["inputs"]["s2"][..., 12], small["inputs"]["elevation"][..., 0])


def test_read_input_reads_a_patch_folder_as_the_source(root):
  """The registry entry's hook (a table of new inputs): a patch's S1/S2 folder and DEM file read
  as the source reads them."""
  from mtljax.data.benge.files import read_input
  from mtljax.data.source import DataError

  s = benge.BenGeSource(root, "val", image_size=12)
  ex = s[2]
  folders = {"s2": root / "sentinel-2" / s.names[2], "s1": root / "sentinel-1" / s.s1_names[2]}
  for m, path in {**folders, "elevation": s.dem_path(2)}.items():
    got = read_input(m, path, image_size=12, prefix="ignored")
    np.testing.assert_array_equal(got, ex["inputs"][m], err_msg=m)
  with pytest.raises(DataError, match="patch folder"):
    read_input("s1", s.dem_path(2), image_size=12)
  with pytest.raises(DataError, match="stack_elevation"):
    read_input("s2", folders["s2"], image_size=12, stack_elevation=True)


def test_fallback_split_is_deterministic(root, tmp_path):
  d = _copy(root, tmp_path)
  shutil.rmtree(d / "splits")
  with pytest.raises(benge.DataError, match="ben-ge-8k_train.csv"):
    benge.BenGeSource(d, "train")
  a = [benge.BenGeSource(d, s, split_fallback=True).names for s in ("train", "val", "test")]
  b = [benge.BenGeSource(d, s, split_fallback=True).names for s in ("train", "val", "test")]
  assert a == b and [len(x) for x in a] == [48, 6, 6]
  assert len(set(sum(a, []))) == 60


def _rewrite(path, old, new):
  path.write_text(path.read_text().replace(old, new, 1))


def test_bad_input_errors_name_the_file_and_field(root, tmp_path):
  d = _copy(root, tmp_path)
  meta = d / "ben-ge-8k_meta.csv"
  text = meta.read_text()
  _rewrite(meta, "climatezone", "climate")
  with pytest.raises(
    benge.DataError, match=r"ben-ge-8k_meta.csv: missing columns \['climatezone'\]"
  ):
    benge.BenGeSource(d, "train")
  meta.write_text(text)
  lines = text.splitlines()
  first = benge.BenGeSource(d, "train").names[0]
  row = next(i for i, l in enumerate(lines) if f",{first}," in l)
  bad = lines[row].rsplit(",", 1)[0] + ",99"
  meta.write_text("\n".join(lines[:row] + [bad] + lines[row + 1 :]) + "\n")
  with pytest.raises(benge.DataError, match=rf"line {row + 1}: climatezone 99 is not one of"):
    benge.BenGeSource(d, "train")
  meta.write_text(text)
  era = d / "ben-ge-8k_era-5.csv"
  lines = era.read_text().splitlines()
  row = next(i for i, l in enumerate(lines) if f",{first}," in l)
  cells = lines[row].split(",")
  cells[5] = "warm"  # temperature_s2
  era.write_text("\n".join(lines[:row] + [",".join(cells)] + lines[row + 1 :]) + "\n")
  with pytest.raises(benge.DataError, match="'temperature_s2' = 'warm' is not a number"):
    benge.BenGeSource(d, "train")
  era.write_text("\n".join(lines) + "\n")
  src = benge.BenGeSource(d, "train")
  os.remove(src.s2_path(0, "B8A"))
  with pytest.raises(benge.DataError, match=f"{first}_B8A.tif does not exist"):
    src[0]
  with pytest.raises(benge.DataError, match="does not exist"):
    benge.BenGeSource(tmp_path / "nowhere", "train")


# ------------------------------------------------------------------------------------ models
def _shapes(module, *args):
  """Output shapes of `module.init_with_output` without computing anything (jax.eval_shape)."""
  out, variables = jax.eval_shape(
    lambda: module.init_with_output(jax.random.key(0), *args, train=False)
  )
  return jax.tree.map(lambda x: x.shape, out), variables


def test_unet_fusion_and_heads_shapes():
  x = jnp.ones((2, 15, 15, 3))  # odd sizes: 15 → 7 → 3 and back
  assert _shapes(spatial.UNet(features=(4, 8, 8), out_features=6), x)[0] == (2, 15, 15, 6)
  feats = {
    "s2": jnp.ones((2, 15, 15, 6)),
    "season": jnp.ones((2, 3)),
    "climate_zone": jnp.ones((2, 5)),
  }
  shape, fv = _shapes(spatial.SpatialFusion(features=7), feats)
  assert shape == (2, 15, 15, 7)
  assert fv["params"]["conv1"]["kernel"].shape == (1, 1, 6 + 3 + 5, 7)
  fused = jnp.ones((2, 15, 15, 7))
  for head, shape in [
    (spatial.SegmentationHead(11), (2, 15, 15, 11)),
    (spatial.DenseRegressionHead(1, squeeze=True), (2, 15, 15)),
    (spatial.PooledHead(12, conv_features=8, dropout=0.5), (2, 12)),
    (spatial.PooledHead(1, hidden=(16,), sigmoid=True, squeeze=True), (2,)),
  ]:
    assert _shapes(head, fused)[0] == shape, head
  y, _ = head.init_with_output(jax.random.key(1), 10 * fused, train=False)
  assert float(y.min()) > 0 and float(y.max()) < 1  # the season head's sigmoid

  for exp in (8, 15):
    c = benge_config.get_config(f"tiny,exp={exp}")
    inputs = {
      "s1": jnp.zeros((2, 12, 12, 2)),
      "s2": jnp.zeros((2, 12, 12, 12)),
      "elevation": jnp.zeros((2, 12, 12, 1)),
      "climate_zone": jnp.zeros((2, 1)),
      "season": jnp.zeros((2, 1)),
      "weather": jnp.zeros((2, 5)),
    }
    inputs = {k: v for k, v in inputs.items() if k in c.inputs}
    (out, inter), _ = _shapes(build_model(c), inputs)
    want = (
      {"lulc": (2, 12, 12, 11)}
      if exp == 8
      else {
        "lulc": (2, 12, 12, 11),
        "elevation": (2, 12, 12),
        "climate_zone": (2, 12),
        "season": (2,),
        "weather": (2, 3),
      }
    )
    assert out == want
    assert inter["fused"] == (2, 12, 12, 16)


def test_config_rows_of_tables_2_and_7():
  rows = {n: benge_config.get_config(f"exp={n}") for n in range(1, 16)}
  assert sorted(rows[1].inputs) == ["s1", "s2"] and list(rows[1].tasks) == ["lulc"]
  assert sorted(rows[8].inputs) == ["climate_zone", "elevation", "s1", "s2", "season", "weather"]
  assert sorted(rows[15].tasks) == ["climate_zone", "elevation", "lulc", "season", "weather"]
  w = losses.normalized_weights({t: c.weight for t, c in rows[15].tasks.items()})
  assert w["lulc"] == pytest.approx(9 / 13)
  assert "elevation" not in benge_config.get_config("exp=7,stack").inputs
  with pytest.raises(ValueError, match="not a Table 2 row"):
    benge_config.get_config("exp=16")


# ------------------------------------------------------------------------------------ losses, metrics
def test_segmentation_and_dense_losses_and_metrics_match_sklearn():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, (3, 5, 5))
  p = np.where(rng.random((3, 5, 5)) < 0.6, y, rng.integers(0, 4, (3, 5, 5)))
  p[p == 3] = 2  # class 3 never predicted
  mask = (rng.random((3, 5, 5)) > 0.2).astype(np.float32)
  m = metrics.segmentation_metrics(y, p, 5, mask)  # class 4 occurs nowhere
  keep = mask.ravel() > 0
  yt, yp = y.ravel()[keep], p.ravel()[keep]
  assert m["pixel_accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
  assert m["miou"] == pytest.approx(skm.jaccard_score(yt, yp, average="macro"))
  per = skm.jaccard_score(yt, yp, average=None, labels=[0, 1, 2, 3])
  np.testing.assert_allclose([m[f"iou/{k}"] for k in range(4)], per)
  assert np.isnan(m["iou/4"]) and m["count"] == keep.sum()
  t, q = rng.normal(size=(3, 5, 5)), rng.normal(size=(3, 5, 5))
  d = tasks.spec("dense_regression").metrics(t, q, mask)
  assert d["mae"] == pytest.approx(skm.mean_absolute_error(t.ravel()[keep], q.ravel()[keep]))
  # A per-example mask covers every output of a [N, D] regression target (weather).
  r = metrics.regression_metrics(t[:, 0, :3], q[:, 0, :3], np.array([1, 0, 1]))
  assert r["mae"] == pytest.approx(np.abs(t[[0, 2], 0, :3] - q[[0, 2], 0, :3]).mean())

  logits = rng.normal(size=(3, 5, 5, 4)).astype(np.float32)
  ce = optax.losses.softmax_cross_entropy_with_integer_labels(logits, y)
  want = float((np.asarray(ce) * mask).sum() / mask.sum())
  assert float(losses.segmentation_loss(logits, y, mask)) == pytest.approx(want, rel=1e-5)
  y_bad = np.where(mask > 0, y, 99)  # garbage under no-data pixels is ignored
  assert float(losses.segmentation_loss(logits, y_bad, mask)) == pytest.approx(want, rel=1e-5)
  want = float((((q - t) ** 2) * mask).sum() / mask.sum())
  assert float(losses.dense_regression_loss(q, t, mask)) == pytest.approx(want, rel=1e-5)


def test_weather_r2_is_per_output_as_sklearn(root):
  """BEN-GE weather (K, %, hPa): R² per output and their uniform average, as scikit-learn; the
  old pooled R² (one mean over all three units) was near 1 for any prediction near the means."""
  c = benge_config.get_config("tiny")
  kind = tasks.of(c.tasks.weather)
  src = benge.BenGeSource(root, "train", image_size=12)
  y = src.label_arrays()["targets"]["weather"].astype(np.float64)  # [48, 3]
  assert src.target_fields["weather"]["channels"][2] == "atmpressure_level"
  rng = np.random.default_rng(0)
  p = y.mean(0) + 0.5 * (y - y.mean(0)) + rng.normal(0, 1, y.shape) * y.std(0) * 0.5
  m = kind.metrics(y, p, np.ones(len(y), np.float32))
  assert m["r2"] == pytest.approx(skm.r2_score(y, p, multioutput="uniform_average"))
  np.testing.assert_allclose(
    [m[f"r2/{k}"] for k in range(3)], skm.r2_score(y, p, multioutput="raw_values")
  )
  assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
  pooled = 1 - ((p - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
  assert pooled > 0.99 and m["r2"] < 0.8, (pooled, m)


def test_augmentation_moves_dense_targets_with_images():
  rng = np.random.default_rng(0)
  lulc = rng.integers(0, 11, (8, 8)).astype(np.int32)
  ex = {
    "inputs": {"s2": np.stack([lulc, lulc * 2], -1).astype(np.float32), "season": np.ones(1)},
    "targets": {"lulc": lulc, "season": np.float32(0.5)},
    "mask": {"lulc": (lulc > 2).astype(np.float32), "season": np.float32(1)},
  }
  for seed in range(6):
    out = pipeline.augment(ex, np.random.default_rng(seed))
    np.testing.assert_array_equal(out["inputs"]["s2"][..., 0], out["targets"]["lulc"])
    np.testing.assert_array_equal(out["mask"]["lulc"], out["targets"]["lulc"] > 2)


# ------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_tiny_config_learns_above_majority_baseline(root, tmp_path):
  c = benge_config.get_config("tiny,exp=9")  # LULC + elevation (segmentation + dense regression)
  c.data.root = str(root)
  c.data.image_size = 12
  c.train.num_epochs = 6
  c.train.learning_rate = 1e-2
  c.train.checkpoint_every_steps = 1000
  c.eval.prediction_splits = ("test",)
  results = train.train_and_evaluate(c, str(tmp_path))
  test = results["test"]
  best = np.load(tmp_path / "predictions" / "test" / f"epoch_{results['best_epoch']:03d}.npz")
  assert "prob/lulc" not in best.files
  y, p, m = best["target/lulc"], best["pred/lulc"], best["mask/lulc"]
  assert p.shape == y.shape == m.shape == (6, 12, 12) and p.dtype == np.int32
  keep = m > 0
  majority = np.bincount(y[keep]).max() / keep.sum()
  assert test["lulc/pixel_accuracy"] == pytest.approx(skm.accuracy_score(y[keep], p[keep]))
  assert test["lulc/pixel_accuracy"] > majority + 0.15, (test, majority)
  # Elevation in metres: better than predicting the training mean everywhere.
  e, em = best["target/elevation"], best["mask/elevation"] > 0
  train_src = benge.BenGeSource(root, "train", image_size=12)
  mean = statistics.regression_target_stats(train_src, c, tasks.standardized_targets(c))
  mean = mean["elevation"][0]
  assert test["elevation/mae"] < np.abs(e[em] - mean).mean(), test
  assert test["elevation/mae"] == pytest.approx(
    np.abs(e[em] - best["pred/elevation"][em]).mean(), rel=1e-4
  )
  assert len(glob.glob(str(tmp_path / "pictures" / "test" / "dense_*.png"))) == 4


def test_explain_targets_and_annotations_for_segmentation(root):
  import ml_collections

  from mtljax.explain.run import explained_targets

  y = np.zeros((3, 4, 4), np.int32)
  y[0, :3] = 5  # 12 pixels of class 5, 4 of class 0
  y[1, :, :1] = 2
  y[1, :, 1:] = 7
  m = np.ones((3, 4, 4), np.float32)
  m[0, :3] = 0  # class 5 unlabelled: class 0 is the most frequent labelled one
  m[2] = 0  # no labelled pixel: not explained
  cfg = ml_collections.ConfigDict({"kind": "segmentation", "num_classes": 11})
  np.testing.assert_array_equal(explained_targets(cfg, y, m, -1), [[0, 0], [1, 7]])
  np.testing.assert_array_equal(explained_targets(cfg, y, m, 3), [[0, 3], [1, 3]])
  src = benge.BenGeSource(root, "test", image_size=12)
  ann = src.explain_annotations(0)
  cls, ok = src.read_lulc(0)
  for k in np.unique(cls[ok > 0]):
    np.testing.assert_array_equal(ann["masks"][benge.LULC_NAMES[k]], (cls == k) & (ok > 0))
  # The explain run gives each land cover class target the pixels of that class (declared by the
  # reader: class k of `lulc`), and a class absent from the example no mask.
  from mtljax.explain import image_report, setup

  config = ml_collections.ConfigDict({"tasks": {"lulc": cfg}, "explain": {"task": "lulc"}})
  present = np.unique(cls[ok > 0])
  absent = next(k for k in range(11) if k not in present)
  pairs = np.array([[0, k] for k in present] + [[0, absent]], np.int32)
  targets = setup.target_owners(config)
  masks, _, has = image_report.annotations(src, np.array([0]), pairs, targets, (12, 12))
  assert has.tolist() == [True] * len(present) + [False]
  for p, k in enumerate(present):
    np.testing.assert_array_equal(masks[p], (cls == k) & (ok > 0))
