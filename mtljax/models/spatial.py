"""Spatial modules for segmentation and dense regression (mtl-explainability §3.3, Appendix B.2).

For segmentation tasks the encoders of image inputs are U-Nets that return a feature *map*
`[B, H, W, C]` at the input resolution; tabular and categorical inputs keep their vector encoders
(MLP, embedding). `SpatialFusion` broadcasts the vectors to H×W, concatenates everything on the
channel axis and applies convolutions (B.2: two 1×1 convs with ReLU, 128 → 64 channels). Heads
then read the fused map:

    SegmentationHead     1×1 conv → [B, H, W, K] logits             (LULC)
    DenseRegressionHead  two 3×3 convs + ReLU, 1×1 conv → [B, H, W]  (DEM)
    PooledHead           1×1 conv, global average pool, FC layers with dropout → [B, out] or [B]
                         (climate zone: 1×1 conv + FC + dropout 0.5; season: 1×1 conv to 16,
                         two FC with ReLU and dropout 0.2, sigmoid; weather: the same, 3 outputs)

The paper does not say how the FC layers of the pooled heads meet the map; here the 1×1 conv's
output is globally average pooled (independent of the image size).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtljax.models import activations, convolution, pooling


class ConvBlock(nn.Module):
  """Two (3×3 conv → BatchNorm → ReLU)."""

  features: int

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i in range(2):
      x = convolution.Conv(
        self.features, (3, 3), padding="SAME", use_bias=False, name=f"conv{i + 1}"
      )(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{i + 1}")(x)
      x = activations.relu(x)
    return x


class UNet(nn.Module):
  """U-Net encoder-decoder (Ronneberger et al. 2015) returning a feature map `[B, H, W, out]`.

  `features` are the widths of the contracting path, one 2×2 max pool between levels
  (B.2: four downsampling and four upsampling steps: `features` of length 5); the expanding path
  upsamples bilinearly to the skip connection's exact size (so any H, W works, e.g. 120 → 60 → 30
  → 15 → 7 and back), concatenates and applies a ConvBlock. A 1×1 conv maps to `out_features`
  (64 in B.2). Input `[B, H, W, C]`, any C.
  """

  features: Sequence[int] = (32, 64, 128, 256, 512)
  out_features: int = 64

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = x.astype(jnp.float32)
    skips = []
    for i, f in enumerate(self.features):
      if i:
        x = pooling.max_pool(x, (2, 2), strides=(2, 2))
      x = ConvBlock(f, name=f"down{i}")(x, train=train)
      skips.append(x)
    for i in range(len(self.features) - 2, -1, -1):
      skip = skips[i]
      x = jax.image.resize(x, skip.shape[:3] + (x.shape[-1],), "bilinear")
      x = jnp.concatenate([x, skip], axis=-1)
      x = ConvBlock(self.features[i], name=f"up{i}")(x, train=train)
    return convolution.Conv(self.out_features, (1, 1), name="out")(x)


class SpatialFusion(nn.Module):
  """`{m: [B, H, W, C_m] or [B, D_m]}` → `[B, H, W, features]`.

  Vectors are broadcast over H×W; all are concatenated on channels in sorted-name order, then
  `num_convs` × (conv `kernel`×`kernel` → ReLU) (B.2: two 1×1 convs, 64 channels). Every map must
  have the same H, W (U-Nets return their input's resolution).
  """

  features: int = 64
  num_convs: int = 2
  kernel: int = 1

  @nn.compact
  def __call__(self, feats: dict, *, train: bool):
    del train
    maps = [feats[k] for k in sorted(feats) if feats[k].ndim == 4]
    if not maps:
      raise ValueError(
        f"spatial fusion needs at least one image modality with a U-Net encoder; "
        f"got feature shapes { {k: v.shape for k, v in feats.items()} }"
      )
    b, h, w = maps[0].shape[:3]
    parts = []
    for k in sorted(feats):
      f = feats[k]
      if f.ndim == 4:
        if f.shape[1:3] != (h, w):
          raise ValueError(
            f"spatial fusion: modality {k!r} has a {f.shape[1:3]} map, others {(h, w)}"
          )
        parts.append(f)
      else:
        parts.append(jnp.broadcast_to(f.reshape(b, 1, 1, -1), (b, h, w, f.shape[-1])))
    x = jnp.concatenate(parts, axis=-1)
    for i in range(self.num_convs):
      x = convolution.Conv(
        self.features, (self.kernel, self.kernel), padding="SAME", name=f"conv{i + 1}"
      )(x)
      x = activations.relu(x)
    return x


class SegmentationHead(nn.Module):
  """1×1 conv → per-pixel logits `[B, H, W, out_dim]`."""

  out_dim: int

  @nn.compact
  def __call__(self, x, *, train: bool):
    del train
    return convolution.Conv(self.out_dim, (1, 1), name="out")(x)


class DenseRegressionHead(nn.Module):
  """Two 3×3 convs with ReLU, then a 1×1 conv → `[B, H, W]` (`squeeze`) or `[B, H, W, out_dim]`."""

  out_dim: int = 1
  features: int = 32
  squeeze: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool):
    del train
    for i in range(2):
      x = activations.relu(
        convolution.Conv(self.features, (3, 3), padding="SAME", name=f"conv{i + 1}")(x)
      )
    y = convolution.Conv(self.out_dim, (1, 1), name="out")(x)
    return y[..., 0] if self.squeeze else y


class PooledHead(nn.Module):
  """1×1 conv to `conv_features` → global average pool → `len(hidden)` × (Dense, ReLU, Dropout)
  → Dropout(`dropout`) if no hidden layer → Dense(out_dim) → optional sigmoid."""

  out_dim: int
  conv_features: int = 16
  hidden: Sequence[int] = ()
  dropout: float = 0.0
  sigmoid: bool = False
  squeeze: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = convolution.Conv(self.conv_features, (1, 1), name="conv")(x)
    x = jnp.mean(x, axis=(1, 2))
    for i, h in enumerate(self.hidden):
      x = activations.relu(nn.Dense(h, name=f"dense{i + 1}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if not self.hidden and self.dropout:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    y = nn.Dense(self.out_dim, name="out")(x)
    if self.sigmoid:
      y = jax.nn.sigmoid(y)
    return y[..., 0] if self.squeeze else y
