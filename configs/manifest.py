r"""Your own data: a manifest (CSV or JSON Lines, one row per example) of your files and labels.

`inputs=` and `targets=` name columns of the table (joined by `+`); moving a column from one list
to the other turns a modality from an input into an auxiliary target. Each target's kind is
inferred from its column (names or few integers: classification; `a;b` cells: multilabel;
numbers: regression; paths to integer rasters: segmentation; to float rasters: dense
regression) and can be set with `--config.tasks.<col>.kind=...`; a class column's vocabulary is
the training split's unless `--config.tasks.<col>.classes=a,b,c` declares it; encoders are chosen by each
modality's shape (`--config.inputs.<col>.encoder=...` to choose). An empty cell is a missing
label. The table's columns, the splits and the checks are described in docs/data.md.

Variants after a colon, comma-separated:
  inputs=A+B   input columns (a column of file paths, a number column, or a group of
               config.data.groups)
  targets=X+Y  target columns (tasks named after them, e.g. `genus/accuracy` in the metrics)
  main=X       the main task (default: the first target): the best checkpoint is chosen on it
  size=E       an ensemble of E members trained together
  tiny         two epochs, for tests and smoke runs

Commands:
  python -m mtljax.main --config=configs/manifest.py:inputs=aerial+s1+s2,targets=genus+age \
      --config.data.manifest=/data/patches.csv --workdir=W
  python -m mtljax.main --config=configs/manifest.py:inputs=image,targets=label,size=3 \
      --config.data.manifest=/data/photos/labels.csv --workdir=W2
  python -m mtljax.main --config=configs/manifest.py:inputs=image,targets=label,size=3 \
      --config.data.manifest=/data/photos/labels.csv --workdir=W2 --mode=explain
  python -m mtljax.main --config=configs/manifest.py:inputs=aerial+weather,targets=genus \
      --config.data.manifest=/data/patches.csv --config.data.groups="weather=temp|rain" \
      --workdir=W3
  python -m mtljax.main --config=configs/manifest.py:inputs=aerial+s2,targets=genus+s1 \
      --config.data.manifest=/data/patches.csv --workdir=W4
"""

import ml_collections

from mtljax import config_blocks as blocks

VARIANTS = blocks.Variants(
  "configs/manifest.py",
  inputs=blocks.Option("", what="input columns joined by +", metavar="A+B"),
  targets=blocks.Option("", what="target columns joined by +", metavar="X+Y"),
  main=blocks.Option("", what="the main task (a target)", metavar="X"),
  size=blocks.Option(1, what="ensemble members"),
  tiny=False,
)


def _names(text: str) -> list[str]:
  return [n for n in (s.strip() for s in text.split("+")) if n]


def get_config(arg=None):
  opts = VARIANTS.parse(arg)
  inputs, targets = _names(opts.inputs), _names(opts.targets)
  if not inputs or not targets:
    raise ValueError(
      "configs/manifest.py: name the table's columns, e.g. "
      "configs/manifest.py:inputs=image,targets=label; allowed variants: " + VARIANTS.describe()
    )
  c = blocks.base_config()

  c.data = blocks.data_config(
    "manifest",
    # The table (.csv or .jsonl); paths in it are relative to its folder (or to data.root).
    manifest="",
    # Numeric columns read together as one vector modality: "weather=temp|rain|wind;soil=ph|n".
    groups="",
    # Without a `split` column: train/val/test fractions of a seeded draw of the rows.
    split_fractions=(0.8, 0.1, 0.1),
    split_seed=0,
    # Side every raster is resampled to in a run with a dense (raster) target; 0 = the largest
    # dense target's side. Unused without dense targets.
    grid=0,
    # What each column is (kinds, classes of the training split, raster shapes and types):
    # filled from the table when the run starts and recorded in the workdir's config.json.
    schema={},
    augment={"flip": False, "rot90": False},
    stats_examples=1024,
    synthetic={},
  )
  # "" = chosen from the modality's shape when the run starts (mtljax/data/manifest/complete.py).
  c.inputs = ml_collections.ConfigDict({m: {"encoder": "", "encoder_kwargs": {}} for m in inputs})
  c.model = ml_collections.ConfigDict({"fusion": "", "fusion_kwargs": {}})
  c.tasks = ml_collections.ConfigDict()
  for t in targets:
    # kind "" = inferred from the column; num_classes 0 = the training split's classes, or the
    # declared vocabulary: classes="a,b,c" (that order; val/test may hold classes training
    # never saw, any other name is an error).
    c.tasks[t] = {
      "kind": "",
      "num_classes": 0,
      "classes": "",
      "num_outputs": 1,
      "weight": 1.0,
      "head": "",
      "head_kwargs": {},
    }
  c.main_task = opts.main or targets[0]

  c.train = blocks.train_config(
    batch=32, epochs=2 if opts.tiny else 30, lr=1e-3, log_every=10, checkpoint_every=200
  )
  c.ensemble = blocks.ensemble_config(size=opts.size)
  c.explain = blocks.explain_config(task="", modality="", layer="", max_examples=64)
  c.explain.methods = ("saliency", "integrated_gradients")
  c.analysis = blocks.analysis_config()
  c.eval = blocks.eval_config(batch_size=64, prediction_splits=("val", "test"))
  return c
