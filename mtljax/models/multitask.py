"""The multitask model: one encoder per input modality → fusion → one head per task.

`MultitaskModel.apply(variables, inputs, train=...)` returns `(outputs, intermediates)` where
`outputs = {task: raw output}` and `intermediates = {"enc/<modality>": features, "fused": fused}`
(the big_vision convention: explanation and analysis code reads named intermediates instead of
reaching into modules). The model is a pure function of (variables, inputs), so a stack of
parameters with a leading ensemble axis can be `jax.vmap`-ed over. Parameters live under
`encoders_<modality>`, `fusion` and `heads_<task>` (flax names modules held in dict attributes so).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import ml_collections

from mtljax import tasks
from mtljax.models import convolution
from mtljax.models.encoders import ENCODERS
from mtljax.models.fusion import FUSIONS
from mtljax.models.heads import HEADS


class MultitaskModel(nn.Module):
  encoders: Mapping[str, nn.Module]
  fusion: nn.Module
  heads: Mapping[str, nn.Module]
  # The convolution backend (`config.conv`; mtljax/models/convolution.py), applied at trace time.
  conv: str = "xla"

  def __call__(self, inputs: Mapping[str, Any], *, train: bool):
    with convolution.use(self.conv):
      return self._call(inputs, train=train)

  def _call(self, inputs: Mapping[str, Any], *, train: bool):
    missing = sorted(set(self.encoders) - set(inputs))
    if missing:
      raise KeyError(f"model inputs lack modalities {missing}; got {sorted(inputs)}")
    feats = {m: enc(inputs[m], train=train) for m, enc in self.encoders.items()}
    fused = self.fusion(feats, train=train)
    outputs = {t: head(fused, train=train) for t, head in self.heads.items()}
    intermediates = {f"enc/{m}": f for m, f in feats.items()}
    intermediates["fused"] = fused
    return outputs, intermediates


def _kwargs(cfg: ml_collections.ConfigDict | None) -> dict:
  if cfg is None:
    return {}
  out = {}
  for k, v in cfg.to_dict().items():
    out[k] = tuple(v) if isinstance(v, list) else v
  return out


def task_out_dim(task_cfg: ml_collections.ConfigDict) -> int:
  """Number of output units of a task's head (its kind's `out_dim`: classes or outputs)."""
  return tasks.of(task_cfg).out_dim(task_cfg)


def build_model(config: ml_collections.ConfigDict) -> MultitaskModel:
  """Build the model from `config.inputs`, `config.model.fusion` and `config.tasks` by name."""
  # A non-empty config.model.variant selects a label-interdependency (MTC-LIM) configuration
  # instead (mtljax/models/lim.py).
  if config.model.get("variant"):
    from mtljax.models import lim

    return lim.build_lim_model(config)
  encoders = {}
  for name, mcfg in config.inputs.items():
    encoders[name] = ENCODERS[mcfg.encoder](**_kwargs(mcfg.get("encoder_kwargs")))
  heads = {}
  for name, tcfg in config.tasks.items():
    kwargs = _kwargs(tcfg.get("head_kwargs"))
    if tasks.of(tcfg).squeeze(tcfg):  # a single value per example / pixel: [B] not [B, 1]
      kwargs["squeeze"] = True
    heads[name] = HEADS[tcfg.head](out_dim=task_out_dim(tcfg), **kwargs)
  fusion = FUSIONS[config.model.fusion](**_kwargs(config.model.get("fusion_kwargs")))
  conv = config.get("conv", "xla")
  return MultitaskModel(encoders=encoders, fusion=fusion, heads=heads, conv=conv)
