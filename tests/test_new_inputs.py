"""A table of new inputs for a registered dataset without a reading hook (mtljax/data/new_inputs.py):
files holding the input as the model takes it (`rasters.read`), vector inputs as number columns,
the table's problems named by line and column. The TreeSAT table end to end: tests/test_deploy.py."""

import numpy as np
import pytest

from mtljax.data import get_dataset, new_inputs
from mtljax.data.source import DataError

# Fields as a digits model records them (data_fields.json), plus a vector and a time series.
FIELDS = {
  "image": {"kind": "image", "shape": [12, 12, 1], "dtype": "float32", "channels": ["L"]},
  "weather": {"kind": "tabular", "shape": [3], "dtype": "float32", "channels": ["t", "u", "v"]},
  "series": {"kind": "time_series", "shape": [5, 2], "dtype": "float32"},
  "age": {"kind": "tabular", "shape": [1], "dtype": "float32", "channels": ["age"]},
}


def _write(tmp_path, rows, header="name,image,t,u,v,series,age,site"):
  (tmp_path / "new.csv").write_text("\n".join([header, *rows]) + "\n")
  return tmp_path / "new.csv"


@pytest.fixture()
def files(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "in").mkdir()
  arrays = {}
  for k in range(3):
    arrays[k] = rng.uniform(0, 16, (12, 12)).astype(np.float32), rng.normal(size=(5, 2))
    np.save(tmp_path / "in" / f"d{k}.npy", arrays[k][0])  # [H, W]: a one-band image
    np.save(tmp_path / "in" / f"s{k}.npy", arrays[k][1].astype(np.float32))
  return tmp_path, arrays


def test_files_and_numbers_read_as_the_model_takes_them(files):
  tmp_path, arrays = files
  rows = [f"a{k},in/d{k}.npy,{k},1.5,,in/s{k}.npy,{k + 3},here" for k in range(3)]
  dataset = get_dataset("digits")
  assert dataset.read_input is None  # (no hook: the fallback)
  from configs import digits

  table = new_inputs.open_table(
    digits.get_config("tiny"), dataset, _write(tmp_path, rows), FIELDS, sorted(FIELDS)
  )
  assert len(table) == 3 and table.names == ["a0", "a1", "a2"]
  assert table.columns["weather"] == ["t", "u", "v"] and table.columns["age"] == ["age"]
  ex = table[2]
  assert ex["targets"] == {} and ex["mask"] == {} and int(ex["meta"]["index"]) == 2
  np.testing.assert_array_equal(ex["inputs"]["image"], arrays[2][0][..., None])
  np.testing.assert_allclose(ex["inputs"]["series"], arrays[2][1], rtol=1e-6)
  np.testing.assert_array_equal(ex["inputs"]["weather"], [2.0, 1.5, np.nan])  # empty: NaN
  assert ex["inputs"]["age"].tolist() == [5.0] and ex["inputs"]["image"].dtype == np.float32
  # The table's own columns, in order (the source's `name` is its own column).
  own = table.table.own_columns()
  assert list(own) == ["image", "t", "u", "v", "series", "age", "site"]
  assert own["site"] == ["here"] * 3


def test_numbered_columns_and_problems_by_line_and_column(files):
  tmp_path, _ = files
  header = "id,image,weather_0,weather_1,weather_2"
  fields = {k: FIELDS[k] for k in ("image", "weather")}
  table = new_inputs.InputTable(
    _write(tmp_path, ["x,in/d0.npy,1,2,3", "y,in/s1.npy,4,5,6"], header), fields, sorted(fields)
  )
  assert table.columns["weather"] == ["weather_0", "weather_1", "weather_2"]
  assert table[0]["inputs"]["weather"].tolist() == [1.0, 2.0, 3.0]
  # A later row's file that does not fit fails when it is read, naming the line and column.
  with pytest.raises(DataError, match=r"new.csv: line 3, column 'image': in/s1.npy: shape"):
    table[1]
  bad = [
    (["x,in/d0.npy,1,2"], "no column 'weather_2' for the model's input 'weather'"),
    (["x,in/nope.npy,1,2,3"], r"line 2, column 'image': in/nope.npy: no such file"),
    (["x,in/d0.npy,1,two,3"], r"line 2, column 'weather_1': expected a number, got 'two'"),
    (["x,in/s0.npy,1,2,3"], r"line 2, column 'image': in/s0.npy: shape \(5, 2, 1\)"),
    ([], "the manifest has no rows"),
  ]
  for rows, match in bad:
    h = header if rows != bad[0][0] else "id,image,weather_0,weather_1"
    with pytest.raises(DataError, match=match):
      new_inputs.InputTable(_write(tmp_path, rows, h), fields, sorted(fields))
  with pytest.raises(DataError, match=r"the model reads \['image', 'weather'\]"):
    new_inputs.InputTable(_write(tmp_path, ["x,1,2,3"], "id,t,u,v"), fields, sorted(fields))
