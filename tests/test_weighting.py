"""Task weighting: the aggregations against TorchJD 0.18.0 on fixed per-task gradients,
uncertainty weighting against a hand computation, tasks without labels, every strategy in the
vmapped ensemble step, the result on 4 simulated devices against 1, the weighting state through
a checkpoint, DWA/FAMO state updates, the hierarchy metric and constraints, and config errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers.commands import ROOT, device_check, main_command

from mtljax import aggregation, configlib, hierarchy, objective, train, weighting
from mtljax.train import grads as grads_lib
from mtljax.train import steps

TORCHJD = {
  "pcgrad": lambda T: __import__("torchjd.aggregation").aggregation.PCGrad(),
  "mgda": lambda T: __import__("torchjd.aggregation").aggregation.MGDA(),
  "upgrad": lambda T: __import__("torchjd.aggregation").aggregation.UPGrad(),
  "cagrad": lambda T: __import__("torchjd.aggregation").aggregation.CAGrad(c=0.4),
  "nash_mtl": lambda T: __import__("torchjd.aggregation").aggregation.NashMTL(n_tasks=T),
}


# the registered gradient aggregations
GRAM_KINDS = tuple(k for k, e in weighting.WEIGHTINGS.items() if e.family == weighting.GRADIENT)


def _gram(kind):
  """`gram_weights(M, present, rng)` of a registered aggregation with its default settings."""
  entry = weighting.WEIGHTINGS[kind]
  return entry.factory(None, (), {**weighting.settings(), **entry.defaults})["gram_weights"]


def _gradients(T, seed):
  """Per-task gradients [T, 9] with a planted conflict (task 1 opposes task 0)."""
  g = np.random.default_rng(seed).normal(size=(T, 9))
  g[1] -= 1.5 * g[0]
  return g


def test_the_registry_holds_the_aggregations_of_aggregation_py():
  assert GRAM_KINDS == ("pcgrad", "mgda", "upgrad", "cagrad", "nash_mtl")
  assert set(weighting.kinds()) == {"fixed", "equal", "uncertainty", "dwa", "rlw", "famo"} | set(
    GRAM_KINDS
  )


@pytest.mark.parametrize("kind", GRAM_KINDS)
def test_aggregation_matches_torchjd(kind):
  torch = pytest.importorskip("torch")
  pytest.importorskip("torchjd")
  for T, seed in ((2, 0), (3, 1), (3, 2)):
    G = _gradients(T, seed)
    M, present = jnp.asarray(G @ G.T, jnp.float32), jnp.ones(T, bool)
    ref_agg = TORCHJD[kind](T)
    if kind == "pcgrad":  # the same random visiting orders on both sides
      torch.manual_seed(seed)
      perms = jnp.asarray(np.stack([torch.randperm(T).numpy() for _ in range(T)]))
      torch.manual_seed(seed)
      w = aggregation.pcgrad(M, present, perms)
    else:
      w = _gram(kind)(M, present, jax.random.key(0))
    ref = ref_agg(torch.tensor(G)).numpy()
    ours = np.asarray(w, np.float64) @ G
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-5, (kind, T, rel, ours, ref)


@pytest.mark.parametrize("kind", GRAM_KINDS)
def test_absent_task_takes_no_part(kind):
  G = _gradients(3, 0)
  G[2] = 0.0  # task 2 has no label in the batch: its gradient row is zero
  M = jnp.asarray(G @ G.T, jnp.float32)
  gram = _gram(kind)
  w = np.asarray(gram(M, jnp.asarray([1, 1, 0], bool), jax.random.key(0)))
  assert np.all(np.isfinite(w)) and w[2] == 0.0
  # the same as the two-task problem without it
  w2 = gram(M[:2, :2], jnp.ones(2, bool), jax.random.key(0))
  if kind != "pcgrad":  # (pcgrad's random orders differ with T)
    np.testing.assert_allclose(w[:2], np.asarray(w2), rtol=1e-4, atol=1e-6)
  # nothing present: no update
  w0 = gram(M * 0, jnp.zeros(3, bool), jax.random.key(0))
  assert np.all(np.asarray(w0) == 0)


# ------------------------------------------------------------------------------ a toy model
class _Toy(nn.Module):
  @nn.compact
  def __call__(self, inputs, train=False):
    h = nn.relu(nn.Dense(8, name="trunk")(inputs["x"]))
    return {"a": nn.Dense(3, name="heads_a")(h), "b": nn.Dense(1, name="heads_b")(h)[:, 0]}, {}


def _config(kind, **options):
  c = ml_collections.ConfigDict()
  c.tasks = {
    "a": {"kind": "classification", "weight": 1.0, "num_classes": 3},
    "b": {"kind": "regression", "weight": 3.0},
  }
  c.weighting = {"kind": kind, **options}
  c.train = {"learning_rate": 0.01}
  c.ensemble = {"size": 2, "strategy": "seeds"}
  c.data = {"augment": {}}
  return c


def _batch(mask_b=None, n=6):
  rng = np.random.default_rng(0)
  return {
    "inputs": {"x": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32)},
    "targets": {"a": jnp.asarray(rng.integers(0, 3, n)), "b": jnp.asarray(rng.normal(size=n))},
    "mask": {"a": jnp.ones(n), "b": jnp.ones(n) if mask_b is None else jnp.asarray(mask_b)},
    "valid": jnp.ones(n),
    "meta": {"index": jnp.arange(n)},
  }


def _grads_fn(config):
  obj = objective.build(config)
  ctx_fn = steps._make_context_fn(_Toy(), obj, {})
  return obj, grads_lib.make_grads_fn(obj, ctx_fn)


def test_uncertainty_loss_and_grads_match_hand_computation():
  config = _config("uncertainty")
  batch = _batch()
  state = train.init_state(_Toy(), optax.sgd(0.1), batch["inputs"], jax.random.key(0), config)
  s = jnp.asarray([0.3, -0.2])
  wstate = {**state["weighting_state"], "params": {"log_var": s}}
  _, fn = _grads_fn(config)
  loss, logs, _, grads, extra = jax.jit(fn)(state["params"], {}, batch, jax.random.key(1), wstate)

  def hand(params, s):
    out, _ = _Toy().apply({"params": params}, batch["inputs"])
    la = optax.losses.softmax_cross_entropy_with_integer_labels(out["a"], batch["targets"]["a"])
    lb = jnp.square(out["b"] - batch["targets"]["b"])
    L = jnp.stack([la.mean(), lb.mean()])
    return jnp.sum(0.5 * (jnp.exp(-s) * L + s)), L

  hand_grad = jax.jit(jax.value_and_grad(hand, (0, 1), has_aux=True))
  (want, L), (g_p, g_s) = hand_grad(state["params"], s)
  assert float(loss) == pytest.approx(float(want), rel=1e-5)
  np.testing.assert_allclose(np.asarray(extra["wgrads"]["log_var"]), np.asarray(g_s), rtol=1e-5)
  # ∂/∂s_t = ½(1 - exp(-s_t) L_t), written out
  np.testing.assert_allclose(np.asarray(g_s), 0.5 * (1 - np.exp(-s) * np.asarray(L)), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g_p)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(
    [float(extra["measure"]["weight_a"]), float(extra["measure"]["weight_b"])],
    0.5 * np.exp(-np.asarray(s)),
    rtol=1e-5,
  )


@pytest.mark.parametrize("kind", ["mgda", "upgrad", "famo", "uncertainty"])
def test_task_without_labels_contributes_no_gradient(kind):
  config = _config(kind)
  batch = _batch(mask_b=np.zeros(6))
  state = train.init_state(_Toy(), optax.sgd(0.1), batch["inputs"], jax.random.key(0), config)
  _, fn = _grads_fn(config)
  loss, logs, _, grads, extra = jax.jit(fn)(
    state["params"], {}, batch, jax.random.key(1), state.get("weighting_state")
  )
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  assert np.all(np.asarray(grads["heads_b"]["kernel"]) == 0)
  assert float(extra["measure"]["weight_b"]) == 0.0
  assert not bool(extra["present"][1])
  # the update is task a's own gradient direction
  ga = jax.grad(
    lambda p: optax.losses.softmax_cross_entropy_with_integer_labels(
      _Toy().apply({"params": p}, batch["inputs"])[0]["a"], batch["targets"]["a"]
    ).mean()
  )(state["params"])
  a, b = np.asarray(grads["trunk"]["kernel"]).ravel(), np.asarray(ga["trunk"]["kernel"]).ravel()
  assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.9999


def test_every_strategy_runs_in_the_ensemble_step():
  # (fixed/equal: tests/test_ensemble.py; upgrad, uncertainty: the mesh check below; mgda: the
  # missing-label test)
  batch = _batch(mask_b=[1, 0, 1, 0, 0, 1])
  for kind in ("dwa", "rlw", "famo", "cagrad", "nash_mtl"):
    config = _config(kind, window=1)
    tx = optax.adam(0.01)
    state = train.init_ensemble(_Toy(), tx, batch["inputs"], jax.random.key(0), 2, config)
    step = jax.jit(train.make_ensemble_train_step(_Toy(), tx, config, {}))
    for i in range(3):
      state, m = step(state, batch, jax.random.key(i), jnp.ones((2, 6)))
    assert all(np.isfinite(v) for v in jax.tree.leaves(m)), (kind, m)
    assert int(state["step"][0]) == 3
    assert {"weight_a", "weight_b"} <= set(m), kind
    if kind in GRAM_KINDS:
      assert -1.0 <= float(m["cos_a"]) <= 1.0
    if "weighting_state" in state:  # each member its own state
      assert all(x.shape[0] == 2 for x in jax.tree.leaves(state["weighting_state"]))


def test_mesh_of_4_devices_gives_the_result_of_1():
  out = device_check("weighting_mesh_check.py", "upgrad,uncertainty")
  assert set(out) == {"upgrad", "uncertainty"}
  for kind, r in out.items():
    for a, b in zip(r["1"]["params"] + r["1"]["wstate"], r["4"]["params"] + r["4"]["wstate"]):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for k, v in r["1"]["measure"].items():
      assert r["4"]["measure"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (kind, k)


def test_weighting_state_goes_through_a_checkpoint(tmp_path):
  from mtljax.checkpoint import Checkpointer

  config = _config("famo")
  batch = _batch()
  tx = optax.adam(0.01)
  state = train.init_ensemble(_Toy(), tx, batch["inputs"], jax.random.key(0), 2, config)
  step = jax.jit(train.make_ensemble_train_step(_Toy(), tx, config, {}))
  for i in range(3):
    state, _ = step(state, batch, jax.random.key(i), jnp.ones((2, 6)))
  ck = Checkpointer(str(tmp_path / "ck"))
  ck.save_latest(3, state, {"step": 3})
  ck.wait()
  restored, _ = ck.restore_latest(
    jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  )
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # the resumed steps continue exactly
  s1, m1 = step(state, batch, jax.random.key(9), jnp.ones((2, 6)))
  s2, m2 = step(restored, batch, jax.random.key(9), jnp.ones((2, 6)))
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), s1, s2))


def test_dwa_weights_follow_the_loss_ratio():
  w = objective.build(_config("dwa", window=2, temperature=2.0)).weighting
  state = w.init_state()
  present = jnp.ones(2, bool)
  for losses in ([1.0, 1.0], [1.0, 1.0], [0.5, 0.9], [0.5, 0.9]):
    state = w.update_state(state, None, jnp.asarray(losses), present, None)

  class Ctx:  # what combine reads
    masks = {"a": jnp.ones(2), "b": jnp.ones(2)}
    weighting_state = state

  got = weighting.effective_weights(w.combine, {"a": 1.0, "b": 1.0}, Ctx)
  r = np.asarray([0.5, 0.9]) / 2.0
  want = np.exp(r) / np.exp(r).sum()
  np.testing.assert_allclose([float(got["a"]), float(got["b"])], want, rtol=1e-5)


def test_famo_moves_weight_to_the_task_that_improves_less():
  w = objective.build(_config("famo")).weighting
  state, present = w.init_state(), jnp.ones(2, bool)
  for k in range(20):  # task a's loss falls fast, b's barely
    state = w.update_state(state, None, jnp.asarray([0.9**k, 0.999**k]), present, None)
  z = jax.nn.softmax(state["logits"])
  assert float(z[1]) > 0.55


# ------------------------------------------------------------------------------ hierarchy
def _treesat_config(**hier):
  c = ml_collections.ConfigDict()
  c.data = {"name": "treesat"}
  c.tasks = {
    "l3": {"kind": "classification", "weight": 1.0, "num_classes": 15},
    "l2": {"kind": "classification", "weight": 1.0, "num_classes": 9},
    "age": {"kind": "regression", "weight": 1.0},
  }
  c.hierarchy = {"pairs": "auto", "constraint": "none", "weight": 0.1, **hier}
  return c


def test_hierarchy_metric_and_constraints():
  from mtljax.data.treesat.archive import GENUS_L2

  config = _treesat_config()
  [(child, parent, m)] = hierarchy.pairs(config)
  assert (child, parent) == ("l3", "l2") and np.array_equal(m, GENUS_L2)
  rng = np.random.default_rng(0)
  p3, p2 = rng.dirichlet(np.ones(15), 50), rng.dirichlet(np.ones(9), 50)
  got = hierarchy.metrics(config, {"l3": p3, "l2": p2}.get)
  want = np.mean([GENUS_L2[a] == b for a, b in zip(p3.argmax(1), p2.argmax(1))])
  assert got == {"hierarchy/l3_in_l2": pytest.approx(want)}
  # marginal: the parent's probabilities are the child's summed over each parent class
  transform = hierarchy.output_transform(_treesat_config(constraint="marginal"))
  logits = jnp.asarray(rng.normal(size=(50, 15)), jnp.float32)
  out = transform({"l3": logits, "l2": jnp.zeros((50, 9)), "age": jnp.zeros(50)})
  summed = np.zeros((50, 9))
  np.add.at(summed.T, GENUS_L2, np.asarray(jax.nn.softmax(logits)).T)
  np.testing.assert_allclose(np.asarray(jax.nn.softmax(out["l2"])), summed, rtol=1e-5, atol=1e-6)
  prob = {"l3": np.asarray(jax.nn.softmax(logits)), "l2": summed}
  # argmax of a marginal need not contain the argmax child, but mostly does
  assert hierarchy.metrics(config, prob.get)["hierarchy/l3_in_l2"] > 0.5
  # loss term: -log Σ_c p3(c) p2(parent(c)), averaged
  term = hierarchy.consistency_term(_treesat_config(constraint="loss"))

  class Ctx:
    batch = {"valid": jnp.ones(50)}
    outputs = {"l3": logits, "l2": jnp.log(jnp.asarray(p2, jnp.float32))}

  value, logs = term(Ctx)
  agree = (np.asarray(jax.nn.softmax(logits)) * p2[:, GENUS_L2]).sum(1)
  assert float(value) == pytest.approx(0.1 * np.mean(-np.log(agree)), rel=1e-5)


# ------------------------------------------------------------------------------ mistakes
def test_config_mistakes_are_reported():
  c = _config("nonsense")
  assert any("config.weighting.kind='nonsense'" in p for p in weighting.problems(c))
  one = _config("upgrad")
  del one.tasks["b"]
  assert any("two or more tasks" in p for p in weighting.problems(one))
  bad = _treesat_config(pairs="l3>age")
  assert any("two single-class classification tasks" in p for p in hierarchy.problems(bad))
  with pytest.raises(configlib.ConfigError):
    objective.build(_config("nonsense"))


def test_cli_one_task_aggregation_is_one_error_line(tmp_path):
  import subprocess

  workdir = tmp_path / "run"
  cmd = main_command(
    workdir, "--config.weighting.kind=upgrad", config="configs/treesat.py:tiny,exp=1"
  )
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 2, res.stderr[-2000:]
  lines = [s for s in res.stderr.splitlines() if s.strip()]
  assert lines[-1].startswith("error: ") and "config.weighting.kind='upgrad'" in lines[-1]
  assert "Traceback" not in res.stderr
  assert not workdir.exists()
