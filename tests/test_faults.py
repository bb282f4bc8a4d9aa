"""Crash-proof workdirs: atomic result files, a torn metrics.jsonl line, idempotent
checkpoint saves, and runs SIGKILLed at chosen points (mtljax/faults.py) that resume to the same
files as an uninterrupted run. The many-points version is
profiling/experiments/fault_injection.py."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from mtljax import faults, fileio
from mtljax.writers import MetricWriter, read_metrics
from profiling.experiments import fault_injection as fi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------ fileio
def _in_subprocess(code: str, kill_at: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=ROOT, **{faults.ENV: kill_at})
  return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("kind", ["json", "npz", "csv"])
def test_kill_between_tmp_write_and_rename_keeps_the_old_file(tmp_path, kind):
  path = tmp_path / f"result.{kind}"
  write = {
    "json": "fileio.write_json(p, {'new': 1})",
    "npz": "fileio.savez(p, x=np.arange(5))",
    "csv": "fileio.write_csv(p, [['a', 'b'], [1, 2]])",
  }[kind]
  old = {"json": '{"old": 0}', "npz": None, "csv": "old\n"}[kind]
  if kind == "npz":
    fileio.savez(path, x=np.zeros(2))
  else:
    path.write_text(old)
  before = path.read_bytes()
  code = f"import numpy as np; from mtljax import fileio; p = {str(path)!r}; {write}"
  res = _in_subprocess(code, "write.rename")
  assert res.returncode == -signal.SIGKILL, res.stderr
  assert "faults: killed at write.rename" in res.stderr
  assert path.read_bytes() == before  # the old file, intact
  stale = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
  assert len(stale) == 1 and stale[0].startswith(f".result.{kind}.")  # the killed writer's
  # The next write replaces the file and removes the dead writer's temporary file.
  res = _in_subprocess(code, "")
  assert res.returncode == 0, res.stderr
  assert sorted(os.listdir(tmp_path)) == [f"result.{kind}"]
  if kind == "json":
    assert json.loads(path.read_text()) == {"new": 1}
  elif kind == "npz":
    np.testing.assert_array_equal(np.load(path)["x"], np.arange(5))
  else:
    assert path.read_text().splitlines() == ["a,b", "1,2"]


def test_kill_point_counts_hits(monkeypatch):
  monkeypatch.setenv(faults.ENV, "a@3,b")
  monkeypatch.setattr(faults, "_hits", {})
  assert [faults.hit("a") for _ in range(4)] == [False, False, True, False]
  assert faults.hit("b") and not faults.hit("c")
  monkeypatch.delenv(faults.ENV)
  assert not faults.hit("b")


# ------------------------------------------------------------------------------ metrics.jsonl
def _writer(tmp_path, records):
  w = MetricWriter(str(tmp_path))
  for step, split in records:
    w.write(step, split, {"loss": 0.5 + step})
  return w


def test_torn_last_line_is_dropped_with_a_warning(tmp_path, capsys):
  w = _writer(tmp_path, [(5, "train"), (6, "train"), (6, "val")])
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 10, "split": "tra')  # killed while appending
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [5, 6, 6]
  w.truncate_after(6)
  err = capsys.readouterr().err
  assert f"warning: {path}: dropped a torn last line (line 4" in err
  assert len(err.strip().splitlines()) == 1
  assert [(r["step"], r["split"]) for r in read_metrics(str(tmp_path))] == [
    (5, "train"),
    (6, "train"),
    (6, "val"),
  ]
  assert path.read_text().endswith("}\n")  # repaired: later appends start on a new line
  w.close()


def test_corrupt_line_inside_the_log_is_an_error_naming_it(tmp_path):
  w = _writer(tmp_path, [(5, "train")])
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write("garbage\n")
  w.write(6, "train", {"loss": 1.0})
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON record"):
    w.truncate_after(6)
  w.close()


def test_resume_drops_best_records_so_a_rerun_does_not_duplicate_them(tmp_path):
  w = _writer(
    tmp_path, [(6, "train"), (6, "val"), (12, "val"), (12, "val_best"), (12, "test_best")]
  )
  w.truncate_after(12)  # a finished workdir run again: the final test writes them again
  assert [r["split"] for r in read_metrics(str(tmp_path))] == ["train", "val", "val"]
  w.close()


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_saves_are_idempotent_and_ignore_half_written_steps(tmp_path):
  import jax.numpy as jnp

  from mtljax.checkpoint import Checkpointer

  state = {"w": jnp.arange(4.0)}
  ckpt = Checkpointer(str(tmp_path / "ck"))
  assert ckpt.save_best(6, state, {"step": 6})
  assert not ckpt.save_best(6, state, {"step": 6})  # today: StepAlreadyExistsError
  assert ckpt.save_latest(6, state, {"step": 6})
  ckpt.wait()
  assert not ckpt.save_latest(6, state, {"step": 6}, force=True)
  ckpt.close()
  # A save killed half way: orbax's temporary folder, never renamed to its step.
  half = tmp_path / "ck" / "latest" / "8.orbax-checkpoint-tmp-1234567"
  half.mkdir()
  (half / "junk").write_text("x")
  ckpt = Checkpointer(str(tmp_path / "ck"), cleanup=True)  # as a training run opens it
  assert ckpt.latest_step() == 6
  abstract = {"w": jnp.zeros(4)}
  restored, meta = ckpt.restore_latest(abstract)
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert meta == {"step": 6}
  assert ckpt.save_latest(8, state, {"step": 8})
  ckpt.wait()
  assert ckpt.latest_step() == 8
  ckpt.close()
  assert not half.exists()  # cleaned when the managers were opened


# ------------------------------------------------------------------------------ kill and resume
@pytest.mark.slow
@pytest.mark.parametrize(
  "point",
  [
    "ckpt.best.done@1",  # best/6 written, latest/6 not: today unresumable (StepAlreadyExists)
    "metrics.append@3",  # torn val line of epoch 1: today JSONDecodeError on every resume
    "predictions.rename@3",  # epoch 2's val predictions in their temporary file
    "train.step@9",  # mid-epoch 2, one step after the mid-epoch checkpoint of step 8
  ],
)
def test_killed_run_resumes_to_the_uninterrupted_files(fault_reference, tmp_path, point):
  ref, root = fault_reference
  outcome, detail = fi.trial(ref, root, point, str(tmp_path / "work"))
  assert outcome == "identical", detail


@pytest.mark.slow
def test_rerunning_a_finished_workdir_changes_nothing(fault_reference, tmp_path):
  ref, root = fault_reference
  work = str(tmp_path / "again")
  shutil.copytree(ref, work)
  res = fi.run(work, root)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "Resuming from" in res.stdout
  assert fi.compare(ref, work) == []  # in particular, no second val_best/test_best records
  splits = [r["split"] for r in read_metrics(work)]
  assert splits.count("val_best") == 1 and splits.count("test_best") == 1


def test_analysis_reads_name_a_torn_file(tmp_path):
  from mtljax.analysis.predictions import AnalysisError, read_json, read_jsonl

  (tmp_path / "final_metrics.json").write_text('{"best_epoch": 1, "va')
  with pytest.raises(AnalysisError, match="final_metrics.json: not valid JSON"):
    read_json(str(tmp_path / "final_metrics.json"))
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "val"}\n{"step": 2, "spl')
  assert read_jsonl(str(tmp_path / "metrics.jsonl")) == [{"step": 1, "split": "val"}]
