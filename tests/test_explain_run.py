"""`--mode=explain` end to end on the planted attribute dataset: a tiny ensemble trained by the
project's own command, then explained; the report, maps and pictures are read back and
checked against an independent computation, and bad requests fail with one clear error."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from mtljax.explain import render, setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/attributes.py:tiny,size=3"


def _main(workdir, *args, config=CONFIG, timeout=600):
  cmd = [sys.executable, "-m", "mtljax.main", config, f"--workdir={workdir}", *args]
  if "--mode=explain" in args and not any(a.startswith("--config.explain.metrics") for a in args):
    cmd.append("--config.explain.metrics=()")  # the trust metrics are tested in test_trust_run.py
  return subprocess.run(
    cmd,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(os.environ, PYTHONUNBUFFERED="1"),
  )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  work = tmp_path_factory.mktemp("attr") / "run"
  res = _main(work)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return work


@pytest.mark.slow
def test_explain_writes_scored_maps_and_pictures(trained):
  res = _main(trained, "--mode=explain", "--config.explain.methods=('saliency','grad_cam')")
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  out = trained / "explanations" / "test"
  summary = json.loads((out / "results.json").read_text())
  assert summary["ensemble_size"] == 3
  assert "members_mean/class/f1_micro" in summary["classification"]
  for name in ("saliency", "grad_cam"):
    compare = summary["methods"][name]["compare"]
    assert {"iou", "intersection", "union", "pearson", "com_distance"} <= set(compare)
    maps = np.load(out / f"maps_{name}.npz")
    ens = maps["ensemble"]
    assert ens.ndim == 3 and ens.shape[0] == len(maps["pairs"])
    assert ens.min() >= 0 and np.isclose(ens.max(), 1.0)  # unsigned maps normalised to [0, 1]
    # The report's Ens-Avg recomputed from the saved per-pair values, and its p-value with
    # scipy's paired t-test.
    from scipy import stats

    ind, en = maps["member_iou"], maps["ensemble_iou"]
    keep = np.isfinite(en) & np.isfinite(ind).all(0)
    assert compare["iou"]["n"] == keep.sum() > 10
    np.testing.assert_allclose(compare["iou"]["ens_avg"], en[keep].mean(), rtol=1e-6)
    np.testing.assert_allclose(
      compare["iou"]["p"], stats.ttest_rel(en[keep], ind[:, keep].mean(0)).pvalue, rtol=1e-6
    )
    # The ensemble's centre-of-mass distance recomputed from its saved maps (first pairs).
    curve = summary["methods"][name]["size_curve"]["iou"]
    assert curve["k"] == [1, 2, 3]
    assert (out / f"size_curve_{name}_iou.png").exists()
    arrows = sorted(out.glob(f"arrows_{name}_*.png"))
    assert arrows and render.png_to_array(arrows[0]).shape[-1] == 3
    assert sorted(out.glob(f"members_{name}_*.png"))
  assert (out / "table.md").read_text().startswith("| method | metric | Ind-Avg | Ens-Avg")
  assert list((trained / "tensorboard").glob("explain_test/events.out.tfevents.*"))


@pytest.mark.slow
def test_the_model_looks_at_the_planted_regions(trained):
  """Grad-CAM of the trained ensemble points nearer the planted attributes than a guess: its
  centre of mass is closer to the keypoints than the image centre is (independent recomputation
  of the distance from the saved maps and keypoints)."""
  res = _main(
    trained,
    "--mode=explain",
    "--config.explain.methods=('grad_cam',)",
    "--config.explain.num_pictures=1",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  maps = np.load(trained / "explanations" / "test" / "maps_grad_cam.npz")
  ens, kp = maps["ensemble"], maps["keypoints"]
  h, w = ens.shape[1:]
  yy, xx = np.mgrid[:h, :w]
  mass = ens.sum((1, 2))
  com = np.stack([(ens * yy).sum((1, 2)) / mass, (ens * xx).sum((1, 2)) / mass], 1)
  scale = np.array([h, w])
  dist = np.linalg.norm((com - kp) / scale, axis=1)
  np.testing.assert_allclose(dist, maps["ensemble_com_distance"], rtol=1e-4, atol=1e-6)
  guess = np.linalg.norm((np.array([(h - 1) / 2, (w - 1) / 2]) - kp) / scale, axis=1)
  ok = np.isfinite(dist) & np.isfinite(guess)
  assert ok.sum() > 10
  assert dist[ok].mean() < 0.8 * guess[ok].mean(), (dist[ok].mean(), guess[ok].mean())


@pytest.mark.slow
def test_every_member_strategy_gives_the_same_maps(trained):
  """`config.explain.strategy`: all members in one vmapped program, a Python loop, or `lax.map`
  compute the same maps (to float rounding); "auto" is one of them."""
  maps = {}
  for strategy in ("vmap", "loop", "map"):
    res = _main(
      trained,
      "--mode=explain",
      "--config.explain.methods=('grad_cam',)",
      f"--config.explain.strategy={strategy}",
      "--config.explain.num_pictures=2",
      "--config.explain.max_examples=8",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    saved = np.load(trained / "explanations" / "test" / "maps_grad_cam.npz")
    maps[strategy] = (saved["members"], saved["ensemble"])
  assert maps["vmap"][0].shape[:2] == (3, 2)  # [E, num_pictures, H, W]
  for strategy in ("loop", "map"):
    for got, want in zip(maps[strategy], maps["vmap"]):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
  "args, expected",
  [
    (
      ("--config.explain.methods=('saliency','deeplift')",),
      "unknown attribution method 'deeplift'",
    ),
    (
      ("--config.explain.methods=('grad_cam',)", "--config.explain.layer=encoders_image/nope"),
      "encoders_image/stage2_block1",
    ),
    (("--config.explain.target=99",), "config.explain.target=99 is outside"),
    (("--config.explain.strategy=pmap",), "config.explain.strategy='pmap' is not one of"),
    (
      ("--config.explain.tasks=('class','colour')",),
      "config.explain.tasks: 'colour' is not one of the tasks ['attributes', 'class']",
    ),
  ],
)
def test_bad_explain_requests_are_clear(trained, args, expected):
  res = _main(trained, "--mode=explain", *args)
  assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
  assert expected in res.stderr, res.stderr[-2000:]


def test_a_checkpoint_without_the_ensemble_is_refused(trained):
  res = _main(trained, "--mode=explain", config="--config=configs/attributes.py:tiny,size=1")
  assert res.returncode == 2
  assert "ensemble.size" in res.stderr, res.stderr[-2000:]


@pytest.mark.slow
def test_treesat_ensemble_explains_every_modality(tmp_path):
  """TreeSAT (aerial + S1 + S2): the aerial maps are drawn, each modality's share of the
  attribution mass is reported, and S1/S2 get their own ensemble maps."""
  config = "--config=configs/treesat.py:tiny,size=2"
  res = _main(tmp_path, config=config)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  res = _main(
    tmp_path,
    "--mode=explain",
    "--config.explain.methods=('saliency','grad_cam','integrated_gradients')",
    "--config.explain.max_examples=8",
    "--config.explain.ig_steps=8",
    config=config,
  )
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  out = tmp_path / "explanations" / "test"
  summary = json.loads((out / "results.json").read_text())
  for method in ("saliency", "integrated_gradients"):  # IG: S1/S2 split after their first Dense
    share = summary["methods"][method]["modality_share"]
    assert set(share) == {"aerial", "s1", "s2"} and abs(sum(share.values()) - 1) < 1e-4, share
    assert min(share.values()) > 0, (method, share)
  maps = np.load(out / "maps_saliency.npz")
  n = len(maps["pairs"])
  assert maps["ensemble"].shape == (n, 32, 32)  # the tiny aerial side
  assert maps["modality_s2"].shape == (n, 6, 6) and maps["modality_s1"].shape == (n, 6, 6)
  assert np.isclose(maps["modality_s2"].max(axis=(1, 2)), 1.0).all()
  assert (out / "modality_s2_saliency.png").exists()
  assert "modality_share" not in summary["methods"]["grad_cam"]  # a layer method: aerial only
  assert np.isnan(maps["ensemble_iou"]).all()  # TreeSatAI has no masks to score against
  # The synthetic split is ordered by genus: the 8 examples are picked across the genera, and
  # every file names each row's example in the split.
  from configs import treesat
  from mtljax.data import build

  source = build.make_sources(treesat.get_config("tiny,size=2"), str(tmp_path))[0]["test"]
  genus = source.label_arrays()["targets"]["l3"]
  picked = np.asarray(summary["examples"])
  assert len(picked) == 8 and len(set(genus[picked])) == min(8, len(set(genus)))
  assert len(set(genus[:8])) < len(set(genus[picked]))  # what the first 8 would have shown
  np.testing.assert_array_equal(maps["index"], picked[maps["pairs"][:, 0]])
  names = source.target_fields["l3"]["class_names"]
  assert [names[g] for g in genus[maps["index"]]] == maps["target_names"].tolist()


class _Labels:
  """A split known by its labels only (what `explained_examples` reads)."""

  def __init__(self, targets, mask):
    self.targets, self.mask = np.asarray(targets), np.asarray(mask, np.float32)

  def __len__(self):
    return len(self.targets)

  def label_arrays(self):
    return {"targets": {"t": self.targets}, "mask": {"t": self.mask}}


def _explain_config(kind, target=-1):
  return ml_collections.ConfigDict(
    {"tasks": {"t": {"kind": kind}}, "explain": {"task": "t", "tasks": (), "target": target}}
  )


def test_explained_examples_are_spread_over_the_classes():
  """A split ordered by class (the first 20 of class 0): max_examples examples cover as many
  classes as there are, in turn, each class's first examples (split order) first; unlabelled
  examples are left out; the same picks on every call (no seed)."""
  classes = np.repeat([0, 1, 2, 3], [20, 6, 3, 1])
  mask = np.ones(30)
  mask[20] = 0  # the first of class 1 has no label
  src = _Labels(classes, mask)
  got = setup.explained_examples(_explain_config("classification"), src, 8)
  assert got.tolist() == [0, 21, 26, 29, 1, 22, 27, 2]
  assert len(set(classes[got])) == 4 and 20 not in got.tolist()
  assert setup.explained_examples(_explain_config("classification"), src, 3).tolist() == [0, 21, 26]
  # The old pick (the first 8) saw one class.
  assert len(set(classes[:8])) == 1


def test_explained_multilabel_examples_cover_every_present_label():
  """Multilabel: an example waits in the queue of each of its present labels and is taken once;
  an example without a present label has nothing to explain unless a target is fixed."""
  labels = np.zeros((12, 3), np.float32)
  labels[:8, 0] = 1  # eight of label 0 first
  labels[8:10, 1] = 1
  labels[9, 2] = 1  # labels 1 and 2
  # 10, 11: no label present
  src = _Labels(labels, np.ones((12, 3)))
  got = setup.explained_examples(_explain_config("multilabel"), src, 4).tolist()
  assert got == [0, 8, 9, 1]
  covered = set(np.flatnonzero(labels[got].max(0)))
  assert covered == {0, 1, 2}
  fixed = setup.explained_examples(_explain_config("multilabel", target=0), src, 12).tolist()
  assert sorted(fixed) == list(range(12))


def test_explained_regression_examples_span_the_target_quantiles():
  value = np.linspace(0, 1, 40) ** 2  # sorted: the first examples are the smallest values
  got = setup.explained_examples(_explain_config("regression"), _Labels(value, np.ones(40)), 4)
  assert sorted(got.tolist()) == [0, 10, 20, 30]  # the first of each quarter, in split order
  dense = setup.explained_examples(_explain_config("segmentation"), _Labels(value, np.ones(40)), 4)
  assert dense.tolist() == [0, 1, 2, 3]  # per-pixel labels: the first examples
