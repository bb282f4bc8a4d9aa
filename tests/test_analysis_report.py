"""--mode=analyze: the report from hand-written prediction files (planted counts, scipy-checked
statistics), dense tasks and groups, an ensemble, clear errors on bad input, one end-to-end tiny
TreeSAT run, and the HTML page rendered in headless Chromium (or validated where none is installed)."""

import csv
import html.parser
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from helpers.commands import main_command
from PIL import Image
from scipy import stats as sps

from configs import treesat as treesat_config
from mtljax.analysis import AnalysisError, report
from mtljax.data.treesat.archive import label_hierarchy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C2P = label_hierarchy("l3", "l2")
# Every example's true genus is Abies (0, parent spruce_fir 0); Picea (8) is its sibling, Acer (1)
# lies in another stand type (C2P[1]). (l3 prediction, l2 prediction) for each planted label:
_PLANT = {
  "CC": (0, 0),
  "CF-in": (8, 0),
  "CF-out": (1, 0),
  "FC": (0, C2P[1]),
  "FF-in": (1, C2P[1]),
  "FF-out": (8, C2P[1]),
}
_AGE_ERR = {"CC": 1.0, "CF": 2.0, "FC": 3.0, "FF": 4.0}
_EPOCHS = {  # planted label counts per epoch
  1: {"CC": 4, "CF-in": 3, "CF-out": 1, "FC": 3, "FF-in": 5, "FF-out": 2},
  2: {"CC": 9, "CF-in": 2, "CF-out": 1, "FC": 3, "FF-in": 2, "FF-out": 1},
  3: {"CC": 13, "CF-in": 2, "CF-out": 0, "FC": 2, "FF-in": 1, "FF-out": 0},
}
N = 18


def _onehot(idx, k, p=0.7):
  prob = np.full((len(idx), k), (1 - p) / (k - 1), np.float32)
  prob[np.arange(len(idx)), idx] = p
  return prob


def _tiny_config(**analysis):
  c = treesat_config.get_config("tiny")
  for k, v in analysis.items():
    setattr(c.analysis, k, v)
  return c


def _write_treesat_workdir(wd, members=0):
  """Predictions whose L2-L3 combinations, hierarchy labels and age errors are planted."""
  os.makedirs(wd / "predictions" / "test")
  tasks = {
    "l3": {"kind": "classification", "num_classes": 15},
    "l2": {"kind": "classification", "num_classes": 9},
    "age": {"kind": "regression"},
  }
  (wd / "config.json").write_text(
    json.dumps({"data": {"name": "treesat"}, "main_task": "l3", "tasks": tasks})
  )
  (wd / "final_metrics.json").write_text(
    json.dumps({"best_epoch": 3, "test": {"l3/f1_micro": 0.8}})
  )
  perm = np.random.default_rng(0).permutation(N)  # files are not sorted by index
  for epoch, plan in _EPOCHS.items():
    labels = [k for k, n in plan.items() for _ in range(n)]
    p3 = np.array([_PLANT[k][0] for k in labels])
    p2 = np.array([_PLANT[k][1] for k in labels])
    prob3 = _onehot(p3, 15, 0.5 + 0.1 * epoch)
    a = {
      "index": np.arange(N),
      "name": np.array([f"x{i}.tif" for i in range(N)]),
      "target/l3": np.zeros(N, np.int32),
      "mask/l3": np.ones(N, np.float32),
      "prob/l3": prob3,
      "pred/l3": p3.astype(np.int32),
      "target/l2": np.zeros(N, np.int32),
      "mask/l2": np.ones(N, np.float32),
      "prob/l2": _onehot(p2, 9),
      "pred/l2": p2.astype(np.int32),
      "target/age": np.full(N, 10.0, np.float32),
      "mask/age": np.ones(N, np.float32),
      "pred/age": np.array([10 + _AGE_ERR[k[:2]] for k in labels], np.float32),
    }
    if members:
      a["member_prob/l3"] = np.stack([prob3] + [_onehot(np.zeros(N, int), 15)] * (members - 1), 1)
      a["member_prob/l2"] = np.stack([a["prob/l2"]] * members, 1)
      a["member_pred/age"] = np.stack([a["pred/age"]] * members, 1)
    np.savez(
      wd / "predictions" / "test" / f"epoch_{epoch:03d}.npz",
      epoch=np.int32(epoch),
      **{k: (v[perm] if np.ndim(v) else v) for k, v in a.items()},
    )
  return wd


class _Refs(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.imgs, self.links = [], []

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    if tag == "img":
      self.imgs.append(a.get("src"))
    elif tag == "a" and a.get("href"):
      self.links.append(a["href"])


def _browser():
  return next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
  )


def _images_loaded_in_browser(index, browser):
  """(images on the page, images loaded with naturalWidth > 0) as headless Chromium sees them."""
  page = os.path.join(os.path.dirname(index), "_render_check.html")
  text = (
    open(index)
    .read()
    .replace(
      "</body>",
      (
        "<script>window.addEventListener('load', () => {const r = [...document.images].map("
        "i => i.complete && i.naturalWidth > 0); document.body.setAttribute('data-imgs', "
        "r.length + ':' + r.filter(x => x).length);});</script></body>"
      ),
    )
  )
  with open(page, "w") as f:
    f.write(text)
  try:
    with tempfile.TemporaryDirectory() as profile:
      res = subprocess.run(
        [
          browser,
          "--headless",
          "--disable-gpu",
          "--no-sandbox",
          f"--user-data-dir={profile}",
          "--virtual-time-budget=10000",
          "--dump-dom",
          "file://" + page,
        ],
        capture_output=True,
        text=True,
        timeout=120,
      )
  finally:
    os.remove(page)
  marker = res.stdout.split('data-imgs="', 1)
  assert len(marker) == 2, f"{browser} printed no result: {res.stdout[-500:]} {res.stderr[-1500:]}"
  total, loaded = marker[1].split('"', 1)[0].split(":")
  return int(total), int(loaded)


def check_report_renders(index):
  """The page parses, references only files that exist (PNGs decodable) and, where a Chromium is
  installed, shows every figure (each <img> loaded with naturalWidth > 0)."""
  folder = os.path.dirname(index)
  parser = _Refs()
  parser.feed(open(index).read())
  parser.close()
  assert parser.imgs, "the report shows no figure"
  for ref in parser.imgs + parser.links:
    path = os.path.join(folder, ref)
    assert os.path.isfile(path), f"{index} references the missing file {ref}"
  for ref in parser.imgs:
    with Image.open(os.path.join(folder, ref)) as im:
      im.verify()
  browser = _browser()
  if browser:
    assert _images_loaded_in_browser(index, browser) == (len(parser.imgs), len(parser.imgs))
  return parser.imgs


def _csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_planted_counts_hierarchy_age_correlation_and_page(tmp_path):
  wd = _write_treesat_workdir(tmp_path / "run")
  summary = report.analyze_workdir(_tiny_config(), str(wd))
  out = wd / "report"
  assert summary["pair"] == ["l2", "l3"] and summary["hierarchy"].startswith("l3 ⊂ l2")
  assert summary["shown_epochs"] == [1, 2, 3]

  combos = _csv(out / "combinations.csv")
  hier = _csv(out / "hierarchy.csv")
  for row, hrow, (epoch, plan) in zip(combos, hier, _EPOCHS.items()):
    assert int(row["epoch"]) == epoch
    for c in ("CC", "CF", "FC", "FF"):
      assert int(row[c]) == sum(n for k, n in plan.items() if k.startswith(c)), (epoch, c)
    assert int(hrow["CC-in"]) == plan["CC"] and int(hrow["FC-out"]) == plan["FC"]
    for c in ("CF", "FF"):
      for s in ("in", "out"):
        assert int(hrow[f"{c}-{s}"]) == plan[f"{c}-{s}"], (epoch, c, s)
    n_cf = plan["CF-in"] + plan["CF-out"]
    assert float(hrow["CF-in_fraction"]) == pytest.approx(plan["CF-in"] / n_cf, rel=1e-5)
    assert float(hrow["CF-in_chance"]) == pytest.approx(1 / 14, rel=1e-5)  # Abies: 1 sibling
  # Of the 7 examples FF at epoch 1, planted in order: epoch 3 has them at positions 11..17.
  trans = _csv(out / "ff_transitions.csv")
  assert trans[0]["FF"] == "1" and int(trans[0]["n_ff_first"]) == 7
  assert [float(trans[-1][c]) for c in ("CC", "CF", "FC", "FF")] == pytest.approx(
    [2 / 7, 2 / 7, 2 / 7, 1 / 7], rel=1e-5
  )

  reg = _csv(out / "regression_by_combination.csv")
  for row in reg:
    for c, e in _AGE_ERR.items():
      if int(row[f"n_{c}"]):
        assert float(row[c]) == pytest.approx(e)

  # Pearson r of the errors equals scipy's on the saved arrays.
  z = np.load(wd / "predictions" / "test" / "epoch_002.npz")
  e3 = 1 - z["prob/l3"][np.arange(N), z["target/l3"]]
  e2 = 1 - z["prob/l2"][np.arange(N), z["target/l2"]]
  ea = np.abs(z["pred/age"] - z["target/age"])
  corr = {(int(r["epoch"]), r["aux"]): r for r in _csv(out / "error_correlation.csv")}
  for aux, e in (("l2", e2), ("age", ea)):
    ref = sps.pearsonr(e3, e)
    assert float(corr[(2, aux)]["r"]) == pytest.approx(ref.statistic, rel=1e-5)
    assert float(corr[(2, aux)]["p"]) == pytest.approx(ref.pvalue, rel=1e-4)
  split = [r for r in _csv(out / "main_error_by_aux.csv") if r["epoch"] == "2"][0]
  ok2 = z["pred/l2"] == z["target/l2"]
  assert float(split["correct_mean"]) == pytest.approx(e3[ok2].mean(), rel=1e-5)
  assert float(split["wrong_mean"]) == pytest.approx(e3[~ok2].mean(), rel=1e-5)

  imgs = check_report_renders(str(out / "index.html"))
  assert {
    "combinations.png",
    "hierarchy.png",
    "ff_transitions.png",
    "error_correlation.png",
    "regression_by_combination.png",
    "main_error_by_aux_l2.png",
  } <= set(imgs)
  page = (out / "index.html").read_text()
  assert "no &#x27;group&#x27; array" in page  # Fig. 8 skipped with a note


def test_render_check_fails_on_a_missing_figure(tmp_path):
  wd = _write_treesat_workdir(tmp_path / "run")
  report.analyze_workdir(_tiny_config(), str(wd))
  os.remove(wd / "report" / "hierarchy.png")
  with pytest.raises(AssertionError, match="missing file hierarchy.png"):
    check_report_renders(str(wd / "report" / "index.html"))
  browser = _browser()
  if browser:  # Chromium reports the image that did not load
    total, loaded = _images_loaded_in_browser(str(wd / "report" / "index.html"), browser)
    assert loaded == total - 1


def test_ensemble_workdir_counts_members(tmp_path):
  wd = _write_treesat_workdir(tmp_path / "ens", members=3)
  report.analyze_workdir(_tiny_config(), str(wd))
  rows = _csv(wd / "report" / "combinations_members.csv")
  assert len(rows) == 3 * 3
  m0 = [r for r in rows if r["member"] == "0"]
  assert [int(r["CC"]) for r in m0] == [
    int(r["CC"]) for r in _csv(wd / "report" / "combinations.csv")
  ]
  # Members 1, 2 predict Abies everywhere: L3 always correct, so only CC and FC occur.
  m1 = [r for r in rows if r["member"] == "1"]
  assert all(int(r["CF"]) == int(r["FF"]) == 0 for r in m1)
  check_report_renders(str(wd / "report" / "index.html"))


def _write_dense_workdir(wd, epochs=(1, 2)):
  """A Benge-like run: LULC segmentation (main), DEM dense regression, a climate class, groups."""
  os.makedirs(wd / "predictions" / "test")
  tasks = {
    "lulc": {"kind": "segmentation", "num_classes": 4},
    "dem": {"kind": "dense_regression"},
    "climate": {"kind": "classification", "num_classes": 3},
  }
  (wd / "config.json").write_text(
    json.dumps({"data": {"name": "benge"}, "main_task": "lulc", "tasks": tasks})
  )
  rng = np.random.default_rng(3)
  n, h = 12, 8
  tgt = rng.integers(0, 4, (n, h, h))
  dem = rng.normal(100, 10, (n, h, h))
  mask = (rng.random((n, h, h)) > 0.1).astype(np.float32)
  for epoch in epochs:
    wrong = rng.random((n, h, h)) < 0.4 / epoch
    a = {
      "index": np.arange(n),
      "name": np.array([f"p{i}" for i in range(n)]),
      "target/lulc": tgt,
      "mask/lulc": mask,
      "pred/lulc": np.where(wrong, (tgt + 1) % 4, tgt).astype(np.int32),
      "target/dem": dem.astype(np.float32),
      "mask/dem": np.ones((n, h, h), np.float32),
      "pred/dem": (dem + wrong * 5 + rng.normal(0, 1, dem.shape)).astype(np.float32),
      "target/climate": np.arange(n) % 3,
      "mask/climate": np.ones(n, np.float32),
      "prob/climate": _onehot(np.arange(n) % 3 if epoch > 1 else np.zeros(n, int), 3),
      "group": np.arange(n) // 3,
      "meta/crop": np.array(["a", "b"] * (n // 2)),
    }
    a["pred/climate"] = a["prob/climate"].argmax(-1)
    np.savez(wd / "predictions" / "test" / f"epoch_{epoch:03d}.npz", **a)
  return wd


def test_dense_tasks_pixelwise_correlation_maps_and_groups(tmp_path):
  wd = _write_dense_workdir(tmp_path / "benge")
  summary = report.analyze_workdir(_tiny_config(), str(wd))
  out = wd / "report"
  assert summary["pair"] is None and any("classification tasks" in n for n in summary["notes"])
  z = np.load(wd / "predictions" / "test" / "epoch_001.npz")
  el = (z["pred/lulc"] != z["target/lulc"]).astype(float)
  ed = np.abs(z["pred/dem"].astype(float) - z["target/dem"])
  m = z["mask/lulc"] > 0
  ref = sps.pearsonr(el[m], ed[m])
  row = [r for r in _csv(out / "error_correlation.csv") if r["epoch"] == "1" and r["aux"] == "dem"][
    0
  ]
  assert row["unit"] == "pixel" and int(row["n"]) == int(m.sum())
  assert float(row["r"]) == pytest.approx(ref.statistic, rel=1e-5) and float(row["r"]) > 0.5
  # LULC error vs the per-example climate error: LULC averaged over each example's pixels.
  per = np.array([el[i][m[i]].mean() for i in range(len(el))])
  ecl = 1 - z["prob/climate"][np.arange(12), z["target/climate"]]
  row = [
    r for r in _csv(out / "error_correlation.csv") if r["epoch"] == "1" and r["aux"] == "climate"
  ][0]
  assert float(row["r"]) == pytest.approx(sps.pearsonr(per, ecl).statistic, rel=1e-5)
  imgs = check_report_renders(str(out / "index.html"))
  assert {"error_maps.png", "group_scatter_climate.png", "main_error_by_aux_climate.png"} <= set(
    imgs
  )
  with Image.open(out / "error_maps.png") as im:
    assert im.size[0] > 600 and im.size[1] > 600  # 4 rows × (2 tasks × 3 panels)


def test_bad_input_names_what_is_missing(tmp_path):
  empty = tmp_path / "empty"
  os.makedirs(empty)
  (empty / "config.json").write_text(
    json.dumps(
      {"data": {"name": "treesat"}, "main_task": "l3", "tasks": {"l3": {"kind": "classification"}}}
    )
  )
  with pytest.raises(AnalysisError, match=r"predictions/test: no per-epoch predictions"):
    report.analyze_workdir(_tiny_config(), str(empty))
  wd = _write_treesat_workdir(tmp_path / "run")
  with pytest.raises(AnalysisError, match="'age' is a regression task"):
    report.analyze_workdir(_tiny_config(pair=("l3", "age")), str(wd))
  with pytest.raises(AnalysisError, match="'l1' is not a task of this run"):
    report.analyze_workdir(_tiny_config(pair=("l1", "l3")), str(wd))
  with pytest.raises(AnalysisError, match=r"no predictions for epochs \[7\]"):
    report.analyze_workdir(_tiny_config(epochs=(1, 7)), str(wd))
  with pytest.raises(AnalysisError, match="holds the splits \\['test'\\]"):
    report.analyze_workdir(_tiny_config(split="val"), str(wd))
  dense = _write_dense_workdir(tmp_path / "benge", epochs=(1,))
  with pytest.raises(AnalysisError, match="needs a pair of classification tasks"):
    report.analyze_workdir(_tiny_config(hierarchy="on"), str(dense))
  cfg = json.loads((wd / "config.json").read_text())
  (wd / "config.json").write_text(json.dumps({**cfg, "data": {"name": "cub"}}))
  with pytest.raises(AnalysisError, match="'cub' defines no label hierarchy between 'l2' and 'l3'"):
    report.analyze_workdir(_tiny_config(hierarchy="on"), str(wd))
  report.analyze_workdir(_tiny_config(), str(wd))  # "auto": skipped with a note
  assert "defines no label hierarchy" in (wd / "report" / "index.html").read_text()


def test_tiny_treesat_run_then_analyze_command(tiny_treesat_root, tmp_path):
  from mtljax import train

  c = treesat_config.get_config("tiny")
  c.data.root = tiny_treesat_root
  c.train.num_epochs, c.train.checkpoint_every_steps = 2, 1000
  train.train_and_evaluate(c, str(tmp_path))
  cmd = main_command(tmp_path, "--mode=analyze")
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stdout + res.stderr
  assert "report/index.html" in res.stdout
  combos = _csv(tmp_path / "report" / "combinations.csv")
  assert [r["epoch"] for r in combos] == ["1", "2"]
  z = np.load(tmp_path / "predictions" / "test" / "epoch_002.npz")
  ok2, ok3 = z["pred/l2"] == z["target/l2"], z["pred/l3"] == z["target/l3"]
  assert int(combos[1]["CC"]) == int((ok2 & ok3).sum())
  assert int(combos[1]["FF"]) == int((~ok2 & ~ok3).sum())
  check_report_renders(str(tmp_path / "report" / "index.html"))
  bad = subprocess.run(
    cmd + ["--config.analysis.pair=('l2', 'age')"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert bad.returncode == 2 and "'age' is a regression task" in bad.stderr, bad.stderr[-2000:]


def test_treesat_label_hierarchy_reads_the_readers_maps():
  from mtljax.data.treesat import archive as ts

  l3_l2 = label_hierarchy("l3", "l2")
  assert [ts.STAND_TYPES[p] for p in l3_l2] == [ts.GENUS_TO_L2[g] for g in ts.GENERA]
  l2_l1 = label_hierarchy("l2", "l1")
  np.testing.assert_array_equal(l2_l1[l3_l2], label_hierarchy("l3", "l1"))
  assert label_hierarchy("l2", "l3") is None and label_hierarchy("l3", "species") is None
