"""All inputs checked before the first step: the batch sizes against every split, and every split's
files through the readers' optional `check_files` capability (`mtljax.data.source.CAPABILITIES`).

`check_inputs(sources, config)` is called by the run's set-up (`mtljax.train.build.setup`) once
the config is validated, before statistics, model or the first step, so a corrupt file in the
validation or test split is reported before training rather than after an epoch. The first problem
is raised as a `DataError` naming the file (or the config key) and what was expected.

How thorough (``config.data.check_files``): ``"header"`` (default: every file opened and its header
checked, shape, dtype and band count, and that its pixel data is all there where the format says
where it ends; pixels are not decoded), ``"full"`` (every file decoded as training reads it),
``"off"`` (nothing; files are checked when first read).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mtljax.data.source import DataError, capability

MODES = ("header", "full", "off")


def check_batch_sizes(sources: Mapping[str, Any], config) -> None:
  """The training batch must fit into the training split (the remainder of an epoch is dropped,
  so a larger batch gives no step); evaluation pads its last batch, so an eval split only needs
  an example."""
  n_train = len(sources["train"])
  batch = int(config.train.batch_size)
  if n_train == 0:
    raise DataError(
      f"the training split of {config.data.name} at {config.data.root or 'the synthetic data'!r} "
      "is empty (no training example listed)"
    )
  if batch > n_train:
    raise DataError(
      f"config.train.batch_size={batch} is larger than the training split "
      f"({n_train} examples): no training step; use at most {n_train}"
    )
  for split, src in sources.items():
    if split != "train" and len(src) == 0:
      raise DataError(
        f"the {split} split has no examples, nothing to evaluate (config.data: check the split "
        "lists and fractions)"
      )


def check_inputs(sources: Mapping[str, Any], config, *, progress: bool = True) -> dict[str, float]:
  """Check the batch sizes against every split, then every split's files (`check_files`).

  Returns:
    ``{split: seconds}`` spent checking each split's files (splits without the capability, whose
    readers check their files when built, are left out).

  Raises:
    DataError: the first problem, naming the file or key and what was expected.
  """
  mode = config.data.get("check_files", "header")
  if mode not in MODES:
    raise DataError(f"config.data.check_files={mode!r}: expected one of {MODES}")
  check_batch_sizes(sources, config)
  seconds: dict[str, float] = {}
  if mode == "off":
    return seconds
  for split, src in sources.items():
    check = capability(src, "check_files")
    if check is None:
      continue
    t0 = time.perf_counter()
    check(progress=progress, full=mode == "full")
    seconds[split] = time.perf_counter() - t0
  return seconds


def tiff_data_end(tif) -> int:
  """The byte offset just past the last strip or tile of any page of an open ``TiffFile``."""
  end = 0
  for page in tif.pages:
    offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
    end = max([end] + [int(o) + int(c) for o, c in zip(offsets, counts)])
  return end
