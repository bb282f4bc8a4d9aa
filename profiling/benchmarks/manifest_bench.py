"""Throughput of the manifest reader against the built-in TreeSatAI reader on the same files
(the synthetic TreeSAT archive exported as a manifest by
profiling/experiments/manifest_treesat.py), then of both through `mtljax.prepare` (the build time
of each prepared folder and its random reads). Run it on an idle machine; nothing is quoted
from a loaded one.

  nice python -m profiling.benchmarks.manifest_bench --out=/tmp/manifest_bench
  python -m profiling.benchmarks.manifest_bench --out=/tmp/mb --reads=32 --prepare=False  # tiny
"""

import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

_OUT = flags.DEFINE_string("out", "/tmp/manifest_bench", "Scratch folder.")
_READS = flags.DEFINE_integer("reads", 512, "Random reads per reader.")
_PREPARE = flags.DEFINE_bool("prepare", True, "Also convert both with mtljax.prepare.")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rate(src, reads: int) -> float:
  idx = np.random.default_rng(0).integers(0, len(src), reads)
  src[int(idx[0])]  # first read (opening files) not timed
  t = time.perf_counter()
  for i in idx:
    src[int(i)]
  return reads / (time.perf_counter() - t)


def _prepare(out: str, *flags_: str) -> float:
  t = time.perf_counter()
  cmd = [sys.executable, "-m", "mtljax.prepare", f"--out={out}", *flags_]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if res.returncode != 0:
    raise SystemExit(res.stderr[-3000:])
  return time.perf_counter() - t


def main(argv):
  del argv
  from configs import manifest as manifest_config
  from configs import treesat
  from mtljax import configlib
  from mtljax.data import build, get_dataset
  from profiling.experiments.manifest_treesat import export

  out = os.path.abspath(_OUT.value)
  path, inputs, targets, root = export(out)
  # The tiny config's tasks (the species column has test classes that training never saw).
  targets = [t for t in targets if t in ("l3", "l2", "age")]
  arg = f"inputs={'+'.join(inputs)},targets={'+'.join(targets)}"
  t = treesat.get_config("tiny")
  t.data.root = root
  m = manifest_config.get_config(arg)
  m.data.manifest = path
  configlib.check(m)
  spec = get_dataset("treesat")
  builtin = spec.source_cls(root, "train", **spec.source_kwargs(t))
  ours = build.make_sources(m, out)[0]["train"]
  print(f"{len(builtin)} train examples, {_READS.value} random reads each (examples/s):")
  print(f"  TreeSatAI reader {_rate(builtin, _READS.value):.0f}")
  print(f"  manifest reader  {_rate(ours, _READS.value):.0f}")
  if _PREPARE.value:
    a = _prepare(os.path.join(out, "prep_builtin"), "--config=configs/treesat.py:tiny",
                 f"--config.data.root={root}")  # fmt: skip
    b = _prepare(os.path.join(out, "prep_manifest"), f"--config=configs/manifest.py:{arg}",
                 f"--config.data.manifest={path}")  # fmt: skip
    print(f"mtljax.prepare (s, with start-up): TreeSatAI {a:.1f}, manifest {b:.1f}")


if __name__ == "__main__":
  app.run(main)
