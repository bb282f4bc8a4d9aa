"""Whether a workdir may resume with a config: the keys that change a run, and those that may.

`configlib` re-exports these (`configlib.check_resume`, `HARMLESS_CHANGES`); a resume compares
the config recorded with the newest checkpoint (else the workdir's config.json) with the one
given (mtljax/train/build.py).
"""

from __future__ import annotations

import json

import ml_collections

from mtljax import config_blocks
from mtljax.errors import ConfigError

# Sections whose change makes an existing workdir's checkpoints meaningless.
_STRUCTURAL = (
  "inputs",
  "tasks",
  "model",
  "data.name",
  "data.root",
  "main_task",
  "seed",
  "ensemble.size",
  "ensemble.strategy",
)


def _get(d: dict, dotted: str):
  for part in dotted.split("."):
    d = d.get(part, {}) if isinstance(d, dict) else {}
  return d


def check_compatible(saved: dict, config: ml_collections.ConfigDict, path: str) -> None:
  """Refuse to resume a workdir whose run was made with a structurally different config."""
  current = json.loads(config.to_json())
  diffs = [k for k in _STRUCTURAL if _get(saved, k) != _get(current, k)]
  if diffs:
    raise ConfigError(
      f"{path} was written by a run with a different config (differs in: {', '.join(diffs)}); "
      "its checkpoints cannot be resumed with this config. Use a new --workdir, or rerun with "
      "the config that made it."
    )


# Keys that may change when a run is resumed: they change how a run is logged, checkpointed, read
# or explained, not the parameters it computes. Any other key (batch size, learning rate, number of
# epochs (the schedule's length), seed, data, model, ...) changes the run: a resume with another
# value is refused unless --allow_config_change. A trailing "." means every key under that section.
HARMLESS_CHANGES = (
  "train.log_every_steps",
  "train.checkpoint_every_steps",
  "train.keep_checkpoints",
  "train.verify_checksums",
  "eval.batch_size",  # the metrics are exact over the whole split, whatever the batch
  "eval.prediction_splits",
  "data.num_threads",
  "data.prefetch",
  "data.workers",
  "data.normalise_on_device",  # the same values either way (tests/test_prepared.py)
  "data.prepared",  # the same examples as the archive's (mtljax.data.prepared checks it)
  "data.check_files",
  "data.max_image_side",  # a bound on the files read, not what is read from them
  "explain.",
  "analysis.",
  "predict.",
)


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _harmless(key: str) -> bool:
  return any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS_CHANGES)


def _added_defaults() -> dict:
  """Sections added after runs were recorded (`weighting`, `hierarchy`) and keys added to a
  section (`train.select_by`): a recorded config without them ran as their defaults do, so their
  default values are no change."""
  sections = {
    "weighting": config_blocks.weighting_config(),
    "hierarchy": config_blocks.hierarchy_config(),
    "predict": config_blocks.predict_config(),
  }
  # Keys added to a section later, the same way: the checkpoint selection's default.
  return _flatten({k: v.to_dict() for k, v in sections.items()}) | {"train.select_by": ""}


def run_changes(saved: dict, config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """`{key: (recorded, now)}` for every key where `config` changes the run recorded in `saved`
  (a workdir's config.json); a key present on one side only counts too (as None on the other),
  unless it is an added section's default (`_added_defaults`)."""
  old, new = _flatten(saved), _flatten(json.loads(config.to_json_best_effort()))
  added = _added_defaults()
  return {
    k: (old.get(k), new.get(k))
    for k in sorted(set(old) | set(new))
    if old.get(k) != new.get(k)
    and not _harmless(k)
    and not (k not in old and k in added and new.get(k) == added[k])
  }


def check_resume(saved: dict, config: ml_collections.ConfigDict, path: str) -> dict[str, tuple]:
  """Refuse to resume a workdir with a config that changes its run (`run_changes`), naming every
  differing key; returns the changes (empty when none)."""
  changes = run_changes(saved, config)
  if changes:
    listed = ", ".join(f"{k} ({old!r} -> {now!r})" for k, (old, now) in changes.items())
    raise ConfigError(
      f"{path}: resuming with a config that changes the run: {listed}. Rerun with the recorded "
      "values, use a new --workdir, or pass --allow_config_change to continue with the new ones"
    )
  return changes
