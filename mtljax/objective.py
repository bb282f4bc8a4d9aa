"""The training objective: the weighted multitask loss and the auxiliary-module losses.

`multitask_loss` is `Σ_t w_t · L_t` over the tasks, each task's masked loss from its kind
(mtljax/tasks.py), the weights normalised to sum 1 (mtl-explainability Appendix B.3).
"""

from __future__ import annotations

from typing import Mapping

from mtljax import tasks


def multitask_loss(outputs, targets, masks, kinds: Mapping[str, str], weights: Mapping[str, float]):
  """Returns `(total, {task: loss_t})`; `weights` must already be normalised."""
  per_task = {t: tasks.spec(kinds[t]).loss(outputs[t], targets[t], masks[t]) for t in kinds}
  total = sum(weights[t] * per_task[t] for t in kinds)
  return total, per_task


def auxiliary_loss(
  intermediates, targets, masks, kinds: Mapping[str, str], weights: Mapping[str, float]
):
  """Losses of a model's auxiliary supervised outputs: `(Σ_m L_m, {module: L_m})`.

  `intermediates["aux_outputs"] = {module: {task: output}}` (e.g. MTC-LIM's interim BL, CLIM and
  TLIM heads, each supervised by its own loss, paper §2.3.6); each module's loss is the same
  weighted multitask loss over the tasks it predicts. A model without them gives `(0.0, {})`.
  """
  aux = intermediates.get("aux_outputs") if isinstance(intermediates, Mapping) else None
  per_module = {}
  for module, outs in (aux or {}).items():
    module_kinds = {t: kinds[t] for t in outs if t in kinds}
    per_module[module], _ = multitask_loss(outs, targets, masks, module_kinds, weights)
  return sum(per_module.values(), 0.0), per_module
