"""The values of `config.data` (and `config.data.synthetic`) checked before anything is written.

The readers and the synthetic generators check their arguments too, but they run inside a run's
set-up, after the workdir exists and (for the synthetic default) after a whole dataset has been
written into it; a mistyped fraction would then surface as a traceback from deep inside a reader.
`problems(config)` checks the same rules from the config alone, so that `configlib.check` (run by
mtljax/main.py before the workdir exists) reports them with every other mistake, each naming its
key. It also looks at the paths the config names (`data.root`, `data.prepared`): a data root that
does not exist is reported before the workdir is created.

`RULES` apply to any dataset whose config has the key (the names mean the same in every reader);
`_DATASET_RULES` hold what one dataset's reader or generator alone requires.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

#: The bound on an image's side that a reader accepts before decoding it, when the config does not
#: set `config.data.max_image_side` (a 4096×4096×4 float32 image is 256 MiB once decoded).
DEFAULT_MAX_IMAGE_SIDE = 4096


def _number(v: Any, integer: bool) -> bool:
  if isinstance(v, bool):
    return False
  if integer:
    return isinstance(v, int)
  return isinstance(v, (int, float)) and math.isfinite(v)


def _range(lo=None, hi=None, *, open_lo=False, open_hi=False, integer=False) -> Callable:
  """A rule: the value is a number (an integer when `integer`) within the bounds."""
  parts = []
  if lo is not None:
    parts.append(f"{'>' if open_lo else '>='} {lo}")
  if hi is not None:
    parts.append(f"{'<' if open_hi else '<='} {hi}")
  what = ("an integer" if integer else "a number") + (" " + " and ".join(parts) if parts else "")

  def rule(v):
    ok = _number(v, integer)
    ok = ok and (lo is None or (v > lo if open_lo else v >= lo))
    ok = ok and (hi is None or (v < hi if open_hi else v <= hi))
    return None if ok else f"must be {what}"

  return rule


def _choice(*options) -> Callable:
  return lambda v: None if v in options else f"must be one of {options}"


def _fractions(v):
  """Split fractions: three numbers >= 0 summing to 1 (train, val, test)."""
  try:
    fr = [float(x) for x in v]
  except (TypeError, ValueError):
    fr = []
  if len(fr) != 3 or any(not math.isfinite(x) or x < 0 for x in fr) or abs(sum(fr) - 1) > 1e-6:
    return "must be three numbers >= 0 (train, val, test) summing to 1"
  return None


_FRACTION_OPEN = _range(0, 1, open_lo=True, open_hi=True)
_SHARE = _range(0, 1)
_COUNT = _range(1, integer=True)
_SEED = _range(0, integer=True)

#: `config.data.<key>` -> rule (None = fine, else what the value must be).
RULES: dict[str, Callable] = {
  "val_fraction": _FRACTION_OPEN,
  "multi_threshold": _range(0, 1, open_hi=True),
  "mask_fraction": _SHARE,
  "rationale_fraction": _SHARE,
  "lprus_keep": _range(0, 1, open_lo=True),
  "fractions": _fractions,
  "split_seed": _SEED,
  "image_size": _COUNT,
  "aerial_size": _COUNT,
  "max_image_side": _COUNT,
  "s2_max_steps": _COUNT,
  "weather_max_steps": _COUNT,
  "stats_examples": _COUNT,
  "check_files": _choice("header", "full", "off"),
  "num_threads": _range(0, integer=True),
  "prefetch": _range(0, integer=True),
  "workers": _range(-1, integer=True),
  "l2_source": _choice("genus", "csv"),
  "age_source": _choice("name", "csv"),
  "day_reference": _choice("seeding", "harvest"),
  "weather_time": _choice("s1", "s2"),
}

#: `config.data.synthetic.<key>` -> rule.
SYNTHETIC_RULES: dict[str, Callable] = {
  "num_train": _COUNT,
  "num_val": _COUNT,
  "num_test": _COUNT,
  "num_images": _COUNT,
  "num_blocks": _COUNT,
  "num_farms": _COUNT,
  "num_fields": _range(3, integer=True),  # one field per split at least
  "num_patches": _range(10, integer=True),  # an 80/10/10 split
  "seed": _SEED,
  "cue_noise": _SHARE,
  "label_noise": _SHARE,
  "flip": _SHARE,
  "decoy_size": _range(0, 1, open_hi=True),
}


def _treesat(data) -> list[tuple[str, str]]:
  from mtljax.data.treesat.archive import S_SIZES

  out = []
  if data.get("resolution") not in S_SIZES:
    out.append(("resolution", f"must be one of {tuple(S_SIZES)}"))
  return out


def _cropyield(data) -> list[tuple[str, str]]:
  from mtljax.data.cropyield.format import CROPS

  unknown = [c for c in data.get("crops", ()) if c not in CROPS]
  return [("crops", f"has unknown crops {unknown}; expected some of {CROPS}")] if unknown else []


def _benge(data) -> list[tuple[str, str]]:
  size = data.synthetic.get("size", 6)
  if not _number(size, True) or size < 6 or size % 6:
    return [("synthetic.size", "must be a positive multiple of 6 (the 60 m bands are size/6)")]
  return []


def _digits(data) -> list[tuple[str, str]]:
  out = []
  size, patch = data.get("size"), data.get("patch")
  if not _number(patch, True) or patch < 1:
    out.append(("patch", "must be an integer >= 1"))
  elif not _number(size, True) or size < 8 + 2 * patch:
    out.append(("size", f"must leave room for the {patch}-pixel decoy: >= {8 + 2 * patch}"))
  s = data.synthetic
  n = s.get("num_train", 0) + s.get("num_val", 0)
  if _number(n, True) and n >= 1797:
    out.append(("synthetic.num_train", f"+ num_val = {n}: the digits set has 1797 images"))
  return out


def _shortcut(data) -> list[tuple[str, str]]:
  from mtljax.data.attributes.shortcut import _PALETTE, MASK_REGIONS

  out = []
  if data.get("mask_region", MASK_REGIONS[0]) not in MASK_REGIONS:
    out.append(("mask_region", f"must be one of {MASK_REGIONS}"))
  k = data.synthetic.get("num_classes", 1)
  if not _number(k, True) or not 1 <= k <= len(_PALETTE):
    out.append(("synthetic.num_classes", f"must be an integer in 1..{len(_PALETTE)}"))
  return out


#: dataset name -> `(config.data) -> [(key under config.data, what it must be)]`.
_DATASET_RULES: dict[str, Callable] = {
  "treesat": _treesat,
  "cropyield": _cropyield,
  "benge": _benge,
  "digits": _digits,
  "cub_shortcut": _shortcut,
}


def _path_problems(data) -> list[str]:
  out = []
  root = data.get("root", "")
  if root and not os.path.isdir(os.path.expanduser(root)):
    what = "is not a directory" if os.path.exists(os.path.expanduser(root)) else "does not exist"
    out.append(f"config.data.root={root!r} {what} (empty = the built-in synthetic dataset)")
  prepared = data.get("prepared", "")
  if prepared and not os.path.isdir(os.path.expanduser(prepared)):
    out.append(
      f"config.data.prepared={prepared!r} is not a directory (python -m mtljax.prepare writes one)"
    )
  folder = data.get("synthetic", {}).get("dir", "")
  if not root and folder and os.path.isfile(os.path.expanduser(folder)):
    out.append(f"config.data.synthetic.dir={folder!r} is a file, not a directory")
  return out


def problems(config, *, paths: bool = True) -> list[str]:
  """Every mistake among the values of `config.data` (module docstring), each naming its key;
  `paths=False`: not the paths' (a trained model used where its training data is not)."""
  data = config.get("data", None)
  if data is None:
    return []
  found = [(k, RULES[k](v)) for k, v in data.items() if k in RULES]
  synthetic = data.get("synthetic", None) or {}
  found += [
    (f"synthetic.{k}", SYNTHETIC_RULES[k](v)) for k, v in synthetic.items() if k in SYNTHETIC_RULES
  ]
  found = [(k, why) for k, why in found if why]
  out = []
  if data.get("name", "") in _DATASET_RULES:
    try:
      found += _DATASET_RULES[data.name](data)
    except (TypeError, ValueError) as e:  # a value of an unexpected type: report, not crash
      out.append(f"config.data: a value of an unexpected type ({e})")
  out += [f"config.data.{k}={_get(data, k)!r} {why}" for k, why in found]
  return out + (_path_problems(data) if paths else [])


def _get(data, dotted: str):
  for part in dotted.split("."):
    data = data.get(part, None) if hasattr(data, "get") else None
  return data


def max_image_side(config) -> int:
  """`config.data.max_image_side`, or the default bound for a config without the key."""
  return int(config.data.get("max_image_side", 0) or DEFAULT_MAX_IMAGE_SIDE)
