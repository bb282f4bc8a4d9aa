"""The TFDS catalog as a source: ``config.data.name="tfds"`` reads a builder that TFDS prepared
as ArrayRecord (``config.data.tfds.name``, e.g. ``"eurosat/all"``, in ``config.data.tfds.data_dir``)
through ``tfds.data_source`` — random access, no TensorFlow — into the same grain pipeline as
every dataset. The builder's features are the columns of a manifest: ``inputs=`` and
``targets=`` of ``configs/tfds.py`` name them, and the schema, encoders, heads and fusion are
completed as for a manifest (``schema.py`` here, ``mtljax.data.manifest.complete``).

Nothing is downloaded or prepared here: an unknown or unprepared builder is one ``DataError``.
tensorflow-datasets is an optional extra (``pip install 'mtljax[tfds]'``), imported only when
a run names this dataset.

Modules: ``schema.py`` (features → schema), ``reader.py`` (``TfdsSource``, the split mapping).
"""

from __future__ import annotations

from typing import Mapping

from mtljax.data import Dataset
from mtljax.data.manifest.complete import complete_from_schema
from mtljax.data.tfds_source import schema as schema_lib
from mtljax.data.tfds_source.reader import TfdsSource, import_tfds, open_builder, resolve_splits
from mtljax.errors import ConfigError, DataError


def _settings(config) -> dict:
  t = config.data.tfds
  splits = t.splits.to_dict() if hasattr(t.splits, "to_dict") else dict(t.splits)
  return {"name": t.name, "data_dir": t.data_dir, "splits": splits}


def complete_config(config, kinds: Mapping[str, tuple[str, bool]]) -> None:
  """The schema from the builder's features, then what it decides (as for a manifest).

  Raises:
    ConfigError: no builder named. DataError: tensorflow-datasets missing, the builder unknown
      or unprepared, or the features' problems (all of them in one message).
  """
  s = _settings(config)
  if not s["name"]:
    raise ConfigError(
      "config.data.tfds.name is empty: name a prepared TFDS builder "
      "(--config.data.tfds.name=eurosat/all --config.data.tfds.data_dir=/data/tfds)"
    )
  tfds = import_tfds()
  builder = open_builder(s["name"], s["data_dir"])
  features = dict(builder.info.features.items())
  specs = resolve_splits(list(builder.info.splits), s["splits"])
  train = {}

  def scan(name: str) -> int:
    """The largest value of an integer feature over (the start of) the training split."""
    if "src" not in train:
      train["src"] = tfds.data_source(
        s["name"], data_dir=s["data_dir"] or None, split=specs["train"], download=False
      )
    src = train["src"]
    top = 0
    for i in range(min(len(src), schema_lib.SCAN_EXAMPLES)):
      top = max(top, int(max(0, src[i][name].max(initial=0))))
    return top

  targets = {t: c.get("kind", "") for t, c in config.tasks.items()}
  schema, problems = schema_lib.infer(
    features, inputs=list(config.inputs), targets=targets, kinds=kinds, scan=scan
  )

  if problems:
    noun = "problem" if len(problems) == 1 else "problems"
    shown = "; ".join(f"feature {col!r}: {what}" for _, col, what in problems)
    raise DataError(f"TFDS {s['name']}: {len(problems)} {noun} in the features: {shown}")
  complete_from_schema(config, schema)


class TfdsDataset(Dataset):
  """The registry entry: the reader's arguments are the builder, the run's inputs and tasks and
  the schema the completion recorded."""

  def source_kwargs(self, config) -> dict:
    d = config.data
    return {
      **_settings(config),
      "schema": d.schema.to_dict() if hasattr(d.schema, "to_dict") else dict(d.schema),
      "inputs": tuple(config.inputs),
      "tasks": tuple(config.tasks),
      "grid": int(d.grid),
    }


DATASET = TfdsDataset(
  "tfds",
  TfdsSource,
  None,  # a catalog builder prepared by TFDS: no synthetic generator
  source_keys=(),
  synthetic_keys=(),
  complete_config=complete_config,
)

__all__ = ["DATASET", "TfdsSource", "complete_config"]
