"""Ensembles: E members in one vmapped step equal E separate steps; bagging and
leave-one-bucket-out weights; an ensemble run end to end (per-member and ensemble metrics,
averaged probabilities, one stacked checkpoint)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers.commands import device_check
from sklearn import metrics as skm

from configs import treesat as treesat_config
from mtljax import configlib, train
from mtljax.data import pipeline


def _tiny(root, size, strategy="seeds", **train_overrides):
  c = treesat_config.get_config("tiny")
  c.data.root = root
  c.ensemble.size, c.ensemble.strategy = size, strategy
  for k, v in train_overrides.items():
    setattr(c.train, k, v)
  return c


def test_sample_weights_by_strategy():
  c = treesat_config.get_config("tiny")
  c.ensemble.size = 4
  c.ensemble.strategy = "seeds"
  np.testing.assert_array_equal(train.member_sample_weights(c, 50), np.ones((4, 50)))
  c.ensemble.strategy = "bagging"
  w = train.member_sample_weights(c, 50)
  assert w.shape == (4, 50) and (w.sum(1) == 50).all()  # N draws with replacement each
  assert ((w == 0).mean(1) > 0.2).all()  # about 1/e of the examples are left out
  assert not np.array_equal(w[0], w[1])
  c.ensemble.strategy = "leave_one_bucket_out"
  w = train.member_sample_weights(c, 50)
  left_out = w == 0
  # Every example is left out by exactly one member; the buckets have equal sizes.
  np.testing.assert_array_equal(left_out.sum(0), np.ones(50))
  assert sorted(left_out.sum(1)) == [12, 12, 13, 13]


def test_vmapped_ensemble_step_equals_each_member_alone(tiny_treesat_root, tmp_path):
  """The vmapped E-member step against an independent computation: each member's own step with
  its own RNG (`fold_in(rng, k)`) on the batch re-weighted by its bagging counts."""
  config = _tiny(tiny_treesat_root, 3, "bagging")
  config.ensemble.augment_per_member = True
  assert pipeline.augment_options(config.data.augment)
  s = train.setup(config, str(tmp_path), write_config=False)
  weights = train.member_sample_weights(config, len(s.sources["train"]))
  batch = jax.tree.map(jnp.asarray, next(s.train_iter()))
  rng = jax.random.key(5)
  stacked = train.init_ensemble(s.model, s.tx, s.example_inputs, jax.random.key(1), 3)
  ens_step = jax.jit(train.make_ensemble_train_step(s.model, s.tx, config, s.target_stats))
  new, m = ens_step(stacked, batch, rng, jnp.asarray(weights))

  single = jax.jit(train.make_train_step(s.model, s.tx, config, s.target_stats))
  losses = []
  for k in range(3):
    member = jax.tree.map(lambda x: x[k], stacked)
    b = dict(batch, valid=batch["valid"] * weights[k][np.asarray(batch["meta"]["index"])])
    # The member's own flips/rotations of the batch (augment_per_member), from its own RNG.
    member_rng = jax.random.fold_in(rng, k)
    b = pipeline.augment_batch(
      b,
      jax.random.fold_in(jax.random.fold_in(member_rng, 0), 1),
      **pipeline.augment_options(config.data.augment),
    )
    alone, mk = single(member, b, member_rng)
    losses.append(float(mk["loss"]))
    for a, e in zip(jax.tree.leaves(alone), jax.tree.leaves(jax.tree.map(lambda x: x[k], new))):
      np.testing.assert_allclose(np.asarray(e), np.asarray(a), rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(float(m["loss"]), np.mean(losses), rtol=1e-5)
  # Members start from different weights; member 0 is the single model of the same seed.
  kernel = lambda st: st["params"]["heads_l3"]["out"]["kernel"]
  assert not np.allclose(kernel(stacked)[0], kernel(stacked)[1])
  one = train.init_ensemble(s.model, s.tx, s.example_inputs, jax.random.key(1), 1)
  np.testing.assert_array_equal(kernel(one)[0], kernel(stacked)[0])


@pytest.mark.slow
def test_ensemble_run_reports_members_and_averages_probabilities(tiny_treesat_root, tmp_path):
  config = _tiny(
    tiny_treesat_root,
    3,
    "leave_one_bucket_out",
    num_epochs=6,
    batch_size=8,
    learning_rate=3e-3,
    checkpoint_every_steps=1000,
  )
  results = train.train_and_evaluate(config, str(tmp_path))
  test = results["test"]
  for k in range(3):
    assert f"member{k}/l3/f1_micro" in test
  np.testing.assert_allclose(
    test["members_mean/l3/f1_micro"], np.mean([test[f"member{k}/l3/f1_micro"] for k in range(3)])
  )
  assert test["l3/f1_micro"] > 0.3, test  # 15 genera: chance 1/15

  # Saved predictions: each member's probabilities and the ensemble's = their mean; the
  # ensemble's metric recomputed with scikit-learn from the file.
  last = np.load(tmp_path / "predictions" / "test" / "epoch_006.npz")
  members, ens = last["member_prob/l3"], last["prob/l3"]
  assert members.shape == (ens.shape[0], 3, 15)
  np.testing.assert_allclose(ens, members.mean(1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(last["member_pred/age"].mean(1), last["pred/age"], rtol=1e-5)
  val = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  val = [r for r in val if r["split"] == "val" and r["epoch"] == 6][0]
  v6 = np.load(tmp_path / "predictions" / "val" / "epoch_006.npz")
  np.testing.assert_allclose(
    val["l3/f1_micro"],
    skm.f1_score(v6["target/l3"], v6["prob/l3"].argmax(1), average="micro"),
    rtol=1e-6,
  )

  # One stacked checkpoint: every leaf has the member axis first.
  best = tmp_path / "checkpoints" / "best"
  step = ocp.CheckpointManager(best).latest_step()
  meta = ocp.StandardCheckpointer().metadata(best / str(step) / "state")
  leaves = jax.tree.leaves(meta.item_metadata.tree["params"], is_leaf=lambda x: hasattr(x, "shape"))
  assert leaves and all(l.shape[0] == 3 for l in leaves)


def test_ensemble_config_errors():
  c = treesat_config.get_config("tiny")
  inputs = {"aerial": {}, "s1": {}, "s2": {}}
  tasks = {
    "l3": {"kind": "classification", "num_classes": 15},
    "l2": {"kind": "classification", "num_classes": 9},
    "age": {"kind": "regression"},
  }
  c.ensemble.strategy = "leave_one_bucket_out"
  c.ensemble.size = 1
  with pytest.raises(configlib.ConfigError, match="ensemble.size >= 2"):
    configlib.validate(c, inputs, tasks)
  c.ensemble.strategy = "boosting"
  with pytest.raises(configlib.ConfigError, match="config.ensemble.strategy='boosting'"):
    configlib.validate(c, inputs, tasks)


def test_members_spread_over_an_ensemble_mesh_axis(tiny_treesat_root, tmp_path):
  """`config.ensemble.devices=2` on 4 (simulated) devices: a (data=2, ensemble=2) mesh where each
  device holds one member, and the step gives what the plain data-parallel mesh gives."""
  out = device_check("ensemble_mesh_check.py", tiny_treesat_root, tmp_path)
  plain, spread = out["1"], out["2"]
  assert plain["mesh"] == {"data": 4} and spread["mesh"] == {"data": 2, "ensemble": 2}
  assert plain["shard_shapes"] == [plain["leaf_shape"]]  # replicated: every device has both
  assert spread["shard_shapes"] == [[1] + spread["leaf_shape"][1:]]  # one member per device
  np.testing.assert_allclose(spread["loss"], plain["loss"], rtol=1e-5)
  for a, b in zip(plain["params"], spread["params"]):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
