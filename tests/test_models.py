"""Shapes of every encoder, head and the assembled multitask model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import treesat as treesat_config
from mtljax.models.encoders import Embedding, MLPEncoder, ResNet
from mtljax.models.heads import LinearHead, MLPHead
from mtljax.models.multitask import build_model


def _init_apply(module, x, train=False):
  v = module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)
  out = module.apply(
    v,
    x,
    train=train,
    rngs={"dropout": jax.random.key(2)},
    mutable=["batch_stats"] if train else False,
  )
  return v, out[0] if train else out


def test_resnet18_shapes_and_size():
  m = ResNet()  # ResNet-18 defaults
  x = jnp.zeros((2, 64, 64, 4))
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), x, train=False))
  y = jax.eval_shape(lambda v: m.apply(v, x, train=False), v)
  assert y.shape == (2, 512)
  n = sum(np.prod(p.shape) for p in jax.tree.leaves(v["params"]))
  # torchvision's resnet18 has 11.18M parameters without its fc layer (3 input bands);
  # one extra input band adds 64*7*7 weights.
  assert n == 11_176_512 + 64 * 7 * 7


def test_tiny_resnet_runs_and_updates_batch_stats():
  m = ResNet(stage_sizes=(1, 1), width=8, stem_kernel=3)
  x = jax.random.normal(jax.random.key(0), (3, 32, 32, 4))
  v, y = _init_apply(m, x, train=False)
  assert y.shape == (3, 16)
  (_, updates) = m.apply(v, x, train=True, mutable=["batch_stats"])
  before = jax.tree.leaves(v["batch_stats"])
  after = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_mlp_encoder_flattens_and_drops_out():
  m = MLPEncoder(hidden=(16, 8, 4), dropout=0.5)
  x = jnp.ones((5, 6, 6, 12))
  v, y = _init_apply(m, x)
  assert y.shape == (5, 4)
  y1 = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
  y2 = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(y1, y2)  # dropout is active in training
  np.testing.assert_allclose(m.apply(v, x, train=False), y)  # and off in evaluation


def test_embedding_and_heads():
  e = Embedding(num_embeddings=12, features=7)
  _, y = _init_apply(e, jnp.array([[0], [11], [3]]))
  assert y.shape == (3, 7)
  x = jnp.ones((4, 20))
  _, y = _init_apply(LinearHead(out_dim=15), x)
  assert y.shape == (4, 15)
  _, y = _init_apply(LinearHead(out_dim=1, squeeze=True), x)
  assert y.shape == (4,)
  _, y = _init_apply(MLPHead(out_dim=9, hidden=(32,), dropout=0.25), x)
  assert y.shape == (4, 9)


@pytest.mark.parametrize("exp", range(1, 9))
def test_treesat_experiments_build(exp):
  config = treesat_config.get_config(f"exp={exp},tiny")
  model = build_model(config)
  inputs = {
    "aerial": jnp.zeros((2, 32, 32, 4)),
    "s1": jnp.zeros((2, 6, 6, 3)),
    "s2": jnp.zeros((2, 6, 6, 12)),
    "age": jnp.zeros((2, 1)),
  }
  inputs = {k: v for k, v in inputs.items() if k in config.inputs}
  v = model.init({"params": jax.random.key(0)}, inputs, train=False)
  outputs, inter = model.apply(v, inputs, train=False)
  assert set(outputs) == set(config.tasks)
  for t, tcfg in config.tasks.items():
    expected = (2,) if tcfg.kind == "regression" else (2, tcfg.num_classes)
    assert outputs[t].shape == expected, t
  assert set(inter) == {f"enc/{m}" for m in config.inputs} | {"fused"}
  assert inter["fused"].shape[1] == sum(inter[f"enc/{m}"].shape[1] for m in config.inputs)


def test_paper_fused_width_is_1536():
  """Appendix B.3: the L3 head maps the 1536-d fused features (512 ResNet + 2 × 512 MLP)."""
  config = treesat_config.get_config("exp=7")
  model = build_model(config)
  inputs = {
    "aerial": jnp.zeros((1, 64, 64, 4)),
    "s1": jnp.zeros((1, 6, 6, 3)),
    "s2": jnp.zeros((1, 6, 6, 12)),
  }
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))
  assert v["params"]["heads_l3"]["out"]["kernel"].shape == (1536, 15)
  assert v["params"]["heads_l2"]["dense1"]["kernel"].shape[0] == 1536


@pytest.mark.parametrize(
  "shape,kernel,stride,padding",
  [
    ((2, 2, 2, 8), (3, 3), 1, ((1, 1), (1, 1))),  # ResNet-18's last stage at 64 px: im2col path
    ((2, 4, 4, 8), (3, 3), 2, ((1, 1), (1, 1))),  # strided, 2×2 output
    ((2, 4, 4, 8), (1, 1), 2, "SAME"),  # projection shortcut
    ((2, 9, 9, 3), (3, 3), 1, ((1, 1), (1, 1))),  # 81 output pixels: plain lax path
  ],
)
def test_small_output_conv_matches_lax(shape, kernel, stride, padding):
  """`encoders.conv_general_dilated` (im2col for tiny outputs) equals lax's convolution, values
  and gradients with respect to input and kernel."""
  from jax import lax

  from mtljax.models import encoders

  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), (*kernel, shape[-1], 5))
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dn)
  ours = lambda x, w: encoders.conv_general_dilated(
    x, w, (stride, stride), padding, dimension_numbers=dn
  )
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
