"""Plug-ins from outside mtljax: a user's own package, written here into a temporary folder and
never registered in mtljax, is named in the config as `package.module:ATTRIBUTE` — a dataset
entry without a synthetic generator (real data only), an encoder, a task kind, an objective
term, an attribution method — and a run trains on it end to end. A reference that does not load
is one config problem naming it."""

import json
import os
import textwrap

import ml_collections
import numpy as np
import pytest

from mtljax import config_blocks as blocks
from mtljax import configlib, tasks, train
from mtljax.attribution import methods
from mtljax.errors import ConfigError

_PACKAGE = '''
"""A user's package: planted data (label = x[0] + x[1] > 0, npz files per split, no generator)."""
import dataclasses
import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mtljax import tasks
from mtljax.attribution import methods
from mtljax.data import Dataset
from mtljax.data.source import example_index


class ToySource:
  def __init__(self, root, split):
    with np.load(os.path.join(root, f"{split}.npz")) as z:
      self._x, self._y = z["x"], z["y"]
    self.split, self.names = split, [f"{split}_{i}" for i in range(len(self._y))]

  input_fields = property(lambda self: {"x": {"kind": "vector", "shape": (4,), "dtype": "float32"}})
  target_fields = property(lambda self: {
      "label": {"kind": "myplug:PLAIN", "shape": (), "dtype": "int32", "num_classes": 2}})

  def label_arrays(self):
    return {"targets": {"label": self._y.copy()}, "mask": {"label": np.ones(len(self), np.float32)}}

  def __len__(self):
    return len(self._y)

  def __getitem__(self, index):
    i = example_index(index, len(self))
    return {"inputs": {"x": self._x[i]}, "targets": {"label": np.asarray(self._y[i], np.int32)},
            "mask": {"label": np.asarray(1.0, np.float32)}, "meta": {"index": np.asarray(i, np.int32)}}


DATASET = Dataset("toy_plug", ToySource, None, source_keys=(), synthetic_keys=())


class Wide(nn.Module):
  """An encoder: one wide Dense layer with tanh."""
  width: int = 32

  @nn.compact
  def __call__(self, x, *, train):
    return jnp.tanh(nn.Dense(self.width)(x))


# A task kind: classification under another name (its own registry entry).
PLAIN = dataclasses.replace(tasks.spec("classification"), name="plain")


def half_term(config):
  """An objective term: a constant 0.5 logged as `half`."""
  def term(ctx):
    return jnp.float32(0.5), {"half": jnp.float32(0.5)}
  return term


TIMES_INPUT = methods.METHODS["input_x_gradient"]
'''


def _write_data(root):
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  for split, n in (("train", 256), ("val", 64), ("test", 64)):
    x = rng.normal(size=(n, 4)).astype(np.float32)
    np.savez(os.path.join(root, f"{split}.npz"), x=x, y=(x[:, 0] + x[:, 1] > 0).astype(np.int32))
  return root


@pytest.fixture
def package(tmp_path, monkeypatch):
  pkg = tmp_path / "pkgs" / "myplug"
  pkg.mkdir(parents=True)
  (pkg / "__init__.py").write_text(textwrap.dedent(_PACKAGE))
  monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
  yield
  for registry in (tasks.KINDS, methods.METHODS):
    for name in [n for n in registry if n.startswith("myplug:")]:
      del registry[name]


def _config(root):
  c = blocks.base_config()
  c.data = blocks.data_config(
    "myplug:DATASET", augment={"flip": False, "rot90": False}, stats_examples=256, synthetic={}
  )
  c.data.root = root
  c.inputs = ml_collections.ConfigDict({"x": {"encoder": "myplug:Wide", "encoder_kwargs": {}}})
  c.model = ml_collections.ConfigDict({"fusion": "concat"})
  c.tasks = ml_collections.ConfigDict(
    {"label": {"kind": "myplug:PLAIN", "num_classes": 2, "weight": 1.0, "head": "linear"}}
  )
  c.main_task = "label"
  c.objective = ml_collections.ConfigDict({"terms": ("tasks", "myplug:half_term")})
  c.train = blocks.train_config(batch=32, epochs=4, lr=1e-2, log_every=4, checkpoint_every=1000)
  c.ensemble = blocks.ensemble_config()
  c.explain = blocks.explain_config(
    task="label", modality="x", layer="", methods=("myplug:TIMES_INPUT",)
  )
  c.eval = blocks.eval_config(batch_size=64, prediction_splits=("test",))
  return c


def test_a_users_package_plugs_in_without_editing_mtljax(package, tmp_path):
  root = _write_data(str(tmp_path / "data"))
  workdir = tmp_path / "run"
  results = train.train_and_evaluate(_config(root), str(workdir))
  assert results["test"]["label/accuracy"] > 0.8, results["test"]  # the planted rule learnt
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  halves = [r["loss_half"] for r in records if r["split"] == "train"]
  assert halves and all(h == pytest.approx(0.5) for h in halves)  # the plug-in term ran
  # Nothing synthetic was written: the dataset entry has no generator.
  assert not (workdir / "synthetic_data").exists()
  assert methods.METHODS["myplug:TIMES_INPUT"] is methods.METHODS["input_x_gradient"]


@pytest.mark.parametrize(
  "key, value, expected",
  [
    ("encoder", "myplug:Nope", "has no attribute 'Nope'"),
    ("encoder", "nosuchpkg.mod:Wide", "cannot import 'nosuchpkg.mod'"),
    ("kind", "myplug:half_term", "is a function, not a TaskKind"),
  ],
)
def test_a_reference_that_does_not_load_is_a_config_problem(
  package, tmp_path, key, value, expected
):
  c = _config(_write_data(str(tmp_path / "data")))
  if key == "encoder":
    c.inputs.x.encoder = value
  else:
    c.tasks.label.kind = value
  with pytest.raises(ConfigError, match=expected):
    configlib.check(c)
