"""Cross-check of `mtljax.attribution.methods` against Captum, float64 on both sides.

A tiny CNN (conv 3x3 -> ReLU -> conv 3x3 stride 2 -> ReLU -> global average pool -> dense, 3
classes) exists twice with the same weights: as a linen module (NHWC inputs, HWIO kernels) and as a
torch module (NCHW inputs, OIHW kernels). Each method explains the logit of one class and must
agree with Captum to ~1e-8 relative once the layouts are converted. Where the conventions differ
(Grad-CAM's ReLU placement, Captum's float32 quadrature weights and occlusion normalisation) the
comparison aligns them explicitly.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Captum cross-check needs PyTorch")
captum_attr = pytest.importorskip("captum.attr", reason="the Captum cross-check needs Captum")

from mtljax import attribution as explain  # noqa: E402
from mtljax.attribution import layers, targets  # noqa: E402
from mtljax.models import activations  # noqa: E402

TARGET = 1  # its head weights have both signs (class 2's are all < 0: guided backprop would be 0)
BATCH, SIZE, CIN, C1, C2, CLASSES = 2, 8, 2, 4, 5, 3
RTOL = 1e-8


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


class _JaxCNN(nn.Module):
  """Uses the project's switchable ReLU, so guided backprop runs through `guided_relus()`."""

  @nn.compact
  def __call__(self, x):
    # Explicit symmetric padding: for the stride-2 conv, linen's "SAME" pads (0, 1) while torch's
    # padding=1 pads (1, 1).
    pad = ((1, 1), (1, 1))
    x = activations.relu(nn.Conv(C1, (3, 3), padding=pad, name="conv1")(x))
    x = activations.relu(nn.Conv(C2, (3, 3), strides=(2, 2), padding=pad, name="conv2")(x))
    return {"cls": nn.Dense(CLASSES, name="head")(x.mean(axis=(1, 2)))}


def _torch_cnn():

  class TorchCNN(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.conv1 = torch.nn.Conv2d(CIN, C1, 3, padding=1)
      self.relu1 = torch.nn.ReLU()  # one ReLU module per use, as Captum's GuidedBackprop needs
      self.conv2 = torch.nn.Conv2d(C1, C2, 3, stride=2, padding=1)
      self.relu2 = torch.nn.ReLU()
      self.head = torch.nn.Linear(C2, CLASSES)

    def forward(self, x):
      h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
      return self.head(h.mean(dim=(2, 3)))

  return TorchCNN().double().eval()


@functools.lru_cache(maxsize=None)
def _weights():
  rng = np.random.default_rng(0)
  return {
    "conv1": {
      "kernel": rng.normal(size=(3, 3, CIN, C1)) / 3,  # HWIO
      "bias": 0.1 * rng.normal(size=(C1,)),
    },
    "conv2": {"kernel": rng.normal(size=(3, 3, C1, C2)) / 3, "bias": 0.1 * rng.normal(size=(C2,))},
    "head": {
      "kernel": rng.normal(size=(C2, CLASSES)),  # [in, out]
      "bias": 0.1 * rng.normal(size=(CLASSES,)),
    },
  }


def _images():
  return np.random.default_rng(1).normal(size=(BATCH, SIZE, SIZE, CIN))  # NHWC


def _models():
  """(score_fn, params, inputs) on the JAX side, (torch model, torch input) on the other."""
  w = _weights()
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), w)
  model = _JaxCNN()
  score = targets.make_score_fn(
    lambda p, inp: model.apply({"params": p}, inp["img"]),
    "cls",
    "classification",
    TARGET,
    num_outputs=CLASSES,
  )
  net = _torch_cnn()
  with torch.no_grad():
    for name in ("conv1", "conv2"):
      getattr(net, name).weight.copy_(torch.from_numpy(w[name]["kernel"].transpose(3, 2, 0, 1)))
      getattr(net, name).bias.copy_(torch.from_numpy(w[name]["bias"]))
    net.head.weight.copy_(torch.from_numpy(w["head"]["kernel"].T))
    net.head.bias.copy_(torch.from_numpy(w["head"]["bias"]))
  x = _images()
  inputs = {"img": jnp.asarray(x, jnp.float64)}
  x_t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)  # NCHW
  return score, params, inputs, net, x_t


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _assert_close(ours, theirs, rtol=RTOL):
  """Relative agreement, with an absolute floor at `rtol` of the largest magnitude (elements that
  nearly cancel cannot match to `rtol` of themselves)."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.dtype == np.float64, ours.dtype
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  assert np.abs(theirs).max() > 0
  np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())


def test_models_agree():
  score, params, inputs, net, x_t = _models()
  ours = jax.jit(score)(params, inputs)
  assert ours.dtype == jnp.float64
  np.testing.assert_allclose(ours, net(x_t)[:, TARGET].detach().numpy(), rtol=1e-12)


def test_saliency_and_input_x_gradient():
  score, params, inputs, net, x_t = _models()
  sal = jax.jit(functools.partial(explain.saliency, score))(params, inputs)["img"]
  _assert_close(sal, _nhwc(captum_attr.Saliency(net).attribute(x_t, target=TARGET, abs=True)))
  ixg = jax.jit(functools.partial(explain.input_x_gradient, score))(params, inputs)["img"]
  _assert_close(ixg, _nhwc(captum_attr.InputXGradient(net).attribute(x_t, target=TARGET)))


def _integrated_gradients(models, steps: int, method: str):
  """Our Integrated Gradients and Captum's (zero baseline, `steps` nodes of `method`), NHWC."""
  score, params, inputs, net, x_t = models
  ig = functools.partial(explain.integrated_gradients, score, steps=steps, method=method)
  ours = jax.jit(ig)(params, inputs)["img"]
  theirs = captum_attr.IntegratedGradients(net).attribute(
    x_t, baselines=torch.zeros_like(x_t), target=TARGET, n_steps=steps, method=method
  )
  return ours, _nhwc(theirs)


def test_integrated_gradients_riemann_middle():
  # 16 steps: Captum rounds its step sizes (and Riemann nodes) to float32; 1/16 and (k + ½)/16 are
  # exact in float32, so both sides use the same quadrature.
  ours, theirs = _integrated_gradients(_models(), 16, "riemann_middle")
  _assert_close(ours, theirs)


def test_integrated_gradients_gausslegendre():
  models = _models()
  score, params, inputs, _, _ = models
  steps = 7
  ours, theirs = _integrated_gradients(models, steps, "gausslegendre")
  # Captum multiplies the gradients by `torch.tensor(step_sizes).float()`: the Gauss-Legendre
  # weights are rounded to float32 (relative error up to 2^-24 ≈ 6e-8), so the two agree only to
  # that level...
  _assert_close(ours, theirs, rtol=3e-7)
  # ... and to 1e-8 once our weights are rounded the same way: redo our IG with Captum's weights,
  # from our own gradients at our own nodes.
  alphas, weights = explain.integration_points("gausslegendre", steps)
  weights32 = weights.astype(np.float32).astype(np.float64)
  grad = jax.jit(functools.partial(explain.saliency, score, absolute=False))
  x = inputs["img"]
  avg = sum(w * grad(params, {"img": a * x})["img"] for a, w in zip(alphas, weights32))
  _assert_close(x * avg, theirs)
  # And our own Gauss-Legendre IG is that same sum with the float64 weights.
  avg64 = sum(w * grad(params, {"img": a * x})["img"] for a, w in zip(alphas, weights))
  _assert_close(ours, x * avg64, rtol=1e-12)


def test_grad_cam_on_the_second_conv():
  score, params, inputs, net, x_t = _models()
  layer_fn = layers.flax_layer_fn(score, "conv2")
  cam = jax.jit(functools.partial(explain.grad_cam, layer_fn))(params, inputs)
  up = jax.jit(functools.partial(explain.grad_cam, layer_fn, upsample_to=(SIZE, SIZE)))(
    params, inputs
  )
  gc = captum_attr.LayerGradCam(net, net.conv2)
  raw = gc.attribute(x_t, target=TARGET)  # [B, 1, 4, 4], no ReLU (Captum's default)
  assert raw.shape == (BATCH, 1, SIZE // 2, SIZE // 2)
  assert (raw < 0).any() and (raw > 0).any()  # the ReLU matters on this input
  # Our grad_cam applies the ReLU (the paper's map); Captum only with relu_attributions=True.
  relu = gc.attribute(x_t, target=TARGET, relu_attributions=True)
  _assert_close(cam, relu[:, 0].detach().numpy())
  _assert_close(cam, np.maximum(raw[:, 0].detach().numpy(), 0))
  # Upsampling: ours resizes the ReLU'd map (bilinear, half-pixel centres); Captum's interpolate is
  # torch's bilinear with align_corners=False. Align the ReLU placement by upsampling Captum's
  # ReLU'd map (upsampling the raw map and then the ReLU would differ near sign changes).
  theirs = captum_attr.LayerAttribution.interpolate(relu, (SIZE, SIZE), interpolate_mode="bilinear")
  _assert_close(up, theirs[:, 0].detach().numpy())


def _guided_score(score):

  def guided_f(p, x):
    with activations.guided_relus():  # traced here, so the guided ReLU is used even under jit
      return score(p, x)

  return guided_f


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
def test_guided_backprop_and_guided_grad_cam():
  score, params, inputs, net, x_t = _models()
  guided_f = _guided_score(score)
  gb = jax.jit(functools.partial(explain.guided_backprop, guided_f))(params, inputs)["img"]
  theirs = _nhwc(captum_attr.GuidedBackprop(net).attribute(x_t, target=TARGET))
  _assert_close(gb, theirs)
  plain = jax.jit(functools.partial(explain.saliency, score, absolute=False))(params, inputs)
  assert not np.allclose(gb, plain["img"])  # the guided rule did change the backward pass
  # Guided Grad-CAM: guided backprop times the ReLU'd Grad-CAM map, upsampled bilinearly (Captum's
  # default interpolation is "nearest").
  layer_fn = layers.flax_layer_fn(score, "conv2")
  ggc = jax.jit(functools.partial(explain.guided_grad_cam, guided_f, layer_fn, modality="img"))(
    params, inputs
  )
  theirs = captum_attr.GuidedGradCam(net, net.conv2).attribute(
    x_t, target=TARGET, interpolate_mode="bilinear"
  )
  _assert_close(ggc, _nhwc(theirs))


@pytest.mark.parametrize("window,stride", [((3, 3), (2, 2)), ((4, 4), (4, 4)), ((2, 3), (1, 2))])
def test_occlusion(window, stride):
  score, params, inputs, net, x_t = _models()
  ours = np.asarray(
    jax.jit(
      functools.partial(
        explain.occlusion, score, window=window, stride=stride, baseline=0.0, batch_windows=5
      )
    )(params, inputs)["img"]
  )
  # Captum slides over (C, H, W); a window spanning all channels occludes them together, as ours.
  options = dict(sliding_window_shapes=(CIN,) + window, strides=(CIN,) + stride, baselines=0.0)
  theirs = captum_attr.Occlusion(net).attribute(x_t, target=TARGET, **options)
  # Captum divides the summed differences by the window counts as `total.float() / counts`: the
  # float64 sums are rounded to float32 first, so its result is float32 (≤ 2 float32 ulps off).
  assert theirs.dtype == torch.float32
  _assert_close(ours, _nhwc(theirs).astype(np.float64), rtol=2.5e-7)

  # In float64: Captum's unnormalised sums (`use_weights=False`, the attribute Occlusion sets) and
  # the window counts from Captum too, as the sums for a score that is 1 unless something is
  # occluded (then 0): each window adds 1 to each pixel it covers.
  def occ_raw(forward, x):
    occ = captum_attr.Occlusion(forward)
    occ.use_weights = False
    return _nhwc(occ.attribute(x, **options))

  total = occ_raw(lambda x: net(x)[:, TARGET], x_t)
  counts = occ_raw(lambda x: (x != 0).flatten(1).all(dim=1).double(), x_t.detach())
  assert total.dtype == counts.dtype == np.float64
  assert counts.min() >= 1 and (counts.max() > 1 if stride != window else counts.max() == 1)
  _assert_close(ours * counts, total)
