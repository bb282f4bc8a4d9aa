r"""CropYield pixel-wise yield regression (mtl-explainability paper, Tables 1/6, Appendix B.1).

The default is Experiment 7, the one the paper analyses: the Sentinel-2 time series (25 features
per observation) through a Transformer (1 head, 4 layers, 32 features, positional encoding from
each observation's days to harvest) → yield regression (main, weight 0.67) + crop classification
(auxiliary, 0.33); heads are two-layer MLPs. Without `--config.data.root` it trains on the built-in
synthetic dataset, written in this project's CropYield format (mtljax/data/cropyield.py) into
`<workdir>/synthetic_data`.

Variants after a colon, comma-separated:
  exp=N   a row of Table 1 (Table 6 of the appendix): which modalities are inputs (→□) or
          auxiliary targets (□→) besides Sentinel-2 → yield
            1   baseline (S2)                     6   S2 + crop + weather + DEM
            1a  S2, soybean fields only           7   S2; crop as target (default)
            1b  S2, wheat fields only             8   S2 + weather; crop as target
            1c  S2, corn fields only              9   S2 + weather + DEM; crop as target
            2   S2 + crop label                   10  S2 + weather; crop and DEM as targets
            3   S2 + weather
            4   S2 + crop + weather
            5   S2 + weather + DEM
  tiny    small model and data: a smoke/test run in seconds

Commands:
  python -m mtljax.main --config=configs/cropyield.py --workdir=/tmp/cropyield
  python -m mtljax.main --config=configs/cropyield.py:exp=10 --workdir=/tmp/cy10
  python -m mtljax.main --config=configs/cropyield.py --workdir=/tmp/cropyield --mode=explain
  python -m mtljax.main --config=configs/cropyield.py --workdir=/runs/cy \
      --config.data.root=/data/cropyield --config.train.num_epochs=30 --config.train.batch_size=512
"""

import ml_collections

from mtljax import config_blocks as blocks

# Table 1: (auxiliary inputs, auxiliary targets, crops) besides S2 → yield.
EXPERIMENTS = {
  "1": ((), (), ()),
  "1a": ((), (), ("soybean",)),
  "1b": ((), (), ("wheat",)),
  "1c": ((), (), ("corn",)),
  "2": (("crop",), (), ()),
  "3": (("weather",), (), ()),
  "4": (("crop", "weather"), (), ()),
  "5": (("weather", "dem"), (), ()),
  "6": (("crop", "weather", "dem"), (), ()),
  "7": ((), ("crop",), ()),
  "8": (("weather",), ("crop",), ()),
  "9": (("weather", "dem"), ("crop",), ()),
  "10": (("weather",), ("crop", "dem"), ()),
}


VARIANTS = blocks.Variants(
  "configs/cropyield.py",
  exp=blocks.Option("7", choices=EXPERIMENTS, what="a Table 1 row", metavar="N"),
  tiny=False,
)


def _transformer(tiny, layers):
  return ml_collections.ConfigDict(
    {
      "d_model": 16 if tiny else 32,
      "num_heads": 1,
      "num_layers": 1 if tiny else layers,
      "mlp_dim": 32 if tiny else 64,
      "dropout": 0.0 if tiny else 0.1,
      "max_period": 10000.0,
    }
  )


def get_config(arg=None):
  opts = VARIANTS.parse(arg)
  aux_inputs, aux_targets, crops = EXPERIMENTS[opts.exp]
  tiny = opts.tiny
  c = blocks.base_config(experiment=opts.exp)

  # ---------------------------------------------------------------- data
  # root: the folder with fields.csv and fields/<field_id>/*.npy.
  c.data = blocks.data_config(
    "cropyield",
    # Padded lengths of the time series (a longer field is an error naming it).
    s2_max_steps=48,
    weather_max_steps=200,
    # Day value of each step for the positional encoding: "harvest" (days to harvest, the
    # paper's choice) or "seeding" (days since seeding).
    day_reference="harvest",
    # Keep only fields of these crops (Table 6 rows 1.a-1.c); empty = all.
    crops=tuple(crops),
    # Split of the fields (grouped by field, stratified by year; Appendix A).
    fractions=(0.6, 0.2, 0.2),
    split_seed=0,
    # No geometric augmentation: examples are single pixels.
    augment={"enabled": False},
    stats_examples=2048,
    synthetic={
      "num_fields": 24 if tiny else 60,
      "years": (2019, 2020, 2021, 2022),
      "num_farms": 6 if tiny else 12,
    },
  )

  # ---------------------------------------------------------------- inputs (modality encoders)
  c.inputs = ml_collections.ConfigDict(
    {
      "s2": {"encoder": "transformer", "encoder_kwargs": _transformer(tiny, 4)},
    }
  )
  if "weather" in aux_inputs:
    c.inputs.weather = {"encoder": "transformer", "encoder_kwargs": _transformer(tiny, 2)}
  if "dem" in aux_inputs:
    c.inputs.dem = {"encoder": "mlp", "encoder_kwargs": blocks.mlp((16,))}
  if "crop" in aux_inputs:  # one-hot crop label → MLP (Table 5)
    c.inputs.crop = {"encoder": "mlp", "encoder_kwargs": blocks.mlp((8,))}

  # ---------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict()
  c.model.fusion = "concat"

  # ---------------------------------------------------------------- tasks (heads and losses)
  # Appendix B.1: two fully connected layers per head; yield 0.67, crop 0.33.
  head = (16,) if tiny else (32,)
  c.tasks = ml_collections.ConfigDict()
  c.tasks["yield"] = blocks.task("regression", 0.67, "mlp", blocks.mlp(head))
  if "crop" in aux_targets:
    c.tasks.crop = blocks.task("classification", 0.33, "mlp", blocks.mlp(head), num_classes=3)
  if "dem" in aux_targets:  # the 5 DEM features as a vector regression target (MSE, MAE)
    c.tasks.dem = blocks.task("regression", 0.33, "mlp", blocks.mlp(head), num_outputs=5)
  c.main_task = "yield"

  # ---------------------------------------------------------------- training
  c.train = blocks.train_config(
    batch=64,
    epochs=6 if tiny else 12,
    lr=3e-3 if tiny else 2e-3,
    log_every=20,
    checkpoint_every=200,
  )

  # ---------------------------------------------------------------- ensemble
  c.ensemble = blocks.ensemble_config(size=1)

  # ---------------------------------------------------------------- explanations (--mode=explain)
  # Per-time-step and per-feature importance of the time-series inputs for the yield.
  c.explain = blocks.explain_config(
    task="yield",
    modality="s2",
    layer="",
    methods=("saliency", "integrated_gradients"),
    max_examples=64 if tiny else 256,
  )
  # "time_series": mtljax.explain.timeseries (importance over steps and features, not maps).
  c.explain.kind = "time_series"
  # Width (days) of the bins over which per-time-step importance is summarised.
  c.explain.day_bin = 10
  c.explain.batch_size = 64

  # ---------------------------------------------------------------- evaluation
  c.eval = blocks.eval_config(batch_size=256, prediction_splits=("val", "test"))

  # ---------------------------------------------------------------- analysis (--mode=analyze)
  # Yield error by crop correctness and per field (group_scatter), error correlation over epochs.
  c.analysis = blocks.analysis_config()
  return c
