"""The training objective: a sum of named terms, chosen by config.

  loss = Σ_k term_k(ctx)            over `config.objective.terms` (default ("tasks", "aux"))
  tasks: weighting.combine({t: L_t})  (fixed: Σ_t w_t · L_t, the weights normalised to sum 1,
                                       mtl-explainability Appendix B.3)
  aux:   Σ_m Σ_t w_t · L_{m,t}        the auxiliary modules' losses (MTC-LIM, paper §2.3.6)

Every term is a pure function `term(ctx) -> (scalar, {log name: value})` of one `Context` (the
params, the model's outputs and intermediates of this batch, the targets and masks, the batch, an
rng and an `apply` closure that re-runs the model). The train step logs `loss` (the sum) and
`loss_<log name>` for every log entry (`loss_<task>`, `loss_aux_<module>`).

A config without an `objective` section gets the defaults (nothing to change in existing
configs). Optional key, read with `.get`: `config.objective.terms`, names in TERMS, summed in this
order. The weighting is `config.weighting.kind`, an entry of `mtljax.weighting.WEIGHTINGS`.

Extending:

* A loss term (e.g. an explanation loss that differentiates a saliency map through the params):
  `@register_term("name")` on a factory `(config) -> term`; the term gets `ctx.apply(params,
  inputs, ...)` to re-run the model (e.g. inside `jax.grad` w.r.t. the inputs for a saliency
  map), and its value is differentiated w.r.t. `ctx.params` by the step like every other term.
  Name it in `config.objective.terms`.
* A weighting (loss weighting or gradient aggregation): `weighting.register(name, Entry(...))`
  (mtljax/weighting.py). For a GRADIENT entry the step asks `Objective.split(ctx)` for the
  per-task losses as a vector `[T]` (the order of `Objective.task_names`) and the other terms'
  sum (mtljax/train/grads.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from mtljax import hierarchy, tasks
from mtljax import weighting as weighting_lib
from mtljax.errors import ConfigError
from mtljax.weighting import Weighting

DEFAULT_TERMS = ("tasks", "aux")


# ============================================================================ the losses
def task_losses(outputs, targets, masks, kinds: Mapping[str, str]) -> dict[str, jax.Array]:
  """`{task: L_t}`, each task's masked loss from its kind (in the order of `kinds`)."""
  return {t: tasks.spec(kinds[t]).loss(outputs[t], targets[t], masks[t]) for t in kinds}


def _weighted_loss(outputs, targets, masks, kinds: Mapping[str, str], weights: Mapping[str, float]):
  """Σ_t w_t L_t over `kinds` (in its order); `weights` already normalised."""
  per_task = task_losses(outputs, targets, masks, kinds)
  return sum(weights[t] * per_task[t] for t in kinds)


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
    per_module[module] = _weighted_loss(outs, targets, masks, module_kinds, weights)
  return sum(per_module.values(), 0.0), per_module


# ============================================================================ the context
@dataclasses.dataclass(frozen=True)
class Context:
  """What a term sees of one training step (arrays are traced inside the step).

  params, batch_stats: the model's variables (the gradient is taken w.r.t. `params`).
  batch: the step's batch (`inputs`, `targets`, `mask`, `valid`, `meta`), targets as read.
  rng: this step's (member's) dropout rng.
  outputs, intermediates: `model.apply(..., train=True)` on `batch["inputs"]`, in model units.
  targets, masks: `{task: ...}`, regression targets standardised like the outputs; masks
    multiplied by `valid` (and an ensemble member's sample weights), `[B]` or `[B, H, W]`.
  kinds: `{task: kind name}`, in config order; weights: `{task: w_t}`, normalised.
  task_losses: `{task: L_t}`, each task's unweighted masked loss.
  apply: `apply(params, inputs, *, train=True, rng=rng, batch_stats=batch_stats) ->
    (outputs, intermediates)`, the model re-run (in train mode its batch-norm updates are
    dropped: the step keeps those of the first pass).
  """

  params: Any
  batch_stats: Any
  batch: Mapping[str, Any]
  rng: jax.Array
  outputs: Mapping[str, jax.Array]
  intermediates: Any
  targets: Mapping[str, jax.Array]
  masks: Mapping[str, jax.Array]
  kinds: Mapping[str, str]
  weights: Mapping[str, float]
  task_losses: Mapping[str, jax.Array]
  apply: Callable[..., Any]
  weighting: "Weighting"
  # the weighting's state between steps (`state["weighting_state"]`; mtljax/weighting.py)
  weighting_state: Any = None


Term = Callable[[Context], "tuple[jax.Array, dict[str, jax.Array]]"]

# name -> factory `(config) -> term`; the factory reads the term's own options from the config.
TERMS: dict[str, Callable[[Any], Term]] = {}


def register_term(name: str):
  """Decorator: registers a term factory `(config) -> term(ctx) -> (scalar, logs)`."""

  def deco(factory):
    if name in TERMS:
      raise ValueError(f"loss term {name!r} is already registered")
    TERMS[name] = factory
    return factory

  return deco


@register_term("tasks")
def _tasks_term(config) -> Term:
  """The masked, weighted multitask loss; logs each task's loss under its name."""
  del config

  def term(ctx: Context):
    return ctx.weighting.combine(ctx.task_losses, ctx), dict(ctx.task_losses)

  return term


@register_term("aux")
def _aux_term(config) -> Term:
  """The auxiliary modules' losses (MTC-LIM's interim heads); `aux_<module>` each. Nothing (0.0)
  for a model without auxiliary outputs."""
  del config

  def term(ctx: Context):
    total, per_module = auxiliary_loss(
      ctx.intermediates, ctx.targets, ctx.masks, ctx.kinds, ctx.weights
    )
    return total, {f"aux_{m}": v for m, v in per_module.items()}

  return term


# hierarchy consistency loss (`config.hierarchy.constraint = "loss"`; mtljax/hierarchy.py)
TERMS["hierarchy"] = hierarchy.consistency_term


# ============================================================================ the objective
def _section(config) -> Mapping[str, Any]:
  return config.get("objective", None) or {}


@dataclasses.dataclass(frozen=True)
class Objective:
  """The configured terms (in order) and the weighting; `objective(ctx) -> (total, logs)`."""

  terms: tuple[tuple[str, Term], ...]
  weighting: Weighting
  kinds: Mapping[str, str]

  @property
  def task_names(self) -> tuple[str, ...]:
    """The order of the per-task loss vector of `split`."""
    return tuple(self.kinds)

  def context(self, weighting_state=None, **fields) -> Context:
    """The step's Context: computes each task's loss from the outputs and targets."""
    losses = task_losses(fields["outputs"], fields["targets"], fields["masks"], self.kinds)
    return Context(
      kinds=self.kinds,
      weights=self.weighting.weights,
      task_losses=losses,
      weighting=self.weighting,
      weighting_state=weighting_state,
      **fields,
    )

  def __call__(self, ctx: Context):
    """`(Σ terms, {log name: value})`, summed left to right in the configured order."""
    total, logs = 0.0, {}
    for i, (name, term) in enumerate(self.terms):
      value, term_logs = term(ctx)
      # Starts from the first term itself (not 0 + it): the same operations as the hand-wired
      # `tasks + aux` before, so the numbers are bit-identical.
      total = value if i == 0 else total + value
      for k, v in term_logs.items():
        if k in logs:
          raise ValueError(f"loss term {name!r} logs {k!r}, which another term logs too")
        logs[k] = v
    return total, logs

  def split(self, ctx: Context):
    """For gradient aggregation: `(task_losses [T], Σ other terms, logs)`, the tasks term's
    losses uncombined (order `task_names`); logs as in `__call__`."""
    rest = [(n, t) for n, t in self.terms if n != "tasks"]
    other, logs = dataclasses.replace(self, terms=tuple(rest))(ctx)
    logs = {**ctx.task_losses, **logs}
    return jnp.stack([ctx.task_losses[t] for t in self.task_names]), other, logs


def problems(config) -> list[str]:
  """Every mistake of `config.objective` (terms unknown or named twice)."""
  names = _term_names(config)
  unknown = [n for n in names if n not in TERMS]
  out = []
  if unknown:
    out.append(f"config.objective.terms: unknown {unknown}; known: {', '.join(sorted(TERMS))}")
  if not names or len(set(names)) != len(names):
    out.append(f"config.objective.terms must name each term once: {names}")
  return out


def _term_names(config) -> tuple[str, ...]:
  names = tuple(_section(config).get("terms", DEFAULT_TERMS))
  if hierarchy.constraint(config) == "loss" and "hierarchy" not in names:
    names = names + ("hierarchy",)
  return names


def build(config) -> Objective:
  """The objective `config.objective` and `config.weighting` ask for (default terms:
  DEFAULT_TERMS). A run has checked the config before (`configlib.check`); an unknown name is
  still a ConfigError here, for a caller that did not."""
  found = problems(config)
  kind = weighting_lib.options(config)["kind"]
  if kind not in weighting_lib.WEIGHTINGS:
    found.append(f"config.weighting.kind={kind!r}; known: {', '.join(weighting_lib.kinds())}")
  if found:
    raise ConfigError("; ".join(found))
  return Objective(
    terms=tuple((n, TERMS[n](config)) for n in _term_names(config)),
    weighting=weighting_lib.build(config),
    kinds={t: c.kind for t, c in config.tasks.items()},
  )
