"""Explanation metrics (`mtljax.attribution.localization`) on hand-made maps and against independent
computations (hand counts, explicit loops, scipy)."""

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from mtljax.attribution import localization
from mtljax.attribution.ensemble import normalize

# --- IoU ----------------------------------------------------------------------------------------


def _rect(shape, rows, cols, value=1.0):
  out = np.zeros(shape)
  out[rows[0] : rows[1], cols[0] : cols[1]] = value
  return out


def test_iou_counts_on_hand_drawn_rectangles():
  shape = (10, 12)
  m = _rect(shape, (2, 6), (3, 8))  # 4 x 5 = 20 pixels at 1.0
  m[0, 0:2] = 0.3  # exactly at the threshold: relevant (map >= threshold), 2 more pixels
  m[9, 11] = 0.2999  # just below: not relevant
  m[8, 0] = -1.0  # negative (signed maps): not relevant
  mask = _rect(shape, (4, 9), (5, 10)).astype(bool)  # 5 x 5 = 25 pixels
  # Rectangle overlap: rows 4..5 (2) x cols 5..7 (3) = 6; the 0.3 pixels lie outside the mask.
  # union = 22 + 25 - 6 = 41.
  out = localization.iou(m[None], mask[None], threshold=0.3)
  assert out["intersection"].tolist() == [6]
  assert out["union"].tolist() == [41]
  assert out["iou"][0] == 6 / 41
  # A higher threshold drops the two 0.3 pixels: union = 20 + 25 - 6 = 39.
  out = localization.iou(m[None], mask[None], threshold=0.5)
  assert (out["intersection"][0], out["union"][0], out["iou"][0]) == (6, 39, 6 / 39)
  # The default threshold is the paper's 0.3.
  assert localization.iou(m[None], mask[None])["union"][0] == 41


def test_iou_batch_masks_and_edge_conventions():
  shape = (6, 6)
  full = _rect(shape, (1, 4), (1, 4))  # 9 pixels
  maps = np.stack(
    [
      full,  # identical to the mask: IoU 1
      np.zeros(shape),  # nothing relevant, nonempty mask: 0 / 9 = 0
      np.zeros(shape),  # nothing relevant, empty mask: union 0 -> NaN
      _rect(shape, (0, 6), (0, 6)),  # everything relevant: 9 / 36
    ]
  )
  # Masks need not be bool: any nonzero value (e.g. 255 in a PNG) is inside.
  masks = np.stack([full * 255, full * 255, np.zeros(shape), full * 255]).astype(np.uint8)
  out = localization.iou(maps, masks)
  assert out["intersection"].tolist() == [9, 0, 0, 9]
  assert out["union"].tolist() == [9, 9, 0, 36]
  np.testing.assert_array_equal(out["iou"], [1.0, 0.0, np.nan, 0.25])
  with pytest.raises(ValueError, match="differ"):
    localization.iou(maps, masks[:, :5])
  with pytest.raises(ValueError, match="differ"):
    localization.iou(maps, masks[:3])


# --- Area downsampling --------------------------------------------------------------------------


def _downsample_by_replication(maps, size):
  """Independent area average: split each pixel into size x size equal sub-pixels, after which
  every output cell is exactly an (H x W)-sub-pixel block; average each block."""
  n, h, w = maps.shape
  fine = np.repeat(np.repeat(maps, size, axis=1), size, axis=2)  # [N, H*size, W*size]
  return fine.reshape(n, size, h, size, w).mean(axis=(2, 4))


def _block_means_loop(maps, size):
  n, h, w = maps.shape
  bh, bw = h // size, w // size
  out = np.zeros((n, size, size))
  for k in range(n):
    for i in range(size):
      for j in range(size):
        out[k, i, j] = maps[k, i * bh : (i + 1) * bh, j * bw : (j + 1) * bw].mean()
  return out


def test_area_downsample_by_hand_3_to_2():
  # Cells span 1.5 pixels: cell (0, 0) = (m00 + m01/2 + m10/2 + m11/4) / 2.25, etc.
  m = np.arange(9.0).reshape(1, 3, 3)
  np.testing.assert_allclose(
    localization.area_downsample(m, 2)[0], [[4 / 3, 8 / 3], [16 / 3, 20 / 3]], rtol=1e-13
  )


def test_area_downsample_divisible_sizes_are_block_means():
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(3, 28, 42))
  out = localization.area_downsample(maps, 14)
  assert out.shape == (3, 14, 14)
  np.testing.assert_allclose(out, _block_means_loop(maps, 14), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("hw", [(20, 20), (20, 28), (31, 17)])
def test_area_downsample_non_divisible_sizes(hw):
  rng = np.random.default_rng(1)
  maps = rng.uniform(size=(2,) + hw)
  out = localization.area_downsample(maps, 14)
  assert out.shape == (2, 14, 14)
  np.testing.assert_allclose(out, _downsample_by_replication(maps, 14), rtol=1e-12, atol=1e-14)
  # Each output cell covers (H / 14) x (W / 14) input pixels, so the mass is preserved.
  cell_area = hw[0] * hw[1] / 14**2
  np.testing.assert_allclose(out.sum(axis=(1, 2)) * cell_area, maps.sum(axis=(1, 2)), rtol=1e-12)
  # A constant map stays constant.
  np.testing.assert_allclose(
    localization.area_downsample(np.full((1,) + hw, 0.7), 14), 0.7, rtol=1e-13
  )


def test_area_downsample_20_to_14_by_hand_loop():
  """Explicit interval-overlap loop: output cell i covers [i * 20/14, (i + 1) * 20/14)."""
  rng = np.random.default_rng(2)
  m = rng.uniform(size=(20, 20))
  step = 20 / 14
  expected = np.zeros((14, 14))
  for i in range(14):
    for j in range(14):
      total = 0.0
      for y in range(20):
        oy = max(0.0, min((i + 1) * step, y + 1) - max(i * step, y))
        for x in range(20):
          ox = max(0.0, min((j + 1) * step, x + 1) - max(j * step, x))
          total += oy * ox * m[y, x]
      expected[i, j] = total / step**2
  np.testing.assert_allclose(localization.area_downsample(m[None], 14)[0], expected, rtol=1e-12)


# --- Pearson ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size_hw", [28, 20])
def test_pearson_matches_scipy_on_downsampled_maps(size_hw):
  rng = np.random.default_rng(3)
  n = 4
  masks = np.zeros((n, size_hw, size_hw), bool)
  for k in range(n):
    y, x = rng.integers(0, size_hw // 2, size=2)
    masks[k, y : y + 7, x : x + 9] = True
  maps = 0.5 * masks + rng.uniform(size=masks.shape)
  ours = localization.pearson(maps, masks, size=14)
  a = _downsample_by_replication(maps, 14)
  b = _downsample_by_replication(masks.astype(float), 14)
  expected = [scipy.stats.pearsonr(a[k].ravel(), b[k].ravel()).statistic for k in range(n)]
  np.testing.assert_allclose(ours, expected, rtol=1e-12)
  assert np.all(ours > 0.2)  # the planted region shows


def test_pearson_exact_values_and_nan():
  mask = _rect((28, 28), (4, 12), (6, 20)).astype(bool)
  maps = np.stack([mask * 3.0 + 1.0, 1.0 - mask, np.zeros((28, 28)), mask * 1.0])
  masks = np.stack([mask, mask, mask, np.zeros((28, 28), bool)])
  out = localization.pearson(maps, masks)
  np.testing.assert_allclose(out[:2], [1.0, -1.0], rtol=1e-13)
  # Constant map, or an empty (constant) mask: NaN.
  assert np.isnan(out[2]) and np.isnan(out[3])


# --- Centre of mass -----------------------------------------------------------------------------


def test_center_of_mass_by_hand():
  m = np.zeros((1, 8, 9))
  m[0, 1, 2] = 1.0
  m[0, 5, 6] = 3.0
  m[0, 7, 0] = -10.0  # negative values carry no mass (weights max(map, 0))
  # ((1 * 1 + 3 * 5) / 4, (1 * 2 + 3 * 6) / 4) = (4, 5).
  np.testing.assert_allclose(localization.center_of_mass(m), [[4.0, 5.0]], rtol=1e-15)


def test_center_of_mass_matches_scipy_and_nan():
  rng = np.random.default_rng(4)
  maps = rng.normal(size=(3, 11, 17))
  ours = localization.center_of_mass(maps)
  expected = [scipy.ndimage.center_of_mass(np.maximum(m, 0.0)) for m in maps]
  np.testing.assert_allclose(ours, expected, rtol=1e-12)
  # scipy on the raw (signed) map differs: negative values are clipped, not subtracted.
  assert not np.allclose(ours[0], scipy.ndimage.center_of_mass(maps[0]))
  empty = localization.center_of_mass(np.stack([np.zeros((4, 4)), -np.ones((4, 4))]))
  assert empty.shape == (2, 2) and np.all(np.isnan(empty))


def test_com_distance_is_normalised_by_image_size():
  """The distance is taken after dividing (y, x) by (H, W): the image becomes the unit square, so a
  distance compares across image sizes and is at most √2 (pixel centres sit at integers, so in
  fact at most √2 (1 - 1/H) for square images)."""
  h, w = 10, 20
  maps = np.zeros((3, h, w))
  maps[:, 1, 2] = 1.0  # centre of mass (1, 2)
  keypoints = np.array(
    [
      [7.0, 18.0],  # offset (6, 16) px -> (0.6, 0.8) -> 1.0
      [1.0, 2.0],  # on the keypoint -> 0
      [np.nan, np.nan],
    ]
  )  # not annotated -> NaN
  d = localization.com_distance(maps, keypoints)
  np.testing.assert_allclose(d[:2], [1.0, 0.0], rtol=1e-14, atol=1e-15)
  assert np.isnan(d[2])
  # In pixels the first one would be sqrt(6² + 16²) ≈ 17.09: the normalisation is per axis.
  assert not math.isclose(d[0], math.hypot(6, 16) / max(h, w))
  # A map without mass has no centre: NaN.
  assert np.isnan(localization.com_distance(np.zeros((1, h, w)), [[1.0, 1.0]])[0])
  # Opposite corners of a square image: (H - 1)/H * √2.
  corner = np.zeros((1, 8, 8))
  corner[0, 0, 0] = 1.0
  np.testing.assert_allclose(
    localization.com_distance(corner, [[7.0, 7.0]]), [7 / 8 * math.sqrt(2)], rtol=1e-14
  )
  with pytest.raises(ValueError, match=r"keypoints of shape \(3, 2\)"):
    localization.com_distance(maps, keypoints[:2])


# --- Ind-Avg vs Ens-Avg -------------------------------------------------------------------------


def test_compare_t_test_by_hand():
  ens = np.array([1.0, 2.0, 3.0, 4.0])
  d = np.array([0.5, 1.0, 0.5, 1.0])  # ens - member mean
  ind = np.stack([ens - d - 0.25, ens - d + 0.25])  # member mean = ens - d
  # Paired differences d: mean 0.75, sample sd sqrt(4 * 0.25² / 3), t = 0.75 / (sd / 2) = 3√3.
  out = localization.compare(ind, ens, lower_is_better=False)
  assert out["n"] == 4
  np.testing.assert_allclose(out["t"], 3 * math.sqrt(3), rtol=1e-12)
  np.testing.assert_allclose(out["p"], 2 * scipy.stats.t.sf(3 * math.sqrt(3), df=3), rtol=1e-10)
  np.testing.assert_allclose([out["ens_avg"], out["ind_avg"]], [2.5, 1.75], rtol=1e-15)
  assert out["ens_better"]
  # For a distance the same numbers mean the ensemble is worse: t flips sign, p does not.
  low = localization.compare(ind, ens, lower_is_better=True)
  np.testing.assert_allclose(low["t"], -3 * math.sqrt(3), rtol=1e-12)
  assert low["p"] == out["p"] and not low["ens_better"]


def test_compare_matches_scipy_ttest_rel_with_nans():
  rng = np.random.default_rng(5)
  ind = rng.normal(size=(5, 30))
  ens = ind.mean(axis=0) + 0.5 + 0.5 * rng.normal(size=30)
  ind[0, 3] = np.nan  # member mean over the other 4 members
  ind[:, 7] = np.nan  # no member value: example dropped
  ens[11] = np.nan  # no ensemble value: example dropped
  out = localization.compare(ind, ens, lower_is_better=False)
  member_mean = np.array(
    [np.mean(ind[~np.isnan(ind[:, k]), k]) if k != 7 else np.nan for k in range(30)]
  )
  keep = np.ones(30, bool)
  keep[[7, 11]] = False
  ref = scipy.stats.ttest_rel(ens[keep], member_mean[keep])
  assert out["n"] == 28
  np.testing.assert_allclose([out["t"], out["p"]], [ref.statistic, ref.pvalue], rtol=1e-10)
  np.testing.assert_allclose(out["ind_avg"], member_mean[keep].mean(), rtol=1e-12)
  np.testing.assert_allclose(out["ens_avg"], ens[keep].mean(), rtol=1e-12)
  assert out["p"] < 0.05 and out["ens_better"]
  # Fewer than 2 valid examples: no test.
  one = localization.compare(ind[:, :1], ens[:1], lower_is_better=False)
  assert one["n"] == 1 and np.isnan(one["t"]) and np.isnan(one["p"])
  with pytest.raises(ValueError, match=r"must be \[E, N\]"):
    localization.compare(ind[:, :5], ens, lower_is_better=False)


# --- Ensemble-size curve ------------------------------------------------------------------------


def test_size_curve_on_noisy_copies_of_the_truth():
  rng = np.random.default_rng(6)
  members, n, hw = 8, 4, 28
  masks = np.zeros((n, hw, hw), bool)
  for k in range(n):
    y, x = rng.integers(0, 14, size=2)
    masks[k, y : y + 10, x : x + 12] = True
  truth = masks.astype(float)
  # Each member sees the truth under its own independent noise, and at its own scale (the curve
  # normalises each member first, so the scale must not matter).
  per_member = truth[None] + 1.5 * rng.normal(size=(members, n, hw, hw))
  scales = np.arange(1, members + 1, dtype=float)[:, None, None, None]
  metric = lambda m: localization.pearson(m, masks)  # noqa: E731

  curve = localization.size_curve(per_member * scales, metric, signed=True)
  assert curve["k"].tolist() == list(range(1, members + 1))
  assert curve["ens_avg"].shape == curve["ind_avg"].shape == (members,)
  # Same numbers without the scales.
  unscaled = localization.size_curve(per_member, metric, signed=True)
  np.testing.assert_allclose(curve["ens_avg"], unscaled["ens_avg"], rtol=1e-12)
  np.testing.assert_allclose(curve["ind_avg"], unscaled["ind_avg"], rtol=1e-12)

  # Against a direct computation.
  norm = per_member / np.abs(per_member).max(axis=(2, 3), keepdims=True)
  member_scores = np.stack([metric(m) for m in norm])  # [E, N]
  for k in range(1, members + 1):
    mean = norm[:k].mean(axis=0)
    mean = mean / np.abs(mean).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(curve["ens_avg"][k - 1], metric(mean).mean(), rtol=1e-12)
    np.testing.assert_allclose(curve["ind_avg"][k - 1], member_scores[:k].mean(), rtol=1e-12)

  # One member: the ensemble is that member.
  assert curve["ens_avg"][0] == curve["ind_avg"][0]
  # Averaging more noisy maps gets closer to the truth, step by step, while single members do not.
  assert np.all(np.diff(curve["ens_avg"]) > 0), curve["ens_avg"]
  assert curve["ens_avg"][-1] > 1.8 * curve["ens_avg"][0]
  assert np.ptp(curve["ind_avg"]) < 0.1 * (curve["ens_avg"][-1] - curve["ens_avg"][0])


def test_size_curve_nan_aware_with_iou():
  # Example 1 has an empty mask and nothing above the threshold: its IoU is NaN and is skipped.
  masks = np.zeros((2, 6, 6), bool)
  masks[0, 1:4, 1:4] = True
  maps = np.zeros((2, 2, 6, 6))
  maps[0, 0, 1:4, 1:4] = 1.0  # member 0 finds the 9 mask pixels: IoU 1
  maps[1, 0, 0:3, 0:3] = 1.0  # member 1 is shifted by one pixel: 4 / 14
  metric = lambda m: localization.iou(m, masks)["iou"]  # noqa: E731
  curve = localization.size_curve(maps, metric, signed=False)
  # k = 2: the mean map is 1 on the overlap (4 px) and 0.5 elsewhere on both squares (14 px):
  # all >= 0.3, so the IoU is 9 / 14.
  np.testing.assert_allclose(curve["ens_avg"], [1.0, 9 / 14], rtol=1e-15)
  np.testing.assert_allclose(curve["ind_avg"], [1.0, (1.0 + 4 / 14) / 2], rtol=1e-15)
  assert np.all(normalize(maps, signed=False)[:, 1] == 0)
