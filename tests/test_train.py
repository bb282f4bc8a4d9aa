"""End to end: learning on planted data, saved predictions, resume after SIGKILL/SIGTERM,
data-parallel equivalence, divergence handling and command-line errors."""

import glob
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from helpers.commands import device_check, main_command
from sklearn import metrics as skm

from configs import treesat as treesat_config
from mtljax import train
from mtljax.writers import TIMING_FIELDS, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(root, **train_overrides):
  c = treesat_config.get_config("tiny")
  c.data.root = root
  for k, v in train_overrides.items():
    setattr(c.train, k, v)
  return c


def _main(workdir, root, *overrides, env=None, wait=True):
  cmd = main_command(workdir, f"--config.data.root={root}", *overrides)
  e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
  if not wait:
    return subprocess.Popen(
      cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
  return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tiny_config_learns_above_chance_and_writes_everything(tiny_treesat_root, tmp_path):
  config = _tiny(
    tiny_treesat_root, num_epochs=12, batch_size=8, learning_rate=3e-3, checkpoint_every_steps=1000
  )
  results = train.train_and_evaluate(config, str(tmp_path))  # 12 × 24 = 288 steps
  test = results["test"]
  # 15 genera: chance is 1/15, the majority class of the planted data about 0.15.
  assert test["l3/f1_micro"] > 0.45, test
  assert test["l2/f1_micro"] > 0.45, test
  assert test["age/r2"] > 0.1, test

  # Everything a run promises is on disk and agrees with itself.
  for f in ("config.json", "normalization.json", "metrics.jsonl", "final_metrics.json"):
    assert os.path.exists(tmp_path / f), f
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  records = read_metrics(str(tmp_path))
  assert [r["epoch"] for r in records if r["split"] == "val"] == list(range(1, 13))
  assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
  for split in ("val", "test"):
    files = sorted(glob.glob(str(tmp_path / "predictions" / split / "epoch_*.npz")))
    assert len(files) == 12
  # The test metrics of the best checkpoint equal scikit-learn's on the saved predictions of the
  # best epoch (the best checkpoint is that epoch's state).
  best = np.load(tmp_path / "predictions" / "test" / f"epoch_{results['best_epoch']:03d}.npz")
  assert len(best["index"]) == 32 and len(set(best["index"].tolist())) == 32  # half the test list
  assert best["name"][0].endswith(".tif")
  np.testing.assert_allclose(
    skm.f1_score(best["target/l3"], best["pred/l3"], average="micro"),
    test["l3/f1_micro"],
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    skm.r2_score(best["target/age"], best["pred/age"]), test["age/r2"], rtol=1e-4
  )


def _wait_for_checkpoint(workdir, proc, min_step, timeout=240):
  deadline = time.time() + timeout
  folder = os.path.join(workdir, "checkpoints", "latest")
  while time.time() < deadline:
    steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
    if steps and max(steps) >= min_step:
      return max(steps)
    if proc.poll() is not None:
      raise AssertionError(
        f"run ended before a checkpoint at step >= {min_step}:\n" + proc.stdout.read()
      )
    time.sleep(0.2)
  proc.kill()
  raise AssertionError(f"no checkpoint at step >= {min_step} within {timeout}s")


@pytest.mark.slow
def test_sigkill_and_sigterm_then_resume_matches_uninterrupted(tiny_treesat_root, tmp_path):
  args = ("--config.train.num_epochs=4", "--config.train.checkpoint_every_steps=2")
  ref = _main(tmp_path / "ref", tiny_treesat_root, *args)
  assert ref.returncode == 0, ref.stdout + ref.stderr
  assert "BUILT-IN SYNTHETIC" not in ref.stdout  # a data root was given

  work = tmp_path / "interrupted"
  proc = _main(work, tiny_treesat_root, *args, wait=False)
  try:
    _wait_for_checkpoint(work, proc, min_step=5)
    proc.send_signal(signal.SIGKILL)  # mid-epoch 1 (12 steps per epoch)
  finally:
    proc.wait(timeout=60)
    proc.stdout.close()
  proc = _main(work, tiny_treesat_root, *args, wait=False)
  try:
    killed_at = _wait_for_checkpoint(work, proc, min_step=20)
    proc.send_signal(signal.SIGTERM)  # pre-emption: checkpoint at the next step, then exit 143
    out, _ = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert "Resuming from" in out, out
  assert proc.returncode == 143, out
  assert "stopped by SIGTERM at step" in out, out
  res = _main(work, tiny_treesat_root, *args)
  assert res.returncode == 0, res.stdout + res.stderr
  assert "Resuming from" in res.stdout and killed_at > 5

  final_ref = json.loads((tmp_path / "ref" / "final_metrics.json").read_text())
  final = json.loads((work / "final_metrics.json").read_text())
  assert final["best_epoch"] == final_ref["best_epoch"]
  for split in ("val", "test"):
    for k, v in final_ref[split].items():
      np.testing.assert_allclose(final[split][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
  # The metric log of the interrupted run equals the uninterrupted one (no duplicated records).
  strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rs]
  a, b = strip(read_metrics(str(tmp_path / "ref"))), strip(read_metrics(str(work)))
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for k in ra:
      if isinstance(ra[k], str):
        assert ra[k] == rb[k]
        continue
      np.testing.assert_allclose(rb[k], ra[k], rtol=1e-5, atol=1e-6, err_msg=f"{ra['step']} {k}")


def test_mesh_of_4_devices_matches_1_device(tiny_treesat_root, tmp_path):
  out = device_check("mesh_check.py", tiny_treesat_root, tmp_path)
  one, four = out["1"], out["4"]
  assert one["sharded"] == 1 and four["sharded"] == 4
  np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-5)
  for g1, g4 in zip(one["grads"], four["grads"]):
    np.testing.assert_allclose(np.asarray(g4), np.asarray(g1), rtol=1e-4, atol=1e-6)
  for b1, b4 in zip(one["batch_stats"], four["batch_stats"]):
    np.testing.assert_allclose(np.asarray(b4), np.asarray(b1), rtol=1e-4, atol=1e-6)


def test_divergence_stops_and_keeps_last_good_checkpoint(tiny_treesat_root, tmp_path):
  ok = _main(tmp_path, tiny_treesat_root, "--config.train.num_epochs=1")
  assert ok.returncode == 0, ok.stdout + ok.stderr
  latest = sorted(os.listdir(tmp_path / "checkpoints" / "latest"))
  # Continue for more epochs with an absurd learning rate: the run must stop with a clear message.
  bad = _main(
    tmp_path,
    tiny_treesat_root,
    "--config.train.num_epochs=3",
    "--config.train.learning_rate=1e30",
    "--config.train.checkpoint_every_steps=1",
    "--allow_config_change",  # a resume that changes the run must say so
  )
  assert bad.returncode == 2, bad.stdout + bad.stderr
  assert "training diverged" in bad.stderr and "last good checkpoint" in bad.stderr
  # The checkpoint of the good epoch is still there; nothing non-finite was saved.
  assert latest[0] in os.listdir(tmp_path / "checkpoints" / "latest")
  assert (tmp_path / "final_metrics.json").exists()


@pytest.mark.parametrize(
  "overrides, expected",
  [
    (("--config.train.batch_sise=8",), 'Did you mean "batch_size"'),
    (
      ("--config.data.root=/nonexistent/TreeSatAI",),
      "data.root='/nonexistent/TreeSatAI' does not exist",
    ),
    (("--config.tasks.l3.num_classes=12",), "config.tasks.l3.num_classes=12"),
  ],
)
def test_command_line_errors_are_clear(tmp_path, overrides, expected):
  (tmp_path / "notes.txt").write_text("keep me")
  cmd = main_command(tmp_path, *overrides)
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode != 0
  assert expected in res.stderr, res.stderr[-3000:]
  assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("total_steps", [1, 2, 40])
def test_the_learning_rate_schedule_of_short_runs(total_steps):
  """A run of one or two steps gets a schedule (optax refuses a cosine of no step), starting at
  lr/10; a longer one warms up to lr and decays to 0."""
  from mtljax.train.state import create_learning_rate

  c = treesat_config.get_config("tiny")
  c.train.num_epochs, c.train.learning_rate = 1, 0.1
  lr = create_learning_rate(c, total_steps)
  assert float(lr(0)) == pytest.approx(0.01)
  if total_steps > 2:
    assert float(lr(total_steps // 2)) == pytest.approx(0.1, rel=0.01)
    assert float(lr(total_steps)) == pytest.approx(0.0, abs=1e-6)
