r"""Convert a dataset once into a prepared dataset (ArrayRecord shards, index, statistics,
checksums) that training reads instead of the archive's own files (docs/prepared-data.md).

  python -m mtljax.prepare --config=configs/treesat.py --config.data.root=/data/TreeSatAI \
      --out=/data/prepared/treesat
  python -m mtljax.main --config=configs/treesat.py --workdir=W \
      --config.data.prepared=/data/prepared/treesat

The config is the training config: its `data` block (dataset, archive, reader options) says what
is converted, and `inputs`, `tasks`, `seed`, `data.stats_examples` the normalisation statistics
saved with it. The same command rerun finishes a killed conversion (complete shards are kept) or,
when complete, verifies every shard's checksum. A folder holding another conversion is refused.
A user's mistake ends in one `error:` line and exit status 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "The training config file, e.g. configs/treesat.py[:variant].", lock_config=True
)
_OUT = flags.DEFINE_string("out", None, "The prepared dataset's folder (created).")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 1024, "Examples per ArrayRecord shard.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Processes writing shards (0 = one per core).")
flags.mark_flags_as_required(["config", "out"])


def _fail(message) -> None:
  """A user's mistake: one line on stderr, exit status 2 (as mtljax.main)."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(2)


def _parse_flags(argv):
  try:
    rest = flags.FLAGS(argv)
    _CONFIG.value.keys()  # loads the config file (lazily loaded): a broken one fails here
  except flags.Error as e:
    _fail(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
  except Exception as e:  # noqa: BLE001 (a bad override or config file is the user's to fix)
    _fail(f"--config: {type(e).__name__}: {e}")
  return rest


def main(argv):
  from mtljax import configlib, tasks
  from mtljax import workdir as workdir_lib
  from mtljax.data.prepared import convert
  from mtljax.data.source import DataError

  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]} (flags are --name=value)")
  out = os.path.abspath(_OUT.value)
  try:
    # The whole config, completed from the data where the dataset decides part of it (a
    # manifest's kinds and schema), before anything is written.
    configlib.check(_CONFIG.value)
    if os.path.exists(out) and not os.path.isdir(out):
      raise convert.PrepareError(f"--out={out} is a file, not a directory")
    os.makedirs(out, exist_ok=True)
    with workdir_lib.locked(out, "mtljax.prepare"):
      convert.convert(
        _CONFIG.value,
        out,
        shard_size=_SHARD_SIZE.value,
        workers=_WORKERS.value,
        progress=True,
        standardized=tasks.standardized_targets(_CONFIG.value),
      )
  except (
    convert.PrepareError,
    configlib.ConfigError,
    DataError,
    workdir_lib.WorkdirError,
    KeyError,
  ) as e:
    _fail(e.args[0] if isinstance(e, KeyError) else e)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main, flags_parser=_parse_flags)
  sys.exit(0)
