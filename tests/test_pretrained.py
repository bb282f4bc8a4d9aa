"""Pretrained ResNet encoders (mtljax/models/pretrained.py): a torch ResNet written by hand in
torchvision's key layout, with random weights, saved as safetensors, gives the same features as
the converted flax encoder (to 1e-5); the RGB stem is adapted to the CIR bands; wrong files are
refused naming the problem."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mtljax.models import pretrained
from mtljax.models.encoders import ResNet

torch = pytest.importorskip("torch", reason="the torch twin needs torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
nn = torch.nn


class Basic(nn.Module):
  expansion = 1

  def __init__(self, cin, f, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, f, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(f)
    self.conv2 = nn.Conv2d(f, f, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(f)
    self.downsample = None
    if stride != 1 or cin != f:
      self.downsample = nn.Sequential(nn.Conv2d(cin, f, 1, stride, bias=False), nn.BatchNorm2d(f))

  def forward(self, x):
    y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottle(nn.Module):
  expansion = 4

  def __init__(self, cin, f, stride):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(cin, f, 1, bias=False), nn.BatchNorm2d(f)
    self.conv2, self.bn2 = nn.Conv2d(f, f, 3, stride, 1, bias=False), nn.BatchNorm2d(f)
    self.conv3, self.bn3 = nn.Conv2d(f, 4 * f, 1, bias=False), nn.BatchNorm2d(4 * f)
    self.downsample = None
    if stride != 1 or cin != 4 * f:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, 4 * f, 1, stride, bias=False), nn.BatchNorm2d(4 * f)
      )

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(y)))))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
  """torchvision.models.resnet's layers and parameter names (conv1, bn1, layerN.j.*, fc)."""

  def __init__(self, block, layers, width=64):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = width
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(block(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
        cin = width * 2**i * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.fc = nn.Linear(cin, 1000)

  def features(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
    return x.mean((2, 3))


def random_twin(block, layers, path, width=8):
  """A narrow twin (width 8, torchvision's is 64: the same keys, faster to compile)."""
  torch.manual_seed(0)
  model = TorchResNet(block, layers, width).eval()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics and affine parameters
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  safetensors_torch.save_file(model.state_dict(), str(path))
  return model


def flax_features(path, x_nhwc, bands, **kw):
  model = ResNet(pretrained=str(path), pretrained_bands=bands, width=8, **kw)
  # Shapes only: every parameter and statistic comes from the file.
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x_nhwc)
  holder = type("M", (), {"encoders": {"a": model}})()
  params, stats = pretrained.apply(
    holder, {"encoders_a": variables["params"]}, {"encoders_a": variables["batch_stats"]}
  )
  v = {"params": params["encoders_a"], "batch_stats": stats["encoders_a"]}
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(v, x_nhwc))


@pytest.mark.parametrize(
  "block,layers,kw",
  [(Basic, (2, 2, 2, 2), {}), (Bottle, (3, 4, 6, 3), {"block": "bottleneck", "stage_sizes": (3, 4, 6, 3)})],
  ids=["resnet18", "resnet50"],
)  # fmt: skip
def test_converted_resnet_gives_the_torch_features(tmp_path, block, layers, kw):
  path = tmp_path / "w.safetensors"
  twin = random_twin(block, layers, path)
  if block is Basic:  # the plain RGB model (the 4-band check below covers ResNet-50's layers)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
      want = twin.features(torch.from_numpy(x)).numpy()
    got = flax_features(path, x.transpose(0, 2, 3, 1), ("R", "G", "B"), **kw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The 4-band CIR tiles (IR, G, B, R): RGB filters kept, IR from their mean; the same as a torch
  # stem built that way.
  x4 = np.random.default_rng(1).normal(size=(2, 4, 32, 32)).astype(np.float32)
  w = twin.conv1.weight.detach()
  stem4 = nn.Conv2d(4, w.shape[0], 7, 2, 3, bias=False)
  with torch.no_grad():
    stem4.weight.copy_(torch.stack([w.mean(1), w[:, 1], w[:, 2], w[:, 0]], 1))
    twin.conv1 = stem4
    want4 = twin.features(torch.from_numpy(x4)).numpy()
  got4 = flax_features(path, x4.transpose(0, 2, 3, 1), ("IR", "G", "B", "R"), **kw)
  np.testing.assert_allclose(got4, want4, rtol=1e-5, atol=1e-5)


def test_wrong_weights_are_refused(tmp_path):
  path = tmp_path / "r18.safetensors"
  twin = random_twin(Basic, (2, 2, 2, 2), path)
  kw = dict(stage_sizes=(3, 4, 6, 3), block="bottleneck", width=8, num_bands=3)
  with pytest.raises(
    pretrained.PretrainedError, match=r"r18.safetensors: .*layer1.0.conv1.weight has shape"
  ):
    pretrained.resnet_variables(str(path), **kw)  # a ResNet-18 file for a ResNet-50 encoder
  state = {k: v for k, v in twin.state_dict().items() if k != "layer3.1.bn2.running_var"}
  safetensors_torch.save_file(state, str(tmp_path / "cut.safetensors"))
  with pytest.raises(pretrained.PretrainedError, match="missing key 'layer3.1.bn2.running_var'"):
    pretrained.resnet_variables(str(tmp_path / "cut.safetensors"), **{**kw, "stage_sizes": (2, 2, 2, 2), "block": "basic"})  # fmt: skip
  with pytest.raises(pretrained.PretrainedError, match="no such file"):
    pretrained.load_state_dict(str(tmp_path / "none.safetensors"))
  torch.save(twin.state_dict(), tmp_path / "r18.pth")  # .pth read with weights_only=True
  a = pretrained.load_state_dict(str(tmp_path / "r18.pth"))
  np.testing.assert_array_equal(
    a["layer4.1.conv2.weight"], twin.layer4[1].conv2.weight.detach().numpy()
  )
