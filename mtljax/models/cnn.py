"""A small plain CNN encoder for small images (MTC-LIM's shared feature extractor at test scale).

The MTC-LIM paper (§2.3.1, §3) uses an arbitrary CNN front end (DenseNet121, EfficientNetV2-B3)
completed with global average pooling. At the synthetic 16–32 px scale a few conv blocks do:
each block is 3×3 conv → BatchNorm → ReLU, every block after the first with stride 2, then global
average pooling. Signature as every encoder: ``encoder(x [B, H, W, C], *, train) -> [B, D]``
with ``D = features[-1]``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtljax.models import activations, convolution


class SmallCNN(nn.Module):
  features: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = x.astype(jnp.float32)
    for i, f in enumerate(self.features):
      s = 1 if i == 0 else 2
      x = convolution.Conv(f, (3, 3), (s, s), padding="SAME", use_bias=False, name=f"conv{i + 1}")(
        x
      )
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{i + 1}")(x)
      x = activations.relu(x)
    return jnp.mean(x, axis=(1, 2))  # global average pooling (paper §2.3.1)
