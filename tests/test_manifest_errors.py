"""Bad manifests: every problem of the table is found before anything is written and reported in
one `error:` line (the count, then the first few as line, column and what was expected), exit
status 2. Twelve kinds of mistakes are checked through the config check that `mtljax.main` runs
before the workdir exists; two of them through the command line."""

import subprocess

import numpy as np
import pytest
from helpers import manifest_tables
from helpers.commands import ROOT, main_command
from test_cli_errors import error_line, snapshot

from configs import manifest as manifest_config
from mtljax import configlib
from mtljax.errors import ConfigError, DataError

HEADER = ["image", "label", "weight", "split"]
SPLITS = ["train"] * 6 + ["val"] * 3 + ["test"] * 3


def _png(path, shape=(8, 8), dtype=np.uint8):
  from PIL import Image

  arr = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
  Image.fromarray(arr).save(path)


@pytest.fixture
def table(tmp_path):
  """A good table: 12 grey 8×8 PNGs, a label (names), a weight (numbers), a split column."""
  for i in range(12):
    _png(tmp_path / f"{i}.png")
  rows = [[f"{i}.png", "ab"[i % 2], f"{i * 0.5}", SPLITS[i]] for i in range(12)]
  return tmp_path, rows


def _write(folder, rows, header=HEADER):
  return manifest_tables.write_csv(folder / "t.csv", header, rows)


def _check(path, arg="inputs=image,targets=label", **data):
  c = manifest_config.get_config(arg)
  c.data.manifest = str(path)
  for k, v in data.items():
    c.data[k] = v
  configlib.check(c)
  return c


def _message(path, **kw) -> str:
  with pytest.raises((DataError, ConfigError)) as e:
    _check(path, **kw)
  msg = str(e.value)
  assert "\n" not in msg, msg
  return msg


def test_the_good_table_passes(table):
  folder, rows = table
  c = _check(_write(folder, rows))
  assert c.tasks.label.num_classes == 2


def _case_missing_file(folder, rows):
  rows[4][0] = "nope.png"
  return {}, ["1 problem", "line 6, column 'image': nope.png: missing file"]


def _case_unreadable_file(folder, rows):
  (folder / "bad.png").write_bytes(b"not a png at all")
  rows[2][0] = "bad.png"
  return {}, ["line 4, column 'image': bad.png: unreadable"]


def _case_other_size(folder, rows):
  _png(folder / "big.png", (9, 8))
  rows[7][0] = "big.png"
  return {}, ["line 9, column 'image': big.png: expected shape [8, 8, 1], got [9, 8, 1]"]


def _case_other_bands(folder, rows):
  _png(folder / "rgb.png", (8, 8, 3))
  rows[1][0] = "rgb.png"
  return {}, ["line 3, column 'image': rgb.png: expected bands [8, 8, 1], got [8, 8, 3]"]


def _case_other_type(folder, rows):
  _png(folder / "deep.png", (8, 8), np.uint16)
  rows[5][0] = "deep.png"
  return {}, ["line 7, column 'image': deep.png: expected type uint8, got uint16"]


def _case_unknown_class(folder, rows):
  rows[10][1] = "zz"
  return {}, ["line 12, column 'label': expected a class of the training split, got 'zz'"]


def _case_mixed_types(folder, rows):
  rows[3][1] = "7"
  rows[0][1] = "3"
  rows[1][1] = "x4.png"
  return {}, ["line 3, column 'label': expected the same type in every cell"]


def _case_bad_split(folder, rows):
  rows[0][3] = "training"
  return {}, ["line 2, column 'split': expected 'train', 'val' or 'test', got 'training'"]


def _case_empty_input(folder, rows):
  rows[8][0] = ""
  return {}, ["line 10, column 'image': expected a value (an input cannot be empty)"]


def _case_unknown_column(folder, rows):
  return {"arg": "inputs=image+elevation,targets=label"}, [
    "column 'elevation': expected a column of the manifest"
  ]


def _case_no_val_rows(folder, rows):
  for r in rows[6:9]:
    r[3] = "train"
  return {}, ["column 'split': expected at least one val row"]


def _case_group_not_numbers(folder, rows):
  rows[2][2] = "heavy"
  return {"arg": "inputs=image+w,targets=label", "groups": "w=weight"}, [
    "line 4, column 'weight': expected a number (column of 'w'), got 'heavy'"
  ]


CASES = [
  _case_missing_file,
  _case_unreadable_file,
  _case_other_size,
  _case_other_bands,
  _case_other_type,
  _case_unknown_class,
  _case_mixed_types,
  _case_bad_split,
  _case_empty_input,
  _case_unknown_column,
  _case_no_val_rows,
  _case_group_not_numbers,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[6:] for c in CASES])
def test_each_kind_of_mistake_is_one_line_naming_row_and_column(table, case):
  folder, rows = table
  kw, expected = case(folder, rows)
  msg = _message(_write(folder, rows), **kw)
  assert msg.startswith(str(folder / "t.csv")), msg
  for text in expected:
    assert text in msg, msg


def test_every_problem_is_counted_and_the_first_few_shown(table):
  folder, rows = table
  for i in (1, 3, 5, 7, 9, 11):
    rows[i][0] = f"gone{i}.png"
  rows[10][1] = "zz"
  msg = _message(_write(folder, rows))
  assert "7 problems in the manifest (first 5 shown): line 3, column 'image'" in msg, msg
  assert "gone9.png" in msg and "gone11.png" not in msg  # in line order, five shown


def test_a_kind_that_does_not_fit_the_column(table):
  folder, rows = table
  path = _write(folder, rows)
  c = manifest_config.get_config("inputs=image,targets=label")
  c.data.manifest = str(path)
  c.tasks.label.kind = "regression"
  with pytest.raises(DataError, match=r"line 2, column 'label': expected a number, got 'a'"):
    configlib.check(c)
  c.tasks.label.kind = "segmentation"
  with pytest.raises(DataError, match=r"expected labels, not file paths|expected file paths"):
    configlib.check(c)


def test_the_command_line_says_it_in_one_line_and_writes_nothing(table, tmp_path):
  """One process (a second costs its start-up only): the bad table through `mtljax.main`."""
  folder, rows = table
  rows[4][0] = "nope.png"
  path = _write(folder, rows)
  workdir = tmp_path / "run"
  cmd = main_command(
    workdir,
    f"--config.data.manifest={path}",
    config="configs/manifest.py:inputs=image,targets=label",
  )
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert "nope.png: missing file" in error_line(res)
  assert snapshot(workdir) is None  # not even the workdir


def test_no_manifest_is_a_config_problem(table):
  """What `mtljax.main` prints in one line (the same ConfigError) when no table is named."""
  c = manifest_config.get_config("inputs=image,targets=label")
  with pytest.raises(ConfigError, match=r"config.data.manifest is empty"):
    configlib.check(c)


def _declared(path, classes: str):
  c = manifest_config.get_config("inputs=image,targets=label")
  c.data.manifest = str(path)
  c.tasks.label.classes = classes
  configlib.check(c)
  return c


def test_a_declared_vocabulary_admits_classes_training_never_saw(table):
  """`config.tasks.<col>.classes` declares the vocabulary: a val/test class outside the training
  split is an output (in the declared order, read by that index); an undeclared class is still a
  problem, in any split, and so is a vocabulary naming a class twice."""
  from mtljax.data import manifest

  folder, rows = table
  rows[7][1] = "c"  # a val row: a class the six training rows never show
  path = _write(folder, rows)
  assert "line 9, column 'label': expected a class of the training split, got 'c' (or " in (
    _message(path)
  )
  c = _declared(path, "c, b,a")
  assert c.tasks.label.num_classes == 3
  schema = c.data.schema.to_dict()
  assert schema["columns"]["label"]["classes"] == ["c", "b", "a"]
  val = manifest.ManifestSource(
    None, "val", manifest=str(path), schema=schema, inputs=("image",), tasks=("label",)
  )
  assert val.target_fields["label"]["class_names"] == ("c", "b", "a")
  # Val rows 6, 7, 8 of the table: "a", "c", "a" -> indices 2, 0, 2 of the declared order.
  assert [int(val[i]["targets"]["label"]) for i in range(3)] == [2, 0, 2]

  rows[10][1] = "zz"  # a test row outside the declared names
  rows[0][1] = "d"  # a training row outside them
  with pytest.raises(DataError) as e:
    _declared(_write(folder, rows), "a,b,c")
  msg = str(e.value)
  assert "2 problems" in msg, msg
  assert "line 2, column 'label': expected a class of config.tasks.label.classes, got 'd'" in msg
  assert "line 12, column 'label': expected a class of config.tasks.label.classes, got 'zz'" in msg
  with pytest.raises(DataError, match=r"expected each declared class once, got 'a' twice"):
    _declared(path, "a,b,c,a")
  c = manifest_config.get_config("inputs=image,targets=weight")
  c.data.manifest, c.tasks.weight.classes = str(path), "a,b"
  c.tasks.weight.kind = "regression"
  with pytest.raises(DataError, match=r"expected no declared classes for kind 'regression'"):
    configlib.check(c)
