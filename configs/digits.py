r"""Decoy digits: explanation-guided training where a shortcut fools the plain model.

scikit-learn's bundled 8×8 handwritten digits (offline) on a 14×14 canvas; with `decoy`, a 3×3
corner swatch whose shade encodes the label in train and validation and is random in test
(DecoyMNIST, Ross et al. 2017). `config.explanation_loss` adds an explanation term (RRR,
GRADIA, RES, MEGL; mtljax/egl/losses.py) supervised by the digit box on
`config.explanation_loss.mask_fraction` of the training examples (the same value as
`config.data.mask_fraction`: one setting). A seeds ensemble of E members trains as one vmapped
step, so a run gives mean ± std over E seeds.

Variants after a colon, comma-separated:
  decoy      add the decoy swatch (default: clean digits)
  encoder=S  mlp (RRR's setting, default) or cnn (SmallCNN, for Grad-CAM at encoders_image/conv2)
  size=E     ensemble size (default 1)
  tiny       fewer epochs, for tests

Commands:
  python -m mtljax.main --config=configs/digits.py:decoy --workdir=/tmp/digits
  python -m mtljax.main --config=configs/digits.py:decoy --workdir=W2 --config.explanation_loss.kind=rrr
  python -m mtljax.main --config=configs/digits.py:decoy,encoder=cnn,size=3 --workdir=W3 \
      --config.explanation_loss.kind=gradia --config.explanation_loss.saliency=gradcam@encoders_image/conv2
  python -m mtljax.main --config=configs/digits.py:decoy --workdir=W4 --mode=explain
The whole comparison (baseline vs each loss vs annotated fraction):
`python -m profiling.experiments.egl_compare --out W5`.
"""

import ml_collections

from mtljax import config_blocks as blocks
from mtljax.egl.config import explanation_loss_config

VARIANTS = blocks.Variants(
  "configs/digits.py",
  decoy=False,
  encoder=blocks.Option("mlp", choices=("mlp", "cnn")),
  size=blocks.Option(1, what="ensemble members"),
  tiny=False,
)


def get_config(arg=None):
  opts = VARIANTS.parse(arg)
  c = blocks.base_config()
  fraction = ml_collections.FieldReference(1.0)  # one value, read by the reader and the loss

  c.data = blocks.data_config(
    "digits",
    # 14×14 canvas, 3×3 decoy swatch; the explanation masks of this fraction of train examples.
    size=14,
    patch=3,
    decoy=opts.decoy,
    mask_fraction=fraction,
    augment={"enabled": False},  # a flip would move the decoy and the masks (meta) apart
    stats_examples=1024,
    synthetic={"num_train": 1000, "num_val": 200},
  )
  if opts.encoder == "cnn":
    enc = {"encoder": "small_cnn", "encoder_kwargs": {"features": (16, 32, 64)}}
  else:
    enc = {"encoder": "mlp", "encoder_kwargs": blocks.mlp((64, 64), 0.0)}
  c.inputs = ml_collections.ConfigDict({"image": enc})
  c.model = ml_collections.ConfigDict({"fusion": "concat"})
  c.tasks = ml_collections.ConfigDict()
  c.tasks.digit = blocks.task("classification", 1.0, "linear", num_classes=10)
  c.main_task = "digit"

  c.train = blocks.train_config(
    batch=64, epochs=6 if opts.tiny else 20, lr=3e-3, log_every=20, checkpoint_every=1000
  )
  if opts.decoy:  # the validation split carries the decoy: keep the epoch that reads the digit
    # best, by accuracy with each swatch repainted in another example's shade (docs/training.md)
    c.train.select_by = "digit/accuracy_decoy_swapped"
  c.ensemble = blocks.ensemble_config(size=opts.size)

  c.objective = ml_collections.ConfigDict({"terms": ("tasks", "aux", "explanation")})
  c.explanation_loss = explanation_loss_config(task="digit", lam=10.0, mask_fraction=fraction)

  c.explain = blocks.explain_config(
    task="digit",
    modality="image",
    layer="encoders_image/" + ("conv2" if opts.encoder == "cnn" else "dense1"),
    methods=("saliency",) if opts.encoder == "mlp" else ("saliency", "grad_cam"),
    max_examples=64,
  )
  # The validation split carries the decoy too, so the "best" checkpoint by validation accuracy
  # is the one that leans on the shortcut most: explain (and compare) the last one.
  c.explain.checkpoint = "latest"
  c.eval = blocks.eval_config(batch_size=256, prediction_splits=("test",))
  return c
