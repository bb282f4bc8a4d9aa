"""Bring your own data: a manifest (a CSV or JSON Lines table, one row per example) of the
user's files and labels, read without code (configs/manifest.py, docs/data.md).

Columns: a column of paths is a raster modality (GeoTIFF, PNG/JPEG, ``.npy``; paths relative to
the table's folder); numeric columns grouped by ``config.data.groups`` (``weather=temp|rain``)
a vector modality; a ``split`` column (train/val/test) or a seeded split by
``config.data.split_fractions``; an ``id`` column names the examples; an ``expl_mask`` column the
relevant region for explanations. ``inputs=`` and ``targets=`` of the config say which columns
are inputs and which are targets; a target's kind is inferred (``schema.py``) unless
``config.tasks.<col>.kind`` names it.

Modules: ``table.py`` (``read_table``, splits), ``rasters.py`` (file headers and decoding),
``schema.py`` (what each column is, the table's problems), ``files.py`` (every file against its
column; one message for all problems), ``complete.py`` (the config completed from the table),
``reader.py`` (``ManifestSource``).

Reading new inputs with a trained run's schema (for prediction on data without labels)::

    from mtljax.data import manifest
    table = manifest.read_table("new.csv")          # Table: columns, rows (str cells), lines
    source = manifest.open_source("new.csv", config.data.schema, ("aerial", "s2"),
                                  grid=config.data.grid)

``open_source`` needs only the input columns (no target, no split column), reads every row in
table order, checks every file against the trained schema first (one ``DataError`` listing the
problems: missing columns or files, other shapes, bands or types) and gives examples whose
``targets`` and ``mask`` are empty; ``source.names`` are the ``id`` cells (or ``line<N>``).
``config.data.schema`` is recorded in the run's ``config.json`` (the class vocabularies of the
training split included), so new data is read as the model was trained, whatever the new
table's classes.
"""

from mtljax.data import Dataset
from mtljax.data.manifest.complete import complete_config
from mtljax.data.manifest.reader import ManifestSource, open_source
from mtljax.data.manifest.table import Table, read_table


class ManifestDataset(Dataset):
  """The registry entry: the reader's arguments are the run's inputs and tasks and the schema
  the completion recorded (not a fixed list of keys)."""

  def source_kwargs(self, config) -> dict:
    d = config.data
    return {
      "manifest": d.manifest,
      "schema": d.schema.to_dict() if hasattr(d.schema, "to_dict") else dict(d.schema),
      "inputs": tuple(config.inputs),
      "tasks": tuple(config.tasks),
      "split_fractions": tuple(d.split_fractions),
      "split_seed": int(d.split_seed),
      "grid": int(d.grid),
    }


DATASET = ManifestDataset(
  "manifest",
  ManifestSource,
  None,  # real data only: no synthetic generator
  source_keys=(),
  synthetic_keys=(),
  complete_config=complete_config,
)

__all__ = ["DATASET", "ManifestSource", "Table", "complete_config", "open_source", "read_table"]
