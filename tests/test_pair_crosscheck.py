"""Blur IG (`mtljax.explain.blur_ig`, registered as "blur_ig") against PAIR `saliency` 0.2.1's
`BlurIG` on the same JAX model: PAIR's framework-agnostic `call_model_function` takes the JAX
gradient, one example at a time; float64 on both sides."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

saliency_core = pytest.importorskip("saliency.core", reason="the PAIR cross-check needs saliency")

from mtljax.explain import attributions  # noqa: E402


class _CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(4, (3, 3), name="conv1")(x))
    return nn.Dense(3, name="fc")(x.mean(axis=(1, 2)))


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def test_blur_ig_agrees_with_pair_saliency():
  x = jax.random.normal(jax.random.key(0), (2, 9, 7, 2), jnp.float64)
  model = _CNN()
  params = model.init(jax.random.key(1), x)
  target = jnp.array([1, 2])

  def f(p, inputs):
    return model.apply(p, inputs["img"])[jnp.arange(inputs["img"].shape[0]), target]

  got = attributions.get_method("blur_ig").fn(
    f, params, {"img": x}, modality="img", steps=12, max_sigma=5.0, batch_steps=5
  )
  blur = saliency_core.BlurIG()
  for b in range(2):

    def call_model(xs, call_model_args=None, expected_keys=None, b=b):
      g = jax.grad(lambda im: model.apply(params, im)[:, int(target[b])].sum())(jnp.asarray(xs))
      return {saliency_core.base.INPUT_OUTPUT_GRADIENTS: np.asarray(g)}

    want = blur.GetMask(np.asarray(x[b]), call_model, steps=12, max_sigma=5.0, batch_size=4)
    np.testing.assert_allclose(got[b], want, rtol=1e-8, atol=1e-12)
