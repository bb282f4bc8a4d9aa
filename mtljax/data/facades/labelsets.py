"""Label-powerset (LP) balancing and partition for multitask classification (MTC-LIM paper §2.2).

Every distinct combination of the tasks' labels (a *labelset*) is one LP bin. Pure numpy:

* ``labelset_ids(labels)``: ``[N, T]`` integer labels -> ``[N]`` bin id (0 .. B-1) and the bins.
* ``lprus(labels, keep, seed)`` (§2.2.1, Fig. 7): LP-based random undersampling. The *cut-off
  point* ``c`` is the smallest bin size at which the accumulated frequencies, with every bin
  capped at ``c``, meet the percentage of the data to keep, ``Σ_b min(n_b, c) >= keep · N``; each bin
  with more than ``c`` examples keeps ``c`` random ones, the other bins are kept whole.
* ``labelset_group_split(labels, groups, fractions, seed)`` (§2.2.2): training / validation / test
  partition built on the LP bins (each split's share of each bin close to ``fractions``) that is
  spatially disjoint: all examples of one group (block) go to the same split.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["labelset_ids", "lprus_cutoff", "lprus", "labelset_group_split"]


def labelset_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``labels [N, T]`` (integer class per task) -> ``(ids [N], labelsets [B, T])``; bin ``b`` is
  the labelset ``labelsets[b]`` (sorted lexicographically)."""
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"labels must be [N, T], got shape {labels.shape}")
  labelsets, ids = np.unique(labels, axis=0, return_inverse=True)
  return ids.reshape(-1), labelsets


def lprus_cutoff(counts: Sequence[int], keep: float) -> int:
  """The cut-off point: the smallest bin size ``c`` with ``Σ_b min(n_b, c) >= keep · Σ_b n_b``."""
  counts = np.sort(np.asarray(counts, np.int64))[::-1]
  if not 0.0 < keep <= 1.0:
    raise ValueError(f"LPRUS keep percentage must be in (0, 1], got {keep}")
  target = keep * counts.sum()
  lo, hi = 1, int(counts.max())
  while lo < hi:  # Σ min(n_b, c) grows with c: bisect
    mid = (lo + hi) // 2
    if np.minimum(counts, mid).sum() >= target:
      hi = mid
    else:
      lo = mid + 1
  return lo


def lprus(labels: np.ndarray, keep: float = 0.85, seed: int = 0) -> np.ndarray:
  """Indices (sorted) of the examples kept by LPRUS with keep percentage ``keep`` (0.85 in the
  paper, §3). Bins above the cut-off point are cut to it at random; the rest are untouched."""
  ids, _ = labelset_ids(labels)
  counts = np.bincount(ids)
  if keep >= 1.0:
    return np.arange(len(ids))
  c = lprus_cutoff(counts, keep)
  rng = np.random.default_rng(seed)
  kept = []
  for b, n in enumerate(counts):
    members = np.flatnonzero(ids == b)
    kept.append(rng.choice(members, size=c, replace=False) if n > c else members)
  return np.sort(np.concatenate(kept))


def labelset_group_split(
  labels: np.ndarray, groups: Sequence, fractions=(0.65, 0.175, 0.175), seed: int = 0
) -> np.ndarray:
  """Split id (0 = train, 1 = val, 2 = test, ...) of every example, group-disjoint.

  Groups are visited in a seeded random order and each is given whole to the split with the
  largest unmet demand for the group's labelsets: demand of split s for bin b is
  ``fractions[s] · n_b − (already assigned to s from b)``, summed over the group's examples, with
  the split's overall unmet share breaking ties. So each split receives about its share of every
  labelset bin (as far as the group sizes allow) and no group straddles two splits.
  """
  ids, _ = labelset_ids(labels)
  groups = np.asarray(groups)
  if len(groups) != len(ids):
    raise ValueError(f"{len(groups)} group ids for {len(ids)} examples")
  fr = np.asarray(fractions, np.float64)
  if np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
    raise ValueError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
  counts = np.bincount(ids).astype(np.float64)
  assigned = np.zeros((len(fr), len(counts)))
  split = np.full(len(ids), -1, np.int64)
  uniq, inverse = np.unique(groups, return_inverse=True)
  order = np.random.default_rng(seed).permutation(len(uniq))
  n = len(ids)
  for g in order:
    members = np.flatnonzero(inverse == g)
    bins = np.bincount(ids[members], minlength=len(counts)).astype(np.float64)
    demand = (fr[:, None] * counts[None, :] - assigned) @ bins / max(bins.sum(), 1.0)
    overall = fr * n - assigned.sum(1)
    s = int(np.lexsort((-overall, -np.round(demand, 9)))[0])
    split[members] = s
    assigned[s] += bins
  return split
