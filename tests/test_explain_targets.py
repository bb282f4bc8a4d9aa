"""The target axis of the attribution API: K targets per example in one call equal K
one-target calls, for every registered method, ragged targets, both forms, chunks and heads."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax.attribution import ensemble, methods, targets
from mtljax.models import activations

HEADS = (("cls", "classification", 5), ("attr", "multilabel", 4))


class _Net(nn.Module):
  """Conv trunk on "img" [B, 8, 8, 2] + an affine Dense on "tab" [B, 3] + an embedding of "cat";
  two heads: "cls" (5 logits) and "attr" (4 logits)."""

  @nn.compact
  def __call__(self, x):
    h = activations.relu(nn.Conv(4, (3, 3), name="conv1")(x["img"]))
    h = activations.relu(nn.Conv(6, (3, 3), strides=(2, 2), name="conv2")(h)).mean(axis=(1, 2))
    t = nn.Dense(6, name="tab_dense")(x["tab"])
    e = nn.Embed(5, 6, name="emb")(x["cat"])
    z = jnp.tanh(h + t + e)
    return {"cls": nn.Dense(5, name="cls")(z), "attr": nn.Dense(4, name="attr")(z)}


def _setup(dtype):
  model = _Net()
  k1, k2 = jax.random.split(jax.random.key(0))
  x = {
    "img": jax.random.normal(k1, (2, 8, 8, 2), dtype),
    "tab": jax.random.normal(k2, (2, 3), dtype),
    "cat": jnp.array([1, 3]),
  }
  params = model.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p.astype(dtype), params)
  return (lambda v, inp: model.apply(v, inp)), params, x


def _ctx(**kw):
  explain = types.SimpleNamespace(
    ig_steps=4,
    ig_method="riemann_middle",
    ig_batch_steps=2,
    samples=3,
    noise=0.1,
    occlusion_window=4,
    occlusion_stride=2,
    lime_samples=24,
  )
  return methods.Context(
    explain=explain,
    rng=jax.random.key(2),
    modality="img",
    layer="conv2",
    image_hw=(8, 8),
    affine_layers=("tab_dense",),
    num_segments=4,
    segments=jnp.asarray(np.broadcast_to(methods.grid_segments(8, 8, (2, 2)), (2, 8, 8))),
    **kw,
  )


# Example 0 has 3 targets, example 1 one (padded twice): ragged and full rows in one batch.
INDEX = np.array([[4, 0, 2], [1, 1, 1]], np.int32)
VALID = np.array([[True, True, True], [True, False, False]])


def _single(spec, apply, params, x, ctx, task, kind, n, idx):
  """One target per example; compiled once per (spec, head), the index traced."""
  key = (id(spec), task, id(ctx))
  if key not in _SINGLE:

    def run(p, xx, i):
      f = targets.make_score_fn(apply, task, kind, i, num_outputs=n)
      return methods.attribute(spec, f, p, xx, ctx)

    _SINGLE[key] = jax.jit(run)
  return _SINGLE[key](params, x, jnp.asarray(idx, jnp.int32))


_SINGLE = {}


def _check(multi, singles, valid, rtol):
  """Every valid target's map equals its one-target map; a padding target's map is zero (also
  for the controls that ignore the score, `trust/controls.py`: the dispatch zeroes them)."""
  for k, single in enumerate(singles):
    for m, s in zip(jax.tree.leaves(multi), jax.tree.leaves(single)):
      m, s = np.asarray(m)[:, k], np.asarray(s)
      assert m.shape == s.shape
      scale = max(np.abs(s).max(), 1e-30)
      for b in range(len(valid)):
        want = s[b] if valid[b, k] else np.zeros_like(s[b])
        assert np.abs(m[b] - want).max() <= rtol * scale, (k, b)


@pytest.mark.parametrize("form", ["grads", "vjp"])
def test_every_method_multi_target_equals_one_target_at_a_time(form):
  with jax.enable_x64(True):
    apply, params, x = _setup(jnp.float64)
    ctx = _ctx(target_form=form)
    task, kind, n = HEADS[0]
    for name, spec in methods.METHODS.items():
      if form == "vjp" and name not in ("saliency", "integrated_gradients", "grad_cam"):
        continue  # the form concerns the gradient methods: their two kinds of backward
      f = targets.make_target_scores(apply, [HEADS[0]], INDEX, VALID)
      multi = jax.jit(lambda p, xx: methods.attribute(spec, f, p, xx, ctx))(params, x)
      singles = [_single(spec, apply, params, x, ctx, task, kind, n, INDEX[:, k]) for k in range(3)]
      leaf = multi["img"] if isinstance(multi, dict) else multi
      assert leaf.shape[:2] == (2, 3), name
      _check(multi, singles, VALID, 1e-10)
      assert np.any(np.asarray(leaf)[0] != 0), name


def test_chunked_targets_heads_and_the_loop_fallback():
  with jax.enable_x64(True):
    apply, params, x = _setup(jnp.float64)
    offsets = targets.head_offsets(HEADS)
    assert offsets == {"cls": 0, "attr": 5}
    # Across heads: the class of each example and two of its attributes, in one call.
    index = np.array([[2, 5 + 0, 5 + 3], [4, 5 + 1, 0]], np.int32)
    valid = np.array([[True, True, True], [True, True, False]])
    ctx = _ctx(target_chunk=2)
    for name in ("grad_cam", "occlusion"):
      spec = methods.get_method(name)
      multi = jax.jit(
        lambda p, xx, spec=spec: methods.attribute_targets(
          spec,
          lambda i, v: targets.make_target_scores(apply, HEADS, i, v),
          p,
          xx,
          index,
          valid,
          ctx,
        )
      )(params, x)
      singles = [_single(spec, apply, params, x, ctx, *HEADS[0], index[:, 0])]
      for k in (1, 2):
        singles.append(
          _single(spec, apply, params, x, ctx, *HEADS[1], np.maximum(index[:, k] - 5, 0))
        )
      _check(multi, singles, valid, 1e-10)
    # A method registered without a target axis runs once per target.
    plain = methods.MethodSpec(lambda f, p, xx: f(p, xx)[:, None] * xx["tab"], signed=True)
    f = targets.make_target_scores(apply, [HEADS[0]], INDEX, VALID)
    out = methods.attribute(plain, f, params, x, ctx)
    want = jnp.where(jnp.asarray(VALID), apply(params, x)["cls"][np.arange(2)[:, None], INDEX], 0)
    np.testing.assert_allclose(out, want[..., None] * x["tab"][:, None], rtol=1e-12)


def test_ensemble_members_times_targets_in_one_program():
  apply, params, x = _setup(jnp.float32)
  stacked = jax.tree.map(lambda *p: jnp.stack(p), params, jax.tree.map(lambda p: 0.5 * p, params))
  ctx = _ctx()
  spec = methods.get_method("grad_cam")
  fn = lambda v, xx: methods.attribute(  # noqa: E731
    spec, targets.make_target_scores(apply, [HEADS[0]], INDEX, VALID), v, xx, ctx
  )
  for strategy in ("vmap",):  # members × targets × examples in one vectorised program
    per_member, _ = ensemble.ensemble_attribute(fn, stacked, x, strategy=strategy)
    assert per_member.shape == (2, 2, 3, 8, 8)
    for e in range(2):
      member = jax.tree.map(lambda p: p[e], stacked)
      single = _single(spec, apply, member, x, ctx, *HEADS[0], INDEX[:, 1])
      np.testing.assert_allclose(per_member[e, :, 1][0], single[0], rtol=1e-4, atol=1e-6)
      assert not np.any(per_member[e, 1, 1:])  # padded targets: zero maps


def test_the_explain_run_rows_equal_the_per_row_path():
  """`explain.batches` (all targets of an example per call) gives the rows of the per-pair path
  (the oracle in tests/helpers/per_pair.py) on the attribute config's tiny ResNet ensemble."""
  import importlib.util
  import os

  from helpers import per_pair

  from mtljax.explain import batches
  from mtljax.models.multitask import build_model

  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "attributes.py")
  spec_ = importlib.util.spec_from_file_location("attr_cfg", path)
  mod = importlib.util.module_from_spec(spec_)
  spec_.loader.exec_module(mod)
  config = mod.get_config("tiny,size=2")
  config.tasks.attributes.num_classes = 6
  config.tasks["class"].num_classes = 4
  config.explain.ig_steps = 4
  config.explain.target_chunk = 2
  model = build_model(config)
  x = {"image": jax.random.normal(jax.random.key(3), (5, 16, 16, 3))}
  members = [model.init(jax.random.key(i), x, train=False) for i in (4, 5)]
  stacked = jax.tree.map(lambda *v: jnp.stack(v), *members)
  # Ragged: 3, 1, 0 (unexplained), 2 and 4 targets; 3 examples per call (the last call padded).
  pairs = np.array(
    [(0, 1), (0, 4), (0, 5), (1, 2), (3, 0), (3, 3), (4, 1), (4, 2), (4, 3), (4, 5)], np.int32
  )
  x_np = {"image": np.asarray(x["image"])}
  for name in ("saliency", "grad_cam"):  # IG (with the stem split): the float64 test above
    spec = methods.get_method(name)
    old = per_pair.attribute_pairs(
      per_pair.make_attribute_fn(model, config, name, (16, 16)),
      spec,
      stacked,
      x_np,
      pairs,
      4,
      None,
      desc=name,
    )
    new = batches.attribute_examples(
      batches.make_targets_attribute_fn(model, config, name, (16, 16)),
      spec,
      stacked,
      x_np,
      pairs,
      3,
      None,
      desc=name,
    )
    np.testing.assert_allclose(new[0], old[0], rtol=2e-4, atol=2e-5)  # member maps [E, P, H, W]
    np.testing.assert_allclose(new[1], old[1], rtol=2e-4, atol=2e-5)  # ensemble maps [P, H, W]
    if old[2]:
      np.testing.assert_allclose(new[2][0], np.concatenate(old[2], 1), rtol=1e-5)


def test_the_explain_run_explains_several_heads_in_one_call():
  """`config.explain.tasks = ("class", "attributes")`: each example's class and present
  attributes in one call per method give the maps of explaining each head on its own; the labels
  name the head; unknown / repeated tasks are reported."""
  import importlib.util
  import os

  from mtljax.explain import batches, setup
  from mtljax.models.multitask import build_model

  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "attributes.py")
  spec_ = importlib.util.spec_from_file_location("attr_cfg", path)
  mod = importlib.util.module_from_spec(spec_)
  spec_.loader.exec_module(mod)
  config = mod.get_config("tiny,size=1")
  assert tuple(config.explain.tasks) == ("class", "attributes")  # the CUB layout's default
  config.tasks.attributes.num_classes = 5
  config.tasks["class"].num_classes = 3
  config.explain.ig_steps = 4
  model = build_model(config)
  x = {"image": jax.random.normal(jax.random.key(3), (4, 16, 16, 3))}
  stacked = jax.tree.map(
    lambda *v: jnp.stack(v), *[model.init(jax.random.key(i), x, train=False) for i in (4,)]
  )
  attrs = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 1]], np.float32)
  data = {
    "targets": {"class": np.array([2, 0, 1, 1]), "attributes": attrs},
    "mask": {"class": np.array([1, 1, 0, 1.0]), "attributes": np.ones((4, 5), np.float32)},
  }
  fields = {"class": {"class_names": ["a", "b", "c"]}, "attributes": {"class_names": list("vwxyz")}}
  src = types.SimpleNamespace(target_fields=fields)
  pairs, names, labels, per_task = setup.explained_pairs(config, src, data)
  assert per_task == {"class": 3, "attributes": 8}
  assert labels[2] == "class: c" and labels[3 + 4] == "attributes: z" and names[3 + 4] == "z"
  assert pairs[:4].tolist() == [[0, 2], [0, 3], [0, 5], [1, 0]]  # by example, heads in order
  x_np = {"image": np.asarray(x["image"])}
  for name in ("saliency",):  # the other methods' target axis: the tests above
    spec = methods.get_method(name)

    def maps(cfg, p):
      fn = batches.make_targets_attribute_fn(model, cfg, name, (16, 16))
      return batches.attribute_examples(fn, spec, stacked, x_np, p, 3, None, desc=name)

    both = maps(config, pairs)
    head_of = pairs[:, 1] >= 3  # True: an attribute target
    for is_attr, task in ((False, "class"), (True, "attributes")):
      alone = config.copy_and_resolve_references()
      alone.explain.tasks = (task,)
      own = setup.explained_pairs(alone, src, data)[0]
      np.testing.assert_array_equal(own[:, 1] + 3 * is_attr, pairs[head_of == is_attr, 1])
      got = maps(alone, own)
      np.testing.assert_allclose(both[0][:, head_of == is_attr], got[0], rtol=2e-4, atol=2e-5)
      np.testing.assert_allclose(both[1][head_of == is_attr], got[1], rtol=2e-4, atol=2e-5)
  config.explain.tasks = ("class", "colour", "class")
  problems = setup._check_tasks(config)
  assert "'colour' is not one of the tasks" in problems[0] and "['class']" in problems[1]
