r"""Attribute image classification by an ensemble, and its averaged explanations (ensembles paper).

Multitask per §7: the class and every binary attribute (multilabel) from one ResNet-18; E members
with different seeds (or bagging / leave-one-bucket-out, §3.1) trained together in one vmapped
step. `--mode=explain` attributes each present attribute with each member, averages the maps
(Eq. 1) and scores members and ensemble against the evaluation-only masks and keypoints (IoU@0.3
with intersection/union, Pearson at 14×14, centre-of-mass distance; Tables 1–7, Fig. 5), and
draws member panels (Fig. 2) and labelled arrows (Fig. 14). Without `--config.data.root` it uses
the built-in synthetic dataset with planted attributes, written in the real CUB-200-2011 (or
ISIC 2018 Task 2) layout.

Variants after a colon, comma-separated:
  cub        CUB-200-2011 layout: tasks class (main) + attributes (default)
  isic       ISIC 2018 Task 2 layout: the five lesion attributes (multilabel, main)
  size=E     ensemble size (default 5)
  strategy=S seeds (default), bagging, leave_one_bucket_out
  tiny       a tiny ResNet and little data, for tests (seconds on CPU)
  shortcut   a class-coloured decoy square in train/val, random in test, with training
             masks (config.data.mask_fraction) and rationales (rationale_fraction) for
             explanation-guided training (config.explanation_loss, docs/explanation-guided.md);
             32 px, 4 classes (attributes = the class prototype), SmallCNN, 20 epochs

Commands:
  python -m mtljax.main --config=configs/attributes.py --workdir=/tmp/attr
  python -m mtljax.main --config=configs/attributes.py --workdir=/tmp/attr --mode=explain
  python -m mtljax.main --config=configs/attributes.py:shortcut,size=1 --workdir=W \
      --config.explanation_loss.kind=megl --config.explanation_loss.mask_fraction=0.1
  python -m mtljax.main --config=configs/attributes.py:isic,size=5 --workdir=W \
      --config.data.root=/data/ISIC2018 --config.data.image_size=224 \
      --config.explain.layer=encoders_image/stage4_block2
Real data at 224 px: ResNet-18's last stage is 7×7, the usual Grad-CAM layer (stage4_block2);
at the synthetic 64 px it is 2×2, so the default layer is the 4×4 stage3_block2.
"""

import ml_collections

from mtljax import config_blocks as blocks
from mtljax.configlib import ENSEMBLE_STRATEGIES
from mtljax.egl.config import explanation_loss_config

VARIANTS = blocks.Variants(
  "configs/attributes.py",
  # `cub` or `isic` alone names the archive layout.
  dataset=blocks.Option("cub", choices=("cub", "isic"), bare=True),
  size=blocks.Option(5, what="ensemble members"),
  strategy=blocks.Option("seeds", choices=ENSEMBLE_STRATEGIES),
  tiny=False,
  shortcut=False,
)


def get_config(arg=None):
  opts = VARIANTS.parse(arg)
  tiny, isic, shortcut = opts.tiny or opts.shortcut, opts.dataset == "isic", opts.shortcut
  if shortcut and isic:
    raise ValueError("configs/attributes.py: shortcut is a variant of the CUB layout, not isic")
  c = blocks.base_config()

  # ---------------------------------------------------------------- data
  # root: the folder holding CUB_200_2011/, or the ISIC2018_Task* folders.
  c.data = blocks.data_config(
    "isic2018" if isic else "cub",
    # Images are resized to image_size × image_size (masks and keypoints alike).
    image_size=48 if tiny else 64,
    # CUB: attribute ids or names to learn (empty = all: 312 on the real data); ISIC: names.
    attributes=(),
    # Validation examples carved from the training split (CUB; ISIC has its own validation set).
    val_fraction=0.15,
    split_seed=0,
    augment={"flip": True, "rot90": False},
    stats_examples=1024,
    synthetic={
      "num_train": 256 if tiny else 1200,
      "num_val": 64 if tiny else 150,  # ISIC layout only (CUB's validation comes from train)
      "num_test": 96 if tiny else 600,
    },
  )

  if shortcut:  # the decoy, and the training annotations' fractions (one value each,
    # read by the reader and by the explanation loss)
    mask_fraction = ml_collections.FieldReference(0.2)
    c.data.name, c.data.image_size = "cub_shortcut", 32
    c.data.mask_fraction = mask_fraction
    c.data.rationale_fraction = 0.0
    # What a mask marks relevant: "attributes" (the present attributes' masks), "box" (the bird's
    # bounding box, bounding_boxes.txt) or "all_but_decoy" (docs/explanation-guided.md)
    c.data.mask_region = "attributes"
    c.data.augment = ml_collections.ConfigDict({"enabled": False})  # masks ride in meta
    c.data.synthetic = ml_collections.ConfigDict(
      {"num_train": 700, "num_test": 300, "seed": 0, "dir": "", "decoy_size": 0.2,
       # 4 classes whose attributes are exactly their prototype: the planted signal alone is
       # learnable to ~0.95 by a small CNN in a few CPU minutes (a fair shortcut test)
       "num_classes": 4, "flip": 0.0}
    )  # fmt: skip

  # ---------------------------------------------------------------- model
  # ResNet-18 (paper §3.1).
  resnet = (
    blocks.resnet(stage_sizes=(1, 1, 1), width=16, stem_kernel=3) if tiny else blocks.resnet()
  )
  c.inputs = ml_collections.ConfigDict({"image": {"encoder": "resnet", "encoder_kwargs": resnet}})
  if shortcut:  # 32 px: three 3×3 convs (16, 32, 64) + global average pooling (SmallCNN)
    c.inputs.image = {"encoder": "small_cnn", "encoder_kwargs": {"features": (16, 32, 64)}}
  c.model = ml_collections.ConfigDict({"fusion": "concat"})

  # ---------------------------------------------------------------- tasks
  # num_classes 0 = from the dataset (200 classes on CUB; the selected attributes).
  c.tasks = ml_collections.ConfigDict()
  c.tasks.attributes = blocks.task("multilabel", 1.0, "linear", num_classes=0)
  if isic:
    c.main_task = "attributes"
  else:
    # The class is a function of the attributes: an MLP head (its dropout also makes the
    # members of a seeds ensemble differ beyond their initialisation).
    head = blocks.mlp((64,) if tiny else (256,), 0.25)
    c.tasks["class"] = blocks.task("classification", 1.0, "mlp", head, num_classes=0)
    c.main_task = "class"

  # ---------------------------------------------------------------- training
  c.train = blocks.train_config(
    batch=32, epochs=20 if tiny else 8, lr=1e-2 if tiny else 3e-3, log_every=10, checkpoint_every=50
  )

  if shortcut:  # the validation split carries the decoy: select by the class accuracy with each
    # decoy square repainted in another example's colour (docs/training.md)
    c.train.select_by = "class/accuracy_decoy_swapped"

  # ---------------------------------------------------------------- ensemble
  c.ensemble = blocks.ensemble_config(size=opts.size, strategy=opts.strategy)

  # ---------------------------------------------------------------- explanations
  c.explain = blocks.explain_config(
    task="attributes",
    modality="image",
    layer="encoders_image/"
    + ("conv2" if shortcut else "stage2_block1" if tiny else "stage3_block2"),
    max_examples=48 if tiny else 40,
  )
  c.explain.ig_steps = 16
  if not isic:  # CUB: the class and every present attribute of an image, in one call per method
    c.explain.tasks = ("class", "attributes")

  if shortcut:
    c.objective = ml_collections.ConfigDict({"terms": ("tasks", "aux", "explanation")})
    # MEGL's setting chosen on the decoyed validation split (docs/explanation-guided.md: λ 20 on
    # Grad-CAM at conv2, masks grown by 2 px, consistency 0.1, rationales → their part regions);
    # the other losses' λ are in profiling/experiments/egl_compare.py LAMBDA["attributes"].
    c.explanation_loss = explanation_loss_config(
      task="class", lam=20.0, saliency="gradcam@encoders_image/conv2", mask_fraction=mask_fraction
    )
    c.explanation_loss.update(mask_dilation=2, megl_consistency=0.1)
    c.explanation_loss.attribute_task = "attributes"  # the attributes a rationale names
    c.explanation_loss.rationale_target = "part_regions"
    c.explain.checkpoint = "latest"  # the decoyed validation split would pick the shortcut
    c.explain.textual = "class"  # sentences: class + supporting attributes + where

  # ---------------------------------------------------------------- analysis (--mode=analyze)
  # Error correlation of the main task with the other task across epochs.
  c.analysis = blocks.analysis_config()

  # ---------------------------------------------------------------- evaluation
  # Per-epoch predictions of the validation split (test: only at the end).
  c.eval = blocks.eval_config(batch_size=64, prediction_splits=("val",))
  return c
