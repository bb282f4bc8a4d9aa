r"""Why mtljax.prepare writes ArrayRecord itself rather than through a TFDS builder: the same tiny
TreeSatAI split written by a `tfds.core.GeneratorBasedBuilder` (file_format="array_record", no
TensorFlow) and by `mtljax.data.prepared.convert`, then read back at random (docs/prepared-data.md).

  nice python -m profiling.benchmarks.tfds_vs_arrayrecord --dir=/tmp/prepared/tfds_cmp

Needs `pip install tensorflow-datasets` (no longer a dependency of mtljax). Prints the build
time, the read examples/s of both (side by side), the sizes, and the order TFDS stores the
examples in: its writer shuffles records by a hash of their keys, so record i is not example i.
"""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
from absl import app, flags

_DIR = flags.DEFINE_string("dir", "/tmp/prepared/tfds_cmp", "Scratch folder.")


def main(argv):
  del argv
  import tensorflow_datasets as tfds

  from configs import treesat
  from mtljax import tasks
  from mtljax.data import build
  from mtljax.data.prepared import PreparedSource, convert
  from mtljax.train import build as _train_prepare  # noqa: F401 (jax imported before the timing)

  parts = ("inputs", "targets", "mask", "meta")
  config = treesat.get_config("tiny")
  config.data.synthetic.dir = os.path.join(_DIR.value, "raw")
  sources, _ = build.make_sources(config, _DIR.value)
  first = sources["train"][0]

  class TreeSat(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      feats = {p: {k: tfds.features.Tensor(shape=np.shape(v), dtype=np.asarray(v).dtype)
                   for k, v in first[p].items()} for p in parts}  # fmt: skip
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(feats))

    def _split_generators(self, dl_manager):
      return {s: self._generate_examples(s) for s in sources}

    def _generate_examples(self, split):
      for i in range(len(sources[split])):
        e = sources[split][i]
        yield i, {p: {k: np.asarray(v) for k, v in e[p].items()} for p in parts}

  data_dir, out = os.path.join(_DIR.value, "tfds"), os.path.join(_DIR.value, "prepared")
  t = time.perf_counter()
  TreeSat(data_dir=data_dir, file_format="array_record").download_and_prepare()
  t_tfds = time.perf_counter() - t
  t = time.perf_counter()
  convert.convert(
    config, out, workers=1, progress=False, standardized=tasks.standardized_targets(config)
  )
  t_ours = time.perf_counter() - t
  a = tfds.data_source("tree_sat", data_dir=data_dir, split="train")
  b = PreparedSource(out, "train")
  rates = {"tfds": 0.0, "prepared": 0.0}
  for _ in range(3):  # alternated: a busy machine slows both alike
    for name, src in (("tfds", a), ("prepared", b)):
      t = time.perf_counter()
      for i in range(len(src)):
        src[i]
      rates[name] = max(rates[name], len(src) / (time.perf_counter() - t))
  print(f"build (3 splits, {sum(map(len, sources.values()))} examples, incl. statistics for "
        f"mtljax): tfds {t_tfds:.1f} s, mtljax.prepare {t_ours:.1f} s")  # fmt: skip
  print(f"random reads, examples/s: tfds {rates['tfds']:.0f}, prepared {rates['prepared']:.0f}")
  print("tfds record i holds example:", [int(a[i]["meta"]["index"]) for i in range(8)])
  subprocess.run(["du", "-sh", data_dir, out])


if __name__ == "__main__":
  app.run(main)
