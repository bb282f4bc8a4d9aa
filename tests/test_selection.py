"""Checkpoint selection (`config.train.select_by`) and the decoy-swapped validation metrics.

Tiny decoy-digit runs: `best/`'s step is checked against the argmax / argmin / last of the
validation records in metrics.jsonl; the swapped accuracy against a by-hand swap of the split's
own files; an unknown name against the command line's one error line."""

import copy
import json
import os
import subprocess

import numpy as np
import pytest
from helpers.commands import ROOT, main_command

DECOY = "configs/digits.py:decoy,tiny"


def _digits(data_dir, select_by=None, epochs=3):
  from configs import digits

  c = digits.get_config("decoy,tiny")
  c.data.synthetic.dir = str(data_dir)
  c.data.synthetic.num_train = 192
  c.train.num_epochs = epochs
  if select_by is not None:
    c.train.select_by = select_by
  return c


def _val_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return [r for r in records if r["split"] == "val"]


def _best_step(workdir):
  (step,) = [
    int(n) for n in os.listdir(os.path.join(workdir, "checkpoints", "best")) if n.isdigit()
  ]
  final = json.loads(open(os.path.join(workdir, "final_metrics.json")).read())
  assert final["best_step"] == step
  return step


def test_select_by_resolves_names_directions_and_latest():
  from configs import digits
  from mtljax import config_blocks as blocks
  from mtljax.errors import ConfigError
  from mtljax.train import evaluation, selection

  c = digits.get_config("decoy,size=3")
  c.tasks.y = blocks.task("regression", 1.0, "linear", num_outputs=2)
  names = evaluation.metric_directions(c)

  def resolve(value):
    c.train.select_by = value
    return selection.resolve(c, names, "digit/f1_micro", True)

  assert resolve("") == selection.Selection("digit/f1_micro", True)
  # Directions from the task kinds' declarations, for members and their mean alike.
  assert (resolve("y/mae").key, resolve("y/mae").larger_better) == ("y/mae", False)
  assert resolve("member2/y/r2/1").larger_better
  assert not resolve("members_mean/y/rmse").larger_better
  assert resolve("max:y/mae").larger_better and not resolve("min:digit/accuracy").larger_better
  latest = resolve("latest")
  assert latest.key is None and latest.better(latest.score({}, 3), 2.0)
  with pytest.raises(ConfigError, match=r"select_by='digit/nope'.*digit/accuracy, .*y/mae"):
    resolve("digit/nope")
  # A name given a direction but logged by no validation fails at the first one, listing them.
  with pytest.raises(
    ConfigError, match=r"select_by='max:y/nope' is not a metric the first .*'min:': y/mae$"
  ):
    resolve("max:y/nope").score({"y/mae": 1.0, "y/count": 3}, 1)


@pytest.mark.slow
def test_best_is_the_argmax_argmin_or_last_of_the_logged_metric(tmp_path):
  from mtljax import train

  steps = {}
  for select_by in ("digit/kappa_decoy_swapped", "min:digit/accuracy", "latest"):
    workdir = str(tmp_path / select_by.replace("/", "_").replace(":", "_"))
    train.train_and_evaluate(_digits(tmp_path / "data", select_by), workdir)
    val = _val_records(workdir)
    assert len(val) == 3
    if select_by == "latest":
      want = val[-1]["step"]
    else:
      name = select_by.removeprefix("min:")
      values = np.array([r[name] for r in val])
      pick = np.argmin(values) if select_by.startswith("min:") else np.argmax(values)  # first
      want = val[int(pick)]["step"]
    steps[select_by] = _best_step(workdir)
    assert steps[select_by] == want, (select_by, [(r["step"], r.get(name)) for r in val])


def _swapped_by_hand(root, split):
  """The split's images (float32 [N, S, S, 1], 0..255 as the reader gives them) with each swatch
  set to the shade of the swatch of example `permutation(N)[i]` (seed 0), pixel by pixel."""
  with np.load(os.path.join(root, f"{split}.npz")) as z:
    x, decoy, label = z["image"].astype(np.float32)[..., None], z["decoy"], z["label"]
  out = x.copy()
  donor = np.random.default_rng(0).permutation(len(x))
  for i in range(len(x)):
    j = donor[i]
    shade = float(x[j, ..., 0][decoy[j]].mean())
    for y, xx in zip(*np.nonzero(decoy[i])):
      out[i, y, xx, 0] = shade
  return out, label


@pytest.mark.slow
def test_decoy_config_selects_the_best_swapped_accuracy_computed_as_by_hand(tmp_path):
  from configs import digits
  from mtljax import train
  from mtljax.checkpoint import Checkpointer

  workdir, data = tmp_path / "run", tmp_path / "data"
  cmd = main_command(workdir, f"--config.data.synthetic.dir={data}", config=DECOY)
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

  # (c) best/ is the epoch with the highest validation swapped accuracy (the first of a tie).
  val = _val_records(workdir)
  swapped = np.array([r["digit/accuracy_decoy_swapped"] for r in val])
  assert _best_step(workdir) == val[int(np.argmax(swapped))]["step"]
  final = json.loads((workdir / "final_metrics.json").read_text())
  assert final["selected_by"] == "val digit/accuracy_decoy_swapped (max)"
  assert "by val digit/accuracy_decoy_swapped" in res.stdout

  # (b) the best checkpoint's logged swapped accuracy = its accuracy on the split swapped by hand.
  config = digits.get_config("decoy,tiny")
  config.data.synthetic.dir = str(data)
  s = train.setup(config, str(workdir), write_config=False)
  ckpt = Checkpointer(str(workdir / "checkpoints"))
  state, meta = ckpt.restore_best(s.abstract_state)
  ckpt.close()
  assert int(meta["step"]) == final["best_step"]
  hand = copy.copy(s.sources["val"])
  hand._x, label = _swapped_by_hand(data, "val")
  assert (hand._x != s.sources["val"]._x).any()
  _, out = train.evaluate(s.p_eval_step, state, s.eval_batches(hand), config, s.mesh)
  correct = np.argmax(out["prob/digit"], -1) == label[out["index"]]
  assert len(correct) == len(label)
  assert final["val"]["digit/accuracy_decoy_swapped"] == pytest.approx(correct.mean(), abs=1e-12)
  assert final["val"]["digit/accuracy_decoy_swapped"] != final["val"]["digit/accuracy"]


def test_unknown_select_by_is_one_error_line_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  cmd = main_command(
    workdir,
    f"--config.data.synthetic.dir={tmp_path / 'data'}",
    "--config.train.select_by=digit/acuracy",
    config=DECOY,
  )
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
  lines = [line for line in res.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
  assert "config.train.select_by='digit/acuracy'" in lines[0]
  assert "digit/accuracy_decoy_swapped" in lines[0] and "'latest'" in lines[0]
  assert not any(
    (workdir / name).exists()
    for name in ("config.json", "metrics.jsonl", "normalization.json", "checkpoints")
  ), os.listdir(workdir)
