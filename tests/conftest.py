import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `configs` is a folder of config files, importable from the repo root
  sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def tiny_treesat_root(tmp_path_factory):
  """A small synthetic TreeSatAI archive (real layout) shared by the training tests."""
  from mtljax.data.treesat.synthetic import write_synthetic_treesat

  root = tmp_path_factory.mktemp("treesat_tiny")
  return str(write_synthetic_treesat(root, num_train=192, num_test=64, seed=0, aerial_size=32))
