"""The objective as a sum of registered terms (mtljax/objective.py): the default terms are the
weighted task losses plus the auxiliary ones; a new term (here a toy input-gradient penalty that
re-runs the model through `ctx.apply`) and a gradient-aggregation weighting plug in by
registration and config only."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mtljax import configlib, objective, train


class _Toy(nn.Module):
  """Two heads on one dense layer; returns `(outputs, intermediates)` like the real models."""

  @nn.compact
  def __call__(self, inputs, train=False):
    h = nn.relu(nn.Dense(8)(inputs["x"]))
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return {"a": nn.Dense(3)(h), "b": nn.Dense(1)(h)[:, 0]}, {}


def _config(**objective_section):
  c = ml_collections.ConfigDict()
  c.tasks = {
    "a": {"kind": "classification", "weight": 1.0, "num_classes": 3},
    "b": {"kind": "regression", "weight": 3.0},
  }
  if objective_section:
    c.objective = objective_section
  return c


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  batch = {
    "inputs": {"x": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)},
    "targets": {"a": jnp.asarray([0, 1, 2, 0, 1, 2]), "b": jnp.asarray(rng.normal(size=6))},
    "mask": {"a": jnp.ones(6), "b": jnp.asarray([1.0, 1, 0, 1, 1, 1])},
    "valid": jnp.ones(6),
    "meta": {"index": jnp.arange(6)},
  }
  model = _Toy()
  tx = optax.chain(optax.sgd(0.1))
  state = train.init_state(model, tx, batch["inputs"], jax.random.key(0))
  return model, tx, state, batch


def _step(model, tx, config, state, batch):
  return jax.jit(train.make_train_step(model, tx, config, {}))(state, batch, jax.random.key(1))


def test_default_terms_log_tasks_and_sum_weighted(setup):
  model, tx, state, batch = setup
  _, m = _step(model, tx, _config(), state, batch)
  assert {"loss", "loss_a", "loss_b", "grad_norm", "param_norm"} == set(m)
  expect = 0.25 * float(m["loss_a"]) + 0.75 * float(m["loss_b"])
  assert float(m["loss"]) == pytest.approx(expect, rel=1e-6)
  # The explicit default section gives the same numbers bit for bit.
  _, m2 = _step(model, tx, _config(terms=("tasks", "aux"), weighting="fixed"), state, batch)
  assert all(float(m[k]) == float(m2[k]) for k in m)
  # "equal": 1/T per task.
  _, m3 = _step(model, tx, _config(weighting="equal"), state, batch)
  expect = 0.5 * float(m3["loss_a"]) + 0.5 * float(m3["loss_b"])
  assert float(m3["loss"]) == pytest.approx(expect, rel=1e-6)


def test_registered_term_re_runs_the_model(setup, monkeypatch):
  model, tx, state, batch = setup

  def factory(config):
    def term(ctx):  # squared input gradient of task a's summed logits (a saliency penalty)
      score = lambda x: ctx.apply(ctx.params, {"x": x}, train=False)[0]["a"].sum()
      g = jax.grad(score)(ctx.batch["inputs"]["x"])
      value = 0.1 * jnp.mean(g**2)
      return value, {"saliency": value}

    return term

  monkeypatch.setitem(objective.TERMS, "saliency", factory)
  _, base = _step(model, tx, _config(), state, batch)
  new_state, m = _step(model, tx, _config(terms=("tasks", "aux", "saliency")), state, batch)
  assert float(m["loss"]) == pytest.approx(float(base["loss"]) + float(m["loss_saliency"]), 1e-6)
  assert float(m["loss_saliency"]) > 0
  assert float(m["grad_norm"]) != pytest.approx(float(base["grad_norm"]), rel=1e-6)


def test_gradient_aggregation_gets_per_task_gradients(setup, monkeypatch):
  """An aggregator that re-weights the per-task gradients by the fixed weights reproduces the
  summed loss's update; the per-task gradients it sees are each task's own gradient."""
  model, tx, state, batch = setup
  seen = {}

  def factory(config):
    fixed = objective.WEIGHTINGS["fixed"](config)

    def aggregate(task_grads, losses):
      seen["tasks"] = sorted(task_grads)
      return jax.tree.map(lambda a, b: 0.25 * a + 0.75 * b, task_grads["a"], task_grads["b"])

    return objective.Weighting("toy", fixed.weights, fixed.combine, aggregate)

  monkeypatch.setitem(objective.WEIGHTINGS, "toy", factory)
  ref_state, ref = _step(model, tx, _config(), state, batch)
  new_state, m = _step(model, tx, _config(weighting="toy"), state, batch)
  assert seen["tasks"] == ["a", "b"]
  for k in ref:
    assert float(m[k]) == pytest.approx(float(ref[k]), rel=1e-5), k
  for x, y in zip(jax.tree.leaves(ref_state["params"]), jax.tree.leaves(new_state["params"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_unknown_names_are_config_errors():
  with pytest.raises(configlib.ConfigError, match="unknown"):
    objective.build(_config(terms=("tasks", "nope")))
  with pytest.raises(configlib.ConfigError, match="weighting"):
    objective.build(_config(weighting="nope"))
