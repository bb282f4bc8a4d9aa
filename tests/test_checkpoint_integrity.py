"""Checkpoints you can trust: the integrity manifest, the verified restore that falls back to the
newest intact step, best/ checked before training resumes, and the config recorded with each step
(mtljax/checkpoint.py). Unit tests on a tiny state; two end-to-end runs of the CLI on
`configs/treesat.py:tiny` (one trained workdir per module, copied per test)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax import checkpoint as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = {"config": {"lr": 0.1}, "fingerprint": C.fingerprint({"lr": 0.1})}


def _state(step):
  return {"w": jnp.arange(600.0).reshape(6, 100) + step, "b": jnp.full(7, float(step))}


ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))


def _saved(folder, latest=(2, 4), best=4, verify="all"):
  ck = C.Checkpointer(str(folder), record=RECORD, verify=verify)
  if best is not None:
    ck.save_best(best, _state(best), {"step": best})
  for s in latest:
    ck.save_latest(s, _state(s), {"step": s})
  ck.close()
  return str(folder)


def _biggest_data_file(step_dir):
  files = [f for f in C._files(step_dir) if "/d/" in f]
  return os.path.join(step_dir, max(files, key=lambda f: os.path.getsize(f"{step_dir}/{f}")))


def _flip(path, at=0.5):
  with open(path, "r+b") as f:
    n = os.path.getsize(path)
    f.seek(int(n * at))
    b = f.read(4)
    f.seek(int(n * at))
    f.write(bytes(x ^ 0xFF for x in b))


# ------------------------------------------------------------------------------ manifest
def test_manifest_lists_every_file_with_size_and_checksum(tmp_path):
  d = _saved(tmp_path / "ck")
  for which, step in (("latest", 2), ("latest", 4), ("best", 4)):
    step_dir = f"{d}/{which}/{step}"
    m = C.read_manifest(step_dir)
    assert m["step"] == m["data_position"] == step
    assert m["config_fingerprint"] == RECORD["fingerprint"] and m["run_config"] == RECORD
    assert sorted(m["files"]) == C._files(step_dir)
    assert {"_CHECKPOINT_METADATA", "meta/metadata", "state/_METADATA"} <= set(m["files"])
    for rel, f in m["files"].items():
      assert f["size"] == os.path.getsize(f"{step_dir}/{rel}")
    assert C.verify_files(step_dir, m, checksums=True) == []
  assert C.recorded_config(d) == (RECORD["config"], f"{d}/latest/4")
  # An edited manifest fails its own checksum.
  path = f"{d}/latest/4/{C.MANIFEST}"
  doc = json.load(open(path))
  doc["step"] = 5
  json.dump(doc, open(path, "w"))
  with pytest.raises(C._Damage, match="its own checksum"):
    C.read_manifest(f"{d}/latest/4")
  # The step's metadata still records the config; without it, the older step's record is used.
  assert C.recorded_config(d) == (RECORD["config"], f"{d}/latest/4")
  os.remove(f"{d}/latest/4/meta/metadata")
  assert C.recorded_config(d) == (RECORD["config"], f"{d}/latest/2")


# ------------------------------------------------------------------------------ fallback
@pytest.mark.parametrize(
  "damage, reason",
  [
    ("truncate", "bytes, .* were written"),
    ("delete_data", "is missing"),
    ("flip", r"has changed \(checksum\)"),
    ("delete_meta", "meta/metadata is missing"),
    ("delete_state_metadata", "state/_METADATA is missing"),
    ("flip_no_manifest", "unreadable|non-finite"),
  ],
)
def test_damaged_newest_step_falls_back_to_the_older_one(tmp_path, capsys, damage, reason):
  d = _saved(tmp_path / "ck")
  step_dir = f"{d}/latest/4"
  data = _biggest_data_file(step_dir)
  if damage == "truncate":
    os.truncate(data, 10)
  elif damage == "delete_data":
    os.remove(data)
  elif damage == "flip":
    _flip(data)
  elif damage == "delete_meta":
    os.remove(f"{step_dir}/meta/metadata")
  elif damage == "delete_state_metadata":
    os.remove(f"{step_dir}/state/_METADATA")
  else:  # no manifest to compare with: the restore itself must notice (a corrupt chunk header)
    os.remove(f"{step_dir}/{C.MANIFEST}")
    _flip(data, at=0.0)
  ck = C.Checkpointer(d, cleanup=True, record=RECORD)
  state, meta = ck.restore_latest(ABSTRACT)
  ck.close()
  assert meta == {"step": 2}
  np.testing.assert_array_equal(state["w"], _state(2)["w"])
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("warning: ")
  assert "latest/4 is damaged" in lines[0] and "moved to latest/4.corrupt" in lines[0]
  assert "resuming from latest/2" in lines[0]
  import re

  assert re.search(reason, lines[0]), lines[0]
  assert sorted(os.listdir(f"{d}/latest")) == ["2", "4.corrupt"]
  assert C.Checkpointer(d).latest.all_steps() == [2]  # orbax no longer lists it


def test_a_step_without_manifest_is_verified_by_restoring_then_recorded(tmp_path):
  d = _saved(tmp_path / "ck")
  os.remove(f"{d}/latest/4/{C.MANIFEST}")  # killed between orbax's rename and the manifest
  ck = C.Checkpointer(d, record=RECORD)
  _, meta = ck.restore_latest(ABSTRACT)
  assert meta == {"step": 4}
  assert C.read_manifest(f"{d}/latest/4")["run_config"] == RECORD


def test_sizes_only_mode_does_not_read_checksums_of_latest(tmp_path):
  d = _saved(tmp_path / "ck")
  _flip(f"{d}/latest/4/meta/metadata", at=0.9)  # a digit of the JSON changed: parses
  m = C.read_manifest(f"{d}/latest/4")
  assert C.verify_files(f"{d}/latest/4", m, checksums=False) == []
  assert C.verify_files(f"{d}/latest/4", m, checksums=True) == [
    "meta/metadata has changed (checksum)"
  ]


def test_no_intact_step_is_one_error_and_moves_nothing(tmp_path):
  d = _saved(tmp_path / "ck")
  for which, step in (("latest", 2), ("latest", 4), ("best", 4)):
    os.remove(f"{d}/{which}/{step}/state/_METADATA")
  ck = C.Checkpointer(d, cleanup=True)
  with pytest.raises(C.CheckpointDamagedError, match="no intact checkpoint.*latest/4.*latest/2"):
    ck.restore_latest(ABSTRACT)
  assert sorted(os.listdir(f"{d}/latest")) == ["2", "4"]


def test_falls_back_to_best_when_latest_is_all_damaged(tmp_path, capsys):
  d = _saved(tmp_path / "ck", latest=(4,), best=4)
  os.truncate(_biggest_data_file(f"{d}/latest/4"), 3)
  state, meta = C.Checkpointer(d).restore_latest(ABSTRACT)
  assert meta == {"step": 4}
  assert "resuming from best/4" in capsys.readouterr().err


def test_damaged_best_is_saved_again_from_latest_or_stops(tmp_path, capsys):
  d = _saved(tmp_path / "ck")
  _flip(_biggest_data_file(f"{d}/best/4"))
  ck = C.Checkpointer(d, record=RECORD)
  ck.check_best(ABSTRACT, best_step=4, resumed_step=4)
  assert "best/4 is damaged" in capsys.readouterr().err
  assert sorted(os.listdir(f"{d}/best")) == ["4", "4.corrupt"]
  state, meta = ck.restore_best(ABSTRACT)
  np.testing.assert_array_equal(state["w"], _state(4)["w"])
  # latest/ no longer holds the best step: the run stops now, before it trains on.
  d2 = _saved(tmp_path / "ck2", latest=(4, 6), best=2)
  shutil.rmtree(f"{d2}/latest/2", ignore_errors=True)
  _flip(_biggest_data_file(f"{d2}/best/2"))
  ck = C.Checkpointer(d2, record=RECORD)
  with pytest.raises(C.CheckpointDamagedError, match="best/2 is damaged.*best epoch's state"):
    ck.check_best(ABSTRACT, best_step=2, resumed_step=6)
  assert os.listdir(f"{d2}/best") == ["2"]


def test_open_trims_latest_to_keep(tmp_path):
  # As a run killed right after saving step 6, before orbax removed step 2, leaves it.
  ck = C.Checkpointer(str(tmp_path / "ck"), keep=3)
  for s in (2, 4, 6):
    ck.save_latest(s, _state(s), {"step": s})
  ck.close()
  C.Checkpointer(str(tmp_path / "ck"), keep=2).restore_latest(ABSTRACT)  # eval: leaves them
  assert sorted(os.listdir(tmp_path / "ck" / "latest")) == ["2", "4", "6"]
  C.Checkpointer(str(tmp_path / "ck"), keep=2, cleanup=True).restore_latest(ABSTRACT)
  assert sorted(os.listdir(tmp_path / "ck" / "latest")) == ["4", "6"]


# ------------------------------------------------------------------------------ end to end
ARGS = (
  "--config=configs/treesat.py:tiny",
  "--config.train.num_epochs=2",
  "--config.train.checkpoint_every_steps=4",
)


def _run(workdir, root, *extra):
  cmd = [sys.executable, "-m", "mtljax.main", *ARGS, f"--workdir={workdir}"]
  cmd += [f"--config.data.root={root}", *extra]
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  env.pop("MTLJAX_KILL_AT", None)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def half_trained(tmp_path_factory):
  """A 2-epoch tiny run killed before it saves step 8: latest/4, latest/6, best/6 (manifests
  written: each when the next save started)."""
  from profiling.experiments import fault_injection as fi

  base = tmp_path_factory.mktemp("integrity")
  root = fi.make_root(str(base / "data"))
  work = str(base / "half")
  env = dict(os.environ, PYTHONPATH=ROOT, MTLJAX_KILL_AT="ckpt.latest.before@3")
  cmd = [
    sys.executable,
    "-m",
    "mtljax.main",
    *ARGS,
    f"--workdir={work}",
    f"--config.data.root={root}",
  ]
  res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert res.returncode == -9, res.stderr[-2000:]
  assert sorted(os.listdir(f"{work}/checkpoints/latest")) == ["4", "6"]
  os.remove(f"{work}/.lock")  # the killed run's (a rerun would take it over with a note)
  return work, root


@pytest.mark.slow
def test_no_intact_step_stops_with_one_line(half_trained, tmp_path):
  src, root = half_trained
  work = str(tmp_path / "w")
  shutil.copytree(src, work)
  for step_dir in ("latest/4", "latest/6", "best/6"):
    os.remove(f"{work}/checkpoints/{step_dir}/state/_METADATA")
  res = _run(work, root)
  assert res.returncode == 2, res.stderr[-2000:]
  assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
  assert (
    "no intact checkpoint" in res.stderr and "latest/6: state/_METADATA is missing" in res.stderr
  )
  assert sorted(os.listdir(f"{work}/checkpoints/latest")) == ["4", "6"]  # nothing moved


@pytest.mark.slow
def test_damage_and_a_lost_config_json_resume_to_the_end(half_trained, tmp_path):
  """latest/6 truncated, best/6 flipped, config.json
  deleted: a changed learning rate is refused by the config recorded with the checkpoint; the
  same config falls back to latest/4, re-makes best/6 on the way and completes."""
  src, root = half_trained
  work = str(tmp_path / "w")
  shutil.copytree(src, work)
  ck = f"{work}/checkpoints"
  os.truncate(_biggest_data_file(f"{ck}/latest/6"), 100)
  _flip(_biggest_data_file(f"{ck}/best/6"))
  os.remove(f"{work}/config.json")
  res = _run(work, root, "--config.train.learning_rate=0.01")
  assert res.returncode == 2, res.stderr[-2000:]
  assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
  assert "train.learning_rate" in res.stderr and "latest/6" in res.stderr
  assert not os.path.exists(f"{work}/config.json")
  res = _run(work, root)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "Traceback" not in res.stderr
  warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: ")]
  assert any("latest/6 is damaged" in w and "resuming from latest/4" in w for w in warnings)
  assert any("best/6 is damaged" in w and "saves it again at step 6" in w for w in warnings)
  assert sorted(os.listdir(f"{ck}/latest")) == ["12", "6.corrupt", "8"]
  assert sorted(os.listdir(f"{ck}/best"))[-1] == "6.corrupt"
  recorded = C.read_manifest(f"{ck}/latest/12")["run_config"]["config"]
  assert json.load(open(f"{work}/config.json")) == recorded
  final = json.load(open(f"{work}/final_metrics.json"))
  assert final["best_step"] in (6, 12) and np.isfinite(final["test"][final["main_metric"]])
