"""Explanation metrics against human annotations (Section 3.2 and 5 of the ensembles paper).

numpy/scipy, vectorised over a batch of N maps `[N, H, W]`. Maps are expected normalised (see
`ensemble.normalize`) where a metric thresholds them. Ind-Avg is the metric averaged over the
individual members' maps; Ens-Avg is the metric of the averaged map.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.stats

from mtljax.attribution.ensemble import normalize


def _check_spatial(maps: np.ndarray, other: np.ndarray, what: str) -> None:
  if maps.shape[-2:] != other.shape[-2:] or maps.shape[:-2] != other.shape[:-2]:
    raise ValueError(f"maps of shape {maps.shape} and {what} of shape {other.shape} differ")


def iou(maps, masks, threshold: float = 0.3) -> dict[str, np.ndarray]:
  """IoU between thresholded maps (pixel relevant where `map >= threshold`) and masks.

  Args:
    maps: normalised maps `[N, H, W]`.
    masks: ground-truth regions `[N, H, W]` (bool, or nonzero = inside).
    threshold: binarisation threshold on the normalised map (0.3 in the paper).

  Returns:
    `{"iou", "intersection", "union"}`, each `[N]`; counts in pixels, iou NaN where union is 0.
  """
  maps, masks = np.asarray(maps), np.asarray(masks).astype(bool)
  _check_spatial(maps, masks, "masks")
  pred = maps >= threshold
  intersection = np.sum(pred & masks, axis=(-2, -1))
  union = np.sum(pred | masks, axis=(-2, -1))
  with np.errstate(invalid="ignore", divide="ignore"):
    ratio = np.where(union > 0, intersection / union, np.nan)
  return {"iou": ratio, "intersection": intersection, "union": union}


def _area_matrix(size_in: int, size_out: int) -> np.ndarray:
  """`[size_out, size_in]` weights: the fraction of output cell i covered by input pixel j."""
  edges = np.arange(size_out + 1) * size_in / size_out
  lo, hi = edges[:-1, None], edges[1:, None]
  pos = np.arange(size_in)[None, :]
  overlap = np.clip(np.minimum(hi, pos + 1) - np.maximum(lo, pos), 0, None)
  return overlap / (size_in / size_out)


def area_downsample(maps, size: int = 14) -> np.ndarray:
  """Area-average `[N, H, W]` to `[N, size, size]`: exact block means when `size` divides H and W,
  otherwise each output cell averages the input pixels weighted by their overlap with it."""
  maps = np.asarray(maps, np.float64)
  n, height, width = maps.shape
  if height % size == 0 and width % size == 0:
    return maps.reshape(n, size, height // size, size, width // size).mean(axis=(2, 4))
  return np.einsum("ih,nhw,jw->nij", _area_matrix(height, size), maps, _area_matrix(width, size))


def pearson(maps, masks, size: int = 14) -> np.ndarray:
  """Pearson correlation per example between maps and masks, both area-downsampled to
  `size x size` and flattened. Returns `[N]`; NaN where either is constant."""
  maps, masks = np.asarray(maps), np.asarray(masks)
  _check_spatial(maps, masks, "masks")
  x = area_downsample(maps, size).reshape(maps.shape[0], -1)
  y = area_downsample(masks.astype(np.float64), size).reshape(masks.shape[0], -1)
  x = x - x.mean(axis=1, keepdims=True)
  y = y - y.mean(axis=1, keepdims=True)
  denom = np.sqrt(np.sum(x * x, axis=1) * np.sum(y * y, axis=1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denom > 0, np.sum(x * y, axis=1) / denom, np.nan)


def center_of_mass(maps) -> np.ndarray:
  """Centre of mass `[N, 2]` as (y, x) pixel coordinates (pixel centres at integers) with weights
  `max(map, 0)` (Eq. 3); NaN where the total mass is 0."""
  w = np.maximum(np.asarray(maps, np.float64), 0.0)
  mass = w.sum(axis=(-2, -1))
  ys = np.arange(w.shape[-2], dtype=np.float64)
  xs = np.arange(w.shape[-1], dtype=np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    com_y = np.einsum("nhw,h->n", w, ys) / mass
    com_x = np.einsum("nhw,w->n", w, xs) / mass
  return np.where((mass > 0)[:, None], np.stack([com_y, com_x], axis=1), np.nan)


def com_distance(maps, keypoints) -> np.ndarray:
  """Distance `[N]` between each map's centre of mass and its keypoint `[N, 2]` (y, x) in pixels,
  with coordinates divided by (H, W) so that the image is the unit square (0 ≤ d ≤ √2). NaN where
  the keypoint is NaN (not annotated) or the map has no mass."""
  maps, keypoints = np.asarray(maps), np.asarray(keypoints, np.float64)
  if keypoints.shape != (maps.shape[0], 2):
    raise ValueError(
      f"maps of shape {maps.shape} need keypoints of shape ({maps.shape[0]}, 2), "
      f"got {keypoints.shape}"
    )
  scale = np.array(maps.shape[-2:], np.float64)
  return np.linalg.norm((center_of_mass(maps) - keypoints) / scale, axis=1)


def compare(ind, ens, *, lower_is_better: bool) -> dict[str, float]:
  """Ind-Avg versus Ens-Avg with a paired t-test over examples.

  Args:
    ind: metric of each member's map `[E, N]`; averaged over members per example (NaN-aware).
    ens: metric of the ensemble's map `[N]`.
    lower_is_better: True for distances. `t` is oriented so that positive means the ensemble is
      better; `p` is the two-sided p-value of `scipy.stats.ttest_rel(ens, ind_mean)`.

  Returns:
    `{"ind_avg", "ens_avg", "t", "p", "n", "ens_better"}` over the n examples where both the
    member mean and the ensemble value are finite; t and p are NaN when n < 2.
  """
  ind, ens = np.asarray(ind, np.float64), np.asarray(ens, np.float64)
  if ind.ndim != 2 or ind.shape[1:] != ens.shape:
    raise ValueError(
      f"ind of shape {ind.shape} must be [E, N] with ens of shape [N], got {ens.shape}"
    )
  valid = np.isfinite(ind).any(axis=0)
  ind_mean = np.full(ens.shape, np.nan)
  ind_mean[valid] = np.nanmean(ind[:, valid], axis=0)
  keep = np.isfinite(ind_mean) & np.isfinite(ens)
  a, b = ens[keep], ind_mean[keep]
  n = int(keep.sum())
  t, p = scipy.stats.ttest_rel(a, b) if n >= 2 else (np.nan, np.nan)
  ind_avg, ens_avg = (float(b.mean()), float(a.mean())) if n else (np.nan, np.nan)
  sign = -1.0 if lower_is_better else 1.0
  return {
    "ind_avg": ind_avg,
    "ens_avg": ens_avg,
    "t": sign * float(t),
    "p": float(p),
    "n": n,
    "ens_better": bool(sign * (ens_avg - ind_avg) > 0),
  }


def size_curve(
  per_member_maps, metric_fn: Callable[[np.ndarray], np.ndarray], *, signed: bool
) -> dict[str, np.ndarray]:
  """How the metric changes with the ensemble's size.

  Args:
    per_member_maps: `[E, N, H, W]` member maps (normalised here, see `ensemble.normalize`).
    metric_fn: maps `[N, H, W]` → per-example metric `[N]` (close over the masks/keypoints).
    signed: normalisation mode.

  Returns:
    `{"k": [E], "ens_avg": [E], "ind_avg": [E]}`: for k = 1..E, the NaN-mean metric of the mean of
    the first k normalised member maps (renormalised), and the NaN-mean over those k members and
    the examples of each member's own metric.
  """
  maps = normalize(np.asarray(per_member_maps, np.float64), signed=signed)
  num = maps.shape[0]
  member_scores = np.stack([np.asarray(metric_fn(m), np.float64) for m in maps])  # [E, N]
  running = np.cumsum(maps, axis=0) / np.arange(1, num + 1)[:, None, None, None]
  ens_avg, ind_avg = [], []
  for k in range(1, num + 1):
    ens_avg.append(np.nanmean(metric_fn(normalize(running[k - 1], signed=signed))))
    ind_avg.append(np.nanmean(member_scores[:k]))
  return {"k": np.arange(1, num + 1), "ens_avg": np.array(ens_avg), "ind_avg": np.array(ind_avg)}
