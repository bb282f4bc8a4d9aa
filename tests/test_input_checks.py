"""All inputs checked before the first step: for each dataset family one corrupt
or wrong-shaped file in the validation or test split makes the run fail in its set-up, naming the
file (no checkpoint, no metrics line); a batch larger than the training split is one clear error."""

import os
import re

import numpy as np
import pytest
import tifffile

from configs import attributes, benge, cropyield, facades, treesat
from mtljax import train
from mtljax.data import get_dataset
from mtljax.data.source import DataError


def _garbage(path):
  path.write_bytes(b"this is not an image file" * 4)
  return path


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  return path


def _treesat_wrong_shape(src):
  path = src.image_path("s2", len(src) - 1)
  tifffile.imwrite(path, np.zeros((6, 6, 10), np.uint16), photometric="minisblack")
  return path


def _cropyield_bad_npy(src):
  path = src.root / "fields" / src.fields[0]["field_id"] / "s2.npy"
  np.save(path, np.zeros((3, 4), np.float32))  # not [P, T, 25]
  return path


CASES = {
  # family: (config, synthetic sizes, split, corrupt(source) -> path of the bad file)
  "treesat_garbage": (
    treesat.get_config("tiny"),
    {"num_train": 24, "num_test": 16},
    "test",
    lambda s: _garbage(s.image_path("aerial", 1)),
  ),
  "treesat_truncated": (
    treesat.get_config("tiny"),
    {"num_train": 24, "num_test": 16},
    "val",
    lambda s: _truncate(s.image_path("aerial", 0)),
  ),
  "treesat_shape": (
    treesat.get_config("tiny"),
    {"num_train": 24, "num_test": 16},
    "val",
    _treesat_wrong_shape,
  ),
  "cub": (
    attributes.get_config("cub,tiny,size=1"),
    {"num_train": 40, "num_test": 12},
    "test",
    lambda s: _garbage(s.image_path(2)),
  ),
  "isic": (
    attributes.get_config("isic,tiny,size=1"),
    {"num_train": 24, "num_val": 8, "num_test": 8},
    "val",
    lambda s: _garbage(s.image_path(1)),
  ),
  "benge": (
    benge.get_config("tiny"),
    {"num_patches": 30, "size": 12},
    "test",
    lambda s: _truncate(s.s2_path(0, "B02")),
  ),
  "cropyield": (cropyield.get_config("tiny"), {"num_fields": 10}, "val", _cropyield_bad_npy),
  "facades": (
    facades.get_config("tiny"),
    {"num_images": 120, "num_blocks": 24},
    "test",
    lambda s: _garbage(s.root / "images" / f"{s.names[0]}.png"),
  ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_in_val_or_test_fails_before_the_first_step(case, tmp_path):
  config, sizes, split, corrupt = CASES[case]
  config.data.synthetic.update(sizes)
  spec = get_dataset(config.data.name)
  root = spec.write_synthetic(tmp_path / "data", **spec.synthetic_kwargs(config))
  src = spec.source_cls(root, split, **spec.source_kwargs(config))
  bad = corrupt(src)
  if case == "facades":  # the reader caches the decoded images per process: a new run's view
    from mtljax.data.facades import reader

    reader._load.cache_clear()
  config.data.root = str(root)
  config.train.batch_size = 4
  workdir = tmp_path / "run"
  with pytest.raises(DataError, match=re.escape(str(bad))):
    train.train_and_evaluate(config, str(workdir))
  assert not (workdir / "checkpoints").exists()
  assert not (workdir / "metrics.jsonl").exists()
  assert not (workdir / "config.json").exists()


def test_header_check_and_full_check(tiny_treesat_root, tmp_path):
  """`check_files` reads headers by default; a file whose header is sound but whose compressed
  pixels cannot be decoded is caught by `full=True` (config.data.check_files="full")."""
  import shutil

  from mtljax.data.treesat.reader import TreeSatAISource

  root = tmp_path / "copy"
  shutil.copytree(tiny_treesat_root, root)
  src = TreeSatAISource(root, "val", aerial_size=32)
  assert src.check_files() == len(src) == src.check_files(full=True)
  path = src.image_path("s2", 3)
  tifffile.imwrite(
    path, np.ones((6, 6, 12), np.uint16), photometric="minisblack", compression="zlib"
  )
  with tifffile.TiffFile(path) as tif:
    offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
  data = bytearray(path.read_bytes())
  data[offset : offset + count] = b"\xff" * count  # not a zlib stream
  path.write_bytes(bytes(data))
  assert src.check_files() == len(src)  # the header is sound
  with pytest.raises(DataError, match=re.escape(str(path))):
    src.check_files(full=True)


def test_batch_size_larger_than_the_training_split(tiny_treesat_root, tmp_path):
  config = treesat.get_config("tiny")
  config.data.root = tiny_treesat_root
  config.train.batch_size = 1000
  with pytest.raises(DataError, match=r"config\.train\.batch_size=1000 .* \(192 examples\)"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "config.json")


def test_check_files_mode_off_and_unknown(tiny_treesat_root, tmp_path):
  from mtljax.data import checks

  config = treesat.get_config("tiny")
  config.data.root = tiny_treesat_root
  spec = get_dataset("treesat")
  sources = {
    s: spec.source_cls(tiny_treesat_root, s, **spec.source_kwargs(config)) for s in spec.splits
  }
  assert set(checks.check_inputs(sources, config)) == {"train", "val", "test"}
  config.data.check_files = "off"
  assert checks.check_inputs(sources, config) == {}
  config.data.check_files = "some"
  with pytest.raises(DataError, match="config.data.check_files='some'"):
    checks.check_inputs(sources, config)
