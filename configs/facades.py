r"""Multitask façade classification with label interdependency modelling (MTC-LIM paper).

Five classification tasks (height, material, sbst, roof, blockpos) from one street-level image;
`config.model.variant` picks one of the paper's Table 2 configurations: STC, BL, BL-MS, CLIM,
CLIM-MS_BL, CLIM-MS_ALL, TLIM, TLIM-MS_BL, TLIM-MS_ALL, LIM, LIM-MS_BL, LIM-MS_ALL
(mtljax/models/lim.py). The data are LPRUS-balanced (keep 85 %) and split 65/17.5/17.5 by
labelset, block-disjoint (paper §2.2, §3). Without `--config.data.root` the built-in synthetic
dataset (planted asymmetric label co-occurrences; clear image cues for sbst and height, nearly
useless ones for roof and material, which follow from the other tasks) is written first.

Variants after a colon, comma-separated:
  tiny       little data, a tiny CNN and few epochs, for tests (seconds on CPU)
  size=R     R realisations (seeds) trained together as a vmapped ensemble (default 1)

Commands:
  python -m mtljax.main --config=configs/facades.py --workdir=W --config.model.variant=LIM-MS_ALL
  python -m mtljax.sweeps.mtc --config=configs/facades.py --workdir=W --realisations=3
  python -m mtljax.main --config=configs/facades.py --workdir=W --config.data.root=/data/facades
"""

import ml_collections

from mtljax import config_blocks as blocks
from mtljax.data.facades.reader import DEFAULT_TASKS

VARIANTS = blocks.Variants(
  "configs/facades.py",
  size=blocks.Option(1, what="realisations (seeds) trained together"),
  tiny=False,
)


def get_config(arg=None):
  opts = VARIANTS.parse(arg)
  tiny = opts.tiny
  c = blocks.base_config()

  # ---------------------------------------------------------------- data
  # root: the folder with tasks.json, labels.csv and images/ (mtljax/data/facades.py).
  c.data = blocks.data_config(
    "facades",
    # Images are resized to image_size × image_size (0 = tasks.json's size).
    image_size=16,
    # LPRUS keep percentage (paper §3: 85 %; 1.0 = no undersampling) and the labelset-based,
    # block-disjoint train / val / test shares (65 / 17.5 / 17.5).
    lprus_keep=0.85,
    fractions=(0.65, 0.175, 0.175),
    split_seed=0,
    augment={"flip": False, "rot90": False},
    stats_examples=1024,
    synthetic={
      "num_images": 600 if tiny else 4000,
      "num_blocks": 40 if tiny else 200,
      # Per-image noise of each texture cue, in units of its class-level spacing.
      "cue_noise": 0.6,
      # Probability that a planted label dependency is replaced by a uniform draw.
      "label_noise": 0.1,
    },
  )

  # ---------------------------------------------------------------- model
  c.inputs = ml_collections.ConfigDict(
    {
      "image": {
        "encoder": "small_cnn",
        "encoder_kwargs": {"features": (8, 16) if tiny else (16, 32, 64)},
      }
    }
  )
  c.model = ml_collections.ConfigDict(
    {
      "fusion": "concat",  # unused by the MTC-LIM model (one image input)
      # One of mtljax.models.lim.VARIANTS (the paper's Table 2).
      "variant": "LIM-MS_ALL",
      # GRU units of the CLIM and TLIM modules (paper §3: 32 and 12).
      "clim_units": 32,
      "tlim_units": 12,
    }
  )

  # ---------------------------------------------------------------- tasks
  c.tasks = ml_collections.ConfigDict()
  for t, classes in DEFAULT_TASKS.items():
    c.tasks[t] = blocks.task("classification", 1.0, "linear", num_classes=len(classes))
  c.main_task = "height"

  # ---------------------------------------------------------------- training
  # Adam, as the paper (§3); a larger learning rate than its 1e-4 for training from scratch.
  c.train = blocks.train_config(
    batch=32, epochs=3 if tiny else 8, lr=3e-3, log_every=50, checkpoint_every=1000
  )
  c.train.optimizer = "adam"
  c.train.warmup_epochs = 1.0
  # The best checkpoint is the epoch of the best mean validation κ over the five tasks (not the
  # main task's alone, which picked early epochs where the other tasks were still learning).
  c.train.select_task_mean = "kappa"

  # ---------------------------------------------------------------- realisations
  c.ensemble = blocks.ensemble_config(size=opts.size, strategy="seeds")

  # ---------------------------------------------------------------- evaluation
  c.eval = blocks.eval_config(batch_size=128, prediction_splits=("val",))
  return c
