"""A manifest run's config completed from its table: what the data decides (task kinds, class
counts, encoders, heads, fusion, the grid of a run with dense targets, the schema the reader
uses), filled in before the config is checked (``configlib.problems`` calls the dataset entry's
``complete_config``).

Only what the config leaves open is filled: a task kind "" (inferred), ``num_classes`` 0 (the
training split's classes, or the count of ``config.tasks.<col>.classes`` when declared), an
encoder or head "" (chosen by the modality's shape and the run's targets), ``model.fusion`` "",
``data.grid`` 0, empty ``explain`` names. Anything set on the command line stays, and a value
that contradicts the table is a problem (``configlib.check_fields``). Every problem of the table
is reported together in one ``DataError`` before anything is written.

Encoders by shape (when ``encoder`` is ""): an image of side ≤ 8 → MLP (as TreeSAT's 6×6
Sentinel patches), < 64 → the small CNN, else ResNet-18; a vector → MLP; a categorical column →
an embedding. A run with a dense target (a raster target) is spatial: image inputs get U-Nets,
every raster is resampled to one grid (the largest dense target's side), the fusion is spatial
and per-example tasks get pooled heads.
"""

from __future__ import annotations

from typing import Mapping

from mtljax.data.manifest import files
from mtljax.data.manifest import schema as schema_lib
from mtljax.data.manifest.table import assign_splits, read_table
from mtljax.errors import ConfigError


def _encoder(entry: dict, spatial: bool) -> tuple[str, dict]:
  if entry["type"] == "categorical":
    return "embedding", {"num_embeddings": max(len(entry["classes"]), 1), "features": 16}
  shape = entry["shape"]
  if entry["type"] != "raster" or len(shape) != 3:
    return "mlp", {"hidden": (64,), "dropout": 0.0}
  if spatial:
    return "unet", {"features": (16, 32), "out_features": 16}
  side = min(shape[:2])
  if side <= 8:
    return "mlp", {"hidden": (64, 64), "dropout": 0.0}
  if side < 64:
    return "small_cnn", {"features": (16, 32, 64)}
  return "resnet", {"stage_sizes": (2, 2, 2, 2), "width": 64, "stem_kernel": 7, "dtype": "float32"}


# Default kwargs of an encoder the user named without them.
_KWARGS = {
  "mlp": {"hidden": (64,), "dropout": 0.0},
  "small_cnn": {"features": (16, 32, 64)},
  "unet": {"features": (16, 32), "out_features": 16},
  "resnet": {"stage_sizes": (2, 2, 2, 2), "width": 64, "stem_kernel": 7, "dtype": "float32"},
}
# Grad-CAM's layer (config.explain.layer) of each encoder the completion chooses.
_LAYERS = {"small_cnn": "conv3", "resnet": "stage4_block2", "unet": "out", "mlp": "dense1"}


def _head(entry: dict, spatial: bool) -> tuple[str, dict]:
  if entry["dense"]:
    if entry["target"] == schema_lib.CLASS:
      return "segmentation", {}
    return "dense", {"features": 16}
  if spatial:
    return "pooled", {"conv_features": 16, "hidden": (), "dropout": 0.0}
  return "linear", {}


def complete_config(config, kinds: Mapping[str, tuple[str, bool]]) -> None:
  """Fill ``config`` from its manifest (module docstring). ``kinds``: the task registry's
  ``{kind name: (target, dense)}``.

  Raises:
    ConfigError: no manifest named. DataError: the table's problems, all of them in one message.
  """
  d = config.data
  if not d.get("manifest"):
    raise ConfigError(
      "config.data.manifest is empty: give the table of your files "
      "(--config.data.manifest=/path/to/table.csv)"
    )
  table = read_table(d.manifest, d.root or None)
  splits, problems = assign_splits(table, d.split_fractions, d.split_seed)
  groups = schema_lib.parse_groups(d.groups)
  targets = {t: c.get("kind", "") for t, c in config.tasks.items()}
  declared = {t: declared_classes(c.get("classes", "")) for t, c in config.tasks.items()}
  schema, more = schema_lib.infer(
    table,
    splits,
    inputs=list(config.inputs),
    targets=targets,
    groups=groups,
    kinds=kinds,
    classes={t: v for t, v in declared.items() if v},
  )
  problems += more
  mode = d.get("check_files", "header")
  if mode != "off":
    problems += files.check_files(table, schema, range(len(table)), full=mode == "full")
  files.raise_problems(table, problems)
  complete_from_schema(config, schema)


def declared_classes(text) -> list[str]:
  """``config.tasks.<col>.classes`` as names: ``"a,b,c"`` (or a list) -> ``["a", "b", "c"]``."""
  parts = text.split(",") if isinstance(text, str) else list(text or ())
  return [n for n in (str(p).strip() for p in parts) if n]


def complete_from_schema(config, schema: dict) -> None:
  """Fill what ``schema`` (the columns' entries of ``schema.py``) decides: task kinds, class
  counts, encoders, heads, fusion, grid; ``config.data.schema``. Shared with the TFDS source
  (``mtljax/data/tfds_source``), whose schema comes from the builder's features."""
  d = config.data
  cols = schema["columns"]
  dense = [cols[t] for t in config.tasks if cols[t]["dense"]]
  spatial = bool(dense)
  if spatial and not d.grid:
    d.grid = max(max(c["shape"][:2]) for c in dense)
  for name, m in config.inputs.items():
    if not m.encoder:
      m.encoder, kwargs = _encoder(cols[name], spatial)
      m.encoder_kwargs = kwargs
    elif not m.encoder_kwargs and m.encoder in _KWARGS:
      m.encoder_kwargs = _KWARGS[m.encoder]
  for name, t in config.tasks.items():
    entry = cols[name]
    t.kind = entry["kind"]
    if entry["target"] == schema_lib.VALUE:
      t.num_outputs = int(entry["shape"][-1]) if entry["dense"] else 1
    elif not t.num_classes:
      classes = entry["classes"]
      t.num_classes = classes if isinstance(classes, int) else len(classes)
    if not t.head:
      t.head, kwargs = _head(entry, spatial)
      t.head_kwargs = kwargs
  if not config.model.fusion:
    config.model.fusion = "spatial" if spatial else "concat"
    if spatial:
      config.model.fusion_kwargs = {"features": 16, "num_convs": 2, "kernel": 1}
  _complete_explain(config, cols)
  d.schema = schema


def _complete_explain(config, cols) -> None:
  """The explain run's task, image modality and Grad-CAM layer, when left empty."""
  e = config.get("explain", None)
  if e is None:
    return
  if not e.task:
    e.task = config.main_task
  images = [n for n in config.inputs if cols[n]["type"] == "raster" and len(cols[n]["shape"]) == 3]
  if not e.modality:
    e.modality = images[0] if images else next(iter(config.inputs))
  if not e.layer and e.modality in config.inputs:
    enc = config.inputs[e.modality].encoder
    e.layer = f"encoders_{e.modality}/{_LAYERS.get(enc, '')}".rstrip("/")
