"""`--mode=predict` (mtljax/predict/): the predictions table and arrays of a trained ensemble on a
split, joined back to its labels, reproduce the evaluation's metrics; the uncertainty split adds
up; a killed run resumes to the same files; inputs that do not fit are one `error:` line."""

import csv
import json
import os
import subprocess

import numpy as np
import pytest
from conftest import PREDICT_CONFIG, PREDICT_FLAGS, ROOT, predict_config
from helpers.commands import run_main

from mtljax import faults, tasks
from mtljax.data.source import DataError


def _run(work, *flags, env=None):
  return run_main(work, *PREDICT_FLAGS, *flags, config=PREDICT_CONFIG, env=env)


@pytest.fixture(scope="module")
def predicted(predict_workdir):
  res = _run(predict_workdir, "--mode=predict")
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return predict_workdir / "predict" / "split-test"


def test_predictions_reproduce_the_eval_metrics(predicted, predict_workdir):
  from mtljax.data import build

  config = predict_config()
  source = build.make_sources(config, str(predict_workdir))[0]["test"]
  with open(predicted / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  arrays = dict(np.load(predicted / "predictions.npz"))
  assert [r["name"] for r in rows] == list(source.names)
  # The task's own terms: class names from the dataset, the value in years.
  names = source.target_fields["l3"]["class_names"]
  assert [r["l3"] for r in rows] == [names[k] for k in arrays["l3/prob"].argmax(-1)]
  assert np.allclose([float(r["age"]) for r in rows], arrays["age/value"], atol=1e-4)
  # The labels joined back give the metrics the training run reported for the best checkpoint.
  labels = source.label_arrays()
  final = json.loads((predict_workdir / "final_metrics.json").read_text())["test"]
  for t, pred_key, metric in (("l3", "prob", "f1_micro"), ("l2", "prob", "accuracy"),
                              ("age", "value", "mae")):  # fmt: skip
    kind = tasks.of(config.tasks[t])
    got = kind.metrics(
      labels["targets"][t], arrays[f"{t}/{pred_key}"], labels["mask"][t],
      num_classes=config.tasks[t].get("num_classes"),
    )  # fmt: skip
    assert got[metric] == pytest.approx(final[f"{t}/{metric}"], abs=1e-5), (t, metric)
  # The ensemble's uncertainty: total = expected + mutual information, and the members spread.
  for t in ("l3", "l2"):
    total = arrays[f"{t}/expected_entropy"] + arrays[f"{t}/mutual_information"]
    assert np.allclose(arrays[f"{t}/entropy"], total, atol=1e-5)
    assert arrays[f"{t}/members"].shape[1] == 3
    assert np.allclose(arrays[f"{t}/members"].mean(1), arrays[f"{t}/prob"], atol=1e-6)
  assert np.allclose(arrays["age/members"].std(1), arrays["age/spread"], atol=1e-5)


def test_a_killed_predict_run_resumes(predicted, predict_workdir):
  flags = ("--mode=predict", "--config.predict.chunk=4", "--config.predict.name=resumed")
  res = _run(predict_workdir, *flags, env={faults.ENV: "predict.part@3"})
  assert res.returncode != 0 and "faults: killed at predict.part" in res.stderr
  out = predict_workdir / "predict" / "resumed"
  assert len(list((out / "parts").glob("*.npz"))) == 2 and not (out / "predictions.csv").exists()
  res = _run(predict_workdir, *flags)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  assert not (out / "parts").exists()
  a, b = np.load(out / "predictions.npz"), np.load(predicted / "predictions.npz")
  assert sorted(a.files) == sorted(b.files)
  for k in a.files:
    if a[k].dtype.kind == "f":
      np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)
    else:
      assert (a[k] == b[k]).all(), k
  # Another request under the same name is refused; the files written stay.
  res = _run(predict_workdir, *flags, "--config.predict.checkpoint=latest")
  assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr[-2000:]
  assert res.stderr.startswith("error: ") and "config.predict.name" in res.stderr
  assert (out / "predictions.csv").exists()


def test_uncertainty_split_on_hand_made_members():
  from mtljax.predict import uncertainty

  agree = np.tile(np.asarray([[[0.9, 0.1]]]), (2, 1, 1))  # [E=2, B=1, K=2]
  disagree = np.asarray([[[0.99, 0.01]], [[0.01, 0.99]]])
  a, d = uncertainty.split_entropy(agree), uncertainty.split_entropy(disagree)
  assert float(a["mutual_information"][0]) == pytest.approx(0.0, abs=1e-6)
  assert float(d["entropy"][0]) == pytest.approx(np.log(2), abs=1e-6)
  h = -(0.99 * np.log(0.99) + 0.01 * np.log(0.01))
  assert float(d["expected_entropy"][0]) == pytest.approx(h, abs=1e-6)
  assert float(d["mutual_information"][0]) == pytest.approx(np.log(2) - h, abs=1e-6)
  labels = uncertainty.split_entropy(np.asarray([[[0.5, 1.0]], [[0.5, 1.0]]]), binary=True)
  assert float(labels["entropy"][0]) == pytest.approx(np.log(2), abs=1e-6)


class _Fake:
  def __init__(self, fields):
    self.input_fields, self.names = fields, ["a"]

  def __len__(self):
    return 1


class _Setup:
  input_names = ("aerial", "s1")
  input_fields = {"aerial": {"shape": (32, 32, 4)}, "s1": {"shape": (6, 6, 2)}}


def test_inputs_that_do_not_fit_name_the_modality():
  from mtljax.predict.inputs import check_inputs

  with pytest.raises(DataError, match=r"new data has no input 's1'"):
    check_inputs(_Fake({"aerial": {"shape": (32, 32, 4)}}), _Setup, "new data")
  fields = {"aerial": {"shape": (32, 32, 3)}, "s1": {"shape": (6, 6, 2)}}
  with pytest.raises(DataError, match=r"'aerial' has shape \(32, 32, 3\).*3 bands, expected 4"):
    check_inputs(_Fake(fields), _Setup, "new data")


def test_the_documented_commands_parse():
  """Every command docs/use-a-trained-model.md shows parses, with a mode this entry point has."""
  import re
  import sys

  from test_config import _documented_commands, _parse_main_command

  # The entry point's modes from its own help (importing mtljax.main here would define --config
  # a second time in a worker that imported another entry point).
  helpfull = subprocess.run(
    [sys.executable, "-m", "mtljax.main", "--helpfull"], cwd=ROOT, capture_output=True, text=True
  ).stdout
  enum_values = re.search(r"--mode: <([a-z|]+)>", helpfull).group(1).split("|")
  with open(os.path.join(ROOT, "docs", "use-a-trained-model.md")) as f:
    commands = [c for c in _documented_commands(f.read()) if c[2] == "mtljax.main"]
  modes = set()
  for toks in commands:
    assert _parse_main_command(toks).predict.chunk > 0, toks
    mode = [t.split("=", 1)[1] for t in toks if t.startswith("--mode=")] or ["train"]
    assert mode[0] in enum_values, toks
    modes.add(mode[0])
  assert {"train", "predict", "export"} <= modes
