"""Datasets (readers, synthetic generators) and the grain input pipeline.

Layout: one package per dataset (``treesat/``, ``attributes/`` for CUB-200-2011 and ISIC 2018,
``cropyield/``, ``benge/``, ``facades/``; ``manifest/`` reads a table of the user's own files)
holding its reader, its synthetic generator (which writes
the real on-disk layout with planted truth) and its extras; beside them, shared by all:

* ``source.py``: the written source contract (``Source``: the required members; ``CAPABILITIES``
  and ``capability(source, name)``: the optional ones, each found that one way), ``DataError``,
  ``example_index``, ``split_test_list`` and ``rgb_image_field``;
* ``synthetic.py``: a generator's declaration (``Generator``: cache key, parameter defaults) and
  writing a synthetic folder once with its marker (``write_once``, ``MARKER``);
* ``pipeline/``: the dataset-agnostic grain pipeline; ``build.py``: ``make_sources(config,
  workdir)``, config → one source per split;
* ``new_inputs.py``: a table of new inputs for a trained model of a registered dataset, each
  file read with the entry's ``read_input`` (predict mode).

Each dataset package exports one registry entry, a ``Dataset`` record (below), and ``DATASETS``
lists them once by name. ``get_dataset(name)`` imports the package on first use, so
``import mtljax.data`` stays light.

To add a dataset: write ``mtljax/data/<name>/`` with a source class (``Source`` in ``source.py``),
a synthetic generator (a ``Generator`` and its ``generate`` function) and a ``Dataset`` entry (it
names the config keys its reader and its generator take), add one line to ``DATASETS``, and a
config under ``configs/``. A dataset outside mtljax needs no line: ``config.data.name`` may be
``package.module:ATTRIBUTE`` naming its ``Dataset`` entry (whose generator may be None).
"""

# No `from __future__ import annotations` here: it would bind the name `annotations` in this
# package, hiding the submodule mtljax.data.annotations from `from mtljax.data import annotations`.

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from mtljax import plugins


def _frozen(value: Any) -> Any:
  """A config value as a keyword argument: lists and tuples become tuples, the rest is as is."""
  return tuple(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class Dataset:
  """One dataset's registry entry (exported by its package): its reader, its generator, and the
  config keys each takes (a list or tuple value is passed as a tuple).

  Attributes:
    name: the ``config.data.name`` that selects it.
    source_cls: the reader, called as ``source_cls(root, split, **source_kwargs(config))``.
    write_synthetic: the generator, ``write_synthetic(root, **synthetic_kwargs(config)) -> Path``
      (the real on-disk layout with planted truth, written once); None = real data only (a
      run without ``config.data.root`` then passes ``root=None`` to the reader).
    source_keys: ``config.data`` keys passed to the reader under the same name.
    source_keys_if_set: ``config.data`` keys passed to the reader only when set (not empty);
      otherwise the reader's default applies.
    used: reader keyword -> ``(config section, names)``: the tuple of those names that
      ``config.<section>`` holds (e.g. only the modalities the run uses are opened). An entry
      of section ``"tasks"`` (a modality that is a target) is passed only when that tuple is
      not empty (a config without such a task reads as before it existed), and never when
      only the inputs are read (``source_kwargs(config, inputs_only=True)``: new data).
    synthetic_keys: ``config.data.synthetic`` keys passed to the generator.
    synthetic_data_keys: ``config.data`` keys passed to the generator too (e.g. ``image_size``).
    splits: the splits ``make_sources`` builds.
    pictures_fn: optional, ``(preds, source, out_dir) -> [(tag, image [H, W, 3])]``: pictures of a
      split's predictions drawn at the end of training (e.g. CropYield's yield maps); None = none.
    label_hierarchy: optional, ``(child_task, parent_task) -> int [C_child] | None``: the parent
      class of each child class (read by the intrinsic analysis); None = no hierarchy.
    complete_config: optional, ``(config, kinds) -> None``: fills what the data decides (task
      kinds, class counts, encoders; the manifest's schema) before the config is checked
      (``configlib.problems``); ``kinds`` is the task registry's ``{name: (target, dense)}``.
      Raises ``DataError`` for the data's problems. None = the config says everything.
    read_input: optional, ``(modality, path, **source_kwargs) -> float32 [H, W, C]``: one file
      of an input modality read as the reader reads its own (its checks, nodata, resampling;
      ``source_kwargs``: the reader's keyword arguments, ``source_kwargs(config,
      inputs_only=True)`` and ``max_image_side``, all passed, so it takes ``**_``). A table of
      new inputs for a trained model (``mtljax.data.new_inputs``) reads its files with it; None
      = those files hold the input as the model takes it (``manifest.rasters.read``).
    inputs_only_reader: the reader takes ``inputs_only=True`` from ``source_kwargs(config,
      inputs_only=True)``: opened for new data, it reads a root without the labels (and
      without split lists) that training needs.
  """

  name: str
  source_cls: Callable[..., Any]
  write_synthetic: Callable[..., Any] | None
  source_keys: tuple[str, ...]
  synthetic_keys: tuple[str, ...]
  synthetic_data_keys: tuple[str, ...] = ()
  source_keys_if_set: tuple[str, ...] = ()
  used: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict, hash=False)
  splits: tuple[str, ...] = ("train", "val", "test")
  pictures_fn: Callable[..., Any] | None = None
  label_hierarchy: Callable[[str, str], Any] | None = None
  complete_config: Callable[..., None] | None = None
  read_input: Callable[..., Any] | None = None
  inputs_only_reader: bool = False

  def source_kwargs(self, config, *, inputs_only: bool = False) -> dict[str, Any]:
    """The reader's keyword arguments read from ``config``; ``inputs_only``: without the
    ``used`` entries of section ``"tasks"`` (the reader's default applies: no target is read
    from files the model does not take as inputs), and ``inputs_only=True`` for a reader that
    takes it (``inputs_only_reader``)."""
    d = config.data
    kwargs = {k: _frozen(d[k]) for k in self.source_keys}
    kwargs.update({k: _frozen(d[k]) for k in self.source_keys_if_set if d.get(k)})
    for k, (section, names) in self.used.items():
      used = tuple(n for n in names if n in config[section])
      if section != "tasks" or (used and not inputs_only):
        kwargs[k] = used
    if inputs_only and self.inputs_only_reader:
      kwargs["inputs_only"] = True
    return kwargs

  def synthetic_kwargs(self, config) -> dict[str, Any]:
    """The generator's keyword arguments read from ``config``."""
    s = config.data.synthetic
    kwargs = {k: _frozen(s[k]) for k in self.synthetic_keys}
    kwargs.update({k: _frozen(config.data[k]) for k in self.synthetic_data_keys})
    return kwargs


#: name -> "package:attribute" of its ``Dataset`` entry (imported on first use).
DATASETS: dict[str, str] = {
  "treesat": "mtljax.data.treesat:DATASET",
  "cub": "mtljax.data.attributes:CUB",
  "isic2018": "mtljax.data.attributes:ISIC",
  "cropyield": "mtljax.data.cropyield:DATASET",
  "benge": "mtljax.data.benge:DATASET",
  # Street-level façades, five interdependent classification tasks (MTC-LIM paper).
  "facades": "mtljax.data.facades:DATASET",
  # scikit-learn's bundled 8×8 digits with DecoyMNIST-style decoys (for mtljax/egl/).
  "digits": "mtljax.data.digits:DATASET",
  # The planted CUB data with a class-coloured decoy and training annotations.
  "cub_shortcut": "mtljax.data.attributes.shortcut:CUB_SHORTCUT",
  # The user's own files: a table of paths and labels (configs/manifest.py, docs/data.md).
  "manifest": "mtljax.data.manifest:DATASET",
  # A TFDS catalog builder prepared as ArrayRecord (configs/tfds.py; tensorflow-datasets extra).
  "tfds": "mtljax.data.tfds_source:DATASET",
}


def get_dataset(name: str) -> Dataset:
  """The registered dataset ``name`` (see ``DATASETS``), or the ``Dataset`` entry that a
  plug-in reference ``package.module:ATTRIBUTE`` names (a dataset outside mtljax)."""
  if name not in DATASETS and plugins.is_reference(name):
    entry = plugins.load(name, "config.data.name")
    if not isinstance(entry, Dataset):
      raise plugins.ConfigError(
        f"config.data.name={name!r} is a {type(entry).__name__}, not a mtljax.data.Dataset entry"
      )
    return entry
  try:
    ref = DATASETS[name]
  except KeyError:
    raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}") from None
  module, attr = ref.split(":")
  return getattr(importlib.import_module(module), attr)
