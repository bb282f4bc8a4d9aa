"""Task heads: fused features → one task's raw output (logits or regression values).

Appendix B.3 (TreeSAT Exp. 7): L3 is a single linear layer on the 1536-d fused features, L2 a
two-layer MLP with ReLU and dropout 0.25, age a single linear layer. Signature:

    head(fused [B, D], *, train: bool) -> [B, out_dim]   (regression with out_dim=1 → [B])
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from mtljax.models import activations
from mtljax.models.spatial import DenseRegressionHead, PooledHead, SegmentationHead


class LinearHead(nn.Module):
  out_dim: int
  squeeze: bool = False  # [B, 1] → [B] for scalar regression targets

  @nn.compact
  def __call__(self, x, *, train: bool):
    del train
    y = nn.Dense(self.out_dim, name="out")(x)
    return y[..., 0] if self.squeeze else y


class MLPHead(nn.Module):
  """`len(hidden)` × (Dense → ReLU → Dropout), then a linear output layer."""

  out_dim: int
  hidden: Sequence[int] = (256,)
  dropout: float = 0.25
  squeeze: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i, h in enumerate(self.hidden):
      x = nn.Dense(h, name=f"dense{i + 1}")(x)
      x = activations.relu(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    y = nn.Dense(self.out_dim, name="out")(x)
    return y[..., 0] if self.squeeze else y


HEADS: dict[str, type[nn.Module]] = {
  "linear": LinearHead,
  "mlp": MLPHead,
  # Heads on a fused feature map [B, H, W, C] (models/spatial.py, Appendix B.2).
  "segmentation": SegmentationHead,
  "dense": DenseRegressionHead,
  "pooled": PooledHead,
}
