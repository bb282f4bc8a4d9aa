import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `configs` is a folder of config files, importable from the repo root
  sys.path.insert(0, ROOT)

# One persistent XLA compilation cache for the whole test session, shared by the xdist workers
# and every `python -m mtljax.main` subprocess a test starts (they inherit the environment): the
# suite compiles the same tiny configs' steps many times, and a cached executable is the very
# program a fresh compile gives (XLA:CPU compiles deterministically), so results are unchanged.
# A test about compilation itself (e.g. a signal during the first compile) removes the variable
# from its subprocess's environment. Set MTLJAX_TEST_JAX_CACHE="" to run without it.
_CACHE = os.environ.get(
  "MTLJAX_TEST_JAX_CACHE",
  os.path.join(tempfile.gettempdir(), f"mtljax-tests-jax-cache-{os.getuid()}"),
)
if _CACHE:
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))  # bytes, LRU-evicted


@pytest.fixture(scope="session")
def tiny_treesat_root(tmp_path_factory):
  """A small synthetic TreeSatAI archive (real layout) shared by the training tests."""
  from mtljax.data.treesat.synthetic import write_synthetic_treesat

  root = tmp_path_factory.mktemp("treesat_tiny")
  return str(write_synthetic_treesat(root, num_train=192, num_test=64, seed=0, aerial_size=32))


@pytest.fixture(scope="session")
def fault_reference(tmp_path_factory):
  """One uninterrupted 2-epoch run of profiling/experiments/fault_injection.py's harness and its
  data root
  (the killed and resumed runs of test_faults.py and test_prepared.py are compared with it)."""
  from profiling.experiments import fault_injection as fi

  base = tmp_path_factory.mktemp("faults")
  root = fi.make_root(str(base / "data"))
  ref = str(base / "reference")
  res = fi.run(ref, root)
  assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
  return ref, root


# The tiny ensemble that predict and export tests share (tests/test_predict.py, test_export.py):
# its flags, repeated by every command run on the workdir.
PREDICT_FLAGS = (
  "--config.train.num_epochs=1",
  "--config.data.synthetic.num_train=48",
  "--config.data.synthetic.num_test=32",
)
PREDICT_CONFIG = "configs/treesat.py:tiny,size=3"


def predict_sized(config):
  """`config` changed in process as `PREDICT_FLAGS` change it on the command line."""
  for flag in PREDICT_FLAGS:
    key, value = flag[len("--config.") :].split("=")
    *path, last = key.split(".")
    node = config
    for p in path:
      node = node[p]
    node[last] = int(value)
  return config


def predict_config(variant: str = PREDICT_CONFIG.split(":", 1)[1]):
  """configs/treesat.py:<variant> as `PREDICT_FLAGS` train it (the config the workdirs of these
  tests were made with, for reading their data in process)."""
  from configs import treesat

  return predict_sized(treesat.get_config(variant))


@pytest.fixture(scope="session")
def predict_workdir(tmp_path_factory):
  """A trained tiny TreeSAT ensemble of 3 (one epoch) for the predict and export tests."""
  from helpers.commands import run_main

  work = tmp_path_factory.mktemp("predict") / "run"
  res = run_main(work, *PREDICT_FLAGS, config=PREDICT_CONFIG, timeout=None)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return work
