"""Reading a workdir's per-epoch predictions for the intrinsic analysis.

Contract (written by `mtljax.train.save_predictions`): `<workdir>/predictions/<split>/epoch_NNN.npz`
with `index` [N], `name` [N], `epoch`, and per task t `target/<t>`, `mask/<t>` and
`prob/<t>` [N, K] + `pred/<t>` [N] (classification), `prob/<t>` (multilabel), `pred/<t>` [N]
(regression), `pred/<t>` [N, H, W] (segmentation: int class; dense_regression: float); optional
`group` [N], `meta/<key>` [N]; an ensemble also has `member_prob/<t>` / `member_pred/<t>` [N, E, ...]
(its `prob/<t>` is the members' average).
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Iterator, Mapping

import numpy as np

from mtljax import fileio
from mtljax import tasks as tasks_lib

_EPOCH_RE = re.compile(r"epoch_(\d+)\.npz$")


class AnalysisError(ValueError):
  """A workdir or an analysis request that cannot be analysed; the message names what is missing."""


def epoch_files(workdir: str, split: str) -> dict[int, str]:
  """`{epoch: path}` of `<workdir>/predictions/<split>/epoch_NNN.npz`, sorted by epoch."""
  folder = os.path.join(workdir, "predictions", split)
  files = {}
  for path in glob.glob(os.path.join(folder, "epoch_*.npz")):
    m = _EPOCH_RE.search(os.path.basename(path))
    if m:
      files[int(m.group(1))] = path
  if not files:
    there = (
      sorted(os.listdir(os.path.join(workdir, "predictions")))
      if os.path.isdir(os.path.join(workdir, "predictions"))
      else []
    )
    raise AnalysisError(
      f"{folder}: no per-epoch predictions (epoch_NNN.npz) to analyse"
      + (
        f"; predictions/ holds the splits {there}, set config.analysis.split to one of them"
        if there
        else "; train first (config.eval.prediction_splits names the splits saved)"
      )
    )
  return dict(sorted(files.items()))


def load_epoch(path: str, tasks: Mapping[str, str]) -> dict[str, np.ndarray]:
  """One epoch's arrays, sorted by `index` (so that epochs line up example by example), checked
  against the contract for the `tasks` (name → kind) the analysis uses."""
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise AnalysisError(f"{path}: cannot read predictions ({e})") from e
  if "index" not in arrays:
    raise AnalysisError(f"{path}: no 'index' array (expected the per-epoch predictions contract)")
  n = len(arrays["index"])
  for t, kind in tasks.items():
    need = [f"target/{t}", f"mask/{t}"]
    spec = tasks_lib.spec(kind)
    need.append(f"{spec.prediction_key}/{t}")
    missing = [k for k in need if k not in arrays]
    if missing:
      raise AnalysisError(
        f"{path}: task {t!r} ({kind}) lacks {missing}; the file has "
        f"{sorted(k for k in arrays if '/' in k)}"
      )
    for k in need:
      if len(arrays[k]) != n:
        raise AnalysisError(f"{path}: {k} has {len(arrays[k])} rows, 'index' has {n}")
    if spec.dense and arrays[f"pred/{t}"].ndim != 3:
      raise AnalysisError(
        f"{path}: pred/{t} of the {kind} task has shape "
        f"{arrays[f'pred/{t}'].shape}, expected [N, H, W]"
      )
  order = np.argsort(arrays["index"], kind="stable")
  return {k: (v[order] if v.ndim >= 1 and len(v) == n else v) for k, v in arrays.items()}


def iter_epochs(
  workdir: str, split: str, tasks: Mapping[str, str]
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """`(epoch, arrays)` for every saved epoch of `split`, checking that all epochs hold the same
  examples."""
  first_index = None
  for epoch, path in epoch_files(workdir, split).items():
    arrays = load_epoch(path, tasks)
    if first_index is None:
      first_index = arrays["index"]
    elif not np.array_equal(arrays["index"], first_index):
      raise AnalysisError(
        f"{path}: holds other examples than the first epoch of {split!r} "
        "(the analysis follows the same examples across epochs)"
      )
    yield epoch, arrays


def read_json(path: str, default=None):
  """A JSON file's content, or `default` when it does not exist."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise AnalysisError(f"{path}: not valid JSON ({e}); rerun the command that wrote it") from e


def read_jsonl(path: str) -> list[dict]:
  """Records of a JSON-lines file (empty when it does not exist)."""
  if not os.path.exists(path):
    return []
  try:
    return fileio.read_jsonl(path)  # a torn last line (a killed run) is left out
  except ValueError as e:
    raise AnalysisError(str(e)) from e
