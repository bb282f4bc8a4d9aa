"""Modality encoders: one per input modality, each mapping its input to a feature vector.

Mtl-explainability paper §3.3 and Appendix B.3: aerial images go through a ResNet-18, the small
(6×6) Sentinel patches are flattened and go through an MLP of three linear layers with ReLU and
dropout 0.3, tabular inputs (age) through a small MLP. Every encoder here has the signature

    encoder(x, *, train: bool) -> features [B, D]

and is looked up by name in `ENCODERS`, so a new dataset adds an entry, not a branch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtljax.models import activations, pooling
from mtljax.models.cnn import SmallCNN
from mtljax.models.convolution import (  # noqa: F401 (callers use them from here)
  SMALL_SPATIAL_PIXELS,
  Conv,
  conv_general_dilated,
)
from mtljax.models.spatial import UNet

ModuleDef = Callable[..., nn.Module]


class BasicBlock(nn.Module):
  """ResNet basic block (two 3×3 convs) with a projection shortcut when the shape changes."""

  features: int
  strides: int = 1
  norm: ModuleDef = nn.BatchNorm

  @nn.compact
  def __call__(self, x):
    residual = x
    y = Conv(
      self.features,
      (3, 3),
      (self.strides, self.strides),
      padding=((1, 1), (1, 1)),
      use_bias=False,
      name="conv1",
    )(x)
    y = self.norm(name="bn1")(y)
    y = activations.relu(y)
    y = Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(y)
    # Zero-init the last BN scale of each block: the block starts as the identity (Goyal et al.).
    y = self.norm(scale_init=nn.initializers.zeros, name="bn2")(y)
    if residual.shape != y.shape:
      residual = Conv(
        self.features, (1, 1), (self.strides, self.strides), use_bias=False, name="proj_conv"
      )(residual)
      residual = self.norm(name="proj_bn")(residual)
    return activations.relu(residual + y)


class Bottleneck(nn.Module):
  """ResNet bottleneck block (1×1, 3×3 with the stride, 1×1 to 4× the features), as
  torchvision's ResNet-50 ("v1.5": the stride on the 3×3), with a projection shortcut."""

  features: int
  strides: int = 1
  norm: ModuleDef = nn.BatchNorm

  @nn.compact
  def __call__(self, x):
    s = (self.strides, self.strides)
    y = Conv(self.features, (1, 1), use_bias=False, name="conv1")(x)
    y = activations.relu(self.norm(name="bn1")(y))
    y = Conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(y)
    y = activations.relu(self.norm(name="bn2")(y))
    y = Conv(4 * self.features, (1, 1), use_bias=False, name="conv3")(y)
    y = self.norm(scale_init=nn.initializers.zeros, name="bn3")(y)
    residual = x
    if residual.shape != y.shape:
      residual = Conv(4 * self.features, (1, 1), s, use_bias=False, name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return activations.relu(residual + y)


class ResNet(nn.Module):
  """ResNet; `stage_sizes=(2, 2, 2, 2), width=64` is ResNet-18 (He et al. 2016), and with
  `block="bottleneck"`, `stage_sizes=(3, 4, 6, 3)` ResNet-50: the layers of torchvision's
  models, so their ImageNet weights load (`pretrained`, see mtljax/models/pretrained.py).

  Input `[B, H, W, C]` (any C: the aerial CIR patches have 4 bands), output the globally
  average-pooled features `[B, width * 2**(len(stage_sizes)-1)]` (512 for ResNet-18, 4× that
  with bottlenecks). Tests use a tiny variant (`stage_sizes=(1, 1), width=8`).

  pretrained: a torchvision/timm state dict (`.safetensors`, or `.pth` with torch installed)
  whose weights replace the initialisation (`mtljax.train.state.init_state`); "" = none.
  pretrained_bands: the input's band names, to adapt the RGB stem: bands named R, G, B take
  those weights, the others the mean of the three (empty: the first three bands are R, G, B).
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  stem_kernel: int = 7
  dtype: str = "float32"
  block: str = "basic"
  pretrained: str = ""
  pretrained_bands: Sequence[str] = ()

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda **kw: nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, **kw
    )
    x = x.astype(self.dtype)
    k = self.stem_kernel
    x = Conv(
      self.width,
      (k, k),
      (2, 2),
      padding=[(k // 2, k // 2)] * 2,
      use_bias=False,
      dtype=self.dtype,
      name="stem_conv",
    )(x)
    x = norm(name="stem_bn")(x)
    x = activations.relu(x)
    x = pooling.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(self.width * 2**i, strides, norm=norm, name=f"stage{i + 1}_block{j + 1}")(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


class MLPEncoder(nn.Module):
  """Flatten the input and apply `len(hidden)` × (Dense → ReLU → Dropout).

  Appendix B.3: Sentinel-1/2 6×6 patches, three linear layers, ReLU, dropout 0.3. With
  `hidden=(512, 512, 512)` the S1 and S2 features join the ResNet's 512 in a 1536-d fused vector.
  """

  hidden: Sequence[int] = (512, 512, 512)
  dropout: float = 0.3

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = x.reshape((x.shape[0], -1)).astype(jnp.float32)
    for i, h in enumerate(self.hidden):
      x = nn.Dense(h, name=f"dense{i + 1}")(x)
      x = activations.relu(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


class Embedding(nn.Module):
  """Categorical input (integer codes `[B]` or `[B, 1]`) → learned embedding `[B, features]`."""

  num_embeddings: int
  features: int = 32

  @nn.compact
  def __call__(self, x, *, train: bool):
    del train
    x = x.reshape((x.shape[0],)).astype(jnp.int32)
    return nn.Embed(self.num_embeddings, self.features, name="embed")(x)


def date_encoding(days, features: int, max_period: float = 10000.0):
  """Sinusoidal encoding of each step's *date* (Vaswani et al. 2017 with the day value as the
  position): `days [..., T]` (days since seeding or to harvest; any real numbers, irregular
  steps) → `[..., T, features]`, sin on the first half of the channels, cos on the second."""
  half = features // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  angles = jnp.asarray(days, jnp.float32)[..., None] * freqs
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if features % 2:
    enc = jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, 1)])
  return enc


class TimeSeriesTransformer(nn.Module):
  """Transformer encoder of a padded, irregular time series (CropYield, Appendix B.1).

  Input `{"values": [B, T, F], "days": [B, T], "mask": [B, T]}` (mask 1 = real step). Each step
  is projected to `d_model` and gets the sinusoidal encoding of its day value (the paper uses
  the days to harvest), then `num_layers` pre-norm blocks of masked self-attention (padded steps
  are never attended to) and an MLP; the output is the mean over the real steps `[B, d_model]`.
  Padded steps do not change the output: their values are zeroed, no real step attends to them
  and the pooling skips them. Paper: 1 head, 4 layers, 32 features.
  """

  d_model: int = 32
  num_heads: int = 1
  num_layers: int = 4
  mlp_dim: int = 64
  dropout: float = 0.1
  max_period: float = 10000.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    mask = jnp.asarray(x["mask"]) > 0  # [B, T]
    values = jnp.where(mask[..., None], jnp.asarray(x["values"], jnp.float32), 0.0)
    h = nn.Dense(self.d_model, name="embed")(values)
    h = h + date_encoding(x["days"], self.d_model, self.max_period)
    attn_mask = nn.make_attention_mask(mask, mask)  # [B, 1, T, T]
    for i in range(self.num_layers):
      y = nn.LayerNorm(name=f"block{i + 1}_ln1")(h)
      y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads,
        qkv_features=self.d_model,
        dropout_rate=self.dropout,
        deterministic=not train,
        name=f"block{i + 1}_attn",
      )(y, y, mask=attn_mask)
      h = h + nn.Dropout(self.dropout, deterministic=not train)(y)
      y = nn.LayerNorm(name=f"block{i + 1}_ln2")(h)
      y = activations.relu(nn.Dense(self.mlp_dim, name=f"block{i + 1}_mlp1")(y))
      y = nn.Dense(self.d_model, name=f"block{i + 1}_mlp2")(y)
      h = h + nn.Dropout(self.dropout, deterministic=not train)(y)
    h = nn.LayerNorm(name="ln_out")(h)
    w = mask.astype(h.dtype)[..., None]
    return jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


ENCODERS: dict[str, type[nn.Module]] = {
  "resnet": ResNet,
  "mlp": MLPEncoder,
  "embedding": Embedding,
  "transformer": TimeSeriesTransformer,  # time series (CropYield)
  "unet": UNet,  # returns a feature map [B, H, W, C] (segmentation; models/spatial.py)
  "small_cnn": SmallCNN,  # MTC-LIM's shared CNN at synthetic scale (models/cnn.py)
}


def affine_input_layer(encoder: str, kwargs=None) -> str | None:
  """The submodule of an `ENCODERS[encoder]` built with `kwargs` whose output is an affine
  function of the encoder's input — an MLP's first Dense, a ResNet's stem convolution — or None.
  Integrated Gradients splits there (`explain.flax_utils.affine_split`)."""
  if encoder == "resnet":
    return "stem_conv"
  if encoder == "mlp" and tuple((kwargs or {}).get("hidden", MLPEncoder.hidden)):
    return "dense1"
  return None
