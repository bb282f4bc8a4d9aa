"""CropYield: the on-disk format's reader and its errors, the grouped/stratified split, the
time-series pipeline, the date-encoded Transformer and the per-crop metrics."""

import csv
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from mtljax.data import pipeline
from mtljax.data.cropyield import reader as cy
from mtljax.data.cropyield.synthetic import write_synthetic_cropyield
from mtljax.data.source import DataError
from mtljax.models.encoders import ENCODERS, TimeSeriesTransformer, date_encoding


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return write_synthetic_cropyield(
    tmp_path_factory.mktemp("cy") / "root",
    num_fields=15,
    years=(2020, 2021, 2022),
    num_farms=4,
    min_side=4,
    max_side=6,
  )


def _copy(root, tmp_path):
  dst = tmp_path / "copy"
  shutil.copytree(root, dst)
  return dst


def _rewrite_csv(path, edit):
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  edit(rows)
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


# ------------------------------------------------------------------------------------ reader
def test_reader_returns_the_files_pixels_padded_with_dates(root):
  src = cy.CropYieldSource(
    root, "train", s2_max_steps=48, weather_max_steps=200, day_reference="seeding"
  )
  assert len(src) > 0 and len(src.names) == len(src) == len(src.groups)
  i = len(src) // 2
  ex = src[i]
  f, p = int(src.field_index[i]), int(src.pixel[i])
  row = src.fields[f]
  folder = root / "fields" / row["field_id"]
  s2 = np.load(folder / "s2.npy")
  dates = np.load(folder / "s2_dates.npy")
  t = len(dates)
  series = ex["inputs"]["s2"]
  assert series["values"].shape == (48, 25) and series["values"].dtype == np.float32
  np.testing.assert_array_equal(series["values"][:t], s2[p])
  assert not series["values"][t:].any()
  np.testing.assert_array_equal(series["mask"], (np.arange(48) < t).astype(np.int32))
  np.testing.assert_array_equal(series["days"][:t], (dates - row["seeding"]).astype(int))
  w = ex["inputs"]["weather"]
  wd = np.load(folder / "weather_dates.npy")
  assert w["values"].shape == (200, 4) and w["mask"].sum() == len(wd)
  np.testing.assert_array_equal(ex["inputs"]["dem"], np.load(folder / "dem.npy")[p])
  assert ex["targets"]["yield"] == np.load(folder / "yield.npy")[p]
  assert ex["targets"]["crop"] == cy.CROPS.index(row["crop"])
  np.testing.assert_array_equal(ex["inputs"]["crop"], np.eye(3)[cy.CROPS.index(row["crop"])])
  assert src.groups[i] == row["field_id"] and int(ex["meta"]["year"]) == row["year"]
  xy = np.load(folder / "xy.npy")[p]
  assert src.names[i] == f"{row['field_id']}/{xy[0]}_{xy[1]}"
  # Days to harvest (the paper's positional reference) count down to 0 at harvest.
  h = cy.CropYieldSource(root, "train", day_reference="harvest")[i]["inputs"]["s2"]
  np.testing.assert_array_equal(h["days"][:t], (row["harvest"] - dates).astype(int))
  # Pixels without a yield value are not examples.
  assert np.isfinite(src.label_arrays()["targets"]["yield"]).all()


def test_reader_errors_name_the_file_and_field(root, tmp_path):
  with pytest.raises(DataError, match="fields.csv: not found"):
    cy.CropYieldSource(tmp_path, "train")

  bad = _copy(root, tmp_path)
  _rewrite_csv(bad / "fields.csv", lambda rows: rows[0].update(crop="barley"))
  with pytest.raises(DataError, match=r"field 'F0000'.*unknown crop 'barley'"):
    cy.CropYieldSource(bad, "train")
  shutil.rmtree(bad)

  # A wrong feature count, found whichever split holds the field.
  bad = _copy(root, tmp_path)
  fid = "F0001"
  s2 = np.load(bad / "fields" / fid / "s2.npy")
  np.save(bad / "fields" / fid / "s2.npy", s2[..., :24])
  with pytest.raises(
    DataError, match=rf"{fid}/s2.npy \(field '{fid}'\).*expected \[P=\d+, T, 25\]"
  ):
    for split in cy.SPLITS:
      cy.CropYieldSource(bad, split)
  (bad / "fields" / fid / "dem.npy").unlink()
  with pytest.raises(DataError, match=rf"{fid}/dem.npy: missing"):
    for split in cy.SPLITS:
      cy.CropYieldSource(bad, split)
  shutil.rmtree(bad)

  # A series longer than the padded length names the config key to raise.
  with pytest.raises(DataError, match="config.data.s2_max_steps=5"):
    cy.CropYieldSource(root, "train", s2_max_steps=5)


# ------------------------------------------------------------------------------------ split
def test_split_is_grouped_by_field_and_stratified_by_year(root):
  srcs = {s: cy.CropYieldSource(root, s) for s in cy.SPLITS}
  ids = {s: {r["field_id"] for r in src.fields} for s, src in srcs.items()}
  assert (
    not ids["train"] & ids["val"]
    and not ids["train"] & ids["test"]
    and not ids["val"] & ids["test"]
  )
  assert len(ids["train"] | ids["val"] | ids["test"]) == 15
  for s, src in srcs.items():  # every split holds every year
    assert {r["year"] for r in src.fields} == {2020, 2021, 2022}, s
    assert set(np.unique(src.groups)) == ids[s]  # examples carry their field

  years = np.repeat(np.arange(2017, 2024), 20)
  a = cy.split_fields(years, (0.6, 0.2, 0.2), seed=3)
  for y in np.unique(years):
    np.testing.assert_array_equal(np.bincount(a[years == y], minlength=3), [12, 4, 4])
  assert not np.array_equal(a, cy.split_fields(years, seed=4))  # the seed matters
  np.testing.assert_array_equal(a, cy.split_fields(years, seed=3))  # deterministic


# ------------------------------------------------------------------------------------ pipeline
def test_time_series_statistics_cover_real_steps_and_padding_stays_zero(root):
  src = cy.CropYieldSource(root, "train", s2_max_steps=48)
  stats = pipeline.compute_stats(src, ("s2", "dem"), progress=False)
  real = np.concatenate(
    [src[i]["inputs"]["s2"]["values"][src[i]["inputs"]["s2"]["mask"] > 0] for i in range(len(src))]
  )
  np.testing.assert_allclose(stats["s2"]["mean"], real.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    stats["s2"]["std"], np.maximum(real.std(0), 1e-6), rtol=1e-4, atol=1e-6
  )
  batch = next(
    pipeline.eval_batches(
      src, input_names=("s2", "dem"), task_names=("yield", "crop"), stats=stats, batch_size=8
    )
  )
  s2 = batch["inputs"]["s2"]
  assert s2["values"].shape == (8, 48, 25) and s2["days"].dtype == np.int32
  assert s2["mask"].dtype == np.int32
  assert not s2["values"][s2["mask"] == 0].any()
  ex = src[0]["inputs"]["s2"]
  t = ex["mask"].sum()
  np.testing.assert_allclose(
    s2["values"][0, :t],
    (ex["values"][:t] - stats["s2"]["mean"]) / np.asarray(stats["s2"]["std"]),
    rtol=1e-5,
    atol=1e-5,
  )


# ------------------------------------------------------------------------------------ model
def _series(b=3, t=12, f=25, lengths=(5, 12, 1), seed=0):
  rng = np.random.default_rng(seed)
  mask = (np.arange(t)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  days = np.sort(rng.integers(0, 180, (b, t)), axis=1).astype(np.int32)
  return {
    "values": jnp.asarray(rng.normal(size=(b, t, f)), jnp.float32),
    "days": jnp.asarray(days),
    "mask": jnp.asarray(mask),
  }


def test_transformer_shapes_and_padding_does_not_change_the_output():
  assert ENCODERS["transformer"] is TimeSeriesTransformer
  model = TimeSeriesTransformer(d_model=16, num_layers=2, mlp_dim=32, dropout=0.0)
  x = _series()
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  y = apply(variables, x)
  assert y.shape == (3, 16) and np.isfinite(np.asarray(y)).all()
  # Perturb the padded steps (values and dates): identical output.
  pad = np.asarray(x["mask"]) == 0
  x2 = {
    "values": jnp.where(
      pad[..., None], 1e3 * jax.random.normal(jax.random.key(1), x["values"].shape), x["values"]
    ),
    "days": jnp.where(pad, 999, x["days"]),
    "mask": x["mask"],
  }
  np.testing.assert_array_equal(np.asarray(apply(variables, x2)), np.asarray(y))
  # Longer padding (a different max length) gives the same output too.
  x3 = {k: jnp.pad(v, [(0, 0), (0, 4)] + [(0, 0)] * (v.ndim - 2)) for k, v in x.items()}
  np.testing.assert_allclose(np.asarray(apply(variables, x3)), np.asarray(y), atol=1e-5)
  # A real step does change it.
  x4 = dict(x, values=x["values"].at[0, 0].add(1.0))
  assert not np.allclose(np.asarray(apply(variables, x4))[0], np.asarray(y)[0])


def test_date_encoding_differs_for_different_dates():
  enc = np.asarray(date_encoding(jnp.asarray([[0, 5, 6, 100]]), 16))
  assert enc.shape == (1, 4, 16)
  for a in range(4):
    for b in range(a + 1, 4):
      assert np.abs(enc[0, a] - enc[0, b]).max() > 1e-3
  np.testing.assert_allclose(enc[0, 0], [0.0] * 8 + [1.0] * 8, atol=1e-7)  # sin 0, cos 0
  # The same values observed on other dates give another encoding.
  model = TimeSeriesTransformer(d_model=16, num_layers=1, mlp_dim=16, dropout=0.0)
  x = _series(lengths=(12, 12, 12))
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  shifted = dict(x, days=x["days"] + 30)
  assert (
    np.abs(np.asarray(apply(variables, x)) - np.asarray(apply(variables, shifted))).max() > 1e-3
  )


# ------------------------------------------------------------------------------------ metrics
def test_per_crop_and_vector_regression_metrics_match_sklearn():
  import ml_collections

  from mtljax import metrics as metrics_lib
  from mtljax import train

  rng = np.random.default_rng(0)
  n = 60
  crop = rng.integers(0, 3, n)
  y = rng.normal(5, 2, n)
  pred = y + rng.normal(0, 1, n)
  mask = (rng.random(n) > 0.1).astype(np.float32)

  class Src:
    groups = np.asarray([f"F{i % 7}" for i in range(n)])

    def prediction_meta(self):
      return {"crop": crop}

    def metric_strata(self):
      return {"": np.asarray(cy.CROPS)[crop]}

  config = ml_collections.ConfigDict({"tasks": {"yield": {"kind": "regression"}}})
  order = rng.permutation(n)
  out = {
    "index": order,
    "target/yield": y[order],
    "pred/yield": pred[order],
    "mask/yield": mask[order],
  }
  metrics = {}
  train._source_context(config, Src(), out, metrics)
  np.testing.assert_array_equal(out["group"], Src.groups[order])
  np.testing.assert_array_equal(out["meta/crop"], crop[order])
  for k, name in enumerate(cy.CROPS):
    sel = (crop == k) & (mask > 0)
    np.testing.assert_allclose(
      metrics[f"yield/r2_{name}"], skm.r2_score(y[sel], pred[sel]), rtol=1e-10
    )
    np.testing.assert_allclose(
      metrics[f"yield/mae_{name}"], skm.mean_absolute_error(y[sel], pred[sel])
    )
  # A vector target [N, 5] with a per-example mask.
  yv, pv = rng.normal(size=(n, 5)), rng.normal(size=(n, 5))
  m = metrics_lib.regression_metrics(yv, pv, mask)
  keep = mask > 0
  np.testing.assert_allclose(m["mae"], skm.mean_absolute_error(yv[keep], pv[keep]))
  assert m["count"] == keep.sum() * 5
