"""A user's mistake ends in exactly one line `error: ...` on stderr, exit status 2, no traceback,
and nothing written or lost in the workdir: one test per case."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tqdm progress bars (stderr, separated by "\r"): "epoch 1/2:  50%|#####     | 3/6 [...]"
_PROGRESS = re.compile(r"\d+%\||\d+it \[|it/s\]|s/it\]")


def cli(workdir, *args, root=None, config="configs/treesat.py:tiny", timeout=300):
  cmd = [sys.executable, "-m", "mtljax.main", f"--workdir={workdir}"]
  cmd += [f"--config={config}"] if config else []
  cmd += [f"--config.data.root={root}"] if root else []
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  return subprocess.run(
    [*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
  )


def error_line(res) -> str:
  """The single `error:` line of a failed run; fails unless the run ended with exit 2, one line
  on stderr besides progress bars, and no traceback anywhere."""
  out = res.stdout + res.stderr
  assert res.returncode == 2, out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  lines = [s for s in res.stderr.splitlines() if s.strip() and not _PROGRESS.search(s)]
  assert len(lines) == 1, res.stderr[-3000:]
  assert lines[0].startswith("error: "), lines[0]
  return lines[0]


def snapshot(folder) -> dict:
  """Every path under `folder` with its size and modification time (None: no such folder)."""
  if not os.path.exists(folder):
    return None
  snap = {}
  for dirpath, dirnames, filenames in os.walk(folder):
    for name in dirnames + filenames:
      p = os.path.join(dirpath, name)
      st = os.lstat(p)
      snap[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
  return snap


@pytest.fixture
def workdir(tmp_path):
  w = tmp_path / "run"
  w.mkdir()
  (w / "notes.txt").write_text("keep me")
  return w


@pytest.mark.parametrize(
  "args, expected",
  [
    (("--config.train.batchsize=8",), ["--config.train.batchsize", 'Did you mean "batch_size"']),
    (("--config.train.batch_size=abc",), ["--config.train.batch_size=abc"]),
    (("--mode=fit",), ["--mode=fit", "train|eval|explain|analyze"]),
    (("--config=configs/treesat.py:exp=99",), ["exp=99", "1..8"]),
    (("--config=configs/nosuch.py",), ["configs/nosuch.py", "no such config file"]),
    (("--no_such_flag=1",), ["no_such_flag"]),
    (("positional",), ["unexpected arguments", "positional"]),
  ],
)
def test_flag_and_config_file_mistakes(workdir, args, expected):
  before = snapshot(workdir)
  line = error_line(cli(workdir, *args))
  for text in expected:
    assert text in line, line
  assert snapshot(workdir) == before


def test_missing_workdir_flag(tmp_path):
  res = subprocess.run(
    [sys.executable, "-m", "mtljax.main", "--config=configs/treesat.py:tiny"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert "--workdir" in error_line(res)


def test_batch_size_larger_than_the_split(workdir, tiny_treesat_root):
  before = snapshot(workdir)
  line = error_line(cli(workdir, "--config.train.batch_size=1000", root=tiny_treesat_root))
  assert "config.train.batch_size=1000" in line and "192 examples" in line, line
  # config.json is written only once the run has validated: nothing at all is written
  assert snapshot(workdir) == before


def test_empty_train_list(workdir, tiny_treesat_root, tmp_path):
  root = tmp_path / "archive"
  root.mkdir()
  for name in os.listdir(tiny_treesat_root):
    if name != "train_filenames.lst":
      os.symlink(os.path.join(tiny_treesat_root, name), root / name)
  (root / "train_filenames.lst").write_text("\n")
  before = snapshot(workdir)
  line = error_line(cli(workdir, root=str(root)))
  assert "training split" in line and "empty" in line and str(root) in line, line
  assert snapshot(workdir) == before


def test_workdir_that_is_a_file(tmp_path, tiny_treesat_root):
  f = tmp_path / "results.txt"
  f.write_text("keep me")
  for mode in ("train", "eval"):
    line = error_line(cli(f, f"--mode={mode}", root=tiny_treesat_root))
    assert str(f) in line and "is a file" in line, line
  assert f.read_text() == "keep me"


@pytest.mark.parametrize("mode", ["eval", "explain", "analyze"])
def test_untrained_workdir_says_train_first_and_writes_nothing(workdir, tmp_path, mode):
  # Without --config.data.root: the synthetic dataset must not be written there first.
  before = snapshot(workdir)
  line = error_line(cli(workdir, f"--mode={mode}"))
  assert "train first" in line and str(workdir) in line, line
  assert snapshot(workdir) == before
  missing = tmp_path / "missing"
  line = error_line(cli(missing, f"--mode={mode}"))
  assert "train first" in line and "does not exist" in line, line
  assert not missing.exists()


def test_nan_in_the_first_steps_names_no_checkpoint(workdir, tiny_treesat_root):
  res = cli(workdir, "--config.train.learning_rate=1e30", root=tiny_treesat_root)
  line = error_line(res)
  assert "training diverged" in line and "No checkpoint was kept" in line, line
  assert "step 0" not in line, line
  assert (workdir / "notes.txt").read_text() == "keep me"
  # No checkpoint: what the run wrote (config.json, normalization.json, tensorboard/) is removed.
  assert sorted(os.listdir(workdir)) == ["notes.txt"]


def test_problems_in_two_sections_are_one_error_and_no_workdir(tmp_path):
  """A weighting that needs two tasks on the one-task digits config and an unknown explanation
  loss: both reported in the one `error:` line (the whole config is checked at once, before the
  workdir is created), exit 2, and no workdir left behind."""
  missing = tmp_path / "run"
  res = cli(
    missing,
    "--config.weighting.kind=upgrad",
    "--config.explanation_loss.kind=lrp",
    config="configs/digits.py:tiny",
  )
  line = error_line(res)
  assert "config.weighting.kind='upgrad'" in line and "two or more tasks" in line, line
  assert "config.explanation_loss.kind='lrp'" in line, line
  assert not missing.exists()
