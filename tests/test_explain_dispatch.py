"""The method registry is the one way the explain runs call a method: `methods.attribute`
gives each built-in method the same arguments as calling it by hand, and a new method is one
registry entry (a toy "gradient_sign", registered here and removed afterwards) that the
dispatch, the time-series check and the image explain run all accept."""

import copy
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtljax import config_blocks
from mtljax.attribution import (
  blur_ig,
  controls,
  guided_ig,
  layers,
  methods,
  targets,
  xrai,
)
from mtljax.explain import setup
from mtljax.models import activations


class _Net(nn.Module):
  """`{"img": [B, 8, 8, 2], "tab": [B, 3]}` → `{"cls": [B, 3]}`, with the models' switchable ReLU
  (guided backprop changes it)."""

  @nn.compact
  def __call__(self, inputs):
    h = activations.relu(nn.Conv(4, (3, 3), name="conv")(inputs["img"])).mean(axis=(1, 2))
    t = jnp.tanh(nn.Dense(4, name="dense")(inputs["tab"]))
    return {"cls": nn.Dense(3, name="head")(jnp.concatenate([h, t], axis=-1))}


def _setup():
  model = _Net()
  k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
  x = {"img": jax.random.normal(k1, (2, 8, 8, 2)), "tab": jax.random.normal(k2, (2, 3))}
  params = model.init(k3, x)["params"]
  f = targets.make_score_fn(
    lambda p, inp: model.apply({"params": p}, inp), "cls", "classification", 1, num_outputs=3
  )
  ex = config_blocks.explain_config(task="cls", modality="img", layer="conv")
  ex.ig_steps, ex.samples, ex.lime_samples = 8, 4, 32
  return f, params, x, ex


def _by_hand(name, f, params, x, ex, rng, segments):
  """The calls the explain runs made before the registry dispatched them (the old if-chain)."""
  A = methods
  layer_fn = layers.flax_layer_fn(f, ex.layer)

  def guided_f(v, xx):
    with activations.guided_relus():
      return f(v, xx)

  return {
    "saliency": lambda: A.saliency(f, params, x),
    "input_x_gradient": lambda: A.input_x_gradient(f, params, x),
    "integrated_gradients": lambda: A.integrated_gradients(
      f,
      params,
      x,
      steps=int(ex.ig_steps),
      method=ex.ig_method,
      batch_steps=ex.ig_batch_steps or None,
      split=layers.affine_split(f, ["conv", "dense"]),
    ),
    "smoothgrad": lambda: A.smoothgrad(
      A.saliency, f, params, x, rng, samples=int(ex.samples), stdev=float(ex.noise)
    ),
    "gradient_shap": lambda: A.gradient_shap(
      f, params, x, rng, samples=int(ex.samples), stdev=float(ex.noise)
    ),
    "occlusion": lambda: A.occlusion(f, params, x, window=(8, 8), stride=(4, 4)),
    "grad_cam": lambda: A.grad_cam(layer_fn, params, x, upsample_to=(8, 8)),
    "guided_backprop": lambda: A.guided_backprop(guided_f, params, x),
    "guided_grad_cam": lambda: A.guided_grad_cam(guided_f, layer_fn, params, x, modality="img"),
    "lime": lambda: A.lime(
      f, params, x, rng, modality="img", segments=segments, num_samples=int(ex.lime_samples)
    ),
    "blur_ig": lambda: blur_ig.blur_ig(
      f, params, x, modality="img", steps=int(ex.ig_steps), batch_steps=ex.ig_batch_steps or None
    ),
    "guided_ig": lambda: guided_ig.guided_ig(f, params, x, modality="img", steps=int(ex.ig_steps)),
    "xrai": lambda: xrai.xrai(f, params, x, modality="img", steps=int(ex.ig_steps)),
    # The model-ignoring controls of mtljax.attribution.controls.
    "edges": lambda: controls.edges(f, params, x, modality="img"),
    "random_map": lambda: controls.random_map(f, params, x, rng, modality="img"),
  }[name]()


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_dispatch_calls_each_method_as_by_hand(name):
  f, params, x, ex = _setup()
  rng = jax.random.key(5)
  segments = jnp.broadcast_to(jnp.asarray(methods.grid_segments(8, 8, (4, 4))), (2, 8, 8))
  ctx = methods.Context(
    explain=ex,
    rng=rng,
    modality="img",
    layer="conv",
    image_hw=(8, 8),
    affine_layers=("conv", "dense"),
    segments=segments,
  )
  got = methods.attribute(name, f, params, x, ctx)
  want = _by_hand(name, f, params, x, ex, rng, segments)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)


def gradient_sign(f, params, inputs, *, scale=1.0):
  """The toy method: `scale · sign(d f / d x)` of every float leaf."""
  grads = methods.saliency(f, params, inputs, absolute=False)
  return jax.tree.map(lambda g: scale * jnp.sign(g), grads)


@pytest.fixture
def toy_method():
  spec = methods.register(
    "gradient_sign",
    methods.MethodSpec(
      gradient_sign,
      signed=True,
      options=lambda ctx, f: {"scale": float(ctx.explain.get("sign_scale", 1.0))},
      time_series=True,
    ),
  )
  try:
    yield spec
  finally:
    methods.METHODS.pop("gradient_sign")


def test_a_registered_method_is_dispatched_and_removed(toy_method):
  f, params, x, ex = _setup()
  ex.sign_scale = 2.0
  got = methods.attribute("gradient_sign", f, params, x, methods.Context(explain=ex))
  grads = methods.saliency(f, params, x, absolute=False)
  jax.tree.map(lambda a, g: np.testing.assert_array_equal(a, 2.0 * np.sign(g)), got, grads)
  # A time series (integer leaves held fixed, zero attributions) goes through the same call.
  series = {"values": jnp.ones((2, 5, 3)), "days": jnp.arange(10).reshape(2, 5)}
  out = methods.attribute(
    toy_method,
    lambda p, xx: (xx["values"] * xx["days"][..., None]).sum((1, 2)),
    None,
    series,
    methods.Context(explain=ex),
  )
  want = np.broadcast_to(2.0 * (np.asarray(series["days"])[..., None] > 0), (2, 5, 3))
  np.testing.assert_array_equal(out["values"], want)
  np.testing.assert_array_equal(out["days"], 0)
  with pytest.raises(ValueError, match="already registered"):
    methods.register("gradient_sign", toy_method)


def test_the_toy_method_is_gone_afterwards():
  assert "gradient_sign" not in methods.METHODS


def test_time_series_check_takes_the_registered_methods(toy_method):
  config = ml_collections.ConfigDict(
    {
      "explain": {
        "methods": ("saliency", "gradient_sign", "grad_cam"),
        "task": "y",
        "split": "test",
      },
      "tasks": {"y": {"kind": "regression"}},
    }
  )

  class Setup:
    sources = {"test": None}

  with pytest.raises(setup.ExplainError) as e:
    setup.check_request(config, Setup(), time_series=True)
  assert "'grad_cam' is not one of" in str(e.value) and "'gradient_sign'" in str(e.value)
  config.explain.methods = ("saliency", "gradient_sign")
  setup.check_request(config, Setup(), time_series=True)


@pytest.mark.slow
def test_the_explain_run_takes_a_registered_method(toy_method, tmp_path):
  """A tiny ensemble trained in-process, explained with the toy method beside saliency and LIME
  (whose segments are traced under jit: the run gives their count)."""
  from configs import attributes
  from mtljax import train
  from mtljax.explain import run

  config = attributes.get_config("tiny,size=2")
  config.train.num_epochs = 1
  train.train_and_evaluate(copy.deepcopy(config), str(tmp_path / "run"))
  config.explain.methods = ("saliency", "gradient_sign", "lime")
  config.explain.max_examples = 4
  config.explain.lime_samples = 32
  config.explain.metrics = ()  # the trust metrics are tested in test_trust_run.py
  summary = run.explain_workdir(config, str(tmp_path / "run"))
  assert set(summary["methods"]) == {"saliency", "gradient_sign", "lime"}
  out = tmp_path / "run" / "explanations" / config.explain.split
  maps = np.load(out / "maps_gradient_sign.npz")
  assert maps["ensemble"].shape[0] == summary["num_targets"]
  assert np.abs(maps["ensemble"]).max() <= 1 + 1e-6  # signed maps normalised to [-1, 1]
  assert (out / "table.md").read_text().count("| gradient_sign |") >= 1
  shutil.rmtree(tmp_path / "run" / "checkpoints")
