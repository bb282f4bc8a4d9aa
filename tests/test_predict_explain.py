"""`--config.predict.explain=True` (mtljax/predict/explain.py) and the explain page
(mtljax/explain/page.py, render/glance.py): new inputs explained without annotations, picked
across the predicted classes, with the mask-free trust metrics and each input's and band's share
per class on one page; and the ensemble's uncertainty flags its errors on planted data."""

import json
import os
import subprocess

import numpy as np
import pytest
from conftest import PREDICT_CONFIG, PREDICT_FLAGS, ROOT
from helpers.commands import main_command
from test_analysis_report import check_report_renders


@pytest.fixture(scope="module")
def explained(predict_workdir):
  flags = (
    "--mode=predict",
    "--config.predict.name=explained",
    "--config.predict.explain=True",
    "--config.predict.explain_examples=6",
    "--config.explain.num_pictures=4",
    "--config.explain.methods=('saliency',)",
  )
  cmd = main_command(predict_workdir, *PREDICT_FLAGS, *flags, config=PREDICT_CONFIG)
  env = dict(os.environ, PYTHONPATH=ROOT)
  res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return predict_workdir / "predict" / "explained"


def test_new_inputs_are_explained_across_the_predicted_classes(explained):
  out = explained / "explanations"
  summary = json.loads((out / "results.json").read_text())
  arrays = np.load(explained / "predictions.npz")
  prob = arrays["l3/prob"]  # multilabel: the labels at >= 0.5, else the most probable one
  keys = [tuple(np.flatnonzero(p >= 0.5)) or (int(p.argmax()),) for p in prob]
  picked = summary["examples"]
  assert len(picked) == 6 == len(set(picked)) and summary["ensemble_size"] == 3
  # Round robin over the predicted label sets: as many distinct ones as there can be.
  assert len({keys[i] for i in picked}) == min(6, len(set(keys)))
  maps = np.load(out / "maps_saliency.npz")
  want = [(n, t) for n, i in enumerate(picked) for t in keys[i]]
  assert maps["pairs"].tolist() == [list(p) for p in want]
  assert maps["ensemble"].shape == (len(want), 32, 32) and maps["members"].shape[0] == 3
  # Trust metrics that need no mask, on by default; no localisation table without masks.
  r = summary["methods"]["saliency"]
  assert {"deletion", "insertion", "random_logit", "sparseness"} <= set(r["trust"]["compare"])
  shares = r["share_by_class"]
  names = list(np.load(out / "maps_saliency.npz")["target_names"])
  assert set(shares) == set(names)
  for row in shares.values():
    assert row["aerial"] + row["s1"] + row["s2"] == pytest.approx(1.0, abs=1e-4)
    bands = sum(v for k, v in row.items() if k.startswith("s2/"))
    assert bands == pytest.approx(row["s2"], abs=1e-4) and "aerial/IR" in row
  page = (out / "index.html").read_text()
  assert "An ensemble of 3 models" in page and "Localisation" not in page
  assert "At a glance" in page and "Trust metrics" in page and "per class" in page
  glances = sorted(out.glob("glance_saliency_*.png"))
  assert len(glances) == 4 and all(f"src='{g.name}'" in page for g in glances)
  assert page.count("<figcaption>Predicted ") == 4
  shown = check_report_renders(str(out / "index.html"))  # in Chromium where one is installed
  assert {g.name for g in glances} <= set(shown)
  assert (explained / "predictions.csv").exists() and not (explained / "parts").exists()


def test_pick_across_takes_each_class_in_turn():
  from mtljax.explain.setup import pick_across

  keys = ["a"] * 7 + ["b", "c"]
  assert pick_across(keys, 3).tolist() == [0, 7, 8]
  assert pick_across(keys, 5).tolist() == [0, 7, 8, 1, 2]
  assert pick_across(keys, 2, order=np.arange(9)[::-1]).tolist() == [6, 8]
  # Several keys per item (present labels): in each of their queues, taken once; [] never.
  several = [["a", "b"], ["a"], ["a"], [], ["c"]]
  assert pick_across(several, 5).tolist() == [0, 4, 1, 2]


def test_the_glance_picture_stretches_the_map():
  from mtljax.explain.render import glance

  m = np.zeros((20, 20), np.float32)
  m[2:4, 2:4] = 1.0
  m[10:, :] = 0.05  # a weak half: washed out when scaled by the peak, visible once stretched
  s = glance.stretch(m, percentile=95)
  assert s.max() == 1.0 and s[15, 5] > 0.5 and s[5, 15] == 0.0
  grey = np.full((20, 20, 3), 0.5, np.float32)
  over = glance.glance_overlay(grey, s).astype(int)
  assert (over[5, 15] == 128).all() and np.abs(over[15, 5] - 128).max() > 40


def test_the_members_disagree_where_the_ensemble_errs_on_planted_data():
  """Planted: two overlapping Gaussian classes; logistic members on bootstrap draws of the
  train set (eight members, 30 examples: they differ near the boundary). The test inputs the ensemble gets wrong have a higher predictive entropy and mutual
  information (uncertainty.split_entropy) than those it gets right."""
  from sklearn.metrics import roc_auc_score

  from mtljax.predict import uncertainty

  rng = np.random.default_rng(0)

  def draw(n):
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 2)) + np.where(y[:, None] == 1, 1.0, -1.0) * [1.0, 0.3]
    return x, y

  x, y = draw(30)
  xt, yt = draw(2000)
  members = []
  for _ in range(8):
    b = rng.integers(0, len(x), len(x))
    w, c = rng.normal(size=2) * 0.1, 0.0
    for _ in range(300):  # plain logistic regression by gradient descent
      p = 1 / (1 + np.exp(-(x[b] @ w + c)))
      w, c = w - 0.5 * x[b].T @ (p - y[b]) / len(b), c - 0.5 * np.mean(p - y[b])
    p1 = 1 / (1 + np.exp(-(xt @ w + c)))
    members.append(np.stack([1 - p1, p1], -1))
  got = uncertainty.split_entropy(np.asarray(members))
  wrong = np.asarray(got["prob"]).argmax(-1) != yt
  assert 0.05 < wrong.mean() < 0.4
  assert roc_auc_score(wrong, np.asarray(got["entropy"])) > 0.6
  assert roc_auc_score(wrong, np.asarray(got["mutual_information"])) > 0.6
