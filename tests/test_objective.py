"""The objective as a sum of registered terms (mtljax/objective.py): the default terms are the
weighted task losses plus the auxiliary ones; a new term (here a toy input-gradient penalty that
re-runs the model through `ctx.apply`) and a gradient-aggregation weighting plug in by
registration (`objective.register_term`, `weighting.register`) and config only."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mtljax import configlib, objective, train, weighting


class _Toy(nn.Module):
  """Two heads on one dense layer; returns `(outputs, intermediates)` like the real models."""

  @nn.compact
  def __call__(self, inputs, train=False):
    h = nn.relu(nn.Dense(8)(inputs["x"]))
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return {"a": nn.Dense(3)(h), "b": nn.Dense(1)(h)[:, 0]}, {}


def _config(weighting=None, **objective_section):
  c = ml_collections.ConfigDict()
  c.tasks = {
    "a": {"kind": "classification", "weight": 1.0, "num_classes": 3},
    "b": {"kind": "regression", "weight": 3.0},
  }
  if objective_section:
    c.objective = objective_section
  if weighting:
    c.weighting = {"kind": weighting}
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
  """A registered GRADIENT weighting whose weights are the fixed ones (¼, ¾) reproduces the
  summed loss's update (the toy has no `heads_<task>`: every parameter is shared); the Gram
  matrix it sees is that of the two tasks' own gradients."""
  model, tx, state, batch = setup
  seen = {}

  def gram_weights(M, present, rng):
    seen["M"] = M
    return jnp.asarray([0.25, 0.75], M.dtype)

  toy = weighting.Entry(
    lambda c, n, o: {"gram_weights": gram_weights},
    weighting.GRADIENT,
    min_tasks=2,
    configured_weights=True,  # the logged loss: Σ_t w_t L_t with the configured weights
  )
  monkeypatch.setitem(weighting.WEIGHTINGS, "toy", toy)
  ref_state, ref = _step(model, tx, _config(), state, batch)
  new_state, m = _step(model, tx, _config(weighting="toy"), state, batch)
  assert seen["M"].shape == (2, 2)
  for k in ref:
    assert float(m[k]) == pytest.approx(float(ref[k]), rel=1e-5), k
  assert float(m["weight_b"]) == pytest.approx(0.75)
  for x, y in zip(jax.tree.leaves(ref_state["params"]), jax.tree.leaves(new_state["params"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_a_registered_weighting_declares_its_settings(monkeypatch):
  """`weighting.register`: the entry's settings join `config.weighting` with their defaults (read
  by config_blocks), a clashing default is refused, and its `min_tasks` is checked."""
  from mtljax import config_blocks

  entry = weighting.Entry(lambda c, n, o: {}, min_tasks=3, defaults={"toy_alpha": 0.5})
  monkeypatch.setattr(weighting, "WEIGHTINGS", dict(weighting.WEIGHTINGS))
  weighting.register("toy", entry)
  assert config_blocks.weighting_config().toy_alpha == 0.5
  assert weighting.options(_config("toy"))["toy_alpha"] == 0.5
  assert any("three or more tasks" in p for p in weighting.problems(_config("toy")))
  with pytest.raises(ValueError, match="clashes"):
    weighting.register("toy2", weighting.Entry(lambda c, n, o: {}, defaults={"window": 3}))
  with pytest.raises(ValueError, match="already registered"):
    weighting.register("toy", entry)


def test_unknown_names_are_config_errors():
  with pytest.raises(configlib.ConfigError, match="unknown"):
    objective.build(_config(terms=("tasks", "nope")))
  with pytest.raises(configlib.ConfigError, match="weighting"):
    objective.build(_config(weighting="nope"))
