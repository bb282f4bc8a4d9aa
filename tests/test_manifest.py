"""The manifest dataset end to end: scikit-learn's digits written as PNG files with a CSV train
above 0.8 test accuracy, and predict mode reads a table of the same inputs without labels; a three-sensor GeoTIFF table (three sizes, types
and band counts, a class and a regression target, missing labels) trains, and with one sensor
moved from the inputs to the targets trains it as a dense auxiliary target; the inference of
kinds, the seeded split and reading new inputs without labels."""

import csv
import json
import os
import sys

import numpy as np
import pytest
from helpers import manifest_tables

from configs import manifest as manifest_config
from mtljax import configlib, train
from mtljax.data import manifest
from mtljax.errors import DataError


def _config(arg, table, **train):
  c = manifest_config.get_config(arg)
  c.data.manifest = str(table)
  c.train.batch_size, c.eval.batch_size = 16, 32
  for k, v in train.items():
    c.train[k] = v
  return c


@pytest.fixture(scope="module")
def sensors(tmp_path_factory):
  return manifest_tables.write_sensors(tmp_path_factory.mktemp("sensors"), n=64)


# The digits run every digits test reads: 900 of the 1797 digits (600 train, 100 val, 200 test).
DIGITS = {"n": 900, "n_train": 600, "n_val": 100}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  """The digits written as PNGs with a CSV, trained once (3 epochs, the MLP the 8×8 shape
  chooses): ``(table, workdir, config)``."""
  base = tmp_path_factory.mktemp("digits")
  table = manifest_tables.write_digits(base / "digits", **DIGITS)
  c = _config("inputs=image,targets=label", table, num_epochs=3, learning_rate=0.003)
  c.train.batch_size = 32
  c.eval.prediction_splits = ()
  train.train_and_evaluate(c, str(base / "run"))
  return table, base / "run", c


def test_digits_as_png_train_above_0_8(digits):
  _, workdir, _ = digits
  final = json.loads((workdir / "final_metrics.json").read_text())
  assert final["test"]["label/count"] == DIGITS["n"] - DIGITS["n_train"] - DIGITS["n_val"]
  assert final["test"]["label/accuracy"] > 0.8, final["test"]
  recorded = json.loads((workdir / "config.json").read_text())
  # The vocabulary of the training split, in the workdir; the encoder chosen by the 8×8 shape.
  label = recorded["data"]["schema"]["columns"]["label"]
  assert label["classes"] == [f"n{k}" for k in range(10)]
  assert recorded["tasks"]["label"]["num_classes"] == 10
  assert recorded["inputs"]["image"]["encoder"] == "mlp"
  assert recorded["data"]["schema"]["columns"]["image"]["shape"] == [8, 8, 1]


def test_predict_from_a_manifest_of_unlabelled_inputs(digits, tmp_path):
  """`config.predict.manifest`: the test rows without labels or split (their own columns kept,
  first in the CSV); joined back to the labels by id they score what the evaluation scored."""
  from mtljax.predict import run

  table, workdir, c = digits
  with open(table) as f:
    rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
  truth = {r["id"]: r["label"] for r in rows}
  new = manifest_tables.write_csv(
    tmp_path / "new.csv", ["id", "image", "note"],
    [[r["id"], str(table.parent / r["image"]), "x"] for r in rows],
  )  # fmt: skip
  p = c.copy_and_resolve_references()
  p.predict.manifest = str(new)
  out = run.predict_workdir(p, str(workdir))
  with open(os.path.join(out, "predictions.csv")) as f:
    header = next(csv.reader(f))
  with open(os.path.join(out, "predictions.csv")) as f:
    got = list(csv.DictReader(f))
  assert header[:6] == ["name", "index", "id", "image", "note", "label"], header
  assert [g["id"] for g in got] == [r["id"] for r in rows] == [g["name"] for g in got]
  accuracy = np.mean([g["label"] == truth[g["id"]] for g in got])
  final = json.loads((workdir / "final_metrics.json").read_text())
  assert accuracy == pytest.approx(final["test"]["label/accuracy"], abs=1e-6)


def test_three_sensor_table_trains_with_missing_labels(sensors, tmp_path):
  c = _config("inputs=aerial+s1+s2,targets=genus+age,tiny", sensors, num_epochs=3)
  c.eval.prediction_splits = ("test",)
  train.train_and_evaluate(c, str(tmp_path / "run"))
  cols = c.data.schema.columns
  got = {m: (tuple(cols[m].shape), cols[m].dtype) for m in ("aerial", "s2", "s1")}
  assert got == {
    "aerial": ((16, 16, 4), "uint8"),
    "s2": ((8, 8, 6), "uint16"),  # written bands first, read as [H, W, C]
    "s1": ((4, 4, 2), "float32"),
  }
  assert (c.tasks.genus.kind, c.tasks.genus.num_classes) == ("classification", 3)
  assert c.tasks.age.kind == "regression"
  assert c.inputs.aerial.encoder == "small_cnn" and c.inputs.s1.encoder == "mlp"
  final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
  # Missing labels are masked: each metric counts the labelled rows of the split only.
  table = manifest.read_table(sensors)
  test = manifest.ManifestSource(
    None, "test", manifest=table, schema=c.data.schema, inputs=("s1",), tasks=("genus", "age")
  )
  rows = [table.rows[r] for r in test.rows]
  assert final["test"]["genus/count"] == sum(bool(r["genus"]) for r in rows) < len(rows)
  assert final["test"]["age/count"] == sum(bool(r["age"]) for r in rows) < len(rows)
  assert final["test"]["age/r2"] > 0.3, final["test"]  # planted in the s2 mean


def test_a_sensor_moved_to_the_targets_is_a_dense_target(sensors, tmp_path):
  # One input: the test is about the target.
  c = _config("inputs=s2,targets=genus+s1,tiny", sensors, num_epochs=1)
  c.eval.prediction_splits = ("test",)
  train.train_and_evaluate(c, str(tmp_path / "run"))
  assert (c.tasks.s1.kind, c.tasks.s1.num_outputs, c.tasks.s1.head) == (
    "dense_regression",
    2,
    "dense",
  )
  # Dense targets make the run spatial: U-Nets on one grid (the target's 4×4), pooled heads.
  assert c.model.fusion == "spatial" and c.data.grid == 4
  assert c.inputs.s2.encoder == "unet" and c.tasks.genus.head == "pooled"
  final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
  n_test = final["test"]["genus/count"]
  assert final["test"]["s1/count"] >= 4 * 4 * 2 * n_test  # every pixel and band of each row
  assert np.isfinite(final["test"]["s1/mae"])
  assert os.path.exists(tmp_path / "run" / "pictures" / "test" / "dense_0.png")


# ------------------------------------------------------------------------------ inference, splits
def _kinds():
  from mtljax import tasks

  return {n: (k.target, k.dense) for n, k in tasks.KINDS.items()}


def test_kinds_are_inferred_from_the_columns(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "m").mkdir()
  rows = []
  for i in range(40):
    np.save(tmp_path / f"m/{i}.npy", rng.integers(0, 3, (4, 4)).astype(np.uint8))
    np.save(tmp_path / f"x{i}.npy", rng.normal(size=(4, 4, 2)).astype(np.float32))
    rows.append(
      [f"x{i}.npy", ["oak", "elm"][i % 2], i % 3, f"{rng.uniform():.3f}", "a;b" if i % 2 else "c",
       f"m/{i}.npy", i * 7, ["train", "val", "test"][i % 4 % 3]]
    )  # fmt: skip
  header = ["x", "name", "few", "real", "multi", "seg", "many", "split"]
  table = manifest.read_table(manifest_tables.write_csv(tmp_path / "t.csv", header, rows))
  splits, problems = manifest.table.assign_splits(table, (0.8, 0.1, 0.1), 0)
  assert problems == []
  targets = {n: "" for n in header[1:-1]}
  schema, problems = manifest.schema.infer(
    table, splits, inputs=["x"], targets=targets, groups={}, kinds=_kinds()
  )
  assert problems == []
  kinds = {n: c.get("kind") for n, c in schema["columns"].items()}
  assert kinds == {
    "x": None,
    "name": "classification",
    "few": "classification",
    "real": "regression",
    "multi": "multilabel",
    "seg": "segmentation",
    "many": "regression",  # integers with as many values as rows: a quantity, not classes
  }
  assert schema["columns"]["few"]["classes"] == ["0", "1", "2"]
  assert schema["columns"]["multi"]["classes"] == ["a", "b", "c"]
  assert schema["columns"]["seg"]["classes"] == 3
  # An override wins: the integers as values.
  schema, _ = manifest.schema.infer(
    table, splits, inputs=["x"], targets={"few": "regression"}, groups={}, kinds=_kinds()
  )
  assert schema["columns"]["few"]["kind"] == "regression"


def test_seeded_split_by_fractions(tmp_path):
  path = manifest_tables.write_csv(tmp_path / "t.csv", ["v"], [[i] for i in range(200)])
  table = manifest.read_table(path)
  a, _ = manifest.table.assign_splits(table, (0.6, 0.2, 0.2), 3)
  b, _ = manifest.table.assign_splits(table, (0.6, 0.2, 0.2), 3)
  c, _ = manifest.table.assign_splits(table, (0.6, 0.2, 0.2), 4)
  assert a == b and a != c
  assert [len(a[s]) for s in ("train", "val", "test")] == [120, 40, 40]
  assert sorted(a["train"] + a["val"] + a["test"]) == list(range(200))


def test_new_inputs_without_labels_read_with_a_trained_schema(sensors, tmp_path):
  """The prediction entry point: a table of inputs only (no targets, no split), read with the
  schema a run recorded; a file of another shape is refused naming its line."""
  c = _config("inputs=aerial+s2,targets=genus,tiny", sensors)
  configlib.check(c)
  schema = json.loads(json.dumps(c.data.schema.to_dict()))  # as read back from config.json
  base = os.path.dirname(sensors)
  rows = [[f"{base}/aerial/{i}.tif", f"{base}/s2/{i}.tif"] for i in range(5)]
  new = manifest_tables.write_csv(tmp_path / "new.csv", ["aerial", "s2"], rows)
  source = manifest.open_source(new, schema, ("aerial", "s2"))
  assert len(source) == 5 and source.names == [f"line{i}" for i in range(2, 7)]
  ex = source[4]
  assert ex["inputs"]["aerial"].shape == (16, 16, 4) and ex["targets"] == {}
  rows[3][1] = f"{base}/s1/3.tif"
  bad = manifest_tables.write_csv(tmp_path / "bad.csv", ["aerial", "s2"], rows)
  with pytest.raises(DataError, match=r"1 problem in the manifest: line 5, column 's2'"):
    manifest.open_source(bad, schema, ("aerial", "s2"))


def test_json_lines_manifest_reads_like_csv(tmp_path):
  rows = [{"v": 1.5, "tags": ["a", "b"], "split": "train"}, {"v": None, "tags": [], "split": "val"}]
  path = tmp_path / "t.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  table = manifest.read_table(path)
  assert table.rows == [
    {"v": "1.5", "tags": "a;b", "split": "train"},
    {"v": "", "tags": "", "split": "val"},
  ]
  assert table.lines == [1, 2]


def test_geotiff_nodata_is_read_as_missing(tmp_path):
  """A GeoTIFF's GDAL nodata value (as the TreeSatAI S1 patches carry -9999) and non-finite
  pixels are NaN in what a run reads (so the statistics skip them and the pipeline fills them);
  a TIFF without the tag keeps every value; the raw read keeps the stored numbers."""
  import tifffile

  from mtljax.data.manifest import rasters

  x = np.arange(32, dtype=np.float32).reshape(4, 4, 2)
  x[0, 0, 0], x[1, 2, 1], x[3, 3, 0] = -9999.0, np.nan, np.inf
  tagged, plain = tmp_path / "tagged.tif", tmp_path / "plain.tif"
  nodata = [(rasters.GDAL_NODATA, 2, 0, "-9999", True)]
  planar = {"photometric": "minisblack", "planarconfig": "separate"}  # bands first, as GDAL
  tifffile.imwrite(tagged, np.moveaxis(x, -1, 0), extratags=nodata, **planar)
  tifffile.imwrite(plain, np.moveaxis(x, -1, 0), **planar)
  read = rasters.read(tagged, values=True)
  assert read.dtype == np.float32 and read.shape == (4, 4, 2)
  assert np.argwhere(np.isnan(read)).tolist() == [[0, 0, 0], [1, 2, 1], [3, 3, 0]]
  assert np.array_equal(read[np.isfinite(read)], x[np.isfinite(x) & (x != -9999.0)])
  assert rasters.read(tagged)[0, 0, 0] == -9999.0
  assert rasters.read(plain, values=True)[0, 0, 0] == -9999.0


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q", "-n", "0"]))
