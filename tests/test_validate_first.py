"""Validate before writing: every config value checked before the workdir exists, a failed first
run leaves no workdir, killed synthetic writes are cleaned up, names read from data files stay
inside the data root, and image sides are bounded before decoding."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mtljax import configlib
from mtljax import workdir as workdir_lib
from mtljax.data import synthetic
from mtljax.data.source import DataError, inside_root
from mtljax.data.treesat.reader import TreeSatAISource
from mtljax.data.treesat.tiff import check_image, read_image
from mtljax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(spec: str):
  file, _, arg = spec.partition(":")
  return importlib.import_module(f"configs.{file}").get_config(arg or None)


# (config, dotted key under config.data, bad value, words the problem must contain)
BAD_VALUES = [
  ("treesat:tiny", "val_fraction", 1.5, "> 0 and < 1"),
  ("treesat:tiny", "val_fraction", 0.0, "> 0 and < 1"),
  ("treesat:tiny", "multi_threshold", -0.1, ">= 0"),
  ("treesat:tiny", "split_seed", -1, ">= 0"),
  ("treesat:tiny", "aerial_size", 0, ">= 1"),
  ("treesat:tiny", "resolution", "30m", "'60m'"),
  ("treesat:tiny", "l2_source", "genera", "'genus'"),
  ("treesat:tiny", "check_files", "all", "'header'"),
  ("treesat:tiny", "max_image_side", 0, ">= 1"),
  ("treesat:tiny", "synthetic.num_train", -3, ">= 1"),
  ("treesat:tiny", "synthetic.seed", -2, ">= 0"),
  ("attributes:tiny", "val_fraction", 1.0, "> 0 and < 1"),
  ("attributes:tiny", "image_size", -8, ">= 1"),
  ("cropyield:tiny", "fractions", (0.6, 0.6, 0.2), "summing to 1"),
  ("cropyield:tiny", "crops", ("rice",), "unknown crops"),
  ("cropyield:tiny", "synthetic.num_fields", 2, ">= 3"),
  ("facades:tiny", "lprus_keep", 0.0, "> 0"),
  ("facades:tiny", "synthetic.label_noise", 1.5, "<= 1"),
  ("benge:tiny", "synthetic.size", 100, "multiple of 6"),
  ("benge:tiny", "weather_time", "s3", "'s2'"),
  ("digits:tiny", "size", 9, ">= 14"),
  ("digits:tiny", "mask_fraction", 2.0, "<= 1"),
]


@pytest.mark.parametrize("spec", sorted({b[0] for b in BAD_VALUES}))
def test_the_shipped_configs_pass(spec):
  assert configlib.problems(_config(spec)) == []


@pytest.mark.parametrize("spec, key, value, words", BAD_VALUES)
def test_a_bad_data_value_is_a_problem_naming_its_key(spec, key, value, words):
  config = _config(spec)
  section, _, name = key.rpartition(".")
  (config.data[section] if section else config.data)[name] = value
  with pytest.raises(ConfigError) as e:
    configlib.check(config)
  message = str(e.value)
  assert f"config.data.{key}={value!r}" in message and words in message, message


def test_every_problem_at_once_and_a_missing_root(tmp_path):
  config = _config("treesat:tiny")
  config.data.val_fraction, config.data.synthetic.num_test = 2.0, 0
  config.data.root = str(tmp_path / "nowhere")
  problems = configlib.problems(config)
  assert len(problems) == 3, problems
  assert any("config.data.root=" in p and "does not exist" in p for p in problems), problems


# ------------------------------------------------------------------ end to end: nothing written
def _cli(workdir, *args, config="configs/treesat.py:tiny"):
  cmd = [sys.executable, "-m", "mtljax.main", f"--workdir={workdir}", f"--config={config}", *args]
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _error_line(res) -> str:
  out = res.stdout + res.stderr
  assert res.returncode == 2 and "Traceback" not in out, out[-3000:]
  lines = [s for s in res.stderr.splitlines() if s.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize(
  "args, words",
  [
    # Used to be a traceback from the reader, after the synthetic data was written.
    (("--config.data.val_fraction=1.5",), ["config.data.val_fraction=1.5"]),
    # A data root mistake: reported before the workdir is created.
    (("--config.data.root=/no/such/archive", "--config.data.synthetic.num_train=0"),
     ["config.data.root='/no/such/archive'", "config.data.synthetic.num_train=0"]),
  ],
)  # fmt: skip
def test_a_bad_value_on_the_command_line_writes_nothing(tmp_path, args, words):
  workdir = tmp_path / "run"
  line = _error_line(_cli(workdir, *args))
  assert all(w in line for w in words), line
  assert not workdir.exists()


def test_a_data_error_of_a_first_run_leaves_no_workdir(tmp_path):
  """A list naming a file outside the root fails in the run's set-up, after the workdir was
  created: the workdir is removed. (A diverging first run in a workdir that existed:
  tests/test_cli_errors.py, only the user's file is left.)"""
  workdir = tmp_path / "run"
  root = tmp_path / "archive"
  _write_archive_with_list(root, "../../../outside.tif\n")
  line = _error_line(_cli(workdir, f"--config.data.root={root}"))
  assert "test_filenames.lst, line 1" in line and "'../../../outside.tif'" in line, line
  assert not workdir.exists()


# ------------------------------------------------------------------ cleaned_if_failed, in process
def _fail_in(workdir: Path, add, *, lock=True):
  before = workdir_lib.entries(str(workdir))
  workdir.mkdir(exist_ok=True)
  held = workdir_lib.WorkdirLock(str(workdir), "test").acquire()
  try:
    with workdir_lib.cleaned_if_failed(str(workdir), before, held if lock else None):
      add(workdir)
      raise RuntimeError("boom")
  except RuntimeError:
    pass
  finally:
    held.release()


def _run_files(w: Path):
  (w / "config.json").write_text("{}")
  (w / "tensorboard").mkdir(exist_ok=True)
  (w / "tensorboard" / "events").write_text("x")
  (w / "checkpoints" / "latest" / "3.orbax-checkpoint-tmp-1").mkdir(parents=True)


def test_cleaned_if_failed_removes_the_workdir_it_created(tmp_path):
  _fail_in(tmp_path / "run", _run_files)
  assert not (tmp_path / "run").exists()


def test_cleaned_if_failed_keeps_what_was_there(tmp_path):
  w = tmp_path / "run"
  w.mkdir()
  (w / "notes.txt").write_text("keep me")
  (w / "tensorboard").mkdir()  # existed before: kept, with what the run put in it
  _fail_in(w, _run_files)
  assert sorted(os.listdir(w)) == ["notes.txt", "tensorboard"]


def test_cleaned_if_failed_keeps_everything_once_a_checkpoint_exists(tmp_path):
  def with_checkpoint(w):
    _run_files(w)
    (w / "checkpoints" / "best" / "20").mkdir(parents=True)

  _fail_in(tmp_path / "run", with_checkpoint)
  assert sorted(os.listdir(tmp_path / "run")) == ["checkpoints", "config.json", "tensorboard"]


def test_cleaned_if_failed_leaves_a_success_and_other_processes_alone(tmp_path):
  _fail_in(tmp_path / "other", _run_files, lock=False)  # not the lock holder: removes nothing
  assert (tmp_path / "other" / "config.json").exists()
  w = tmp_path / "ok"
  w.mkdir()
  with workdir_lib.cleaned_if_failed(str(w), None, workdir_lib.WorkdirLock(str(w)).acquire()):
    (w / "config.json").write_text("{}")
  assert (w / "config.json").exists()


# ------------------------------------------------------------------ stale synthetic folders
def test_a_killed_synthetic_write_is_cleaned_on_the_next_run(tmp_path):
  dead = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
  )
  dead_pid = int(dead.stdout)
  stale = tmp_path / f".synthetic_data.tmp{dead_pid}"
  old = tmp_path / f".synthetic_data.old{dead_pid}"
  live = tmp_path / f".synthetic_data.tmp{os.getppid()}"  # a writer still running: kept
  for p in (stale, old, live):
    (p / "aerial").mkdir(parents=True)

  def generate(out: Path, params):
    out.mkdir(parents=True)
    (out / "data.txt").write_text("x")

  root = synthetic.write_once(tmp_path / "synthetic_data", {"a": 1}, generate, description="t")
  assert (root / "data.txt").exists()
  assert not stale.exists() and not old.exists() and live.exists()


# ------------------------------------------------------------------ names stay inside the root
def test_inside_root(tmp_path):
  root = tmp_path / "root"
  (root / "aerial").mkdir(parents=True)
  (tmp_path / "elsewhere").mkdir()
  (root / "aerial" / "link").symlink_to(tmp_path / "elsewhere")
  folder = root / "aerial"
  assert inside_root(root, folder, "a.tif", "x.lst, line 1") == folder / "a.tif"
  assert inside_root(root, folder, "sub/../b.tif", "x.lst, line 1") == folder / "sub/../b.tif"
  for name, why in [
    ("/etc/passwd", "absolute"),
    ("../../x.tif", "outside"),
    ("link/x.tif", "outside"),  # through a link inside the root
    ("", "empty"),
  ]:
    with pytest.raises(DataError, match=why) as e:
      inside_root(root, folder, name, "x.lst, line 7")
    assert "x.lst, line 7" in str(e.value) and repr(name) in str(e.value)
  # An archive folder that is itself a link (an archive assembled from links) is followed.
  linked = tmp_path / "linked"
  linked.mkdir()
  (linked / "aerial").symlink_to(tmp_path / "elsewhere")
  assert inside_root(linked, linked / "aerial", "a.tif", "x.lst, line 1").name == "a.tif"


def _write_archive_with_list(root: Path, test_list: str):
  """A copy of the tiny synthetic archive layout (folders linked) whose test list is `test_list`."""
  from mtljax.data.treesat.synthetic import write_tiny_treesat

  src = write_tiny_treesat(root.parent / "tiny_src")
  root.mkdir()
  for name in os.listdir(src):
    if name != "test_filenames.lst":
      os.symlink(src / name, root / name)
  (root / "test_filenames.lst").write_text(test_list)


def test_a_list_name_outside_the_root_is_a_data_error(tmp_path):
  root = tmp_path / "archive"
  _write_archive_with_list(root, "ok_name.tif\n/etc/hosts\n")
  with pytest.raises(DataError) as e:
    TreeSatAISource(root, "test", aerial_size=32, val_fraction=0.5)
  assert "test_filenames.lst, line 2" in str(e.value) and "'/etc/hosts.tif'" in str(e.value)


# ------------------------------------------------------------------ image sides bounded
def test_an_aerial_image_over_the_bound_fails_before_decoding(tmp_path, tiny_treesat_root):
  src = TreeSatAISource(tiny_treesat_root, "train", aerial_size=32, aerial_resize=True)
  assert src.check_files(max_files=2, progress=False) == 2  # 32×32 files under the default bound
  small = TreeSatAISource(
    tiny_treesat_root, "train", aerial_size=8, aerial_resize=True, max_image_side=16
  )
  with pytest.raises(DataError, match="config.data.max_image_side") as e:
    small.check_files(max_files=2, progress=False)
  assert str(small.image_path("aerial", 0)) in str(e.value) and "32×32" in str(e.value)
  with pytest.raises(DataError, match="config.data.max_image_side"):
    small[0]
  # A huge compressed file: the bound is checked from the header, before the pixels are decoded.
  huge = tmp_path / "huge.tif"
  tifffile.imwrite(huge, np.zeros((5000, 5000, 4), np.uint8), compression="zlib", tile=(512, 512))
  for fn in (check_image, read_image):
    with pytest.raises(DataError, match="5000×5000×4"):
      fn(huge, bands=4, size=None, dtype=np.uint8, max_side=4096)


def test_workdir_entries_of_a_missing_folder(tmp_path):
  assert workdir_lib.entries(str(tmp_path / "missing")) is None
  shutil.copy(__file__, tmp_path / "a.py")
  assert workdir_lib.entries(str(tmp_path)) == {"a.py"}


def test_a_csv_id_outside_the_root_is_a_data_error(tmp_path):
  """The same check on a CSV label file (the façades' labels.csv): row and name in the error."""
  from mtljax.data.facades.reader import FacadesSource
  from mtljax.data.facades.synthetic import write_synthetic_facades

  root = write_synthetic_facades(tmp_path / "f", num_images=40, num_blocks=8, image_size=8)
  csv = root / "labels.csv"
  lines = csv.read_text().splitlines()
  assert lines[0].startswith("id,"), lines[0]
  lines[1] = "../../outside," + lines[1].split(",", 1)[1]
  csv.write_text("\n".join(lines) + "\n")
  with pytest.raises(DataError, match=r"row 1: '\.\./\.\./outside\.png' leads outside"):
    FacadesSource(root, "train", image_size=8)
