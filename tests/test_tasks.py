"""The task-kind registry (mtljax/tasks.py) is the one place that knows task kinds.

1. A scan of mtljax/ finds no code outside tasks.py that branches on kind names: no comparison
   with a kind-name literal (`kind == "segmentation"`, `kind in ("regression", ...)`), no group of
   kind names (a tuple/list/set of two or more), no dict keyed by kind names, no `case "..."`, no
   kind name passed as a positional argument (`task_error("regression", ...)`).
2. A toy kind registered in the test (ordinal regression: K ordered classes as K - 1 cumulative
   logits) gets its loss, metrics, head width, analysis error and explained targets from its
   declaration alone.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtljax import objective, tasks
from mtljax.analysis import predictions, sections
from mtljax.analysis import stats as st
from mtljax.attribution import targets
from mtljax.models.multitask import build_model, task_out_dim

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Files that may name kinds: the registry itself.
_REGISTRY = {"mtljax/tasks.py"}


def _kind_names(node: ast.AST, names) -> list[str]:
  """The kind-name string literals among `node` or the elements of a tuple/list/set `node`."""
  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
    return [node.value]
  if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
    return [n for e in node.elts for n in _kind_names(e, names) if isinstance(e, ast.Constant)]
  return []


def kind_name_uses(source: str, path: str, names=None) -> list[str]:
  """`path:line: what` for every place in `source` that branches on or groups kind names.

  Kind names are the registered ones (`tasks.KINDS`). A kind name as a *value* is fine: a dataset
  declares its target fields as `{"kind": "classification", ...}` and a config as
  `kind="regression"`; and a registry of something else may have one entry that happens to share
  a kind's name (the `"segmentation"` head in models/heads.py), so a dict is flagged from two
  kind-name keys on.
  """
  names = set(tasks.KINDS if names is None else names)
  found = []

  def flag(node, what):
    found.append(f"{path}:{node.lineno}: {what}")

  for node in ast.walk(ast.parse(source, filename=path)):
    if isinstance(node, ast.Compare):
      hits = [n for x in [node.left, *node.comparators] for n in _kind_names(x, names)]
      if hits:
        flag(node, f"compares with kind names {hits}")
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
      hits = _kind_names(node, names)
      if len(hits) >= 2:
        flag(node, f"groups kind names {hits}")
    elif isinstance(node, ast.Dict):
      hits = [n for k in node.keys if k is not None for n in _kind_names(k, names)]
      if len(hits) >= 2:
        flag(node, f"a dict keyed by kind names {hits}")
    elif isinstance(node, ast.MatchValue):
      hits = _kind_names(node.value, names)
      if hits:
        flag(node, f"matches kind names {hits}")
    elif isinstance(node, ast.Call):
      # `kind="regression"` declares a task's kind; any other argument naming one dispatches.
      args = [a for a in node.args if isinstance(a, ast.Constant)]
      args += [
        k.value for k in node.keywords if k.arg != "kind" and isinstance(k.value, ast.Constant)
      ]
      hits = [n for a in args for n in _kind_names(a, names)]
      if hits:
        flag(node, f"passes kind names {hits} (ask tasks.spec(kind)'s properties instead)")
      if isinstance(node.func, ast.Name) and node.func.id == "dict":
        kw = [k.arg for k in node.keywords if k.arg in names]
        if len(kw) >= 2:
          flag(node, f"a dict keyed by kind names {kw}")
  return sorted(set(found), key=lambda s: (s.split(":")[0], int(s.split(":")[1])))


def test_the_scan_catches_kind_branches():
  """The scan flags what it is for (in any file, e.g. metrics.py) and lets declarations be."""
  bad = {
    'if kind == "segmentation":\n  pass\n': "compares",
    'if task_cfg.kind != "classification":\n  pass\n': "compares",
    'ok = kind in ("regression", "dense_regression")\n': "compares",
    "ok = kind in ['multilabel']\n": "compares",
    'DENSE_KINDS = ("segmentation", "dense_regression")\n': "groups",
    'MAIN = {"classification": "f1_micro", "regression": "mae"}\n': "dict keyed",
    "MAIN = dict(classification=1, regression=2)\n": "dict keyed",
    'match kind:\n  case "multilabel":\n    pass\n': "matches",
    'err = st.task_error("regression", arrays, t)\n': "passes",
  }
  for src, what in bad.items():
    hits = kind_name_uses(src, "mtljax/metrics.py")
    assert hits and all(h.startswith("mtljax/metrics.py:") for h in hits), src
    assert any(what in h for h in hits), (src, hits)
  assert kind_name_uses('x = 1\nif kind == "segmentation":\n  y = 2\n', "m.py")[0].startswith(
    "m.py:2: compares"
  )
  fine = [
    'FIELD = {"kind": "classification", "shape": (), "num_classes": 3}\n',  # a declaration
    'cfg = dict(kind="regression", num_outputs=1)\n',
    'HEADS = {"linear": 1, "segmentation": 2}\n',  # one head shares a kind's name
    'if kind == "image":\n  pass\n',  # a data field's modality, not a task kind
    '"""Docs may say kind == "segmentation"."""\n',
    "if tasks.spec(kind).dense:\n  pass\n",
  ]
  for src in fine:
    assert kind_name_uses(src, "mtljax/data/x.py") == [], src


def test_no_kind_names_outside_the_registry():
  problems = []
  for path in sorted((ROOT / "mtljax").rglob("*.py")):
    rel = path.relative_to(ROOT).as_posix()
    if rel in _REGISTRY:
      continue
    problems += kind_name_uses(path.read_text(), rel)
  assert not problems, "kind names outside mtljax/tasks.py (ask the kind's properties):\n" + (
    "\n".join(problems)
  )


# ------------------------------------------------------------------------------ a toy kind
_TOY = "toy_ordinal"  # not a name another test relies on being unknown ("ordinal")


def _ordinal_loss(output, target, mask):
  """Mean over labelled examples of Σ_k BCE(sigmoid(output_k), [target > k]); output [B, K-1]."""
  above = (target[:, None] > jnp.arange(output.shape[-1])).astype(output.dtype)
  bce = -(above * jax.nn.log_sigmoid(output) + (1 - above) * jax.nn.log_sigmoid(-output))
  return jnp.sum(bce.sum(-1) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


class _Ordinal(tasks.TaskKind):
  """K ordered classes predicted as K - 1 cumulative logits, `P(y > k) = sigmoid(output_k)`."""

  def out_dim(self, task_cfg):
    return int(task_cfg["num_classes"]) - 1

  def activation(self, output):
    return jax.nn.sigmoid(output)

  def on_device(self, prediction):
    return jnp.sum(prediction > 0.5, axis=-1).astype(jnp.int32)  # the predicted rank

  def metrics(self, target, prediction, mask, num_classes=None):
    m = np.asarray(mask) > 0
    err = np.abs(np.asarray(prediction) - np.asarray(target))[m]
    return {"rank_mae": float(err.mean()), "count": int(m.sum())}

  def error(self, arrays, task, *, classification_error="prob", regression_error="absolute"):
    err = np.abs(np.asarray(arrays[f"pred/{task}"]) - arrays[f"target/{task}"]).astype(np.float64)
    return err, np.asarray(arrays[f"mask/{task}"]) > 0

  def error_name(self, regression_error):
    return "|rank error|"

  def explained_targets(self, target, mask):
    return [max(int(target) - 1, 0)]  # the last threshold the true rank passes


@pytest.fixture
def toy_kind():
  kind = tasks.register(_Ordinal(_TOY, tasks.CLASS, False, _ordinal_loss, "rank_mae", False))
  try:
    yield kind
  finally:
    del tasks.KINDS[_TOY]


def _toy_config(num_classes=5):
  c = ml_collections.ConfigDict()
  c.inputs = {"x": {"encoder": "mlp", "encoder_kwargs": {"hidden": (8,), "dropout": 0.0}}}
  c.model = {"fusion": "concat"}
  c.tasks = {
    "rank": {"kind": _TOY, "num_classes": num_classes, "head": "linear", "weight": 1.0},
    "y": {"kind": "regression", "num_outputs": 1, "head": "linear", "weight": 1.0},
  }
  return c


def test_a_registered_kind_brings_its_loss_metrics_head_error_and_targets(toy_kind, tmp_path):
  assert tasks.spec(_TOY) is toy_kind and tasks.is_per_example_class(_TOY)
  # Head width: K - 1 cumulative logits, as declared (no squeeze: it has classes).
  config = _toy_config(num_classes=5)
  assert task_out_dim(config.tasks.rank) == 4
  model = build_model(config)
  x = {"x": jnp.ones((3, 6))}
  variables = model.init(jax.random.key(0), x, train=False)
  outputs, _ = model.apply(variables, x, train=False)
  assert outputs["rank"].shape == (3, 4) and outputs["y"].shape == (3,)

  # Loss: the multitask objective calls the declared loss.
  target = {"rank": jnp.array([0, 2, 4]), "y": jnp.zeros(3)}
  mask = {"rank": jnp.array([1.0, 1.0, 0.0]), "y": jnp.ones(3)}
  kinds = {"rank": _TOY, "y": "regression"}
  per_task = objective.task_losses(outputs, target, mask, kinds)
  total = 0.5 * per_task["rank"] + 0.5 * per_task["y"]
  want = _ordinal_loss(outputs["rank"], target["rank"], mask["rank"])
  np.testing.assert_allclose(per_task["rank"], want, rtol=1e-6)
  np.testing.assert_allclose(total, 0.5 * want + 0.5 * per_task["y"], rtol=1e-6)

  # What leaves the device and the metrics: the rank from the cumulative probabilities.
  kind = tasks.spec(_TOY)
  probs = kind.activation(jnp.array([[5.0, 5.0, -5.0, -5.0], [5.0, -5.0, -5.0, -5.0]]))
  rank = np.asarray(kind.on_device(probs))
  np.testing.assert_array_equal(rank, [2, 1])
  m = kind.metrics(np.array([2, 3]), rank, np.array([1, 1]))
  assert m == {"rank_mae": 1.0, "count": 2} and kind.main_metric in m
  assert not kind.larger_is_better

  # Analysis: the prediction-file check, the per-example error and the validation curve use the
  # declaration (saved as pred/<t>, the rank error, the main metric rank_mae).
  arrays = {
    "index": np.arange(3),
    "target/rank": np.array([0, 2, 4]),
    "mask/rank": np.array([1.0, 1.0, 0.0]),
    "pred/rank": np.array([1, 2, 1]),
  }
  np.savez(tmp_path / "epoch_001.npz", **arrays)
  loaded = predictions.load_epoch(str(tmp_path / "epoch_001.npz"), {"rank": _TOY})
  err, valid = st.task_error(_TOY, loaded, "rank")
  np.testing.assert_array_equal(err, [1.0, 0.0, 3.0])
  np.testing.assert_array_equal(valid, [True, True, False])
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for epoch, v in ((1, 1.5), (2, 0.5)):
      f.write(json.dumps({"split": "val", "epoch": epoch, "rank/rank_mae": v}) + "\n")
  assert sections.val_metrics(str(tmp_path), str(tmp_path), {"rank": _TOY}) is not None
  assert os.path.exists(tmp_path / "val_metrics.png")

  # Explanations: the default target of an example, and its score (one logit per example).
  assert kind.explained_targets(np.int64(3), np.float32(1)) == [2]
  score = targets.make_score_fn(
    lambda p, inp: model.apply(p, inp, train=False)[0], "rank", _TOY, 2, num_outputs=4
  )
  np.testing.assert_allclose(score(variables, x), outputs["rank"][:, 2], rtol=1e-6)
  with pytest.raises(ValueError, match="a region applies only to"):
    targets.make_score_fn(lambda p, i: {}, "rank", _TOY, 0, num_outputs=4, region=np.ones((2, 2)))


def test_the_toy_kind_is_gone_after_the_test():
  assert _TOY not in tasks.KINDS
  with pytest.raises(ValueError, match=f"unknown task kind '{_TOY}'"):
    tasks.spec(_TOY)
