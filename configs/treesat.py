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
  tiny      a tiny ResNet and small synthetic data, for tests and smoke runs (seconds on CPU);
            on the real archive it reads the 304×304 aerial patches area-averaged to 32×32
            (config.data.aerial_resize)
  size=E    an ensemble of E members trained together (different seeds; see config.ensemble)
  arch=A    the aerial encoder: resnet18 (default) or resnet50
  pretrained=PATH  start the aerial ResNet from ImageNet weights (a torchvision/timm state dict,
            .safetensors or .pth; docs/prepared-data.md says where to get them)
  s2=R      where Sentinel-2 goes: input (default: an input modality, as in the paper), target
            (an auxiliary regression task `s2`: the patch's mean spectrum, 12 bands in the
            archive's units, standardised, an MLP head, loss weight 1 before the weights are
            normalised; the model then predicts from aerial + Sentinel-1 alone, and new data
            needs no S2 files) or off (neither: the aerial + Sentinel-1 baseline)

Commands:
  python -m mtljax.main --config=configs/treesat.py --workdir=/tmp/treesat
  python -m mtljax.main --config=configs/treesat.py:exp=3 --workdir=/tmp/treesat_exp3
  python -m mtljax.main --config=configs/treesat.py --workdir=/tmp/ts \
      --config.data.root=/data/TreeSatAI --config.train.num_epochs=100 --config.train.batch_size=64
  python -m mtljax.main --config=configs/treesat.py:tiny --workdir=/tmp/ts_tiny
  python -m mtljax.main --config=configs/treesat.py:tiny --workdir=/tmp/ts_tiny_real \
      --config.data.root=/data/TreeSatAI
  python -m mtljax.main --config=configs/treesat.py --workdir=/tmp/treesat --mode=analyze
  python -m mtljax.main --config=configs/treesat.py:tiny,size=3 --workdir=/tmp/ts_ens
  python -m mtljax.main --config=configs/treesat.py:tiny,size=3 --workdir=/tmp/ts_ens --mode=explain
  python -m mtljax.main --config=configs/treesat.py:s2=target --workdir=/tmp/treesat_s2target
  python -m mtljax.main --config=configs/treesat.py:s2=off --workdir=/tmp/treesat_s2off
"""

import ml_collections

from mtljax import config_blocks as blocks
from mtljax.data.treesat.archive import AERIAL_BANDS

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

VARIANTS = blocks.Variants(
  "configs/treesat.py",
  exp=blocks.Option(7, choices=EXPERIMENTS, what="a Table 3 row"),
  size=blocks.Option(1, what="ensemble members"),
  tiny=False,
  multilabel=False,
  arch=blocks.Option("resnet18", choices=("resnet18", "resnet50"), what="the aerial ResNet"),
  pretrained=blocks.Option("", what="ImageNet weights of the aerial ResNet", metavar="PATH"),
  s2=blocks.Option("input", choices=("input", "target", "off"), what="where Sentinel-2 goes"),
)


def get_config(arg=None):
  opts = VARIANTS.parse(arg)
  aux_inputs, aux_targets = EXPERIMENTS[opts.exp]
  tiny = opts.tiny
  c = blocks.base_config(experiment=opts.exp)

  # ---------------------------------------------------------------- data
  # root: the real TreeSatAI archive.
  c.data = blocks.data_config(
    "treesat",
    # Patch size folder of the archive ("60m": 6×6 Sentinel patches, "200m": 20×20).
    resolution="60m",
    # Aerial patch size in pixels the model sees (the archive's: 304 at 60m); the synthetic
    # dataset is written at this size.
    aerial_size=32 if tiny else 304,
    # True: aerial files of any square size are read and area-averaged to aerial_size, so `tiny`
    # reads the real archive's 304×304 patches at 32×32 (no override needed); False: a file of
    # another size is an error naming it.
    aerial_resize=tiny,
    # Where L2 (forest stand type) comes from: "genus" (hierarchy map) or "csv" (side CSV).
    l2_source="genus",
    # Where age comes from: "name" (first number token of the file name) or "csv".
    age_source="name",
    # Side CSV `name,stand_type,age`, relative to the root.
    side_csv="labels/stand_type_age.csv",
    # Genera whose area share exceeds this count as present in the multi-label target.
    multi_threshold=0.07,
    # The archive's test list is split into validation and test (paper, Appendix A).
    val_fraction=0.5,
    split_seed=0,
    # Applied to all image modalities alike.
    augment={"flip": True, "rot90": True},
    stats_examples=2048,
    synthetic={"num_train": 96 if tiny else 480, "num_test": 64 if tiny else 160},
  )

  # ---------------------------------------------------------------- inputs (modality encoders)
  resnet = blocks.resnet(stage_sizes=(1, 1), width=8, stem_kernel=3) if tiny else blocks.resnet()
  if opts.pretrained or opts.arch != "resnet18":
    resnet = blocks.resnet(stage_sizes=(3, 4, 6, 3) if opts.arch == "resnet50" else (2, 2, 2, 2))
    resnet.block = "bottleneck" if opts.arch == "resnet50" else "basic"
    # ImageNet weights (torchvision/timm state dict, mtljax/models/pretrained.py); the CIR bands
    # named so that R, G, B keep their filters and IR gets their mean.
    resnet.pretrained = opts.pretrained
    resnet.pretrained_bands = AERIAL_BANDS
  sat_mlp = (32, 32, 32) if tiny else (512, 512, 512)
  c.inputs = ml_collections.ConfigDict(
    {
      "aerial": {"encoder": "resnet", "encoder_kwargs": resnet},
      "s1": {"encoder": "mlp", "encoder_kwargs": blocks.mlp(sat_mlp, 0.3)},
    }
  )
  if opts.s2 == "input":
    c.inputs.s2 = {"encoder": "mlp", "encoder_kwargs": blocks.mlp(sat_mlp, 0.3)}
  if "age" in aux_inputs:
    c.inputs.age = {"encoder": "mlp", "encoder_kwargs": blocks.mlp((32,))}

  # ---------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict()
  # How encoder features are combined.
  c.model.fusion = "concat"

  # ---------------------------------------------------------------- tasks (heads and losses)
  c.tasks = ml_collections.ConfigDict()
  kind, c.main_task = ("multilabel", "l3_multi") if opts.multilabel else ("classification", "l3")
  c.tasks[c.main_task] = blocks.task(kind, 4.0, "linear", num_classes=15)
  # L2 (forest stand type, 9 classes) and L1 (3 classes) auxiliaries: an MLP head each.
  for name, num_classes in (("l2", 9), ("l1", 3)):
    if name in aux_targets:
      head = blocks.mlp((64,) if tiny else (256,), 0.25)
      c.tasks[name] = blocks.task("classification", 1.0, "mlp", head, num_classes=num_classes)
  if "age" in aux_targets:
    c.tasks.age = blocks.task("regression", 1.0, "linear")
  if opts.s2 == "target":
    # S2's mean spectrum per band (the reader's target `s2`), an MLP head like L2's.
    head = blocks.mlp((64,) if tiny else (256,), 0.25)
    c.tasks.s2 = blocks.task("regression", 1.0, "mlp", head, num_outputs=12)

  # ---------------------------------------------------------------- training
  c.train = blocks.train_config(
    batch=16, epochs=4 if tiny else 3, lr=1e-3, log_every=5, checkpoint_every=20
  )

  # ---------------------------------------------------------------- ensemble
  # E members trained together (vmapped); size 1 = a single model (config_blocks.ensemble_config).
  c.ensemble = blocks.ensemble_config(size=opts.size)

  # ---------------------------------------------------------------- explanations (--mode=explain)
  # One attribution per input modality; maps, pictures and Grad-CAM on the aerial ResNet.
  c.explain = blocks.explain_config(
    task=c.main_task,
    modality="aerial",
    layer="encoders_aerial/" + ("stage2_block1" if tiny else "stage4_block2"),
    max_examples=16 if tiny else 64,
  )

  # ---------------------------------------------------------------- analysis (--mode=analyze)
  # Intrinsic multitask analysis of the per-epoch test predictions (paper §4.2): L2-L3
  # combinations and hierarchy adherence, age error per combination, error correlations.
  c.analysis = blocks.analysis_config()

  # ---------------------------------------------------------------- evaluation
  c.eval = blocks.eval_config(batch_size=32, prediction_splits=("val", "test"))
  return c
