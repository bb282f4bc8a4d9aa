r"""BEN-GE land cover segmentation with auxiliary modalities (mtl-explainability paper, Tables 2
and 7, Appendix A and B.2).

Sentinel-1 and Sentinel-2 each go through a U-Net; elevation, climate zone, season and weather are
either extra inputs (MML rows 2-8: elevation through a second U-Net, climate zone through an
embedding, season and weather through MLPs) or auxiliary targets (MTL rows 9-15: DEM dense
regression, climate zone classification, season sigmoid regression, weather regression of
temperature, humidity and pressure). The spatial fusion broadcasts vector features to H×W,
concatenates them with the U-Net maps and applies two 1×1 convs (64 channels). Loss weights
LULC 9 : each auxiliary task 1, normalised. The default is row 15 (every modality as an auxiliary
target, the model the paper explains). Without `--config.data.root` it trains on the built-in
synthetic dataset, written in the real BEN-GE layout into `<workdir>/synthetic_data`.

Variants after a colon, comma-separated:
  exp=N   Table 2 / 7 row N (1..15)
            1 S1+S2 → LULC (baseline)         9  → LULC + elevation
            2 + elevation (input)             10 → LULC + climate zone
            3 + climate zone                  11 → LULC + season
            4 + season                        12 → LULC + weather
            5 + weather                       13 → LULC + elevation + season
            6 + elevation + season            14 → LULC + elevation + weather
            7 + elevation + weather           15 → LULC + all four   (default)
            8 + all four as inputs
  stack   elevation as an input is stacked onto Sentinel-2 as a 13th channel instead of a second U-Net
  tiny    tiny U-Nets and small synthetic patches, for tests and smoke runs (seconds on CPU)
  size=E  an ensemble of E members trained together

Commands:
  python -m mtljax.main --config=configs/benge.py --workdir=/tmp/benge
  python -m mtljax.main --config=configs/benge.py:exp=7 --workdir=/tmp/benge7
  python -m mtljax.main --config=configs/benge.py:exp=7,stack --workdir=/tmp/benge7s
  python -m mtljax.main --config=configs/benge.py --workdir=/tmp/bg \
      --config.data.root=/data/ben-ge-8k --config.train.num_epochs=50
  python -m mtljax.main --config=configs/benge.py:tiny --workdir=/tmp/bg_tiny
  python -m mtljax.main --config=configs/benge.py:tiny --workdir=/tmp/bg_tiny --mode=explain
"""

import ml_collections

from mtljax import config_blocks as blocks

AUX = ("elevation", "climate_zone", "season", "weather")
_E, _C, _S, _W = AUX
# Table 2 / Table 7: (auxiliary inputs, auxiliary targets) besides S1 + S2 → LULC.
EXPERIMENTS = {
  1: ((), ()),
  2: ((_E,), ()),
  3: ((_C,), ()),
  4: ((_S,), ()),
  5: ((_W,), ()),
  6: ((_E, _S), ()),
  7: ((_E, _W), ()),
  8: ((_E, _C, _S, _W), ()),
  9: ((), (_E,)),
  10: ((), (_C,)),
  11: ((), (_S,)),
  12: ((), (_W,)),
  13: ((), (_E, _S)),
  14: ((), (_E, _W)),
  15: ((), (_E, _C, _S, _W)),
}


VARIANTS = blocks.Variants(
  "configs/benge.py",
  exp=blocks.Option(15, choices=EXPERIMENTS, what="a Table 2 row"),
  size=blocks.Option(1, what="ensemble members"),
  tiny=False,
  stack=False,
)


def get_config(arg=None):
  opts = VARIANTS.parse(arg)
  aux_inputs, aux_targets = EXPERIMENTS[opts.exp]
  tiny = opts.tiny
  c = blocks.base_config(experiment=opts.exp)

  # ---------------------------------------------------------------- data
  # root: the real BEN-GE archive.
  c.data = blocks.data_config(
    "benge",
    # Release name in the file names (ben-ge-8k_meta.csv, splits/ben-ge-8k_train.csv, ...).
    prefix="ben-ge-8k",
    # Side of every raster after resampling (120 = the native 10 m grid).
    image_size=24 if tiny else 60,
    # ERA-5 columns and season of the Sentinel-2 ("s2") or Sentinel-1 ("s1") acquisition.
    weather_time="s2",
    # Climate zone codes in class order (12 classes as in the paper; 0 = water-only patch).
    climate_zones=(0, 7, 8, 9, 14, 15, 16, 18, 25, 26, 27, 29),
    # Without splits/*.csv: deal the meta table 80/10/10 by a seeded hash of the patch id.
    split_fallback=False,
    split_seed=0,
    # Elevation as an input: stacked onto Sentinel-2 (True) or its own U-Net (False).
    stack_elevation=opts.stack and _E in aux_inputs,
    # Images and dense targets alike.
    augment={"flip": True, "rot90": True},
    stats_examples=512,
    # Patches (split 80/10/10) and the 10 m raster side.
    synthetic={"num_patches": 80 if tiny else 400, "size": 24 if tiny else 120},
  )

  # ---------------------------------------------------------------- inputs (modality encoders)
  # B.2: U-Net backbones with four down- and upsampling steps, mapped to 64 channels.
  unet = ml_collections.ConfigDict(
    {
      "features": (8, 16) if tiny else (16, 32, 64, 128, 256),
      "out_features": 16 if tiny else 64,
    }
  )
  c.inputs = ml_collections.ConfigDict(
    {
      "s1": {"encoder": "unet", "encoder_kwargs": unet},
      "s2": {"encoder": "unet", "encoder_kwargs": unet.copy_and_resolve_references()},
    }
  )
  if _E in aux_inputs and not c.data.stack_elevation:
    c.inputs.elevation = {
      "encoder": "unet",
      "encoder_kwargs": {"features": (8, 16) if tiny else (8, 16, 32, 64, 128), "out_features": 16},
    }
  if _C in aux_inputs:
    c.inputs.climate_zone = {
      "encoder": "embedding",
      "encoder_kwargs": {"num_embeddings": 12, "features": 16},
    }
  if _S in aux_inputs:
    c.inputs.season = {"encoder": "mlp", "encoder_kwargs": blocks.mlp((16,))}
  if _W in aux_inputs:
    c.inputs.weather = {"encoder": "mlp", "encoder_kwargs": blocks.mlp((32,))}

  # ---------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict()
  # Maps and broadcast vectors concatenated on channels, then two 1×1 convs with ReLU (B.2).
  c.model.fusion = "spatial"
  c.model.fusion_kwargs = ml_collections.ConfigDict(
    {"features": 16 if tiny else 64, "num_convs": 2, "kernel": 1}
  )

  # ---------------------------------------------------------------- tasks (heads and losses)
  c.tasks = ml_collections.ConfigDict()
  # LULC: 11 ESA WorldCover classes (the paper counts 12, presumably with no-data, masked here).
  c.tasks.lulc = blocks.task("segmentation", 9.0, "segmentation", num_classes=11)
  c.main_task = "lulc"
  if _E in aux_targets:  # two 3×3 convs + 1×1 conv, MSE per pixel, MAE
    dense_head = {"features": 16 if tiny else 32}
    c.tasks.elevation = blocks.task("dense_regression", 1.0, "dense", dense_head)
  if _C in aux_targets:  # 1×1 conv, FC with dropout 0.5
    climate_head = {"conv_features": 32, "hidden": (), "dropout": 0.5}
    c.tasks.climate_zone = blocks.task(
      "classification", 1.0, "pooled", climate_head, num_classes=12
    )
  # Season and weather: 1×1 conv to 16, two FC with ReLU and dropout 0.2.
  pooled = {"conv_features": 16, "hidden": (16,), "dropout": 0.2}
  if _S in aux_targets:  # with a sigmoid: the season target is in [0, 1]
    season_head = {**pooled, "sigmoid": True}
    c.tasks.season = blocks.task("regression", 1.0, "pooled", season_head, normalize=False)
  if _W in aux_targets:  # temperature, humidity, pressure
    c.tasks.weather = blocks.task("regression", 1.0, "pooled", pooled, num_outputs=3)

  # ---------------------------------------------------------------- training
  c.train = blocks.train_config(
    batch=8, epochs=3 if tiny else 10, lr=3e-3, log_every=10, checkpoint_every=50
  )

  # ---------------------------------------------------------------- ensemble
  c.ensemble = blocks.ensemble_config(size=opts.size)

  # ---------------------------------------------------------------- explanations (--mode=explain)
  # The LULC score of each example's most frequent labelled class, summed over the image.
  c.explain = blocks.explain_config(
    task="lulc",
    modality="s2",
    layer="encoders_s2/up0",
    methods=("saliency", "integrated_gradients", "grad_cam"),
    max_examples=8 if tiny else 32,
  )

  # ---------------------------------------------------------------- evaluation
  c.eval = blocks.eval_config(batch_size=8, prediction_splits=("val", "test"))

  # ---------------------------------------------------------------- analysis (--mode=analyze)
  # LULC error correlation with the auxiliary tasks over epochs; dense error maps (App. C).
  c.analysis = blocks.analysis_config()
  return c
