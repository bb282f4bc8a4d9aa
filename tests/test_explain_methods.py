"""Attribution methods, score functions and ensemble attribution on tiny models with known answers."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax import attribution as explain
from mtljax.attribution import ensemble, layers, methods, targets


def _jit(method, /, *fixed, **options):
  """`method(*fixed, *args, **options)` jitted over the remaining positional args."""
  return jax.jit(functools.partial(method, *fixed, **options))


def _conv(x, w):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _init(key, dtype=jnp.float32):
  ks = jax.random.split(key, 5)
  return {
    "conv": 0.5 * jax.random.normal(ks[0], (3, 3, 2, 4), dtype),
    "bias": 0.1 * jax.random.normal(ks[1], (4,), dtype),
    "head": jax.random.normal(ks[2], (4,), dtype),
    "tab": jax.random.normal(ks[3], (3,), dtype),
    "emb": jax.random.normal(ks[4], (5,), dtype),
  }


def _score(params, inputs):
  """A smooth multimodal conv+dense model: `{"img" [B,8,8,2], "tab" [B,3], "cat" [B] int}` → [B]."""
  h = jnp.tanh(_conv(inputs["img"], params["conv"]) + params["bias"]).mean(axis=(1, 2))
  return (
    jax.nn.softplus(h) @ params["head"]
    + jnp.tanh(inputs["tab"] @ params["tab"])
    + params["emb"][inputs["cat"]]
  )


def _inputs(key, dtype=jnp.float32, batch=2):
  ki, kt = jax.random.split(key)
  return {
    "img": jax.random.normal(ki, (batch, 8, 8, 2), dtype),
    "tab": jax.random.normal(kt, (batch, 3), dtype),
    "cat": jnp.arange(batch) % 5,
  }


def _finite_difference(f, params, inputs, leaf, eps=1e-5):
  """Central differences `d f_b / d inputs[leaf]` for every element, `[B, ...]`."""
  x = inputs[leaf]
  size = int(np.prod(x.shape[1:]))
  basis = jnp.eye(size, dtype=x.dtype).reshape((size, 1) + x.shape[1:])

  def at(d):
    return f(params, {**inputs, leaf: x + d})

  diff = (jax.vmap(at)(eps * basis) - jax.vmap(at)(-eps * basis)) / (2 * eps)  # [size, B]
  return diff.T.reshape(x.shape)


def test_saliency_and_input_x_gradient_match_finite_differences():
  with jax.enable_x64(True):
    params, inputs = _init(jax.random.key(0), jnp.float64), _inputs(jax.random.key(1), jnp.float64)
    sal = _jit(explain.saliency, _score, absolute=False)(params, inputs)
    sal_abs = _jit(explain.saliency, _score)(params, inputs)
    ixg = _jit(explain.input_x_gradient, _score)(params, inputs)
    for leaf in ("img", "tab"):
      fd = _finite_difference(_score, params, inputs, leaf)
      np.testing.assert_allclose(sal[leaf], fd, rtol=1e-6, atol=1e-9)
      np.testing.assert_allclose(sal_abs[leaf], np.abs(fd), rtol=1e-6, atol=1e-9)
      np.testing.assert_allclose(ixg[leaf], inputs[leaf] * fd, rtol=1e-6, atol=1e-9)
    # Integer leaves are held fixed: zero attribution, same shape.
    assert sal["cat"].shape == (2,) and not np.any(sal["cat"])
    assert jax.tree.structure(ixg) == jax.tree.structure(inputs)


def _total(attr):
  return sum(a.reshape(a.shape[0], -1).sum(axis=1) for a in jax.tree.leaves(attr))


def test_integrated_gradients_completeness_and_rules():
  with jax.enable_x64(True):
    params, inputs = _init(jax.random.key(2), jnp.float64), _inputs(jax.random.key(3), jnp.float64)
    baseline = {"img": 0.5, "tab": jnp.ones(3), "cat": 0}
    x_base = {
      **inputs,
      "img": jnp.full_like(inputs["img"], 0.5),
      "tab": jnp.ones_like(inputs["tab"]),
    }
    target = _score(params, inputs) - _score(params, x_base)
    scale = float(jnp.max(jnp.abs(target)))

    def error(steps, method):
      attr = _jit(
        explain.integrated_gradients, _score, baseline=baseline, steps=steps, method=method
      )(params, inputs)
      return float(jnp.max(jnp.abs(_total(attr) - target)))

    for method in methods.IG_METHODS:
      errs = [error(n, method) for n in (4, 16, 64)]
      assert errs[0] > errs[1] > errs[2], (method, errs)
      # First-order rules (left, right) shrink like 1/n, the others at least like 1/n².
      assert errs[2] < (2e-2 if method in ("riemann_left", "riemann_right") else 1e-3) * scale, (
        method,
        errs,
      )
    assert error(8, "gausslegendre") < 1e-2 * error(8, "riemann_left")


def test_integrated_gradients_riemann_middle_is_the_explicit_formula():
  params, inputs = _init(jax.random.key(4)), _inputs(jax.random.key(5))
  n = 12
  saliency = _jit(explain.saliency, _score, absolute=False)
  grads = [
    saliency(
      params, jax.tree.map(lambda x: x * (k + 0.5) / n if x.dtype == jnp.float32 else x, inputs)
    )
    for k in range(n)
  ]
  expected = jax.tree.map(lambda x, *g: x * jnp.mean(jnp.stack(g), axis=0), inputs, *grads)
  ig = _jit(explain.integrated_gradients, _score, steps=n, method="riemann_middle")(params, inputs)
  chunked = _jit(explain.integrated_gradients, _score, steps=n, batch_steps=5)(params, inputs)
  for leaf in ("img", "tab"):
    np.testing.assert_allclose(ig[leaf], expected[leaf], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked[leaf], expected[leaf], rtol=1e-5, atol=1e-6)


def test_integration_points():
  for method in methods.IG_METHODS:
    alphas, weights = explain.integration_points(method, 7)
    assert alphas.shape == weights.shape == (7,)
    assert np.all((alphas >= 0) & (alphas <= 1))
    np.testing.assert_allclose(weights.sum(), 1.0)
  np.testing.assert_allclose(
    explain.integration_points("riemann_middle", 4)[0], [0.125, 0.375, 0.625, 0.875]
  )
  with pytest.raises(ValueError, match="simpson"):
    explain.integration_points("simpson", 4)


def test_smoothgrad_without_noise_is_the_wrapped_method():
  params, inputs = _init(jax.random.key(6)), _inputs(jax.random.key(7))
  rng = jax.random.key(8)
  plain = _jit(explain.input_x_gradient, _score)(params, inputs)

  def smooth_fn(**options):
    return _jit(
      explain.smoothgrad, explain.input_x_gradient, _score, samples=3, stdev=0.0, **options
    )(params, inputs, rng)

  smooth = smooth_fn()
  squared = smooth_fn(kind="smoothgrad_sq", batch_samples=2)
  var = smooth_fn(kind="vargrad")
  for leaf in ("img", "tab"):
    np.testing.assert_allclose(smooth[leaf], plain[leaf], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(squared[leaf], plain[leaf] ** 2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(var[leaf], 0.0, atol=1e-6)
  noisy = _jit(explain.smoothgrad, explain.input_x_gradient, _score, samples=4)(params, inputs, rng)
  assert not np.allclose(noisy["img"], plain["img"], rtol=1e-3)


def test_gradient_shap_converges_to_integrated_gradients():
  params, inputs = _init(jax.random.key(9)), _inputs(jax.random.key(10))
  ig = _jit(explain.integrated_gradients, _score, steps=64)(params, inputs)
  shap = _jit(explain.gradient_shap, _score, samples=4096)(params, inputs, jax.random.key(11))
  for leaf in ("img", "tab"):
    rel = jnp.linalg.norm(shap[leaf] - ig[leaf]) / jnp.linalg.norm(ig[leaf])
    assert rel < 0.05, (leaf, rel)
  # Several baselines: the expectation averages IG over them.
  baselines = {
    "img": jnp.stack([jnp.zeros((8, 8, 2)), jnp.ones((8, 8, 2))]),
    "tab": jnp.zeros((2, 3)),
    "cat": jnp.zeros((2,), int),
  }
  shap2 = _jit(explain.gradient_shap, _score, baselines=baselines, samples=4096)(
    params, inputs, jax.random.key(12)
  )
  ig_ones = _jit(
    explain.integrated_gradients, _score, steps=64, baseline={"img": 1.0, "tab": 0.0, "cat": 0}
  )(params, inputs)
  ig_mean = jax.tree.map(lambda a, b: (a + b) / 2, ig, ig_ones)
  rel = jnp.linalg.norm(shap2["img"] - ig_mean["img"]) / jnp.linalg.norm(ig_mean["img"])
  assert rel < 0.1, rel


def test_occlusion_on_a_linear_model():
  rng = np.random.default_rng(0)
  w_img, w_tab = rng.normal(size=(6, 6, 2)), rng.normal(size=(3,))
  inputs = {
    "img": jnp.asarray(rng.normal(size=(2, 6, 6, 2)), jnp.float32),
    "tab": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
  }

  def f(params, x):
    return jnp.sum(x["img"] * params[0], axis=(1, 2, 3)) + x["tab"] @ params[1]

  params = (jnp.asarray(w_img, jnp.float32), jnp.asarray(w_tab, jnp.float32))
  attr = _jit(explain.occlusion, f, window=(3, 3), stride=(2, 2), batch_windows=4)(params, inputs)
  # Windows start at 0, 2, 4 along each axis; the last one is clipped to the border.
  contrib = np.asarray(inputs["img"]) * w_img  # occluding to 0 removes w * x
  expected = np.zeros((2, 6, 6))
  counts = np.zeros((6, 6))
  for y0 in (0, 2, 4):
    for x0 in (0, 2, 4):
      drop = contrib[:, y0 : y0 + 3, x0 : x0 + 3].sum(axis=(1, 2, 3))
      expected[:, y0 : y0 + 3, x0 : x0 + 3] += drop[:, None, None]
      counts[y0 : y0 + 3, x0 : x0 + 3] += 1
  expected = np.repeat((expected / counts)[..., None], 2, axis=-1)
  np.testing.assert_allclose(attr["img"], expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(attr["tab"], np.asarray(inputs["tab"]) * w_tab, rtol=1e-5, atol=1e-6)


def _hot_spot_layer_fn(params, inputs, delta):
  """Activation = 2×2 average pool of the image `[B, 4, 4, C]`, score = linear head on its mean."""
  x = inputs["img"]
  b, h, w, c = x.shape
  act = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  if delta is not None:
    act = act + delta
  return jnp.tanh(act).mean(axis=(1, 2)) @ params, act


def test_grad_cam_localises_a_hot_spot():
  img = np.zeros((1, 8, 8, 2), np.float32)
  img[0, 2:4, 4:6, :] = [1.0, -1.0]  # cell (1, 2) of the 4×4 activation
  inputs = {"img": jnp.asarray(img)}
  params = jnp.array([1.0, -0.5])
  cam = _jit(explain.grad_cam, _hot_spot_layer_fn)(params, inputs)
  assert cam.shape == (1, 4, 4)
  assert np.unravel_index(np.argmax(cam[0]), (4, 4)) == (1, 2)
  # By hand: alpha_c = mean over 16 cells of d mean_hw tanh(A) / dA = v_c (1 - tanh²A) / 16 / 16.
  act = np.asarray(_hot_spot_layer_fn(params, inputs, None)[1])
  alpha = (np.asarray(params) * (1 - np.tanh(act) ** 2) / 16).mean(axis=(1, 2))
  expected = np.maximum(np.einsum("bhwc,bc->bhw", act, alpha), 0)
  np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-7)
  up = _jit(explain.grad_cam, _hot_spot_layer_fn, upsample_to=(8, 8))(params, inputs)
  assert up.shape == (1, 8, 8)
  assert up[0, 2:4, 4:6].min() == up.max()


def test_guided_relu_backward_rule():
  x = jnp.array([-1.0, 2.0, 3.0, -4.0, 5.0])
  g = jnp.array([1.0, -1.0, 2.0, 3.0, 0.5])
  out, vjp = jax.vjp(explain.guided_relu, x)
  np.testing.assert_array_equal(out, [0.0, 2.0, 3.0, 0.0, 5.0])
  np.testing.assert_array_equal(vjp(g)[0], [0.0, 0.0, 2.0, 0.0, 0.5])


def test_guided_backprop_and_guided_grad_cam():
  params = jnp.array([1.0, -0.5])

  def guided_f(p, x):
    return _hot_spot_layer_fn(p, {"img": explain.guided_relu(x["img"])}, None)[0]

  inputs = {"img": jax.random.normal(jax.random.key(13), (2, 8, 8, 2))}

  def plain_f(p, x):
    return _hot_spot_layer_fn(p, {"img": jax.nn.relu(x["img"])}, None)[0]

  gb = _jit(explain.guided_backprop, guided_f)(params, inputs)["img"]
  plain = _jit(explain.saliency, plain_f, absolute=False)(params, inputs)["img"]
  # The gradient reaching the ReLU is v_c times a positive factor, so guided backprop keeps the
  # plain gradient where x > 0 (as ReLU's own gradient) and v_c > 0, and zeroes the rest.
  keep = (inputs["img"] > 0) & (params > 0)
  np.testing.assert_allclose(gb, jnp.where(keep, plain, 0.0), rtol=1e-6, atol=1e-8)
  ggc = _jit(explain.guided_grad_cam, guided_f, _hot_spot_layer_fn, modality="img")(params, inputs)
  cam = _jit(explain.grad_cam, _hot_spot_layer_fn, upsample_to=(8, 8))(params, inputs)
  assert ggc.shape == inputs["img"].shape
  np.testing.assert_allclose(ggc, gb * cam[..., None], rtol=1e-6)


def test_lime_finds_the_relevant_grid_cell():
  x = jax.random.uniform(jax.random.key(14), (2, 16, 16, 3), minval=0.5, maxval=1.0)

  def f(params, inputs):  # depends only on grid cell (1, 2) of a 4×4 grid
    return params * inputs["img"][:, 4:8, 8:12].sum(axis=(1, 2, 3)) + inputs["tab"].sum(axis=1)

  inputs = {"img": x, "tab": jnp.ones((2, 3))}
  run = jax.jit(
    lambda p, x, r: explain.lime(
      f, p, x, r, modality="img", grid=(4, 4), num_samples=128, batch_size=32
    )
  )
  coef = run(2.0, inputs, jax.random.key(15))
  assert coef.shape == (2, 16, 16)
  segs = explain.grid_segments(16, 16, (4, 4))
  for b in range(2):
    per_cell = np.array([coef[b][segs == s].mean() for s in range(16)])
    assert np.argmax(per_cell) == 6
    assert per_cell[6] > 10 * np.abs(np.delete(per_cell, 6)).max()
  # Explicit (superpixel) segments give each pixel its segment's coefficient.
  sp = explain.superpixel_segments(np.asarray(x), n_segments=8)
  assert sp.shape == (2, 16, 16) and sp.min() == 0
  coef_sp = _jit(explain.lime, f, modality="img", segments=sp, num_samples=64)(
    2.0, inputs, jax.random.key(16)
  )
  for b in range(2):
    for s in np.unique(sp[b]):
      assert np.ptp(np.asarray(coef_sp[b])[sp[b] == s]) == 0


def test_grid_segments():
  segs = explain.grid_segments(6, 9, (2, 3))
  assert segs.shape == (6, 9)
  np.testing.assert_array_equal(segs[0], [0, 0, 0, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(segs[:, 0], [0, 0, 0, 3, 3, 3])


# --- Flax layer functions -----------------------------------------------------------------------


class _TinyCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(3, (3, 3), name="conv1")(x))
    x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2), name="conv2")(x))
    return {"cls": nn.Dense(3, name="head")(x.mean(axis=(1, 2)))}


def test_flax_layer_fn_grad_cam_matches_a_split_model():
  model = _TinyCNN()
  x = jax.random.normal(jax.random.key(17), (2, 8, 8, 2))
  params = model.init(jax.random.key(18), x)["params"]
  score = targets.make_score_fn(
    lambda p, inp: model.apply({"params": p}, inp["img"]), "cls", "classification", 1, num_outputs=3
  )
  inputs = {"img": x}
  assert layers.module_paths(score, params, inputs) == ["conv1", "conv2", "head"]
  layer_fn = layers.flax_layer_fn(score, "conv2")

  def manual(p, inp, delta):
    h = nn.relu(nn.Conv(3, (3, 3)).apply({"params": p["conv1"]}, inp["img"]))
    act = nn.Conv(4, (3, 3), strides=(2, 2)).apply({"params": p["conv2"]}, h)
    if delta is not None:
      act = act + delta
    return nn.Dense(3).apply({"params": p["head"]}, nn.relu(act).mean(axis=(1, 2)))[:, 1], act

  cam = jax.jit(lambda p, inp: explain.grad_cam(layer_fn, p, inp, upsample_to=(8, 8)))(
    params, inputs
  )
  np.testing.assert_allclose(
    cam, _jit(explain.grad_cam, manual, upsample_to=(8, 8))(params, inputs), rtol=1e-5, atol=1e-7
  )
  with pytest.raises(ValueError, match=r"'conv9'.*conv1, conv2, head"):
    explain.grad_cam(layers.flax_layer_fn(score, "conv9"), params, inputs)


class _TwoBranch(nn.Module):
  """An MLP encoder on "tab" [B, 2, 3] (its first Dense is affine in the input) beside a conv
  branch on "img", fused by concatenation."""

  @nn.compact
  def __call__(self, inputs):
    from mtljax.models import encoders

    t = encoders.MLPEncoder(hidden=(6, 5), dropout=0.0, name="mlp")(inputs["tab"], train=False)
    h = nn.relu(nn.Conv(3, (3, 3), name="conv")(inputs["img"])).mean(axis=(1, 2))
    return nn.Dense(3, name="head")(jnp.concatenate([t, h], axis=-1))


def test_integrated_gradients_split_after_an_affine_layer_is_exact():
  model = _TwoBranch()
  with jax.enable_x64(True):
    ks = jax.random.split(jax.random.key(30), 3)
    inputs = {
      "img": jax.random.normal(ks[0], (3, 8, 8, 2), jnp.float64),
      "tab": jax.random.normal(ks[1], (3, 2, 3), jnp.float64),
    }
    params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(ks[2], inputs))
    score = targets.make_score_fn(
      lambda p, inp: {"cls": model.apply(p, inp)}, "cls", "classification", 2, num_outputs=3
    )
    from mtljax.models import encoders

    assert encoders.affine_input_layer("mlp", {"hidden": (6, 5)}) == "dense1"  # the run's split
    assert encoders.affine_input_layer("mlp", {"hidden": ()}) is None  # no Dense, no split
    split = layers.affine_split(score, "mlp/dense1")
    z = jax.jit(split[0])(params, inputs)["mlp/dense1"]
    assert z.shape == (3, 6)
    np.testing.assert_allclose(
      jax.jit(split[1])(params, inputs, {"mlp/dense1": z}), score(params, inputs), rtol=1e-6
    )
    baseline = {"img": 0.25, "tab": -0.5}
    for method, steps, chunk in (("riemann_middle", 9, None), ("gausslegendre", 7, 3)):
      options = dict(baseline=baseline, steps=steps, method=method, batch_steps=chunk)
      plain = _jit(explain.integrated_gradients, score, **options)(params, inputs)
      fast = _jit(explain.integrated_gradients, score, split=split, **options)(params, inputs)
      for leaf in ("img", "tab"):
        assert float(jnp.max(jnp.abs(plain[leaf]))) > 1e-3
        # MLPEncoder computes in float32, so the two orders of summation agree to float32.
        np.testing.assert_allclose(fast[leaf], plain[leaf], rtol=1e-5, atol=1e-8)
    # The split skips the first Dense at every node: one program with fewer flops.
    flops = [
      jax.jit(functools.partial(explain.integrated_gradients, score, steps=16, split=s))
      .lower(params, inputs)
      .compile()
      .cost_analysis()["flops"]
      for s in (None, split)
    ]
    assert flops[1] < flops[0], flops
    with pytest.raises(ValueError, match=r"'mlp/dense9'.*mlp/dense1"):
      layers.affine_split(score, ["mlp/dense9"])[0](params, inputs)


class _ResNetClassifier(nn.Module):
  """A tiny float64 ResNet (stem conv → BatchNorm → ReLU → max-pool → basic blocks) with a head."""

  @nn.compact
  def __call__(self, x):
    from mtljax.models import encoders

    h = encoders.ResNet(stage_sizes=(1, 1), width=4, stem_kernel=3, dtype="float64", name="resnet")(
      x, train=False
    )
    return nn.Dense(3, name="head", param_dtype=jnp.float64)(h)


def test_integrated_gradients_split_after_a_resnet_stem_is_exact():
  """The explain run splits IG after a ResNet's stem conv (linear in the image): same
  attributions in float64 as the plain computation, with fewer flops; a split after a nonlinear
  block gives different ones (what the test would catch if the split point were wrong)."""
  model = _ResNetClassifier()
  with jax.enable_x64(True):
    ks = jax.random.split(jax.random.key(31), 4)
    x = jax.random.normal(ks[0], (2, 12, 12, 3), jnp.float64)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(ks[1], x))
    stats = variables["batch_stats"]["resnet"]["stem_bn"]  # eval-mode BN: a non-trivial affine
    stats["mean"] = 0.3 * jax.random.normal(ks[2], stats["mean"].shape, jnp.float64)
    stats["var"] = 0.5 + jax.random.uniform(ks[3], stats["var"].shape, jnp.float64)
    score = targets.make_score_fn(
      lambda p, inp: {"cls": model.apply(p, inp)}, "cls", "classification", 1, num_outputs=3
    )
    options = dict(baseline=0.2, steps=8, method="riemann_middle")
    plain = _jit(explain.integrated_gradients, score, **options)(variables, x)
    assert float(jnp.max(jnp.abs(plain))) > 1e-3
    from mtljax.models import encoders

    # The layer the explain run splits a ResNet-encoded modality at.
    split = layers.affine_split(score, "resnet/" + encoders.affine_input_layer("resnet"))
    fast = _jit(explain.integrated_gradients, score, split=split, **options)(variables, x)
    np.testing.assert_allclose(fast, plain, rtol=1e-9, atol=1e-12)
    wrong = _jit(
      explain.integrated_gradients,
      score,
      **options,
      split=layers.affine_split(score, "resnet/stage1_block1"),
    )(variables, x)
    assert float(jnp.max(jnp.abs(wrong - plain))) > 1e-3 * float(jnp.max(jnp.abs(plain)))
    flops = [
      jax.jit(functools.partial(explain.integrated_gradients, score, split=s, **options))
      .lower(variables, x)
      .compile()
      .cost_analysis()["flops"]
      for s in (None, split)
    ]
    assert flops[1] < flops[0], flops


# --- Score functions ----------------------------------------------------------------------------


def test_make_score_fn_kinds():
  rng = np.random.default_rng(1)
  out = {
    "cls": rng.normal(size=(2, 4)),
    "attr": rng.normal(size=(2, 3)),
    "age": rng.normal(size=(2,)),
    "vec": rng.normal(size=(2, 2)),
    "seg": rng.normal(size=(2, 5, 5, 3)),
    "dem": rng.normal(size=(2, 5, 5)),
  }
  apply_fn = lambda p, x: {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}  # noqa: E731
  call = lambda *a, **k: np.asarray(targets.make_score_fn(apply_fn, *a, **k)(None, None))  # noqa
  np.testing.assert_allclose(
    call("cls", "classification", 2, num_outputs=4), out["cls"][:, 2], rtol=1e-6
  )
  np.testing.assert_allclose(
    call("attr", "multilabel", 0, num_outputs=3), out["attr"][:, 0], rtol=1e-6
  )
  np.testing.assert_allclose(call("age", "regression", 0, num_outputs=1), out["age"], rtol=1e-6)
  np.testing.assert_allclose(
    call("vec", "regression", 1, num_outputs=2), out["vec"][:, 1], rtol=1e-6
  )
  np.testing.assert_allclose(
    call("seg", "segmentation", 1, num_outputs=3), out["seg"][..., 1].sum(axis=(1, 2)), rtol=1e-6
  )
  region = np.zeros((5, 5), bool)
  region[1:3, 2:4] = True
  np.testing.assert_allclose(
    call("seg", "segmentation", 2, num_outputs=3, region=region),
    out["seg"][:, 1:3, 2:4, 2].sum(axis=(1, 2)),
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    call("dem", "dense_regression", 0, num_outputs=1, region=np.stack([region, ~region])),
    [out["dem"][0][region].sum(), out["dem"][1][~region].sum()],
    rtol=1e-6,
  )
  # One index per example (the explain run's true labels), also for dense outputs.
  np.testing.assert_allclose(
    call("cls", "classification", jnp.array([3, 1]), num_outputs=4),
    [out["cls"][0, 3], out["cls"][1, 1]],
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    call("seg", "segmentation", jnp.array([0, 2]), num_outputs=3),
    [out["seg"][0, ..., 0].sum(), out["seg"][1, ..., 2].sum()],
    rtol=1e-5,
    atol=1e-6,
  )  # float32 sums of 25 pixels


def test_make_score_fn_errors():
  apply_fn = lambda p, x: {"cls": jnp.zeros((2, 4))}  # noqa: E731
  with pytest.raises(ValueError, match=r"'cls'.*index 4.*\[0, 3\]"):
    targets.make_score_fn(apply_fn, "cls", "classification", 4, num_outputs=4)
  with pytest.raises(ValueError, match=r"'cls'.*index -1"):
    targets.make_score_fn(apply_fn, "cls", "classification", -1, num_outputs=4)
  with pytest.raises(ValueError, match="unknown kind 'ordinal'"):
    targets.make_score_fn(apply_fn, "cls", "ordinal", 0, num_outputs=4)
  with pytest.raises(ValueError, match=r"unknown task 'species'.*index 1.*\['cls'\]"):
    targets.make_score_fn(apply_fn, "species", "classification", 1, num_outputs=4)(None, None)
  with pytest.raises(ValueError, match=r"'cls'.*\(2, 4\)"):  # the model has 4 classes, not 6
    targets.make_score_fn(apply_fn, "cls", "classification", 5, num_outputs=6)(None, None)


# --- Registry and ensembles ---------------------------------------------------------------------


def test_registry_and_unknown_method():
  assert set(explain.METHODS) == {
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "gradient_shap",
    "occlusion",
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "lime",
    # PAIR's methods and the model-independent controls of the sanity checks
    "blur_ig",
    "guided_ig",
    "xrai",
    "edges",
    "random_map",
  }
  assert explain.get_method("lime").needs_rng and explain.get_method("lime").needs_modality
  assert explain.get_method("grad_cam").needs_layer_fn and not explain.get_method("grad_cam").signed
  assert explain.get_method("integrated_gradients").fn is explain.integrated_gradients
  with pytest.raises(ValueError, match=r"'shap'.*gradient_shap.*saliency"):
    explain.get_method("shap")


def test_ensemble_strategies_agree():
  members = 3
  stacked = jax.vmap(_init)(jax.random.split(jax.random.key(19), members))
  inputs = _inputs(jax.random.key(20))
  rng = jax.random.key(21)

  def attribute(p, x):
    return explain.gradient_shap(_score, p, x, rng, samples=2)

  results = {
    s: ensemble.ensemble_attribute(attribute, stacked, inputs, strategy=s)
    for s in ("vmap", "map", "loop", "tune")
  }
  results["chunked"] = ensemble.ensemble_attribute(
    attribute, stacked, inputs, strategy="vmap", member_chunk=2
  )
  per_member, mean = results["loop"]
  for leaf in ("img", "tab"):
    assert per_member[leaf].shape == (members,) + inputs[leaf].shape
    manual = np.mean(
      [
        jax.jit(attribute)(jax.tree.map(lambda a, i=i: a[i], stacked), inputs)[leaf]
        for i in range(members)
      ],
      axis=0,
    )
    np.testing.assert_allclose(mean[leaf], manual, rtol=1e-5, atol=1e-6)
    for pm, m in results.values():
      np.testing.assert_allclose(pm[leaf], per_member[leaf], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(m[leaf], mean[leaf], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unknown ensemble strategy 'pmap'"):
    ensemble.ensemble_attribute(attribute, stacked, inputs, strategy="pmap")
  # "tune" timed the candidates once for these shapes and remembers its pick.
  tuned = [k for k in ensemble._COMPILED[attribute] if k[0] == "tuned"]
  assert len(tuned) == 1 and ensemble._COMPILED[attribute][tuned[0]] in ("loop", "vmap")


def test_auto_strategy_per_backend():
  dense = {"w": jnp.zeros((4, 8, 3))}
  conv = {"k": jnp.zeros((4, 3, 3, 2, 5)), "w": jnp.zeros((4, 8, 3))}
  assert ensemble.resolve_strategy("auto", conv, backend="cpu") == "loop"
  assert ensemble.resolve_strategy("auto", dense, backend="cpu") == "map"
  assert ensemble.resolve_strategy("auto", dense, backend="tpu") == "vmap"
  assert ensemble.resolve_strategy("auto", conv, backend="gpu") == "vmap"
  assert ensemble.resolve_strategy("map", conv, backend="cpu") == "map"


def test_param_share_counts_the_bytes_a_member_writes():
  # x * w writes 8·16 float32 (512 B), sin another 512 B; a scan of length 5 writes its body's
  # 512 B five times plus its carry out: the parameters (w, 512 B) are 1/2 and 1/6 of that.
  stacked = {"w": jnp.ones((3, 8, 16))}
  x = jnp.ones((8, 16))
  share = ensemble.param_share(lambda p, x: jnp.sin(x * p["w"]), stacked, x)
  assert share == pytest.approx(512 / 1024)

  def scanned(p, x):
    return jax.lax.scan(lambda c, _: (jnp.sin(c), None), x * p["w"], length=5)[0]

  assert ensemble.param_share(scanned, stacked, x) == pytest.approx(512 / (512 + 5 * 512 + 512))


def test_auto_with_onednn_loops_when_a_member_is_mostly_work():
  from mtljax.models import convolution, onednn

  if not onednn.available():
    pytest.skip("oneDNN's convolutions do not load here (mtljax.models.onednn)")
  heavy_kernel = {"k": jnp.ones((4, 3, 3, 64, 64))}  # 147 KiB per member
  light_kernel = {"k": jnp.ones((4, 1, 1, 1, 2))}

  def attribute(p, x):  # a member's work: the input's size times 20 passes, then the kernel
    for _ in range(20):
      x = jnp.sin(x)
    return x * jnp.sum(p["k"])

  x = jnp.ones((64, 32, 32, 3))  # 768 KiB per pass
  with convolution.use("onednn"):
    pick = functools.partial(ensemble.resolve_strategy, "auto", backend="cpu", inputs=x)
    assert pick(light_kernel, attribute_fn=attribute) == "loop"  # share ≈ 0
    assert pick(heavy_kernel, attribute_fn=lambda p, x: x[:1] * jnp.sum(p["k"])) == "vmap"
    assert pick(light_kernel) == "vmap"  # no function to weigh: the kernels' one call
    per_member, mean = ensemble.ensemble_attribute(attribute, light_kernel, x)
    # Inside an outer trace the loop is `lax.map` (a scan): not E unrolled copies of the member.
    traced = jax.make_jaxpr(lambda x: ensemble.ensemble_attribute(attribute, light_kernel, x)[1])
    eqns = traced(x).jaxpr.eqns
    assert [e.primitive.name for e in eqns].count("sin") == 0 and "scan" in str(traced(x))
  picked = [v for k, v in ensemble._COMPILED[attribute].items() if k[0] == "auto"]
  assert picked == ["loop"] and per_member.shape == (4, *x.shape)
  np.testing.assert_allclose(mean, attribute(jax.tree.map(lambda p: p[0], light_kernel), x))


def test_heatmaps_and_normalisation():
  attr = np.zeros((2, 1, 3, 3, 2))
  attr[0, 0, 1, 1] = [2.0, -2.0]
  attr[1, 0, 0, 0] = [-1.0, -1.0]
  attr[1, 0, 2, 2] = [0.5, 0.0]
  np.testing.assert_allclose(ensemble.to_heatmap(attr, reduce="sum", batch_dims=2)[0, 0, 1, 1], 0)
  np.testing.assert_allclose(ensemble.to_heatmap(attr[0], reduce="max_abs")[0, 1, 1], 2.0)
  assert ensemble.to_heatmap(attr[:, :, :, :, 0], batch_dims=2).shape == (2, 1, 3, 3)
  maps, mean = ensemble.ensemble_heatmaps(attr, reduce="abs_sum", signed=False)
  assert maps.shape == (2, 1, 3, 3) and mean.shape == (1, 3, 3)
  np.testing.assert_allclose(maps[1, 0, 0, 0], 1.0)
  np.testing.assert_allclose(maps[1, 0, 2, 2], 0.25)
  np.testing.assert_allclose(mean[0, 1, 1], 1.0)  # (1 + 0) / 2 renormalised by max 0.5
  np.testing.assert_allclose(mean[0, 2, 2], 0.25)
  signed = ensemble.normalize(np.array([[[-4.0, 2.0], [0.0, 1.0]]]), signed=True)
  np.testing.assert_allclose(signed, [[[-1.0, 0.5], [0.0, 0.25]]])
  assert np.all(ensemble.normalize(np.zeros((1, 2, 2)), signed=False) == 0)
