r"""TreeSAT multimodal multitask training (mtl-explainability paper, Table 3 and Appendix B.3).

The default is Experiment 7: inputs aerial CIR + Sentinel-1 + Sentinel-2, tasks L3 genus (main),
L2 forest stand type and age regression, loss weights 4:1:1 normalised to sum 1. Without
`--config.data.root` it trains on the built-in synthetic dataset, written in the real TreeSatAI
layout into `<workdir>/synthetic_data`.

Variants come after a colon, comma-separated (big_vision style):
  exp=N   Table 3 row N (1..8): which of L2, L1, age are inputs or auxiliary targets
            1 baseline (images → L3)          5 images → L3 + age
            2 images + age → L3 (MML)         6 images → L3 + L2 + L1
            3 images → L3 + L2                7 images → L3 + L2 + age   (default)
            4 images → L3 + L1                8 images → L3 + L2 + L1 + age
  multilabel  train L3 on the archive's native multi-labels (genera with share > 0.07, BCE)
  tiny      a tiny ResNet and small synthetic data, for tests and smoke runs (seconds on CPU)
  size=E    an ensemble of E members trained together (different seeds; see config.ensemble)

Commands:
  python -m mtljax.main --config=configs/treesat.py --workdir=/tmp/treesat
  python -m mtljax.main --config=configs/treesat.py:exp=3 --workdir=/tmp/treesat_exp3
  python -m mtljax.main --config=configs/treesat.py --workdir=/tmp/ts \
      --config.data.root=/data/TreeSatAI --config.train.num_epochs=100 --config.train.batch_size=64
  python -m mtljax.main --config=configs/treesat.py:tiny --workdir=/tmp/ts_tiny
  python -m mtljax.main --config=configs/treesat.py --workdir=/tmp/treesat --mode=analyze
  python -m mtljax.main --config=configs/treesat.py:tiny,size=3 --workdir=/tmp/ts_ens
  python -m mtljax.main --config=configs/treesat.py:tiny,size=3 --workdir=/tmp/ts_ens --mode=explain
"""

import ml_collections

from mtljax import configlib

# Table 3 of the paper: (auxiliary inputs, auxiliary targets) besides the images and L3.
EXPERIMENTS = {
  1: ((), ()),
  2: (("age",), ()),
  3: ((), ("l2",)),
  4: ((), ("l1",)),
  5: ((), ("age",)),
  6: ((), ("l2", "l1")),
  7: ((), ("l2", "age")),
  8: ((), ("l2", "l1", "age")),
}


def _parse(arg):
  opts = {"exp": 7, "tiny": False, "multilabel": False, "size": 1}
  for tok in filter(None, (arg or "").split(",")):
    key, _, val = tok.partition("=")
    if key in ("exp", "size") and val.isdigit():
      opts[key] = int(val)
    elif key in ("tiny", "multilabel") and not val:
      opts[key] = True
    else:
      raise ValueError(
        f"configs/treesat.py: unknown variant {tok!r}; "
        "expected exp=N (1..8), size=E (ensemble), tiny or multilabel"
      )
  if opts["exp"] not in EXPERIMENTS:
    raise ValueError(f"configs/treesat.py: exp={opts['exp']} is not a Table 3 row (1..8)")
  return opts


def _mlp(hidden, dropout):
  return ml_collections.ConfigDict({"hidden": tuple(hidden), "dropout": dropout})


def get_config(arg=None):
  opts = _parse(arg)
  aux_inputs, aux_targets = EXPERIMENTS[opts["exp"]]
  tiny = opts["tiny"]
  c = ml_collections.ConfigDict()
  # Seed of parameter init, dropout and data order.
  c.seed = 0
  # Table 3 row this config was built for (informational; change it with the `exp=N` variant).
  c.experiment = opts["exp"]

  # ---------------------------------------------------------------- data
  c.data = ml_collections.ConfigDict()
  c.data.name = "treesat"
  # Path to the real TreeSatAI archive; empty = the built-in synthetic dataset.
  c.data.root = ""
  # Patch size folder of the archive ("60m": 6×6 Sentinel patches, "200m": 20×20).
  c.data.resolution = "60m"
  # Expected aerial patch size in pixels (304 at 60m).
  c.data.aerial_size = 32 if tiny else 304
  # Where L2 (forest stand type) comes from: "genus" (hierarchy map) or "csv" (side CSV).
  c.data.l2_source = "genus"
  # Where age comes from: "name" (first number token of the file name) or "csv".
  c.data.age_source = "name"
  # Side CSV `name,stand_type,age`, relative to the root.
  c.data.side_csv = "labels/stand_type_age.csv"
  # Genera whose area share exceeds this count as present in the multi-label target.
  c.data.multi_threshold = 0.07
  # The archive's test list is split into validation and test (paper, Appendix A).
  c.data.val_fraction = 0.5
  c.data.split_seed = 0
  # Geometric augmentation of training batches (applied to all image modalities alike).
  c.data.augment = ml_collections.ConfigDict({"flip": True, "rot90": True})
  # Training examples used for the per-band normalisation statistics.
  c.data.stats_examples = 2048
  # Reader threads and prefetched batches of the grain pipeline.
  c.data.num_threads = 2
  c.data.prefetch = 4
  # Built-in synthetic dataset (used when root is empty): size and where it is written
  # (empty dir = <workdir>/synthetic_data).
  c.data.synthetic = ml_collections.ConfigDict(
    {
      "num_train": 96 if tiny else 480,
      "num_test": 64 if tiny else 160,
      "seed": 0,
      "dir": "",
    }
  )

  # ---------------------------------------------------------------- inputs (modality encoders)
  resnet = ml_collections.ConfigDict(
    {
      "stage_sizes": (1, 1) if tiny else (2, 2, 2, 2),  # ResNet-18
      "width": 8 if tiny else 64,
      "stem_kernel": 3 if tiny else 7,
      "dtype": "float32",
    }
  )
  sat_mlp = _mlp((32, 32, 32) if tiny else (512, 512, 512), 0.3)
  c.inputs = ml_collections.ConfigDict(
    {
      "aerial": {"encoder": "resnet", "encoder_kwargs": resnet},
      "s1": {"encoder": "mlp", "encoder_kwargs": sat_mlp},
      "s2": {"encoder": "mlp", "encoder_kwargs": sat_mlp.copy_and_resolve_references()},
    }
  )
  if "age" in aux_inputs:
    c.inputs.age = {"encoder": "mlp", "encoder_kwargs": _mlp((32,), 0.0)}

  # ---------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict()
  # How encoder features are combined.
  c.model.fusion = "concat"

  # ---------------------------------------------------------------- tasks (heads and losses)
  c.tasks = ml_collections.ConfigDict()
  if opts["multilabel"]:
    c.tasks.l3_multi = {"kind": "multilabel", "num_classes": 15, "weight": 4.0, "head": "linear"}
    c.main_task = "l3_multi"
  else:
    c.tasks.l3 = {"kind": "classification", "num_classes": 15, "weight": 4.0, "head": "linear"}
    c.main_task = "l3"
  mlp_head = {"hidden": (64,) if tiny else (256,), "dropout": 0.25}
  if "l2" in aux_targets:
    c.tasks.l2 = {
      "kind": "classification",
      "num_classes": 9,
      "weight": 1.0,
      "head": "mlp",
      "head_kwargs": mlp_head,
    }
  if "l1" in aux_targets:
    c.tasks.l1 = {
      "kind": "classification",
      "num_classes": 3,
      "weight": 1.0,
      "head": "mlp",
      "head_kwargs": dict(mlp_head),
    }
  if "age" in aux_targets:
    c.tasks.age = {"kind": "regression", "weight": 1.0, "head": "linear"}

  # ---------------------------------------------------------------- training
  c.train = configlib.train_config(
    batch_size=16,
    num_epochs=4 if tiny else 3,
    learning_rate=1e-3,
    log_every_steps=5,
    checkpoint_every_steps=20,
  )

  # ---------------------------------------------------------------- ensemble
  # E members trained together (vmapped); size 1 = a single model. See configlib.ensemble_config.
  c.ensemble = configlib.ensemble_config(size=opts["size"])

  # ---------------------------------------------------------------- explanations (--mode=explain)
  # One attribution per input modality; maps, pictures and Grad-CAM on the aerial ResNet.
  c.explain = configlib.explain_config(
    task=c.main_task,
    modality="aerial",
    layer="encoders_aerial/" + ("stage2_block1" if tiny else "stage4_block2"),
    max_examples=16 if tiny else 64,
  )

  # ---------------------------------------------------------------- analysis (--mode=analyze)
  # Intrinsic multitask analysis of the per-epoch test predictions (paper §4.2): L2-L3
  # combinations and hierarchy adherence, age error per combination, error correlations.
  c.analysis = configlib.analysis_config()

  # ---------------------------------------------------------------- evaluation
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 32
  # Splits whose per-epoch predictions are written to <workdir>/predictions for the analysis.
  c.eval.prediction_splits = ("val", "test")
  return c
