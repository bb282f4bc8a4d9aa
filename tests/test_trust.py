"""The trust metrics on their own: against independent numpy/scipy computations, the sanity check
telling a model-dependent method from an edge detector, faithfulness telling an exact attribution
from a random map, the bad requests, the arrows' strongest-region option and the run's page."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats
from test_analysis_report import check_report_renders

from mtljax.attribution import controls
from mtljax.attribution.trust import (
  faithfulness,
  map_metrics,
  ops,
  registry,
  sanity,
)
from mtljax.explain import image_report, page, render, trust
from mtljax.explain.setup import ExplainError


class _CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
    x = nn.relu(nn.Conv(8, (3, 3), name="conv2")(x))
    return nn.Dense(1, name="fc")(x.mean(axis=(1, 2)))[:, 0]


def test_ranks_correlations_and_spread_match_scipy():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 5, (3, 40)).astype(np.float64)  # many ties
  b = rng.normal(size=(3, 40))
  np.testing.assert_allclose(jax.jit(ops.rankdata)(a), scipy.stats.rankdata(a, axis=1))
  # NaNs tie with each other, after every number (scipy would make the whole row NaN).
  np.testing.assert_allclose(
    ops.rankdata(jnp.asarray([[1.0, np.nan, 0.0, np.nan]])), [[2, 3.5, 1, 3.5]]
  )
  want = [scipy.stats.spearmanr(x, y)[0] for x, y in zip(a, b)]
  np.testing.assert_allclose(jax.jit(ops.spearman)(a, b), want, rtol=1e-6)
  members = rng.random((3, 2, 6, 6))
  std, agree = jax.jit(map_metrics.member_spread)(members)
  np.testing.assert_allclose(std, members.std(0), rtol=1e-6)
  flat = members.reshape(3, 2, -1)
  pairs = [(0, 1), (0, 2), (1, 2)]
  want = [
    np.mean([scipy.stats.spearmanr(flat[i, n], flat[j, n])[0] for i, j in pairs]) for n in range(2)
  ]
  np.testing.assert_allclose(agree, want, rtol=1e-5)


def test_deletion_insertion_against_a_loop_and_exact_beats_random():
  """A linear model: `w * x` is the exact attribution. Its deletion AUC is lower and insertion AUC
  higher than a random map's for every example (and the curves equal a plain numpy loop)."""
  rng = np.random.default_rng(1)
  w = rng.normal(size=(6, 6, 2))
  x = rng.normal(size=(8, 6, 6, 2))

  def score(p, img):
    return (img * p).sum((1, 2, 3))

  exact = (w * x).sum(-1)
  rand = rng.random((8, 6, 6))
  d, i, d_auc, i_auc = faithfulness.deletion_insertion(
    score,
    jnp.asarray(w),
    jnp.asarray(x),
    jnp.asarray(exact),
    steps=6,
    baseline="zero",
    insert_baseline="zero",
    chunk=3,
  )
  order = np.argsort(-exact.reshape(8, -1), axis=1, kind="stable")
  for b in range(2):
    for s, frac in enumerate(np.linspace(0, 1, 7)):
      keep = np.ones(36, bool)
      keep[order[b, : int(round(frac * 36))]] = False
      want = (x[b] * w * keep.reshape(6, 6, 1)).sum()
      np.testing.assert_allclose(d[b, s], want, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(i[b, s], (x[b] * w).sum() - want, rtol=1e-5, atol=1e-5)
  _, _, d_rand, i_rand = faithfulness.deletion_insertion(
    score,
    jnp.asarray(w),
    jnp.asarray(x),
    jnp.asarray(rand),
    steps=6,
    baseline="zero",
    insert_baseline="zero",
  )
  assert np.all(np.asarray(d_auc) < np.asarray(d_rand))
  assert np.all(np.asarray(i_auc) > np.asarray(i_rand))


def test_random_subsets_draw_every_pixel_alike_without_replacement():
  idx = np.asarray(faithfulness.random_subsets(jax.random.key(0), 4, 50, 200, 10))
  assert idx.shape == (4, 200, 10) and idx.min() >= 0 and idx.max() < 50
  assert all(len(set(row)) == 10 for row in idx.reshape(-1, 10))
  counts = np.bincount(idx.ravel(), minlength=50)  # 8000 picks: 160 per pixel, std about 12
  assert counts.min() > 110 and counts.max() < 210


def test_mprt_tells_saliency_from_an_edge_detector():
  """Cascading randomisation: Saliency's similarity with the original falls well below 1 as the
  layers are randomised; the edge detector, which ignores the model, stays at exactly 1."""
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  model = _CNN()
  params = model.init(jax.random.key(1), x)

  def saliency(p, img):
    return jnp.abs(jax.grad(lambda im: model.apply(p, im).sum())(img)).sum(-1)

  def edges(p, img):
    return controls.edges(None, p, {"image": img}, modality="image").sum(-1)

  layers = sanity.param_layers(params["params"], ["conv1", "conv2", "fc"])
  layers = ["params/" + n for n in reversed(layers)]
  for explain, low in ((saliency, True), (edges, False)):
    maps = explain(params, x)
    run = jax.jit(
      lambda p, xx, m, e=explain: sanity.mprt(
        e, p, xx, m, jax.random.key(2), layers=layers, chunk=None
      )
    )
    curve = np.asarray(run(params, x, maps))
    assert curve.shape == (3, 4)
    # The stops in a loop (one traced explanation) give the unrolled stops' numbers.
    looped = sanity.mprt(explain, params, x, maps, jax.random.key(2), layers=layers, chunk=1)
    np.testing.assert_allclose(looped, curve, rtol=1e-5, atol=1e-6)
    if low:
      assert curve[-1].mean() < 0.5  # far from the original map once the model is random
    else:
      np.testing.assert_allclose(curve, 1.0, rtol=1e-6)


def test_localisation_and_complexity_by_hand():
  maps = np.zeros((2, 4, 4))
  maps[0, 1, 1], maps[0, 3, 3] = 1.0, 0.5
  maps[1] = 1.0  # uniform
  masks = np.zeros((2, 4, 4), bool)
  masks[0, :2, :2] = True
  masks[1, 0, 0] = True
  np.testing.assert_allclose(map_metrics.pointing_game(maps, masks), [1.0, 1.0])
  np.testing.assert_allclose(map_metrics.relevance_mass(maps, masks), [1 / 1.5, 1 / 16])
  # Map 0's top 4: (1,1), (3,3), then the zeros (0,0), (0,1) by position: 3 of them in the mask.
  np.testing.assert_allclose(map_metrics.relevance_rank(maps, masks), [0.75, 1.0])
  assert (
    map_metrics.sparseness(jnp.asarray(maps))[0] > 0.85
    and abs(map_metrics.sparseness(maps)[1]) < 1e-6
  )
  np.testing.assert_allclose(map_metrics.entropy(jnp.asarray(maps))[1], np.log(16), rtol=1e-6)
  assert np.isnan(map_metrics.relevance_mass(maps, np.zeros_like(masks))).all()


def test_bad_requests_fail_with_one_clear_error():
  x = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(ValueError, match=r"maps of shape \(2, 8, 7\) do not fit inputs"):
    faithfulness.deletion_insertion(lambda p, i: i.sum((1, 2, 3)), None, x, jnp.zeros((2, 8, 7)))
  config = ml_collections.ConfigDict({"explain": {"metrics": ("deletion", "bogus")}})
  with pytest.raises(ExplainError, match="unknown metric.*'bogus'.*known: all, deletion"):
    trust.request(config, np.ones(3, bool))
  config.explain.metrics = ("pointing_game",)
  with pytest.raises(ExplainError, match="need ground-truth masks"):
    trust.request(config, np.zeros(3, bool))
  wanted, skipped = registry.resolve(("all",), has_masks=False)
  assert set(skipped) == {"pointing_game", "relevance_mass", "relevance_rank"}
  assert set(wanted) | set(skipped) == set(registry.TRUST_METRICS)
  with pytest.raises(ValueError, match="unknown perturbation baseline 'grey'"):
    ops.baseline(x, "grey")


def test_arrows_at_the_strongest_region_and_the_page(tmp_path):
  """On a diffuse map with one peak, the whole-map centre of mass drifts towards the middle while
  the strongest region's centre stays on the peak. The page shows every picture and table."""
  maps = np.full((1, 20, 20), 0.05)
  maps[0, 2:4, 2:4] = 1.0
  ex = ml_collections.ConfigDict({"arrow_at": "top_mass", "arrow_top": 0.1})
  np.testing.assert_allclose(image_report.arrow_points(maps, ex), [[2.5, 2.5]])
  ex.arrow_at = "com"
  assert image_report.arrow_points(maps, ex)[0, 0] > 6
  out = tmp_path / "explanations" / "test"
  out.mkdir(parents=True)
  images = np.random.default_rng(0).random((2, 20, 20, 3))
  pairs = np.array([[0, 0], [1, 1]])
  render.save_labelled_arrows(
    str(out / "arrows_saliency_000.png"), images[0], [("wing", (2.5, 2.5)), ("beak", (3.0, 2.5))]
  )
  result = {
    "member": {"deletion": np.zeros((2, 2))},
    "ensemble": {"deletion": np.zeros(2)},
    "uncertainty": {
      "std": np.random.default_rng(1).random((2, 20, 20)),
      "agreement": np.array([0.5, 0.7]),
    },
    "compare": {
      "deletion": {"ind_avg": 0.3, "ens_avg": 0.2, "t": 2.0, "p": 0.01, "n": 2, "ens_better": True}
    },
    "skipped": {"pointing_game": "no ground-truth masks in this dataset"},
    "size_curves": {"sparseness": {"k": [1, 2], "ens_avg": [0.5, 0.4], "ind_avg": [0.5, 0.5]}},
  }
  trust.save(str(out), "saliency", result)
  summary = {
    "task": "attributes",
    "split": "test",
    "ensemble_size": 2,
    "checkpoint_step": 5,
    "num_targets": 2,
    "num_examples": 2,
    "methods": {"saliency": {"compare": {}, "trust": trust.summary(result)}},
  }
  index = page.write(str(out), summary, images, pairs, ["wing", "beak"])
  text = open(index).read()
  assert "deletion" in text and "pointing_game skipped (no ground-truth masks" in text
  imgs = check_report_renders(index)
  assert sorted(imgs) == [
    "arrows_saliency_000.png",
    "size_curve_saliency_sparseness.png",
    "uncertainty_saliency.png",
  ]
