"""The objective term "explanation": the configured explanation-loss kind (`losses.KINDS`) on the
configured map (`maps`), and its config check.

The term is registered in `mtljax.objective.TERMS` (imported by the train step) and configured by
`config.explanation_loss` (`mtljax/egl/config.py` `explanation_loss_config`); a config names it in
`config.objective.terms`. With `kind="none"` it adds nothing. It is jitted, vmapped over ensemble
members and sharded over the mesh with the rest of the step. Each example's annotations and their
"present" flags come in `batch["meta"]` (`mtljax.data.annotations`). `mask_dilation` > 0 grows
every mask by that many pixels before a kind that `dilates_mask` uses it (a tolerance at the
annotation's boundary; RES has its own `res_slack`). The kind's value and logs are multiplied by
`lam`; logged as `loss_explanation` (+ the kind's own, e.g. `loss_explanation_consistency`).
"""

from __future__ import annotations

from mtljax import config_blocks, objective, tasks
from mtljax.data import annotations as ann
from mtljax.egl import losses
from mtljax.egl import maps as mp
from mtljax.errors import ConfigError, DataError

KEY = "config.explanation_loss"


def check_config(config) -> list[str]:
  """The problems of `config.explanation_loss`, each one line naming its key ([] = none)."""
  e = config.get("explanation_loss", None)
  if not e or e.kind == "none":
    return []
  if e.kind not in losses.KINDS:
    return [f"{KEY}.kind={e.kind!r} is not one of {('none', *losses.KINDS)}"]
  out = []
  try:
    mp.parse(e.saliency)
  except ValueError as err:
    out.append(f"{KEY}.saliency={e.saliency!r}: {err}")
  if e.modality not in config.inputs:
    out.append(
      f"{KEY}.modality={e.modality!r}: the model has no such input (inputs: "
      f"{sorted(config.inputs)}); an explanation loss needs an image input"
    )
  task = config.tasks.get(e.task)
  kind = tasks.KINDS.get(task.kind) if task is not None else None
  if kind is None or kind.target != tasks.CLASS or kind.dense:  # one class per example
    out.append(f"{KEY}.task={e.task!r} must name a classification task of config.tasks")
  if e.get("saliency_mode", "train") not in ("eval", "train"):
    out.append(f"{KEY}.saliency_mode={e.saliency_mode!r} is not 'eval' or 'train'")
  if not 0.0 <= float(e.mask_fraction) <= 1.0:
    out.append(f"{KEY}.mask_fraction={e.mask_fraction!r} must be in [0, 1]")
  check = losses.KINDS[e.kind].check
  out += check(e, config) if check is not None else []
  if "explanation" not in tuple(config.get("objective", {}).get("terms", ())):
    out.append(f"{KEY}.kind={e.kind!r} needs 'explanation' in config.objective.terms")
  return out


def _score(ctx, task, modality, train: bool = True):
  """The task's logits as a function of (params, image). `train=True` (`saliency_mode="train"`,
  the default): the task loss's forward pass (BatchNorm batch statistics, dropout), so the batch
  statistics couple the examples (∂/∂x_b of Σ_b' log p(x_b') picks up the other examples' terms);
  `train=False`: running statistics, no dropout, each example's map a function of that example
  alone (the map the evaluation scores)."""

  def score(params, x):
    outputs, _ = ctx.apply(params, {**ctx.batch["inputs"], modality: x}, train=train)
    return outputs[task]

  return score


@objective.register_term("explanation")
def explanation_term(config):
  """The configured explanation loss as an objective term (module docstring)."""
  problems = check_config(config)
  if problems:
    raise ConfigError("; ".join(problems))
  e = config.get("explanation_loss", None)
  if not e or e.kind == "none":
    return lambda ctx: (0.0, {})
  kind, entry, lam, saliency = e.kind, losses.KINDS[e.kind], float(e.lam), e.saliency
  task, modality = e.task, e.modality
  train = e.get("saliency_mode", "train") == "train"
  dilation = int(e.get("mask_dilation", 0))
  spec, layer = mp.parse(saliency)
  explain = config.get("explain", None) or config_blocks.explain_config(
    task=task, modality=modality, layer=layer
  )

  def term(ctx):
    x = ctx.batch["inputs"][modality]
    meta, valid = ctx.batch["meta"], ctx.batch["valid"]
    if ann.MASK not in meta:
      raise ValueError(
        f"{KEY}.kind={kind!r}: the dataset {config.data.name!r} gives no "
        f"explanation annotations (meta/{ann.MASK}); see mtljax/data/annotations.py"
      )
    mask = meta[ann.MASK].astype(x.dtype)
    losses.check_size(mask, x, ann.MASK)
    if entry.dilates_mask and dilation:
      mask = losses.dilate(mask, dilation)
    prior = None
    if entry.needs_prior:
      if ann.PRIOR not in meta:
        raise ValueError(f"{KEY}.kind={kind!r}: the dataset gives no meta/{ann.PRIOR}")
      prior = meta[ann.PRIOR].astype(x.dtype)
      losses.check_size(prior, x, ann.PRIOR)
    batch = losses.Explained(
      settings=e,
      params=ctx.params,
      x=x,
      labels=ctx.batch["targets"][task],
      mask=mask,
      flags=meta[ann.MASK_PRESENT].astype(x.dtype) * valid,
      valid=valid,
      meta=meta,
      prior=prior,
      score=_score(ctx, task, modality, train),
      score_of=lambda t: _score(ctx, t, modality, train),
      maps=mp.Maps(spec, layer, modality, explain, getattr(ctx, "rng", None)),
    )
    try:
      value, logs = entry.fn(batch)
    except ValueError as err:  # an unknown layer, a layer without a map: the user's config
      if KEY in str(err) or isinstance(err, (ConfigError, DataError)):
        raise
      raise ConfigError(f"{KEY}.saliency={saliency!r}: {err}") from None
    value = lam * value
    return value, {**{k: lam * v for k, v in logs.items()}, "explanation": value}

  return term
