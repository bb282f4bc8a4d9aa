"""CUB-200-2011 and ISIC 2018 Task 2 readers and their synthetic generators: layout, labels parsed
independently, planted attributes where their masks say, annotation scaling, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtljax.data import get_dataset
from mtljax.data.attributes.cub import CUB200Source, attribute_parts
from mtljax.data.attributes.isic import ATTRIBUTES, ISIC2018Source
from mtljax.data.attributes.synthetic_cub import CUB_PLANTED, write_synthetic_cub
from mtljax.data.attributes.synthetic_isic import write_synthetic_isic
from mtljax.data.source import DataError
from mtljax.data.synthetic import MARKER

S = 48


@pytest.fixture(scope="module")
def cub(tmp_path_factory) -> Path:
  return write_synthetic_cub(
    tmp_path_factory.mktemp("cub") / "syn", num_train=40, num_test=16, image_size=S, seed=3
  )


@pytest.fixture(scope="module")
def isic(tmp_path_factory) -> Path:
  return write_synthetic_isic(
    tmp_path_factory.mktemp("isic") / "syn",
    num_train=24,
    num_val=6,
    num_test=8,
    image_size=S,
    seed=4,
  )


def _table(path: Path) -> list[list[str]]:
  return [line.split() for line in path.read_text().splitlines() if line.strip()]


# ==================================================================================== CUB
def test_cub_layout_and_labels_match_the_text_files(cub):
  base = cub / "CUB_200_2011"
  for rel in (
    "images.txt",
    "image_class_labels.txt",
    "classes.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "parts/parts.txt",
    "parts/part_locs.txt",
    "attributes/image_attribute_labels.txt",
  ):
    assert (base / rel).is_file(), rel
  assert (cub / "attributes.txt").is_file() and (cub / MARKER).is_file()
  assert len(_table(base / "parts/parts.txt")) == 15
  rows = _table(base / "attributes/image_attribute_labels.txt")
  assert any(len(r) == 6 for r in rows), "the generator should reproduce the odd sixth field"

  # Independent parse of the label files.
  paths = {int(i): p for i, p in _table(base / "images.txt")}
  is_train = {int(i): int(t) for i, t in _table(base / "train_test_split.txt")}
  label = {int(i): int(c) - 1 for i, c in _table(base / "image_class_labels.txt")}
  attr_ids = [int(r[0]) for r in _table(cub / "attributes.txt")]
  present = {(int(r[0]), int(r[1])): int(r[2]) for r in rows}

  splits = {
    sp: CUB200Source(cub, sp, image_size=S, val_fraction=0.25) for sp in ("train", "val", "test")
  }
  assert len(splits["test"]) == sum(1 for t in is_train.values() if t == 0) == 16
  assert len(splits["train"]) + len(splits["val"]) == 40 and len(splits["val"]) == 10
  assert not set(splits["train"].names) & set(splits["val"].names)
  by_path = {p: i for i, p in paths.items()}
  for sp, src in splits.items():
    labels = src.label_arrays()
    for k, name in enumerate(src.names):
      i = by_path[name]
      assert is_train[i] == (sp != "test")
      assert labels["targets"]["class"][k] == label[i]
      np.testing.assert_array_equal(
        labels["targets"]["attributes"][k], [present[(i, a)] for a in attr_ids]
      )
  src = splits["train"]
  assert src.target_fields["attributes"]["class_names"] == tuple(p[1] for p in CUB_PLANTED)
  assert src.target_fields["class"]["num_classes"] == 10
  ex = src[3]
  assert set(ex) == {"inputs", "targets", "mask", "meta"}  # no masks/keypoints in training data
  assert ex["inputs"]["image"].shape == (S, S, 3) and ex["inputs"]["image"].dtype == np.float32
  assert 0 <= ex["inputs"]["image"].min() and ex["inputs"]["image"].max() <= 255


def test_cub_planted_attributes_are_drawn_where_their_masks_and_parts_are(cub):
  src = CUB200Source(cub, "train", image_size=S, val_fraction=0.0)
  colour = {
    name: np.array(rgb, np.float32)
    for _, name, _, kind, rgb in CUB_PLANTED
    if kind in ("disc", "wing", "belly")
  }
  checked, near = 0, []
  for i in range(len(src)):
    img = src.read_image(i)
    ann = src.explain_annotations(i)
    labels = src.label_arrays()["targets"]["attributes"][i]
    present = {n for n, v in zip(src.attribute_names, labels) if v}
    assert set(ann["masks"]) == present  # masks for exactly the present attributes
    for name, mask in ann["masks"].items():
      assert mask.shape == (S, S) and mask.dtype == bool and mask.any()
      if name in colour:
        core = mask & ~np.pad(~mask, 1, constant_values=True)[:-2, 1:-1]  # drop the top border
        inside = img[core if core.any() else mask].mean(axis=0)
        assert np.abs(inside - colour[name]).max() < 60, (name, inside)
        checked += 1
      ys, xs = np.nonzero(mask)
      kp = ann["keypoints"][name]
      near.append(np.hypot(ys.mean() - kp[0], xs.mean() - kp[1]))
  assert checked > 50
  assert np.median(near) < 0.08 * S  # the part keypoint sits on the attribute's region


def test_cub_attribute_selection_and_part_mapping(cub):
  by_id = CUB200Source(cub, "test", image_size=S, attributes=(10, "292"))
  assert by_id.attribute_names == ("has_wing_color::blue", "has_bill_color::red")
  by_name = CUB200Source(cub, "test", image_size=S, attributes=("has_bill_color::red",))
  np.testing.assert_array_equal(
    by_name.label_arrays()["targets"]["attributes"][:, 0],
    by_id.label_arrays()["targets"]["attributes"][:, 1],
  )
  with pytest.raises(DataError, match="has_bill_colour::red"):
    CUB200Source(cub, "test", image_size=S, attributes=("has_bill_colour::red",))
  with pytest.raises(DataError, match="attribute id 999"):
    CUB200Source(cub, "test", image_size=S, attributes=(999,))
  assert attribute_parts("has_bill_length::shorter_than_head") == ("beak",)
  assert attribute_parts("has_upper_tail_color::red") == ("tail",)
  assert attribute_parts("has_wing_pattern::solid") == ("left wing", "right wing")
  assert attribute_parts("has_size::small_(5_-_9_in)") == ()


def _write_real_cub(root: Path) -> Path:
  """A hand-made two-image archive in the real layout: no masks, attributes.txt inside
  CUB_200_2011/attributes/, float part locations, an odd sixth field, a 100×200 image."""
  base = root / "CUB_200_2011"
  (base / "images" / "001.Black_footed_Albatross").mkdir(parents=True)
  (base / "parts").mkdir()
  (base / "attributes").mkdir()
  for k, (h, w) in enumerate(((100, 200), (64, 64)), 1):
    Image.new("RGB", (w, h), (10 * k, 20, 30)).save(
      base / "images" / "001.Black_footed_Albatross" / f"Black_Footed_Albatross_000{k}_{k}.jpg"
    )
  (base / "images.txt").write_text(
    "1 001.Black_footed_Albatross/Black_Footed_Albatross_0001_1.jpg\n"
    "2 001.Black_footed_Albatross/Black_Footed_Albatross_0002_2.jpg\n\n"
  )
  (base / "image_class_labels.txt").write_text("1 1\n2 2\n")
  (base / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
  (base / "train_test_split.txt").write_text("1 0\n2 0\n")
  (base / "bounding_boxes.txt").write_text("1 20.0 10.0 100.0 64.0\n2 0.0 0.0 64.0 64.0\n")
  (base / "parts" / "parts.txt").write_text("1 back\n2 beak\n3 left wing\n4 right wing\n")
  (base / "parts" / "part_locs.txt").write_text(
    "1 1 0.0 0.0 0\n1 2 100.0 50.0 1\n1 3 60.0 40.0 1\n1 4 80.0 60.0 1\n"
    "2 1 0.0 0.0 0\n2 2 0.0 0.0 0\n2 3 10.0 10.0 1\n2 4 0.0 0.0 0\n"
  )
  (base / "attributes" / "attributes.txt").write_text(
    "1 has_bill_shape::curved_(up_or_down)\n10 has_wing_color::blue\n219 has_size::small_(5_-_9_in)\n"
  )
  (base / "attributes" / "image_attribute_labels.txt").write_text(
    "1 1 1 3 12.5\n1 10 1 4 3.0 0\n1 219 0 1 1.0\n2 1 1 4 5.0\n2 10 0 2 2.0\n2 219 1 3 1.0\n"
  )
  return root


def test_cub_real_layout_keypoints_and_part_discs(tmp_path):
  root = _write_real_cub(tmp_path)
  src = CUB200Source(root / "CUB_200_2011", "test", image_size=50, part_radius=0.1)
  assert len(src) == 2 and src.class_names == ("001.Black_footed_Albatross", "002.Laysan_Albatross")
  np.testing.assert_array_equal(src.label_arrays()["targets"]["attributes"], [[1, 1, 0], [1, 0, 1]])
  ann = src.explain_annotations(0)
  # Beak at (x=100, y=50) in a 100×200 (h×w) image, resized to 50×50.
  beak = ((50 + 0.5) * 50 / 100 - 0.5, (100 + 0.5) * 50 / 200 - 0.5)
  np.testing.assert_allclose(ann["keypoints"]["has_bill_shape::curved_(up_or_down)"], beak)
  wing = np.mean(
    [[(40.5) * 0.5 - 0.5, 60.5 * 0.25 - 0.5], [60.5 * 0.5 - 0.5, 80.5 * 0.25 - 0.5]], 0
  )
  np.testing.assert_allclose(ann["keypoints"]["has_wing_color::blue"], wing)
  assert "has_size::small_(5_-_9_in)" not in ann["keypoints"]  # whole-bird attribute: no part
  # No mask files: a disc of radius 0.1·√(100·64) px, scaled by 50/√(100·200), around the beak.
  mask = ann["masks"]["has_bill_shape::curved_(up_or_down)"]
  r = 0.1 * np.sqrt(6400) * 50 / np.sqrt(20000)
  yy, xx = np.mgrid[0:50, 0:50]
  np.testing.assert_array_equal(mask, (yy - beak[0]) ** 2 + (xx - beak[1]) ** 2 <= r * r)
  ann2 = src.explain_annotations(1)  # beak not visible: no keypoint, no region
  assert "has_bill_shape::curved_(up_or_down)" not in ann2["keypoints"]
  assert ann2["masks"] == {}
  # Each attribute's annotations belong to that attribute of the task `attributes` (not to a
  # class, whatever the names): the explain run scores attribute k's target against them.
  from mtljax.data.annotations import Owner, owners, target_keys

  targets = [Owner("attributes", a) for a in range(3)] + [Owner("class", 0), Owner("class", 1)]
  keys = target_keys(owners(src), targets)
  assert keys == [(n,) for n in src.attribute_names] + [(), ()]
  with pytest.raises(ValueError, match="unknown split"):
    CUB200Source(root, "validation")


def test_cub_errors_name_the_file(tmp_path):
  with pytest.raises(DataError, match="images.txt"):
    CUB200Source(tmp_path, "train")
  root = _write_real_cub(tmp_path / "a")
  labels = root / "CUB_200_2011" / "image_class_labels.txt"
  labels.write_text("1 1\n2\n")
  with pytest.raises(DataError, match=r"image_class_labels.txt, line 2"):
    CUB200Source(root, "test")
  root = _write_real_cub(tmp_path / "b")
  (root / "CUB_200_2011" / "attributes" / "attributes.txt").unlink()
  with pytest.raises(DataError, match="attributes.txt not found"):
    CUB200Source(root, "test")


def test_cub_mask_of_the_wrong_size_is_an_error(cub, tmp_path):
  copy = shutil.copytree(cub, tmp_path / "copy")
  src = CUB200Source(copy, "test", image_size=S)
  i = next(i for i in range(len(src)) if src.label_arrays()["targets"]["attributes"][i, 0])
  path = src.mask_path(i, CUB_PLANTED[0][0])
  Image.new("L", (7, 5)).save(path)
  with pytest.raises(DataError, match=r"mask is 5×7.*must have its image's size"):
    src.explain_annotations(i)


def test_registry():
  assert get_dataset("cub").source_cls is CUB200Source
  assert get_dataset("isic2018").source_cls is ISIC2018Source


# ==================================================================================== ISIC
def test_isic_layout_labels_from_masks_and_annotations(isic):
  counts = {"train": 24, "val": 6, "test": 8}
  folders = {"train": ("Training", "_v3"), "val": ("Validation", ""), "test": ("Test", "")}
  for split, n in counts.items():
    name, v3 = folders[split]
    inputs = isic / f"ISIC2018_Task1-2_{name}_Input"
    truth = isic / f"ISIC2018_Task2_{name}_GroundTruth{v3}"
    assert (inputs / "LICENSE.txt").is_file() and (truth / "ATTRIBUTION.txt").is_file()
    images = sorted(inputs.glob("ISIC_*.jpg"))
    assert len(images) == n and all(len(p.stem) == len("ISIC_0000000") for p in images)
    src = ISIC2018Source(isic, split, image_size=S)
    assert src.attribute_names == ATTRIBUTES and "class" not in src.target_fields
    labels = src.label_arrays()["targets"]["attributes"]
    for i, p in enumerate(images):
      for a, attr in enumerate(ATTRIBUTES):
        m = np.asarray(Image.open(truth / f"{p.stem}_attribute_{attr}.png"))
        assert Image.open(truth / f"{p.stem}_attribute_{attr}.png").size == Image.open(p).size
        assert labels[i, a] == float((m > 128).any())
  src = ISIC2018Source(isic, "train", image_size=S)
  labels = src.label_arrays()["targets"]["attributes"]
  assert 0 < labels.mean() < 1
  i = int(np.argmax(labels.sum(1)))
  ann = src.explain_annotations(i)
  assert set(ann["masks"]) == {a for a, v in zip(ATTRIBUTES, labels[i]) if v}
  for name, m in ann["masks"].items():
    ys, xs = np.nonzero(m)
    np.testing.assert_allclose(ann["keypoints"][name], [ys.mean(), xs.mean()])


def test_isic_threshold_missing_and_mis_sized_masks(isic, tmp_path):
  copy = shutil.copytree(isic, tmp_path / "copy")
  truth = copy / "ISIC2018_Task2_Validation_GroundTruth"
  image = sorted((copy / "ISIC2018_Task1-2_Validation_Input").glob("*.jpg"))[0]
  w, h = Image.open(image).size
  for attr in ATTRIBUTES:  # faint (<= 128) pixels are not the attribute
    Image.new("L", (w, h), 128).save(truth / f"{image.stem}_attribute_{attr}.png")
  src = ISIC2018Source(copy, "val", image_size=S, attributes=("globules", "streaks"))
  assert src.label_arrays()["targets"]["attributes"][0].tolist() == [0.0, 0.0]
  Image.new("L", (w + 3, h), 255).save(truth / f"{image.stem}_attribute_streaks.png")
  with pytest.raises(DataError, match=f"{image.stem}_attribute_streaks.png: mask is {h}×{w + 3}"):
    ISIC2018Source(copy, "val", image_size=S)
  (truth / f"{image.stem}_attribute_streaks.png").unlink()
  with pytest.raises(DataError, match="attribute_streaks.png: mask file missing"):
    ISIC2018Source(copy, "val", image_size=S)
  with pytest.raises(DataError, match="not ISIC 2018 attributes"):
    ISIC2018Source(copy, "test", attributes=("dots",))
  with pytest.raises(DataError, match="Training_Input: missing folder"):
    ISIC2018Source(tmp_path / "nowhere", "train")
