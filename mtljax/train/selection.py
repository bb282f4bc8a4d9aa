"""Which epoch `checkpoints/best/` keeps: `config.train.select_by`.

  ""                   the default: the main task's main metric (its kind's `main_metric`), or
                       `task_mean/<metric>` with `config.train.select_task_mean`
  "<task>/<metric>"    any validation metric the run logs (a name of metrics.jsonl's `val`
                       records), in the direction its task kind declares (`metric_directions`)
  "max:<name>", "min:<name>"   that metric in the direction given
  "latest"             the last epoch

The names a run logs are known before it trains (`evaluation.metric_directions`), so a name it
never logs is a ConfigError listing them, raised before anything is written; a name with an
explicit direction that no declaration lists (a user's task kind that reports more than its main
metric) is checked against the first validation instead.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from mtljax.errors import ConfigError

LATEST = "latest"
_DIRECTIONS = {"max:": True, "min:": False}


@dataclasses.dataclass(frozen=True)
class Selection:
  """key: the validation metric `best/` is chosen on (None: the last epoch), larger_better its
  direction; setting: `config.train.select_by` as given ("" for the default)."""

  key: str | None
  larger_better: bool
  setting: str = ""

  def describe(self) -> str:
    """How the best checkpoint is chosen, in words (the run's summary, final_metrics.json)."""
    if self.key is None:
      return "the last epoch"
    return f"val {self.key} ({'max' if self.larger_better else 'min'})"

  def score(self, val_metrics: Mapping[str, float], epoch: int) -> float:
    """The epoch's score; a key the validation did not log is a ConfigError naming those it did."""
    if self.key is None:
      return float(epoch)
    if self.key not in val_metrics:
      raise ConfigError(_unknown(self.setting, val_metrics, "the first validation logged"))
    return float(val_metrics[self.key])

  def better(self, score: float, best: float | None) -> bool:
    """`score` beats `best` (None: nothing yet); a tie keeps the earlier epoch."""
    if best is None:
      return True
    return score > best if self.larger_better else score < best


def _unknown(setting: str, names, where: str) -> str:
  listed = ", ".join(sorted(k for k in names if not k.endswith("/count")))
  return (
    f"config.train.select_by={setting!r} is not a metric {where}; expected '{LATEST}', '' (the "
    f"main task's main metric) or one of these, optionally after 'max:' or 'min:': {listed}"
  )


def resolve(
  config, directions: Mapping[str, bool], main_key: str, main_larger_better: bool
) -> Selection:
  """`config.train.select_by` against `directions` (`{name: larger is better}` of what the run
  logs, `evaluation.metric_directions`); the default is `main_key` in its direction."""
  setting = str(config.train.get("select_by", "") or "")
  if not setting:
    return Selection(main_key, main_larger_better)
  if setting == LATEST:
    return Selection(None, True, setting)
  prefix = setting[:4]
  if prefix in _DIRECTIONS:
    name = setting[4:]
    if not name:
      raise ConfigError(_unknown(setting, directions, "this run's validation logs"))
    return Selection(name, _DIRECTIONS[prefix], setting)
  if setting not in directions:
    raise ConfigError(_unknown(setting, directions, "this run's validation logs"))
  return Selection(setting, directions[setting], setting)
