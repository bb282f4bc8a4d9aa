r"""A TFDS catalog dataset prepared as ArrayRecord, read through `tfds.data_source` (no
TensorFlow; `pip install 'mtljax[tfds]'`). The builder's features are the columns: `inputs=` and
`targets=` name them as for a manifest (configs/manifest.py), kinds are read from the features
(a ClassLabel: classification; a float: regression; an integer raster: segmentation) and can be
set with `--config.tasks.<feature>.kind=...`. Our train/val/test are the builder's
train/validation/test splits unless `--config.data.tfds.splits.<ours>=<a TFDS split>` says
(e.g. `train[:80%]`); without a validation split, the last 10% of train.

Variants after a colon, comma-separated:
  inputs=A+B   input features
  targets=X+Y  target features (tasks named after them)
  main=X       the main task (default: the first target)
  size=E       an ensemble of E members trained together
  tiny         two epochs, for tests and smoke runs

Commands (the builder prepared once with `file_format="array_record"`, docs/data.md):
  python -m mtljax.main --config=configs/tfds.py:inputs=image,targets=label \
      --config.data.tfds.name=eurosat/rgb --config.data.tfds.data_dir=/data/tfds \
      --config.data.tfds.splits.test="train[90%:]" --workdir=W
"""

from configs import manifest as manifest_config
from mtljax import config_blocks as blocks


def get_config(arg=None):
  c = manifest_config.get_config(arg)
  c.data = blocks.data_config(
    "tfds",
    tfds={
      # The builder and its config ("eurosat/all"), optionally a version ("so2sat/all:2.1.0").
      "name": "",
      # Where it was prepared ("" = TFDS's default, ~/tensorflow_datasets).
      "data_dir": "",
      # Our splits as TFDS split specs ("" = the builder's own; see the module docstring).
      "splits": {"train": "", "val": "", "test": ""},
    },
    # Side every raster is resampled to in a run with a dense target (0 = the largest's side).
    grid=0,
    # The features as columns (kinds, classes, shapes): filled when the run starts, recorded in
    # the workdir's config.json.
    schema={},
    augment={"flip": False, "rot90": False},
    stats_examples=1024,
    synthetic={},
  )
  return c
