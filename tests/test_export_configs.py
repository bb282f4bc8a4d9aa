"""`--mode=export` of every config in configs/: each tiny variant trains a few steps, exports, and
its artifact, loaded in a fresh process that never imports mtljax (jax + numpy, via the copied
load.py), gives on raw inputs what `--mode=predict` wrote for the same examples, to float
tolerance. The variants cover what an export must carry: an ensemble of three image modalities
with a regression head (TreeSAT), U-Nets with a categorical embedding (the climate zone) and a
segmentation output (BEN-GE row 3), a Sentinel-2 time series with its days through a Transformer
(CropYield), an ensemble with a multilabel head (attributes), the MTC-LIM model (façades), a plain
MLP (digits), a dense-regression target of a manifest, and a TFDS builder (skipped without the
extra). Train, export and predict run in this process (the runners the entry point calls);
only the artifact's load runs apart."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import PREDICT_CONFIG, predict_sized
from helpers import manifest_tables

from mtljax import train
from mtljax.data import build
from mtljax.predict import export, run

# Loads the artifact with jax and numpy only and runs it on the raw inputs; refuses if anything
# imported mtljax on the way.
_FRESH = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import load
with np.load(sys.argv[2]) as f:
  raw = load._nest({k: f[k] for k in f.files})
out = load.Model(sys.argv[1])(raw)
assert not any(m == "mtljax" or m.startswith("mtljax.") for m in sys.modules), "mtljax imported"
np.savez(sys.argv[3], **out)
"""

#: Examples of the predicted split compared (the artifact runs them as one batch).
_FEW = 4

# (config module, variant, overrides): one epoch of a few steps on little data. TreeSAT is the
# trained ensemble of 3 that the predict and export tests share (conftest.predict_workdir).
CASES = {
  "treesat": ("treesat", PREDICT_CONFIG.split(":")[1], {}),
  "benge": ("benge", "tiny,exp=3", {"data.synthetic.num_patches": 24}),
  "cropyield": ("cropyield", "tiny", {"data.synthetic.num_fields": 12}),
  "attributes": (
    "attributes",
    "tiny,size=2",
    {"data.synthetic.num_train": 24, "data.synthetic.num_val": 8, "data.synthetic.num_test": 8},
  ),
  "facades": ("facades", "tiny", {"data.synthetic.num_images": 120}),
  "digits": ("digits", "tiny", {"data.synthetic.num_train": 48, "data.synthetic.num_val": 16}),
  "manifest": ("manifest", "inputs=s2,targets=genus+s1,tiny", {}),
  "tfds": ("tfds", "inputs=image+s1,targets=label+height,tiny", {}),
}


def _config(case: str, base):
  import importlib

  module, variant, overrides = CASES[case]
  c = importlib.import_module(f"configs.{module}").get_config(variant)
  for key, value in overrides.items():
    *path, last = key.split(".")
    node = c
    for p in path:
      node = node[p]
    node[last] = value
  if module == "treesat":  # as conftest.PREDICT_FLAGS trained it
    return predict_sized(c)
  c.train.num_epochs, c.train.batch_size, c.eval.batch_size = 1, 8, 8
  c.eval.prediction_splits = ()
  if module == "manifest":
    c.data.manifest = str(manifest_tables.write_sensors(base / "table", n=40))
  if module == "tfds":
    pytest.importorskip(
      "tensorflow_datasets", reason="tensorflow-datasets is not installed (pip install '.[tfds]')"
    )
    from test_tfds import NAME, MtljaxTinyEo

    data_dir = base / "tfds"
    MtljaxTinyEo(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    c.data.tfds.name, c.data.tfds.data_dir = NAME, str(data_dir)
  return c


def _raw(source, names, n: int) -> dict:
  """The first `n` examples' inputs as the reader gives them (not standardised), flattened as
  load.py's command line reads them (`<name>/<part>` for a time series)."""
  out = {}
  for m in names:
    first = source[0]["inputs"][m]
    parts = first.keys() if isinstance(first, dict) else [None]
    for p in parts:
      rows = [source[i]["inputs"][m] for i in range(n)]
      out[m if p is None else f"{m}/{p}"] = np.stack([r if p is None else r[p] for r in rows])
  return out


@pytest.mark.parametrize("case", list(CASES))
def test_every_config_exports_and_matches_predict(case, tmp_path, request):
  c = _config(case, tmp_path)
  c.predict.name = "export-configs"
  if case == "treesat":
    work = str(request.getfixturevalue("predict_workdir"))
  else:
    work = str(tmp_path / "run")
    # jax's default partitionable threefry makes XLA:CPU compile the initialisation and the
    # train step several times more slowly (a tiny ResNet's init: 16 s against 2 s here); the
    # export does not depend on which random numbers initialised the weights it carries.
    with jax.threefry_partitionable(False):
      train.train_and_evaluate(c, work)
  folder = export.export_workdir(c, work)
  predicted = run.predict_workdir(c, work)
  with np.load(os.path.join(predicted, "predictions.npz")) as f:
    want = {k: f[k] for k in f.files}
  source = build.make_sources(c, work)[0][c.predict.split]
  n = min(_FEW, len(source))
  np.savez(tmp_path / "raw.npz", **_raw(source, sorted(c.inputs), n))
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  script = [
    sys.executable,
    "-c",
    _FRESH,
    folder,
    str(tmp_path / "raw.npz"),
    str(tmp_path / "o.npz"),
  ]
  res = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  with np.load(tmp_path / "o.npz") as f:
    got = {k: f[k] for k in f.files}
  compared = set()
  for k, v in got.items():
    task, _, key = k.rpartition("/")
    if k in want:
      np.testing.assert_allclose(v, want[k][:n], rtol=1e-4, atol=1e-5, err_msg=f"{case}: {k}")
      compared.add(k)
    elif key == "prob" and f"{task}/pred" in want:  # a dense task's class map (predict.run)
      top2 = np.sort(v, -1)[..., -2:]
      clear = top2[..., 1] - top2[..., 0] > 1e-4  # not a tie within float tolerance
      pred = want[f"{task}/pred"][:n]
      np.testing.assert_array_equal(v.argmax(-1)[clear], pred[clear], err_msg=f"{case}: {k}")
      compared.add(f"{task}/pred")
  # Every prediction predict mode wrote was compared (the artifact leaves none out).
  assert set(want) - {"index", "name"} == compared, (case, sorted(want), sorted(got))
