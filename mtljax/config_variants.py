"""The variant parser of the config files: `Variants` and its `Option`s (re-exported by
`mtljax.config_blocks`, where config files take them from).

The variant string is what follows the colon in `--config=configs/treesat.py:tiny,exp=3`
(big_vision style: comma-separated, `key=value` or a bare flag). An undeclared variant, a value of
the wrong form or outside its choices is a `ValueError` naming the config file and every allowed
variant.
"""

from __future__ import annotations

import dataclasses
from typing import Collection

import ml_collections


# ------------------------------------------------------------------------------ variant parser
@dataclasses.dataclass(frozen=True)
class Option:
  """One variant option. Its default's type decides how it is written after the colon:
  bool: a bare flag (`tiny`); int: `key=N` (digits); str: `key=S`.

  choices: the allowed values (an int option without choices takes any N >= 1).
  what: what a value is, for the messages ("a Table 3 row", "ensemble members").
  bare: each choice of a str option may also be written alone (`isic` = `dataset=isic`).
  metavar: the placeholder in the list of allowed variants (default N for int, S for str).
  """

  default: bool | int | str
  choices: Collection | None = None
  what: str = ""
  bare: bool = False
  metavar: str = ""

  def describe(self, key: str) -> str:
    if isinstance(self.default, bool):
      return key
    if self.bare:
      return "|".join(map(str, self.choices)) + f" (or {key}=...)"
    metavar = self.metavar or ("N" if isinstance(self.default, int) else "S")
    choices = _render(self.choices) if self.choices is not None else ""
    detail = ": ".join(filter(None, (self.what, choices)))
    return f"{key}={metavar} ({detail + '; ' if detail else ''}default {self.default})"


def _render(choices: Collection) -> str:
  """`1..8` for a run of consecutive ints, else the values comma-separated."""
  values = list(choices)
  ints = bool(values) and all(isinstance(v, int) for v in values)
  if ints and values == list(range(values[0], values[-1] + 1)):
    return f"{values[0]}..{values[-1]}"
  return ", ".join(map(str, values))


class Variants:
  """The variants a config file accepts: `Variants(config_file, **options)`, each option an
  `Option` or a plain default (`tiny=False`, `size=1`, `strategy="seeds"`)."""

  def __init__(self, config_file: str, **options: Option | bool | int | str):
    self.config_file = config_file
    self.options = {
      k: o if isinstance(o, Option) else Option(default=o) for k, o in options.items()
    }
    # A bare word of a `bare=True` str option names the option it sets.
    self._words = {str(w): k for k, o in self.options.items() if o.bare for w in o.choices}

  def describe(self) -> str:
    """The allowed variants, as listed in an error message."""
    return ", ".join(o.describe(k) for k, o in self.options.items())

  def _error(self, msg: str) -> ValueError:
    return ValueError(f"{self.config_file}: {msg}; allowed variants: {self.describe()}")

  def parse(self, arg: str | None) -> ml_collections.FrozenConfigDict:
    """`"tiny,exp=3"` -> every option's value (the default where not given; the last token of an
    option wins). Raises ValueError for an unknown token or a value outside its option's form."""
    opts = {k: o.default for k, o in self.options.items()}
    for tok in filter(None, (arg or "").split(",")):
      key, eq, val = tok.partition("=")
      if not eq and key in self._words:
        key, val = self._words[key], key
      elif key not in self.options or isinstance(self.options[key].default, bool) == bool(eq):
        raise self._error(f"unknown variant {tok!r}")
      opts[key] = self._value(key, tok, val)
    return ml_collections.FrozenConfigDict(opts)

  def _value(self, key: str, tok: str, val: str):
    option = self.options[key]
    if isinstance(option.default, bool):
      return True
    if isinstance(option.default, int):
      if not val.isdigit() or (option.choices is None and int(val) < 1):
        at_least = " >= 1" if option.choices is None else ""
        raise self._error(f"unknown variant {tok!r} ({key} takes an integer{at_least})")
      val = int(val)
    elif not val:
      raise self._error(f"unknown variant {tok!r} (empty value)")
    if option.choices is not None and val not in option.choices:
      what = option.what or f"one of the choices of {key}"
      raise self._error(f"{key}={val} is not {what} ({_render(option.choices)})")
    return val
