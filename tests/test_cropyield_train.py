"""CropYield end to end: the tiny config learns the planted yield and crop above chance, writes
predictions with field groups and yield maps, and the time-series explanation reports
per-step/per-feature importance; every Table 1 row builds a valid config."""

import csv
import glob
import json

import jax
import numpy as np
import pytest

from configs import cropyield as cy_config
from mtljax import configlib, train
from mtljax.data.cropyield import reader as cy
from mtljax.data.cropyield.synthetic import write_synthetic_cropyield
from mtljax.explain import timeseries


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  work = tmp_path_factory.mktemp("cy_run")
  config = cy_config.get_config("tiny")
  config.data.synthetic.dir = str(work / "data")
  results = train.train_and_evaluate(config, str(work / "run"))
  return config, work / "run", results


@pytest.mark.slow
def test_tiny_config_learns_yield_and_crop_and_writes_groups_and_maps(trained):
  config, work, results = trained
  test = results["test"]
  src = cy.CropYieldSource(config.data.synthetic.dir, "test")
  crops = src.label_arrays()["targets"]["crop"]
  majority = np.bincount(crops).max() / len(crops)
  assert test["yield/r2"] > 0.3, test
  assert test["crop/accuracy"] > majority + 0.1, (test, majority)
  present = [cy.CROPS[k] for k in np.unique(crops)]
  assert all(f"yield/r2_{c}" in test for c in present), sorted(test)
  # The per-epoch predictions carry each pixel's field (group), year and crop.
  files = sorted(glob.glob(str(work / "predictions" / "test" / "epoch_*.npz")))
  assert len(files) == config.train.num_epochs
  p = np.load(files[-1])
  assert p["group"].shape == p["index"].shape
  assert all(n.split("/")[0] == g for n, g in zip(p["name"], p["group"]))
  np.testing.assert_array_equal(p["meta/crop"], p["target/crop"])
  assert set(np.unique(p["meta/year"])) <= set(config.data.synthetic.years)
  # Yield maps of the best model's test predictions, as PNG and TensorBoard images.
  maps = glob.glob(str(work / "pictures" / "test" / "yield_map_*.png"))
  assert maps and len(maps) <= len(src.fields)
  events = b"".join(open(f, "rb").read() for f in glob.glob(str(work / "tensorboard" / "events.*")))
  assert b"test/yield_map/" in events  # the TensorBoard image tags


@pytest.mark.slow
def test_time_series_explanation_writes_importance(trained):
  config, work, _ = trained
  config = config.copy_and_resolve_references()
  config.explain.max_examples = 32
  config.explain.ig_steps = 8
  res = timeseries.explain_workdir(config, str(work))
  out = work / "explanations" / "test"
  saved = json.loads((out / "importance.json").read_text())
  assert saved["num_examples"] == res["num_examples"] == 32
  for name in ("saliency", "integrated_gradients"):
    s2 = saved["methods"][name]["modalities"]["s2"]
    assert list(s2["features"]) == list(cy.S2_FEATURES)
    assert np.isclose(sum(s2["features"].values()), 1.0)
    assert len(s2["time"]["bin_start"]) > 3 and all(v >= 0 for v in s2["time"]["importance"])
    with open(out / f"features_{name}.csv") as f:
      rows = list(csv.DictReader(f))
    assert len(rows) == 25 and np.isclose(sum(float(r["importance"]) for r in rows), 1.0, atol=1e-4)
    assert (out / f"time_{name}.csv").exists() and (out / f"importance_{name}.png").exists()
    assert 0 <= saved["methods"][name]["planted_s2_share"] <= 1


def test_series_importance_reduces_over_features_and_real_steps():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(2, 6, 3))
  mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
  per_step, per_feature = timeseries.series_importance(a, mask)
  np.testing.assert_allclose(per_step, np.abs(a).sum(-1) * mask)
  np.testing.assert_allclose(per_feature[0], np.abs(a[0, :3]).sum(0))
  np.testing.assert_allclose(per_feature[1], np.abs(a[1]).sum(0))
  days = np.array([[0, 4, 12, 99, 99, 99], [1, 2, 10, 11, 25, 29]])
  starts, imp, steps = timeseries.bin_by_day(per_step, days, mask, 10)
  np.testing.assert_array_equal(starts, [0, 10, 20])
  np.testing.assert_array_equal(steps, [4, 3, 2])
  np.testing.assert_allclose(
    imp[0], np.mean([per_step[0, 0], per_step[0, 1], per_step[1, 0], per_step[1, 1]])
  )


def test_every_table_row_builds_a_valid_config_and_model(tmp_path):
  root = write_synthetic_cropyield(
    tmp_path / "d", num_fields=6, num_farms=2, min_side=3, max_side=4
  )
  src = cy.CropYieldSource(root, "train")
  for exp in cy_config.EXPERIMENTS:
    c = cy_config.get_config(f"exp={exp},tiny")
    configlib.validate(c, src.input_fields, src.target_fields)
  # Row 10: DEM as a 5-feature regression target next to crop classification.
  from mtljax.data import pipeline
  from mtljax.models.multitask import build_model

  c = cy_config.get_config("exp=10,tiny")
  names = tuple(sorted(c.inputs))
  batch = next(
    pipeline.eval_batches(
      src, input_names=names, task_names=tuple(sorted(c.tasks)), stats=None, batch_size=4
    )
  )
  model = build_model(c)
  shapes = jax.eval_shape(
    lambda x: model.apply(model.init(jax.random.key(0), x, train=False), x, train=False),
    batch["inputs"],
  )
  out, inter = jax.tree.map(lambda a: a, shapes)
  assert out["yield"].shape == (4,) and out["crop"].shape == (4, 3) and out["dem"].shape == (4, 5)
  assert set(inter) == {"enc/s2", "enc/weather", "fused"}
  with pytest.raises(ValueError, match="exp=N"):
    cy_config.get_config("exp=11")
