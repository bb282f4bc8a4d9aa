"""Fusion blocks: {modality: features} → one fused representation (mtl-explainability §3.3).

For classification and regression the encoders emit vectors and fusion is a plain concatenation
"with no additional processing". Modalities are concatenated in sorted-name order so the fused
layout does not depend on dict insertion order.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mtljax.models.spatial import SpatialFusion


class ConcatFusion(nn.Module):
  """Concatenate feature vectors `{m: [B, D_m]}` → `[B, Σ D_m]`."""

  @nn.compact
  def __call__(self, features: dict, *, train: bool):
    del train
    return jnp.concatenate([features[k] for k in sorted(features)], axis=-1)


FUSIONS: dict[str, type[nn.Module]] = {
  "concat": ConcatFusion,
  "spatial": SpatialFusion,  # vectors broadcast to H×W, concatenated with maps, convs
}
