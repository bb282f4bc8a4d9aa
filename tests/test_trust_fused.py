"""`trust.fused.map_metrics` (the five map-only metrics in one program) equals the separate
`trust.simple` metrics, ties and empty masks included."""

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.attribution.trust import fused, map_metrics


def test_fused_map_metrics_equal_the_separate_ones():
  r = np.random.default_rng(0)
  maps = np.abs(r.normal(size=(6, 10, 9))).astype(np.float32)
  maps[0, 2, 2] = maps[0, 7, 7] = maps[0].max() + 1  # tied maxima, one inside the mask
  maps[1] = np.round(maps[1], 1)  # many ties for the ranks
  masks = np.zeros((6, 10, 9), bool)
  masks[:, 1:5, 2:6] = True
  masks[2] = False  # empty mask -> NaN
  m, s = jnp.asarray(maps), jnp.asarray(masks)
  got = jax.jit(fused.map_metrics)(m, s)
  np.testing.assert_allclose(got["sparseness"], map_metrics.sparseness(m), rtol=1e-5)
  np.testing.assert_allclose(got["entropy"], map_metrics.entropy(m), rtol=1e-6)
  for name in ("pointing_game", "relevance_mass", "relevance_rank"):
    want = getattr(map_metrics, name)(m, s)
    np.testing.assert_allclose(got[name], want, rtol=1e-6, err_msg=name)
  assert np.isnan(got["relevance_rank"][2]) and got["pointing_game"][0] == 1.0
  assert set(fused.map_metrics(m)) == {"sparseness", "entropy"}
