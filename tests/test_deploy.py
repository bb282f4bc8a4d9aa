"""Deployment (mtl-explainability paper: "the additional modalities do not need to be collected for
model inference"): a TreeSAT model trained with Sentinel-2 as an auxiliary *target*
(`configs/treesat.py:s2=target`) predicts and exports from its workdir alone, once its training
data is gone, on a data root that has no Sentinel-2 folder, and predicts what it predicted with
the data present; a model that takes S2 as an input is refused such a root in one line."""

import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import PREDICT_CONFIG, PREDICT_FLAGS, predict_config
from helpers.commands import run_main

CONFIG = "configs/treesat.py:tiny,s2=target"
FLAGS = PREDICT_FLAGS  # trained as the shared predict workdir is


def _run(work, *flags, config=CONFIG):
  return run_main(work, *FLAGS, *flags, config=config)


def _ok(res):
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def _config():
  return predict_config(CONFIG.split(":", 1)[1])


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
  """Trained with S2 as a target; the test split predicted with the data there; then the data
  moved away (a copy of its root without `s2/` kept) and the copy predicted, and the model
  exported, from the workdir alone."""
  base = tmp_path_factory.mktemp("deploy")
  work, root, moved = base / "run", base / "new_root", base / "moved"
  _ok(_run(work))
  _ok(_run(work, "--mode=predict", "--config.predict.name=before"))
  data = work / "synthetic_data"
  shutil.copytree(data, root, ignore=lambda d, names: ["s2"] if os.path.samefile(d, data) else [])
  shutil.move(data, moved)
  after = _run(
    work, "--mode=predict", f"--config.predict.root={root}", "--config.predict.split=test"
  )
  exported = _run(work, "--mode=export")
  return work, root, moved, after, exported


@pytest.fixture(scope="module")
def new_inputs(deployed):
  """The model on inputs without labels: a copy of the root without `s2/`, its split lists and
  labels JSON (predicted whole), and a table of some test patches' files (an extra column kept)."""
  import csv

  work, root, *_ = deployed
  bare = root.parent / "bare_root"
  shutil.copytree(root, bare, ignore=lambda d, names: [n for n in names if n.endswith(".lst")])
  (bare / "labels" / "TreeSatBA_v9_60m_multi_labels.json").unlink()
  with open(work / "predict" / "root-new_root-test" / "predictions.csv") as f:
    names = [r["name"] for r in csv.DictReader(f)][::3]
  rows = [
    f"p{k},{n},new_root/aerial/60m/{n},new_root/s1/60m/{n},{k * 10}" for k, n in enumerate(names)
  ]
  (root.parent / "new.csv").write_text("\n".join(["id,patch,aerial,s1,site", *rows]) + "\n")
  flags = ("--mode=predict", f"--config.predict.root={bare}")
  unlabelled = _run(work, *flags)
  table = _run(work, "--mode=predict", f"--config.predict.manifest={root.parent / 'new.csv'}")
  return bare, names, unlabelled, table


def test_the_s2_variants():
  from configs import treesat

  target, off, default = (treesat.get_config(f"tiny,s2={v}") for v in ("target", "off", "input"))
  assert set(target.inputs) == set(off.inputs) == {"aerial", "s1"} and "s2" in default.inputs
  s2 = target.tasks.s2
  assert (s2.kind, s2.num_outputs, s2.weight, s2.head) == ("regression", 12, 1.0, "mlp")
  assert set(target.tasks) == set(default.tasks) | {"s2"} and set(off.tasks) == set(default.tasks)
  assert default.to_json() == treesat.get_config("tiny").to_json()


def test_predict_and_export_without_the_training_data(deployed):
  work, root, moved, after, exported = deployed
  _ok(after)
  _ok(exported)
  assert not (root / "s2").exists() and (moved / "s2").is_dir()
  # Nothing of the training data was opened: the synthetic dataset was not written again.
  assert not (work / "synthetic_data").exists()
  assert "SYNTHETIC" not in after.stdout + exported.stdout
  a = np.load(work / "predict" / "before" / "predictions.npz")
  b = np.load(work / "predict" / "root-new_root-test" / "predictions.npz")
  assert sorted(a.files) == sorted(b.files) and "s2/value" in a.files
  assert a["s2/value"].shape == (16, 12)
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with open(work / "predict" / "root-new_root-test" / "predictions.csv") as f:
    header = f.readline().strip().split(",")
  assert "s2[B02]" in header and "s2[B09]_spread" in header  # S2's band names
  description = json.loads((work / "export" / "model.json").read_text())
  assert [i["name"] for i in description["inputs"]] == ["aerial", "s1"]
  assert {"s2/value", "l3/prob"} <= {o["name"] for o in description["outputs"]}


def test_the_export_matches_predict_on_the_new_root(deployed):
  """The artifact, exported without the training data, on the raw inputs of the root's split."""
  import sys

  from mtljax.data import build

  work, root, *_ = deployed
  c = _config()
  with c.unlocked():
    c.data.root = str(root)
  source = build.make_sources(c, str(work), splits=("test",), inputs_only=True)[0]["test"]
  raw = {m: np.stack([source[i]["inputs"][m] for i in range(len(source))]) for m in c.inputs}
  sys.path.insert(0, str(work / "export"))
  try:
    import load

    out = load.Model(str(work / "export"))(raw)
  finally:
    sys.path.remove(str(work / "export"))
    sys.modules.pop("load", None)
  want = np.load(work / "predict" / "root-new_root-test" / "predictions.npz")
  for k in ("l3/prob", "s2/value", "age/value"):
    np.testing.assert_allclose(out[k], want[k], rtol=1e-4, atol=1e-3, err_msg=k)


def test_a_workdir_without_the_record_opens_its_data(deployed):
  """A workdir trained before `data_fields.json` existed is set up from its data, as before;
  with the record, from the workdir alone, into the same abstract state."""
  import jax

  from mtljax import train

  work, _, moved, *_ = deployed
  record = work / "data_fields.json"
  alone = train.setup_for_inference(_config(), str(work))
  assert alone.sources == {} and alone.fields is not None
  shutil.move(moved, work / "synthetic_data")
  shutil.move(record, work / "record.json")
  try:
    old = train.setup_for_inference(_config(), str(work))
  finally:
    shutil.move(work / "record.json", record)
    shutil.move(work / "synthetic_data", moved)
  assert set(old.sources) == {"train", "val", "test"} and old.fields is None
  assert jax.tree.structure(old.abstract_state) == jax.tree.structure(alone.abstract_state)
  shapes = jax.tree.map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype,
                        old.abstract_state, alone.abstract_state)  # fmt: skip
  assert all(jax.tree.leaves(shapes))
  assert old.input_fields == alone.input_fields and old.target_fields == alone.target_fields


def test_a_model_with_s2_as_input_needs_s2(deployed, predict_workdir):
  _, root, *_ = deployed
  flags = ("--mode=predict", f"--config.predict.root={root}", "--config.predict.name=no-s2")
  res = _run(predict_workdir, *flags, config=PREDICT_CONFIG)
  assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr[-2000:]
  assert res.stderr.startswith("error: ") and "'s2'" in res.stderr


def test_the_comparison_scores_the_predictions_against_the_labels(deployed, tmp_path):
  """profiling/experiments/treesat_deploy.py on the tiny run: its predictions of the root without
  S2, joined back to the root's labels, score what the training's evaluation scored."""
  from profiling.experiments import treesat_deploy

  work, root, *_ = deployed
  (tmp_path / "target").symlink_to(work)
  table = treesat_deploy.main(
    [f"--out={tmp_path}", f"--root={root}", "--variant=tiny", *(f"--flag={f}" for f in FLAGS)]
  )
  row = table["target"]
  assert set(row["without_s2"]) == {"l3/f1_micro", "l3/accuracy", "l2/accuracy", "age/mae"}
  for k, v in row["without_s2"].items():
    assert v == pytest.approx(row["evaluation"][k], abs=1e-6), k
  assert "s2/mae" in row["evaluation"]  # (the root has no S2 to score S2's predictions on)
  assert json.loads((tmp_path / "comparison.json").read_text())["runs"] == table


def test_the_training_root_is_not_checked_for_predict_and_export():
  """A model trained on an archive is used where that archive is not (`mtljax/main.py` checks
  predict and export configs with `data_paths=False`)."""
  from mtljax import configlib

  c = _config()
  with c.unlocked():
    c.data.root = "/nowhere/TreeSatAI"
  assert any("config.data.root" in p for p in configlib.problems(c))
  assert configlib.problems(c, data_paths=False) == []


def _predictions(folder):
  import csv

  with open(folder / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  return rows, dict(np.load(folder / "predictions.npz"))


def test_a_root_without_lists_or_labels_predicts_all_its_patches(deployed, new_inputs):
  work, root, *_ = deployed
  bare, _, unlabelled, _ = new_inputs
  _ok(unlabelled)
  assert (
    not list(bare.glob("*.lst"))
    and not (bare / "labels" / "TreeSatBA_v9_60m_multi_labels.json").exists()
  )
  patches = sorted(p.name for p in (bare / "aerial" / "60m").glob("*.tif"))
  assert len(patches) == 80  # 48 + 32: every patch, not split
  assert "has no split lists: all 80 patches" in unlabelled.stderr
  rows, b = _predictions(work / "predict" / "root-bare_root-all")
  assert [r["name"] for r in rows] == patches
  test_rows, a = _predictions(work / "predict" / "root-new_root-test")
  at = [patches.index(r["name"]) for r in test_rows]  # the labelled root's test split
  for k in ("l3/prob", "s2/value", "age/value", "l2/members"):
    np.testing.assert_allclose(b[k][at], a[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_a_table_of_new_files_predicts_as_the_root(deployed, new_inputs):
  work, *_ = deployed
  _, names, _, table = new_inputs
  _ok(table)
  rows, b = _predictions(work / "predict" / "manifest-new")
  assert (
    [r["id"] for r in rows] == [r["name"] for r in rows] == [f"p{k}" for k in range(len(names))]
  )
  assert [r["patch"] for r in rows] == names and [r["site"] for r in rows][1] == "10"
  assert list(rows[0])[:6] == ["name", "index", "id", "patch", "aerial", "s1"]
  root_rows, a = _predictions(work / "predict" / "root-new_root-test")
  at = [[r["name"] for r in root_rows].index(n) for n in names]
  for k in ("l3/prob", "s2/value", "age/value", "l3/mutual_information"):
    np.testing.assert_allclose(b[k], a[k][at], rtol=1e-5, atol=1e-6, err_msg=k)
  assert [r["l3"] for r in rows] == [root_rows[i]["l3"] for i in at]


def test_bad_tables_are_one_line_errors(deployed, new_inputs, tmp_path):
  """A table without a column for an input, naming a missing file, or holding an S1 file of
  the wrong band count: one `error:` line each, naming the table, its line and column."""
  import tifffile

  work, root, *_ = deployed
  _, names, *_ = new_inputs
  a, s1 = root / "aerial" / "60m" / names[0], root / "s1" / "60m" / names[0]
  tifffile.imwrite(tmp_path / "two.tif", np.zeros((6, 6, 2), np.float32))
  tables = {
    "no_s1": ("id,aerial", f"x,{a}", r"no column 's1' for the model's input 's1'; the model "
              r"reads \['aerial', 's1'\]"),
    "missing": ("id,aerial,s1", f"x,{a},s1/nowhere.tif", r"line 2, column 's1': "
                r"s1/nowhere.tif: no such file"),
    "bands": ("id,aerial,s1", f"x,{a},two.tif", r"line 2, column 's1': .*two.tif: expected 3 "
              r"bands of 6×6 float32, found \(6, 6, 2\)"),
  }  # fmt: skip
  assert s1.exists()
  for name, (header, row, pattern) in tables.items():  # (one at a time: the workdir's lock)
    (tmp_path / f"{name}.csv").write_text(f"{header}\n{row}\n")
    res = _run(work, "--mode=predict", f"--config.predict.manifest={tmp_path / name}.csv")
    err = res.stderr
    assert res.returncode == 2 and err.count("\n") == 1 and err.startswith("error: "), (name, err)
    assert re.search(pattern, err) and f"{name}.csv" in err, (name, err)
  assert not (work / "predict" / "manifest-no_s1").exists()
