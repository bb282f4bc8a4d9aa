"""Façade dataset reader, synthetic generator, LPRUS and the labelset-based group-disjoint split."""

import csv

import numpy as np
import pytest

from mtljax.data import build, get_dataset
from mtljax.data.facades import labelsets
from mtljax.data.facades import synthetic as facades
from mtljax.data.facades.reader import DEFAULT_TASKS, FacadesSource, read_table
from mtljax.data.facades.synthetic import write_synthetic_facades
from mtljax.data.source import DataError


@pytest.fixture(scope="module")
def facade_root(tmp_path_factory):
  return str(
    write_synthetic_facades(
      tmp_path_factory.mktemp("facades"), num_images=500, num_blocks=40, image_size=16, seed=0
    )
  )


def _rewrite(root, tmp_path, edit):
  """A copy of the dataset's tables with `edit(rows)` applied to the CSV rows (images shared)."""
  import shutil

  new = tmp_path / "copy"
  new.mkdir()
  shutil.copy(f"{root}/tasks.json", new / "tasks.json")
  (new / "images").symlink_to(f"{root}/images")
  with open(f"{root}/labels.csv", newline="") as f:
    rows = list(csv.reader(f))
  edit(rows)
  with open(new / "labels.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return new


def test_reader_splits_and_examples(facade_root):
  srcs = {s: FacadesSource(facade_root, s) for s in ("train", "val", "test")}
  sizes = {s: len(v) for s, v in srcs.items()}
  total = sum(sizes.values())
  assert 0.8 * 500 <= total < 500  # LPRUS (keep 85 %) dropped some
  assert sizes["train"] / total == pytest.approx(0.65, abs=0.08)
  groups = {s: set(v.groups) for s, v in srcs.items()}
  assert not (
    groups["train"] & groups["val"]
    or groups["train"] & groups["test"]
    or groups["val"] & groups["test"]
  )
  ex = srcs["train"][0]
  assert ex["inputs"]["image"].shape == (16, 16, 3)
  assert set(ex["targets"]) == set(DEFAULT_TASKS)
  assert srcs["train"].target_fields["sbst"]["num_classes"] == 5
  # the registry and config adapter know the dataset
  assert get_dataset("facades").source_cls is FacadesSource
  assert "facades" in build._ADAPTERS


def test_planted_cooccurrence_is_strong_and_asymmetric(facade_root):
  t = read_table(facade_root)
  names = list(t["tasks"])
  sbst, roof = t["labels"][:, names.index("sbst")], t["labels"][:, names.index("roof")]
  ind, flat = DEFAULT_TASKS["sbst"].index("IND"), DEFAULT_TASKS["roof"].index("FLT")
  p_flat_given_ind = np.mean(roof[sbst == ind] == flat)
  p_ind_given_flat = np.mean(sbst[roof == flat] == ind)
  assert p_flat_given_ind > 0.8 and p_ind_given_flat < 0.5


def test_planted_cues_mark_count_and_zigzag(facade_root):
  """sbst's image cue is the number of 4 × 4 marks in the blue channel (1 + its level rank, with
  rounding noise), and the roof classes zig-zag along that count (FLT, GBL, HIP, FLT, GBL)."""
  from mtljax.data.attributes.common import read_rgb

  t = read_table(facade_root)
  names = list(t["tasks"])
  sbst, roof = t["labels"][:, names.index("sbst")], t["labels"][:, names.index("roof")]
  blue = np.stack([read_rgb(p, 16)[..., 2] for p in t["paths"]])  # [N, 16, 16]
  cells = blue.reshape(-1, 4, 4, 4, 4).mean(axis=(2, 4))  # [N, 4, 4] mean of each 4 × 4 cell
  count = (cells > 128 + 30).sum(axis=(1, 2))
  rank = np.argsort(facades._LEVEL_ORDER["sbst"])[sbst]
  assert np.mean(count == 1 + rank) > 0.8
  assert np.mean(np.abs(count - 1 - rank) <= 1) > 0.98
  flat, gable, hip = (DEFAULT_TASKS["roof"].index(c) for c in ("FLT", "GBL", "HIP"))
  modes = [np.bincount(roof[count == n], minlength=3).argmax() for n in range(1, 6)]
  assert modes == [flat, gable, hip, flat, gable]


@pytest.mark.parametrize(
  "row, column, value, match",
  [
    (3, "roof", "DOME", r"labels.csv: row 3 .*column 'roof': class 'DOME'"),
    (5, "block", "", r"row 5 .*column 'block': missing group"),
    (2, "id", "no_such_image", r"no_such_image.png: image file missing \(row 2"),
  ],
  ids=["bad_class_names_file_row_column", "missing_block_id", "missing_image"],
)
def test_bad_labels_cell(facade_root, tmp_path, row, column, value, match):
  def edit(rows):
    rows[row][rows[0].index(column)] = value

  root = _rewrite(facade_root, tmp_path, edit)
  with pytest.raises(DataError, match=match):
    read_table(root)


def test_lprus_cuts_only_bins_above_cutoff():
  rng = np.random.default_rng(0)
  # bins of sizes 400, 200, 100, 50, 20, 5 (one task holds the bin id, a second is constant)
  sizes = [400, 200, 100, 50, 20, 5]
  labels = np.stack([np.repeat(np.arange(6), sizes), np.zeros(sum(sizes), int)], 1)
  labels = labels[rng.permutation(len(labels))]
  cut = labelsets.lprus_cutoff(sizes, 0.85)
  assert np.minimum(sizes, cut).sum() >= 0.85 * sum(sizes) > np.minimum(sizes, cut - 1).sum()
  kept = labelsets.lprus(labels, 0.85, seed=1)
  after = np.bincount(labels[kept, 0], minlength=6)
  for before, n in zip(sizes, after):
    assert n == (cut if before > cut else before)
  assert len(kept) >= 0.85 * len(labels)
  assert len(np.unique(kept)) == len(kept)
  np.testing.assert_array_equal(labelsets.lprus(labels, 1.0), np.arange(len(labels)))


def test_group_split_disjoint_and_proportional():
  rng = np.random.default_rng(0)
  n = 3000
  labels = np.stack([rng.choice(3, n, p=[0.6, 0.3, 0.1]), rng.integers(0, 2, n)], 1)
  groups = rng.integers(0, 300, n)
  split = labelsets.labelset_group_split(labels, groups, (0.65, 0.175, 0.175), seed=0)
  for g in np.unique(groups):
    assert len(set(split[groups == g])) == 1
  ids, _ = labelsets.labelset_ids(labels)
  for b in np.unique(ids):
    share = np.bincount(split[ids == b], minlength=3) / np.sum(ids == b)
    np.testing.assert_allclose(share, [0.65, 0.175, 0.175], atol=0.05)
