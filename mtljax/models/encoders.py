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

from mtljax.models import activations
from mtljax.models.cnn import SmallCNN

ModuleDef = Callable[..., nn.Module]


class BasicBlock(nn.Module):
  """ResNet basic block (two 3×3 convs) with a projection shortcut when the shape changes."""

  features: int
  strides: int = 1
  norm: ModuleDef = nn.BatchNorm

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.Conv(self.features, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)),
                use_bias=False, name="conv1")(x)
    y = self.norm(name="bn1")(y)
    y = activations.relu(y)
    y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(y)
    # Zero-init the last BN scale of each block: the block starts as the identity (Goyal et al.).
    y = self.norm(scale_init=nn.initializers.zeros, name="bn2")(y)
    if residual.shape != y.shape:
      residual = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False,
                         name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return activations.relu(residual + y)


class ResNet(nn.Module):
  """ResNet with basic blocks; `stage_sizes=(2, 2, 2, 2), width=64` is ResNet-18 (He et al. 2016).

  Input `[B, H, W, C]` (any C: the aerial CIR patches have 4 bands), output the globally
  average-pooled features `[B, width * 2**(len(stage_sizes)-1)]` (512 for ResNet-18).
  Tests use a tiny variant (`stage_sizes=(1, 1), width=8`).
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  stem_kernel: int = 7
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda **kw: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     dtype=self.dtype, **kw)
    x = x.astype(self.dtype)
    k = self.stem_kernel
    x = nn.Conv(self.width, (k, k), (2, 2), padding=[(k // 2, k // 2)] * 2, use_bias=False,
                dtype=self.dtype, name="stem_conv")(x)
    x = norm(name="stem_bn")(x)
    x = activations.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2**i, strides, norm=norm, name=f"stage{i + 1}_block{j + 1}")(x)
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


ENCODERS: dict[str, type[nn.Module]] = {
    "resnet": ResNet,
    "mlp": MLPEncoder,
    "embedding": Embedding,
    "small_cnn": SmallCNN,  # MTC-LIM's shared CNN at synthetic scale (models/cnn.py)
}
