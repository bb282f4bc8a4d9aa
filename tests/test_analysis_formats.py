"""--mode=analyze on hand-written predictions in the shared contract's BEN-GE format (dense
segmentation and dense regression maps, a several-output regression with a per-example mask) and
CropYield format (regression main task, a crop class, field `group`s and `meta/` keys), with the
numbers checked against scipy. No training."""

import csv
import html.parser
import json
import os

import numpy as np
import pytest
from scipy import stats as sps

from configs import benge as benge_config
from configs import cropyield as cropyield_config
from mtljax.analysis import report
from mtljax.analysis import stats as st


def _csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _referenced_files_exist(index):
  """Every image and link of the page exists beside it; returns the image names."""
  refs, imgs = [], []

  class P(html.parser.HTMLParser):
    def handle_starttag(self, tag, attrs):
      a = dict(attrs)
      if tag == "img":
        imgs.append(a["src"])
      ref = a.get("src") or a.get("href")
      if ref:
        refs.append(ref)

  P().feed(open(index).read())
  missing = [r for r in refs if not os.path.isfile(os.path.join(os.path.dirname(index), r))]
  assert not missing, missing
  return imgs


def _workdir(wd, data, main, tasks, epochs):
  os.makedirs(wd / "predictions" / "test")
  (wd / "config.json").write_text(
    json.dumps({"data": {"name": data}, "main_task": main, "tasks": tasks})
  )
  (wd / "final_metrics.json").write_text(json.dumps({"best_epoch": epochs[-1]}))
  return wd


def _onehot(idx, k, p=0.6):
  prob = np.full((len(idx), k), (1 - p) / (k - 1), np.float32)
  prob[np.arange(len(idx)), idx] = p
  return prob


def test_benge_format_pixelwise_correlation_maps_and_multi_output_regression(tmp_path):
  tasks = {
    "lulc": {"kind": "segmentation", "num_classes": 5},
    "elevation": {"kind": "dense_regression"},
    "climate_zone": {"kind": "classification", "num_classes": 4},
    "season": {"kind": "regression"},
    "weather": {"kind": "regression", "num_outputs": 3},
  }
  wd = _workdir(tmp_path / "benge", "benge", "lulc", tasks, (1, 2))
  rng = np.random.default_rng(5)
  n, h = 10, 6
  lulc = rng.integers(0, 5, (n, h, h)).astype(np.int32)
  lulc_mask = (rng.random((n, h, h)) > 0.2).astype(np.float32)
  dem = rng.normal(500, 50, (n, h, h)).astype(np.float32)
  weather = rng.normal(10, 3, (n, 3)).astype(np.float32)
  weather_mask = np.ones(n, np.float32)
  weather_mask[3] = 0  # one example without weather data
  for epoch in (1, 2):
    wrong = rng.random((n, h, h)) < 0.5 / epoch
    a = {
      "index": np.arange(n, dtype=np.int32),
      "name": np.array([f"S2_{i}" for i in range(n)]),
      "epoch": np.int32(epoch),
      "target/lulc": lulc,
      "mask/lulc": lulc_mask,
      "pred/lulc": np.where(wrong, (lulc + 1) % 5, lulc).astype(np.int32),
      "target/elevation": dem,
      "mask/elevation": np.ones((n, h, h), np.float32),
      "pred/elevation": (dem + 20 * wrong + rng.normal(0, 5, dem.shape)).astype(np.float32),
      "target/climate_zone": (np.arange(n) % 4).astype(np.int32),
      "mask/climate_zone": np.ones(n, np.float32),
      "prob/climate_zone": _onehot(rng.integers(0, 4, n), 4),
      "target/season": rng.random(n).astype(np.float32),
      "mask/season": np.ones(n, np.float32),
      "pred/season": rng.random(n).astype(np.float32),
      "target/weather": weather,
      "mask/weather": weather_mask,
      "pred/weather": (weather + rng.normal(0, 2, weather.shape)).astype(np.float32),
    }
    a["pred/climate_zone"] = a["prob/climate_zone"].argmax(-1).astype(np.int32)
    np.savez(wd / "predictions" / "test" / f"epoch_{epoch:03d}.npz", **a)

  report.analyze_workdir(benge_config.get_config("tiny"), str(wd))
  out = wd / "report"
  rows = {(r["epoch"], r["aux"]): r for r in _csv(out / "error_correlation.csv")}
  z = np.load(wd / "predictions" / "test" / "epoch_002.npz")
  m = z["mask/lulc"] > 0
  e_lulc = (z["pred/lulc"] != z["target/lulc"]).astype(float)
  e_dem = np.abs(z["pred/elevation"].astype(float) - z["target/elevation"])
  # Two dense tasks: pixel-wise, over the labelled LULC pixels.
  r = rows[("2", "elevation")]
  assert r["unit"] == "pixel" and int(r["n"]) == int(m.sum())
  ref = sps.pearsonr(e_lulc[m], e_dem[m])
  assert float(r["r"]) == pytest.approx(ref.statistic, rel=1e-5)
  assert float(r["p"]) == pytest.approx(ref.pvalue, rel=1e-4)
  # Weather [N, 3] with a per-example mask: the mean absolute error over its outputs, correlated
  # with each example's mean LULC error; the masked example is left out.
  per_lulc = np.array([e_lulc[i][m[i]].mean() for i in range(n)])
  e_w = np.abs(z["pred/weather"].astype(float) - z["target/weather"]).mean(-1)
  keep = z["mask/weather"] > 0
  r = rows[("2", "weather")]
  assert r["unit"] == "example" and int(r["n"]) == n - 1
  assert float(r["r"]) == pytest.approx(sps.pearsonr(per_lulc[keep], e_w[keep]).statistic, rel=1e-5)
  err, valid = st.task_error("regression", z, "weather")
  assert err.shape == (n,) and valid.tolist() == keep.tolist()
  imgs = _referenced_files_exist(str(out / "index.html"))
  assert {"error_maps.png", "error_correlation.png", "main_error_by_aux_climate_zone.png"} <= set(
    imgs
  )


def test_cropyield_format_yield_error_by_crop_and_per_field(tmp_path):
  tasks = {"yield": {"kind": "regression"}, "crop": {"kind": "classification", "num_classes": 3}}
  wd = _workdir(tmp_path / "cy", "cropyield", "yield", tasks, (1, 2, 3))
  rng = np.random.default_rng(7)
  n = 40
  field = np.array([f"F{i // 8:04d}" for i in range(n)])  # 5 fields of 8 pixels
  crop = (np.arange(n) // 8 % 3).astype(np.int32)
  yld = rng.uniform(2.0, 8.0, n).astype(np.float32)
  for epoch in (1, 2, 3):
    crop_ok = rng.random(n) < 0.4 + 0.2 * epoch
    pred_crop = np.where(crop_ok, crop, (crop + 1) % 3)
    # Wrongly classified crops come with larger yield errors.
    pred_yield = yld * (1 + np.where(crop_ok, 0.1, 0.4) * rng.standard_normal(n))
    a = {
      "index": np.arange(n, dtype=np.int32),
      "name": np.array([f"{f}/{i}" for i, f in enumerate(field)]),
      "epoch": np.int32(epoch),
      "target/yield": yld,
      "mask/yield": np.ones(n, np.float32),
      "pred/yield": pred_yield.astype(np.float32),
      "target/crop": crop,
      "mask/crop": np.ones(n, np.float32),
      "prob/crop": _onehot(pred_crop, 3),
      "pred/crop": pred_crop.astype(np.int32),
      "group": field,
      "meta/year": np.full(n, 2020, np.int32),
      "meta/crop": crop,
    }
    np.savez(wd / "predictions" / "test" / f"epoch_{epoch:03d}.npz", **a)

  summary = report.analyze_workdir(cropyield_config.get_config("tiny"), str(wd))
  out = wd / "report"
  assert summary["pair"] is None and summary["shown_epochs"] == [1, 2, 3]
  z = np.load(wd / "predictions" / "test" / "epoch_002.npz")
  rel = np.abs(z["pred/yield"].astype(float) - z["target/yield"]) / np.abs(z["target/yield"])
  ok = z["pred/crop"] == z["target/crop"]
  row = [r for r in _csv(out / "main_error_by_aux.csv") if r["epoch"] == "2"][0]
  assert (
    row["aux"] == "crop"
    and int(row["correct_n"]) == ok.sum()
    and int(row["wrong_n"]) == (~ok).sum()
  )
  assert float(row["correct_mean"]) == pytest.approx(rel[ok].mean(), rel=1e-5)
  assert float(row["wrong_mean"]) == pytest.approx(rel[~ok].mean(), rel=1e-5)
  assert float(row["t_pvalue"]) == pytest.approx(
    sps.ttest_ind(rel[ok], rel[~ok], equal_var=False).pvalue, rel=1e-4
  )
  assert float(row["u_pvalue"]) == pytest.approx(
    sps.mannwhitneyu(rel[ok], rel[~ok], alternative="two-sided").pvalue, rel=1e-4
  )
  # Per field: mean relative yield error and crop accuracy, labelled by the first meta key.
  groups = [r for r in _csv(out / "group_scatter.csv") if r["epoch"] == "2"]
  assert [g["group"] for g in groups] == [f"F{i:04d}" for i in range(5)]
  g3 = groups[3]
  sel = z["group"] == "F0003"
  assert int(g3["n"]) == 8 and g3["category"] == "crop=0"
  assert float(g3["main_error"]) == pytest.approx(rel[sel].mean(), rel=1e-5)
  assert float(g3["aux_accuracy"]) == pytest.approx(ok[sel].mean(), rel=1e-6)
  imgs = _referenced_files_exist(str(out / "index.html"))
  assert {"group_scatter_crop.png", "main_error_by_aux_crop.png", "error_correlation.png"} <= set(
    imgs
  )
