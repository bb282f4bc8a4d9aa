"""The trust metrics against Quantus 0.6.0 on twin PyTorch/JAX models with the same weights.

A tiny CNN (conv 3x3 1→4, ReLU, conv 3x3 stride 2 4→5, ReLU, global average pool, dense 5→3)
exists as a linen module (NHWC, HWIO) and a torch module (NCHW, OIHW). Images have one channel, so
Quantus's features are mtljax's pixels and both sort the same values. Quantus's conventions are set
to match (no normalisation, the same |.|, its "black" baseline = mtljax's "min"), and every random
draw Quantus makes (subsets, noise, off-class labels, randomised weights) is reproduced or passed
to both sides. Agreement: 1e-5 relative (float32 on both sides, as Quantus runs torch in float32).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Quantus cross-check needs PyTorch")
quantus = pytest.importorskip("quantus", reason="the Quantus cross-check needs Quantus 0.6.0")

from mtljax.attribution.trust import (  # noqa: E402
  faithfulness,
  map_metrics,
  ops,
  robustness,
  sanity,
)

B, S, CLASSES = 4, 8, 3
RTOL = 1e-5


class _JaxCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="conv1")(x))
    x = nn.relu(nn.Conv(5, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), name="conv2")(x))
    return nn.Dense(CLASSES, name="fc")(x.mean(axis=(1, 2)))


class _TorchCNN(torch.nn.Module):
  def __init__(self):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
    self.conv2 = torch.nn.Conv2d(4, 5, 3, stride=2, padding=1)
    self.fc = torch.nn.Linear(5, CLASSES)

  def forward(self, x):
    x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
    return self.fc(x.mean(dim=(2, 3)))


def _to_jax(tm):
  """The torch module's weights as linen params (OIHW → HWIO, [out, in] → [in, out])."""
  conv = lambda c: {  # noqa: E731
    "kernel": jnp.asarray(c.weight.detach().numpy().transpose(2, 3, 1, 0)),
    "bias": jnp.asarray(c.bias.detach().numpy()),
  }
  return {
    "params": {
      "conv1": conv(tm.conv1),
      "conv2": conv(tm.conv2),
      "fc": {
        "kernel": jnp.asarray(tm.fc.weight.detach().numpy().T),
        "bias": jnp.asarray(tm.fc.bias.detach().numpy()),
      },
    }
  }


@pytest.fixture(scope="module")
def twins():
  torch.manual_seed(0)
  tm = _TorchCNN().eval()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(B, 1, S, S)).astype(np.float32)  # NCHW for Quantus
  y = np.array([0, 1, 2, 1])
  maps = rng.random((B, S, S)).astype(np.float32)
  masks = np.zeros((B, S, S), bool)
  masks[:, 2:6, 1:5] = True
  masks[1] = False
  masks[1, :2, :2] = True
  model = _JaxCNN()
  params = _to_jax(tm)
  xj = jnp.asarray(x.transpose(0, 2, 3, 1))

  def logits(p, img):
    return model.apply(p, img)

  def score(p, img):  # img: any multiple of B rows (the metrics score several copies at once)
    return logits(p, img)[jnp.arange(img.shape[0]), ops.tile_rows(jnp.asarray(y), img.shape[0])]

  def explain_target(p, img, t):
    g = jax.grad(lambda im: logits(p, im)[jnp.arange(im.shape[0]), t].sum())(img)
    return jnp.abs(g).sum(-1)

  def torch_explain(model, inputs, targets, **kwargs):
    xt = torch.tensor(np.asarray(inputs), requires_grad=True)
    out = model(xt)
    out[torch.arange(len(targets)), torch.as_tensor(targets)].sum().backward()
    return xt.grad.abs().numpy()

  return dict(
    tm=tm,
    x=x,
    y=y,
    maps=maps,
    masks=masks,
    params=params,
    xj=xj,
    score=score,
    explain=lambda p, img: explain_target(p, img, jnp.asarray(y)),
    explain_target=explain_target,
    torch_explain=torch_explain,
  )


def _q(metric, t, a, **kw):
  return np.asarray(
    metric(
      model=t["tm"],
      x_batch=t["x"],
      y_batch=t["y"],
      a_batch=a,
      channel_first=True,
      softmax=False,
      device="cpu",
      **kw,
    ),
    np.float64,
  )


def test_complexity_and_localisation_agree(twins):
  t = twins
  a = t["maps"][:, None]
  s = t["masks"][:, None].astype(np.float32)
  checks = [
    (quantus.Sparseness(abs=True, normalise=False, disable_warnings=True), map_metrics.sparseness),
    (quantus.Complexity(abs=True, normalise=False, disable_warnings=True), map_metrics.entropy),
  ]
  for metric, ours in checks:
    np.testing.assert_allclose(ours(jnp.asarray(t["maps"])), _q(metric, t, a.copy()), rtol=RTOL)
  checks = [
    (quantus.PointingGame(normalise=False, disable_warnings=True), map_metrics.pointing_game),
    (
      quantus.RelevanceMassAccuracy(normalise=False, disable_warnings=True),
      map_metrics.relevance_mass,
    ),
    (
      quantus.RelevanceRankAccuracy(normalise=False, disable_warnings=True),
      map_metrics.relevance_rank,
    ),
  ]
  for metric, ours in checks:
    want = _q(metric, t, a.copy(), s_batch=s)
    np.testing.assert_allclose(
      ours(jnp.asarray(t["maps"]), jnp.asarray(t["masks"])), want, rtol=RTOL
    )


def test_pixel_flipping_agrees(twins, monkeypatch):
  # Quantus 0.6.0's AUC calls np.trapz, which NumPy 2.4 removed: give it back its old name.
  monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
  t = twins
  for step in (2,):
    metric = quantus.PixelFlipping(
      features_in_step=step,
      normalise=False,
      abs=False,
      perturb_baseline="black",
      disable_warnings=True,
    )
    want = _q(metric, t, t["maps"][:, None].copy())
    curve = faithfulness.pixel_flipping(
      t["score"],
      t["params"],
      t["xj"],
      jnp.asarray(t["maps"]),
      features_in_step=step,
      baseline="min",
      chunk=4,
    )
    np.testing.assert_allclose(curve, want, rtol=RTOL, atol=1e-6)
    # Quantus's AUC (return_auc_per_sample) is the trapezoid with dx = 1.
    metric.return_auc_per_sample = True
    auc = _q(metric, t, t["maps"][:, None].copy())
    np.testing.assert_allclose(ops.trapezoid(curve), auc, rtol=RTOL)


def test_faithfulness_correlation_agrees_with_the_same_subsets(twins):
  t = twins
  runs, subset = 10, 12
  np.random.seed(3)  # Quantus draws with np.random.choice: run by run, example by example
  draws = []
  for _ in range(runs):
    draws.append([np.random.choice(S * S, subset, replace=False) for _ in range(B)])
    np.random.uniform(size=B)  # Quantus's baseline table draws its "uniform" entry each time
  idx = np.asarray(draws).transpose(1, 0, 2)  # [B, runs, subset]
  np.random.seed(3)
  metric = quantus.FaithfulnessCorrelation(
    nr_runs=runs,
    subset_size=subset,
    normalise=False,
    abs=False,
    perturb_baseline="black",
    return_aggregate=False,
    disable_warnings=True,
  )
  want = _q(metric, t, t["maps"][:, None].copy())
  # All runs in one model call, and 3 at a time (4 calls, the last padded).
  for chunk in (None, 3):
    ours = faithfulness.faithfulness_correlation(
      t["score"],
      t["params"],
      t["xj"],
      jnp.asarray(t["maps"]),
      jnp.asarray(idx),
      baseline="min",
      chunk=chunk,
    )
    # A correlation near 0 (example 1) carries float32 rounding: 1e-6 absolute there.
    np.testing.assert_allclose(ours, want, rtol=RTOL, atol=1e-6)


def _replay(noise):
  """A Quantus perturb_func that adds the given draws `[samples, B, ...]` in turn."""
  state = {"i": 0}

  def perturb(arr, indices, **kwargs):
    d = noise[state["i"]]
    state["i"] += 1
    return arr + d.reshape(arr.shape)

  return perturb


def test_robustness_agrees_with_the_same_noise(twins):
  t = twins
  samples = 5
  maps = np.asarray(t["explain"](t["params"], t["xj"]))
  noise = np.asarray(robustness.uniform_noise(jax.random.key(1), samples, t["xj"].shape, 0.2))
  noise_nchw = noise.transpose(0, 1, 4, 2, 3)
  metric = quantus.MaxSensitivity(
    nr_samples=samples,
    perturb_func=_replay(noise_nchw),
    normalise=False,
    abs=False,
    disable_warnings=True,
  )
  want = _q(metric, t, maps[:, None].copy(), explain_func=t["torch_explain"])
  ours = robustness.max_sensitivity(
    t["explain"], t["params"], t["xj"], jnp.asarray(maps), jnp.asarray(noise), chunk=2
  )
  np.testing.assert_allclose(ours, want, rtol=RTOL)
  metric = quantus.LocalLipschitzEstimate(
    nr_samples=samples,
    perturb_func=_replay(noise_nchw),
    normalise=False,
    abs=False,
    disable_warnings=True,
  )
  want = _q(metric, t, maps[:, None].copy(), explain_func=t["torch_explain"])
  ours = robustness.local_lipschitz(
    t["explain"], t["params"], t["xj"], jnp.asarray(maps), jnp.asarray(noise), chunk=1
  )
  np.testing.assert_allclose(ours, want, rtol=RTOL)


def test_random_logit_agrees_with_the_same_off_classes(twins):
  t = twins
  maps = np.asarray(t["explain"](t["params"], t["xj"]))
  np.random.seed(42)  # Quantus's draw of the off-class labels (seed=42)
  classes = np.stack([np.arange(CLASSES)] * B)
  keep = np.ones_like(classes, bool)
  keep[np.arange(B), t["y"]] = False
  other = classes[keep].reshape(B, -1)[np.arange(B), np.random.randint(0, CLASSES - 1, B)]
  metric = quantus.RandomLogit(
    num_classes=CLASSES,
    seed=42,
    normalise=False,
    abs=False,
    similarity_func=quantus.similarity_func.correlation_spearman,
    disable_warnings=True,
  )
  want = _q(metric, t, maps[:, None].copy(), explain_func=t["torch_explain"])
  ours = sanity.random_logit(
    t["explain_target"],
    t["params"],
    t["xj"],
    jnp.asarray(maps),
    jnp.asarray(other),
    similarity="spearman",
    absolute=False,
  )
  np.testing.assert_allclose(ours, want, rtol=RTOL)


def test_mprt_agrees_with_quantus_randomised_weights(twins):
  t = twins
  maps = np.asarray(t["explain"](t["params"], t["xj"]))
  metric = quantus.MPRT(seed=7, normalise=False, abs=True, disable_warnings=True)
  want = metric(
    model=t["tm"],
    x_batch=t["x"],
    y_batch=t["y"],
    a_batch=maps[:, None].copy(),
    channel_first=True,
    softmax=False,
    device="cpu",
    explain_func=t["torch_explain"],
  )
  # Quantus's cascade: reset_parameters() of each module top-down, torch seed 7 + 1 each time.
  wrapped = quantus.helpers.model.pytorch_model.PyTorchModel(t["tm"], channel_first=True)
  randomised = list(wrapped.get_random_layer_generator(order="top_down", seed=7))[-1][1]
  ours = sanity.mprt(
    t["explain"],
    t["params"],
    t["xj"],
    jnp.asarray(maps),
    None,
    layers=["params/fc", "params/conv2", "params/conv1"],
    random_params=_to_jax(randomised),
    similarity="spearman",
    absolute=True,
  )
  layers = [k for k in want if k != "original"]
  assert layers == ["fc", "conv2", "conv1"]
  np.testing.assert_allclose(ours, np.array([want[k] for k in layers]), rtol=RTOL, atol=1e-6)


def test_road_imputation_agrees_and_the_score_differs_on_purpose(twins):
  """ROAD's noisy linear imputation equals Quantus's (same normal draws). On purpose mtljax reports
  the explained score after each removal where Quantus reports whether the argmax class is kept:
  thresholding our imputed images' argmax gives Quantus's numbers exactly."""
  from quantus.functions.perturb_func import noisy_linear_imputation

  t = twins
  ranks = np.asarray(ops.descending_ranks(jnp.asarray(t["maps"])))
  k = 20
  noise = np.zeros((B, S * S, 1), np.float32)
  want = []
  for b in range(B):
    top = np.argsort(ranks[b])[:k]  # Quantus's indices: most relevant first
    np.random.seed(5 + b)
    noise[b, top, 0] = np.random.randn(1, k)[0]  # the draw Quantus's function makes next
    np.random.seed(5 + b)
    want.append(noisy_linear_imputation(t["x"][b], top, noise=0.01))
  noise = noise.reshape(B, S, S, 1)
  removed = jnp.asarray((ranks < k).reshape(B, S, S))
  ours = faithfulness.noisy_linear_imputation(
    t["xj"], removed, jnp.asarray(noise), noise_scale=0.01
  )
  np.testing.assert_allclose(np.asarray(ours)[..., 0], np.stack(want)[:, 0], rtol=RTOL, atol=1e-6)
  percent = [10, 40, 70]
  metric = quantus.ROAD(percentages=percent, noise=0.0, normalise=False, disable_warnings=True)
  got = metric(
    model=t["tm"],
    x_batch=t["x"],
    y_batch=t["y"],
    a_batch=t["maps"][:, None].copy(),
    channel_first=True,
    softmax=False,
    device="cpu",
  )
  zero = jnp.zeros_like(t["xj"])
  kept = []
  for p in percent:
    img = faithfulness.noisy_linear_imputation(
      t["xj"], jnp.asarray((ranks < int(S * S * p / 100)).reshape(B, S, S)), zero
    )
    kept.append(np.asarray(_JaxCNN().apply(t["params"], img).argmax(-1)) == t["y"])
  np.testing.assert_allclose([got[p] for p in percent], np.mean(kept, axis=1), rtol=RTOL)
