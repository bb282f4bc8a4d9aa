"""A new dataset is one new package plus one registry line (docs/architecture.md).

The package below is written from scratch into a temporary folder, in the shape the source
contract asks for (mtljax/data/source.py): a reader, a synthetic generator writing its own on-disk
layout, and a `Dataset` entry. Registering it is the one line `DATASETS[name] = "pkg:DATASET"`;
nothing else in mtljax is edited, and the whole chain (synthetic data, statistics, pipeline,
model, objective, evaluation, prediction files) runs on it and learns the planted rule.
(A new task kind: tests/test_tasks.py; a new attribution method: tests/test_explain_dispatch.py;
a new loss term: tests/test_objective.py.)
"""

import json
import os
import textwrap

import ml_collections
import numpy as np

from mtljax import config_blocks as blocks
from mtljax import data as data_lib
from mtljax import train
from mtljax.data import source as source_lib

_PACKAGE = '''
"""Toy planted data: the label is whether x[0] + x[1] > 0 (an npz file per split)."""
import os
import numpy as np
from mtljax.data import Dataset
from mtljax.data.source import example_index


class ToySource:
  def __init__(self, root, split):
    with np.load(os.path.join(root, f"{split}.npz")) as z:
      self._x, self._y = z["x"], z["y"]
    self.split = split
    self.names = [f"{split}_{i}" for i in range(len(self._y))]

  input_fields = property(lambda self: {
      "x": {"kind": "tabular", "shape": (4,), "dtype": "float32"}})
  target_fields = property(lambda self: {
      "label": {"kind": "classification", "shape": (), "dtype": "int32", "num_classes": 2}})

  def label_arrays(self):
    return {"targets": {"label": self._y.copy()}, "mask": {"label": np.ones(len(self), np.float32)}}

  def __len__(self):
    return len(self._y)

  def __getitem__(self, index):
    i = example_index(index, len(self))
    return {"inputs": {"x": self._x[i]}, "targets": {"label": np.asarray(self._y[i], np.int32)},
            "mask": {"label": np.asarray(1.0, np.float32)}, "meta": {"index": np.asarray(i, np.int32)}}


def write_synthetic(root, num, seed):
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  for split, n in (("train", num), ("val", num // 4), ("test", num // 4)):
    x = rng.normal(size=(n, 4)).astype(np.float32)
    np.savez(os.path.join(root, f"{split}.npz"), x=x, y=(x[:, 0] + x[:, 1] > 0).astype(np.int32))
  return root


DATASET = Dataset(
    "toy_sum", ToySource, write_synthetic, source_keys=(), synthetic_keys=("num", "seed"))
'''


def _config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = blocks.data_config(
    "toy_sum", augment={"flip": False, "rot90": False}, stats_examples=256, synthetic={"num": 512}
  )
  c.inputs = ml_collections.ConfigDict(
    {"x": {"encoder": "mlp", "encoder_kwargs": blocks.mlp((16,))}}
  )
  c.model = ml_collections.ConfigDict({"fusion": "concat"})
  c.tasks = ml_collections.ConfigDict(
    {"label": {"kind": "classification", "num_classes": 2, "weight": 1.0, "head": "linear"}}
  )
  c.main_task = "label"
  c.train = blocks.train_config(batch=32, epochs=8, lr=1e-2, log_every=8, checkpoint_every=1000)
  c.ensemble = blocks.ensemble_config()
  c.eval = blocks.eval_config(batch_size=64, prediction_splits=("test",))
  return c


def test_a_new_dataset_is_one_package_and_one_registry_line(tmp_path, monkeypatch):
  pkg = tmp_path / "pkgs" / "toy_sum_data"
  pkg.mkdir(parents=True)
  (pkg / "__init__.py").write_text(textwrap.dedent(_PACKAGE))
  monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
  monkeypatch.setitem(data_lib.DATASETS, "toy_sum", "toy_sum_data:DATASET")  # the one line

  spec = data_lib.get_dataset("toy_sum")
  src = spec.source_cls(spec.write_synthetic(str(tmp_path / "d"), num=8, seed=0), "train")
  assert isinstance(src, source_lib.Source)  # the written contract holds
  assert source_lib.capability(src, "groups") is None  # optional capabilities simply absent

  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(_config(), workdir)
  # The planted rule is linear in x: chance is 0.5, a trained MLP is far above it.
  assert results["test"]["label/f1_micro"] > 0.8, results["test"]
  with np.load(os.path.join(workdir, "predictions", "test", "epoch_008.npz")) as z:
    assert z["prob/label"].shape == (128, 2) and z["pred/label"].shape == (128,)
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    assert json.load(f)["main_metric"] == "label/f1_micro"
