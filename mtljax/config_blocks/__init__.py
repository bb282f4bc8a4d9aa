"""What every config file in configs/ shares: the variant parser and the config's common sections.

A config file declares its variants once and builds its sections from these blocks:

  VARIANTS = config_blocks.Variants(
    "configs/treesat.py",
    exp=config_blocks.Option(7, choices=EXPERIMENTS, what="a Table 3 row"),
    size=1,          # an int option: `size=3`
    tiny=False,      # a flag: `tiny`
  )

  def get_config(arg=None):
    opts = VARIANTS.parse(arg)   # "tiny,exp=3" -> opts.exp == 3, opts.tiny, opts.size == 1
    c = ml_collections.ConfigDict()
    c.data = config_blocks.data_config("treesat", augment=..., stats_examples=..., synthetic=...)
    c.train = config_blocks.train_config(batch_size=16, ...)
    ...

The variant string is what follows the colon in `--config=configs/treesat.py:tiny,exp=3`
(big_vision style: comma-separated, `key=value` or a bare flag). An undeclared variant, a value of
the wrong form or outside its choices is a `ValueError` naming the config file and every allowed
variant. Each block returns a fresh ConfigDict, so two sections never share (and never override)
one object.
"""

from __future__ import annotations

import ml_collections

from mtljax.config_blocks.runners import (  # noqa: F401 (the configs use them from here)
  analysis_config,
  explain_config,
  predict_config,
  trust_config,
)
from mtljax.config_variants import Option, Variants  # noqa: F401 (the configs use them from here)


# ------------------------------------------------------------------------------ top
def base_config(**fields) -> ml_collections.ConfigDict:
  """A config's top level: `seed` 0 (parameter init, dropout and data order), `conv` (the
  convolution backend), then `fields`, e.g.
  `experiment`: the paper's table row the config was built for (informational; set by `exp=N`)."""
  c = ml_collections.ConfigDict({"seed": 0, **fields})
  # The models' convolutions: "auto" (oneDNN on CPU where its library loads, else XLA's), "xla"
  # or "onednn" (mtljax/models/convolution.py).
  c.conv = "auto"
  c.weighting = weighting_config()
  c.hierarchy = hierarchy_config()
  c.predict = predict_config()
  return c


def weighting_config() -> ml_collections.ConfigDict:
  """`config.weighting`: how the task losses / per-task gradients are combined; `kind` ("" =
  "fixed") and every registered weighting's settings with their defaults, read from the registry
  (`mtljax.weighting.settings()`; docs/weighting.md)."""
  from mtljax import weighting  # the registry holds the defaults; imported when a config is built

  return ml_collections.ConfigDict(weighting.settings())


def hierarchy_config() -> ml_collections.ConfigDict:
  """`config.hierarchy`: parent/child classification pairs (mtljax/hierarchy.py)."""
  c = ml_collections.ConfigDict()
  # "auto": every pair the dataset's label hierarchy defines among the tasks (TreeSAT l3>l2>l1);
  # "" none; or "child>parent,..." (e.g. "l3>l2").
  c.pairs = "auto"
  # none | loss (a consistency loss term, `weight`) | marginal (parent = child marginalised)
  c.constraint = "none"
  c.weight = 0.1
  return c


# ------------------------------------------------------------------------------ data
def data_config(
  name: str, *, augment: dict, stats_examples: int, synthetic: dict, **fields
) -> ml_collections.ConfigDict:
  """`config.data`: the dataset `name` (a key of mtljax.data's registry) and the settings every
  dataset shares, around the reader's own `fields` (kept in the order given).

  augment: geometric augmentation of training batches (`{"flip", "rot90"}`, or `{"enabled":
  False}`). stats_examples: training examples used for the normalisation statistics.
  synthetic: the built-in synthetic dataset's sizes; `seed` and `dir` are added.
  """
  c = ml_collections.ConfigDict()
  c.name = name
  # Path to the real archive; empty = the built-in synthetic dataset.
  c.root = ""
  for key, value in fields.items():
    c[key] = value
  c.augment = ml_collections.ConfigDict(augment)
  c.stats_examples = stats_examples
  # Files of every split checked before the first step: "header" (shape, dtype, bands, no pixel
  # decoding), "full" (every file decoded) or "off" (mtljax/data/checks.py).
  c.check_files = "header"
  # Largest image side a reader accepts, checked from the file's header before decoding (a file
  # read at another size, e.g. with TreeSAT's aerial_resize, may differ from the configured one
  # only up to this bound): a huge or hostile file fails naming it instead of exhausting memory.
  c.max_image_side = 4096
  # Reader threads and prefetched batches of the grain pipeline.
  c.num_threads = 2
  c.prefetch = 4
  # grain worker processes reading and preparing training batches off the training process
  # (mp_prefetch): 0 = none (threads only), -1 = one per core.
  c.workers = 0
  # Inputs read in an integer type (a prepared dataset's 8-bit imagery) travel as integers and
  # are standardised inside the jitted step (the same values; 4x fewer bytes to batch, hand
  # over and copy to the accelerator). False = standardise everything on the host.
  c.normalise_on_device = True
  # A prepared dataset (`python -m mtljax.prepare`, docs/prepared-data.md) to read instead of
  # the archive's own files; empty = read the archive (or the synthetic dataset).
  c.prepared = ""
  # Built-in synthetic dataset (used when root is empty): its sizes, seed and the folder it is
  # written to (empty dir = <workdir>/synthetic_data).
  c.synthetic = ml_collections.ConfigDict({**synthetic, "seed": 0, "dir": ""})
  return c


# ------------------------------------------------------------------------------ encoders and heads
def resnet(
  stage_sizes=(2, 2, 2, 2), width: int = 64, stem_kernel: int = 7
) -> ml_collections.ConfigDict:
  """`encoder_kwargs` of the "resnet" encoder; the defaults are ResNet-18."""
  return ml_collections.ConfigDict(
    {
      "stage_sizes": tuple(stage_sizes),
      "width": width,
      "stem_kernel": stem_kernel,
      "dtype": "float32",
    }
  )


def mlp(hidden, dropout: float = 0.0) -> ml_collections.ConfigDict:
  """`encoder_kwargs` of the "mlp" encoder, or `head_kwargs` of the "mlp" head."""
  return ml_collections.ConfigDict({"hidden": tuple(hidden), "dropout": dropout})


def task(
  kind: str,
  weight: float,
  head: str,
  head_kwargs=None,
  *,
  normalize: bool | None = None,
  **sizes: int,
) -> dict:
  """One entry of `config.tasks`: a task kind of mtljax.tasks, its loss weight (the weights are
  normalised to sum 1) and its head (a name of mtljax.models' head registry, with `head_kwargs`).

  sizes: `num_classes` (0 = from the dataset) or `num_outputs` (a vector regression target).
  normalize: False keeps a regression target unstandardised (e.g. a sigmoid head on [0, 1]);
  None leaves `config.train.normalize_regression_targets` in charge.
  """
  t = {"kind": kind, **sizes, "weight": weight, "head": head}
  if normalize is not None:
    t["normalize"] = normalize
  if head_kwargs is not None:
    t["head_kwargs"] = head_kwargs
  return t


# ------------------------------------------------------------------------------ training
def train_config(
  *, batch: int, epochs: int, lr: float, log_every: int, checkpoint_every: int
) -> ml_collections.ConfigDict:
  """`config.train`: the optimisation settings every config shares, and the ones it chooses: the
  (global) batch size, epochs, peak learning rate, and every how many steps it logs and saves a
  resumable checkpoint."""
  return ml_collections.ConfigDict(
    {
      "batch_size": batch,
      "num_epochs": epochs,
      "optimizer": "adamw",
      "learning_rate": lr,
      "weight_decay": 1e-4,
      # "warmup_cosine", "constant" or "plateau" (reduce on plateau of the training loss).
      "schedule": "warmup_cosine",
      "warmup_epochs": 0.5,
      "plateau_patience": 3,
      "plateau_factor": 0.5,
      "grad_clip_norm": 1.0,
      # Standardise regression targets with training statistics (metrics stay in original units).
      "normalize_regression_targets": True,
      # Log every N steps (metrics.jsonl, TensorBoard); save a resumable checkpoint every N steps.
      "log_every_steps": log_every,
      "checkpoint_every_steps": checkpoint_every,
      # How many recent resumable checkpoints to keep (the best one is kept separately).
      "keep_checkpoints": 2,
      # Which checkpoints a restore verifies by checksum (mtljax/checkpoint.py): "all", "best"
      # (best/ by checksum, latest/ by file sizes) or "none" (sizes only).
      "verify_checksums": "all",
      # What checkpoints/best/ keeps (docs/training.md): "" = the main task's main metric;
      # "<task>/<metric>" any validation metric the run logs (direction from its task kind),
      # "max:<name>" / "min:<name>" with the direction given, or "latest" (the last epoch).
      "select_by": "",
    }
  )


def ensemble_config(
  size: int = 1, strategy: str = "seeds", devices: int = 1, augment_per_member: bool = False
) -> ml_collections.ConfigDict:
  """`config.ensemble`: E members trained together in one vmapped step (ensembles paper §3.1).

  strategy: "seeds" (different random initialisation and dropout), "bagging" (bootstrap
  sample weights) or "leave_one_bucket_out" (member k never sees bucket k of E).
  devices: spread the members over this many devices (an `ensemble` mesh axis; 1 = every device
  holds every member and the batch is split over all of them). Must divide E and the devices
  per process.
  augment_per_member: each member draws its own random flips/rotations of the shared batch (the
  options of `config.data.augment`), as separately trained networks would; without it, members
  of a seeds ensemble differ only in initialisation and dropout. Off by default: on the planted
  attribute data it lowered the members' Grad-CAM agreement only slightly (map correlation 0.90
  → 0.88) and changed no explanation result.
  """
  return ml_collections.ConfigDict(
    {
      "size": size,
      "strategy": strategy,
      "devices": devices,
      "augment_per_member": augment_per_member,
    }
  )


def eval_config(batch_size: int, prediction_splits) -> ml_collections.ConfigDict:
  """`config.eval`: the (global) evaluation batch size and the splits whose per-epoch predictions
  are written to <workdir>/predictions for the analysis."""
  return ml_collections.ConfigDict(
    {"batch_size": batch_size, "prediction_splits": tuple(prediction_splits)}
  )
