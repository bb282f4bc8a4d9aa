"""Task weighting strategies: learned loss weightings and per-task gradient aggregation.

`config.weighting.kind` picks one (default "": `config.objective.weighting`, else "fixed"):

  loss weightings (one backward pass; `combine(losses, ctx)` is the tasks term)
    fixed        Σ_t w_t L_t, the configured weights normalised to sum 1
    equal        Σ_t L_t / T
    uncertainty  Kendall et al. 2018: Σ_t ½(exp(-s_t) L_t + s_t), s_t = log σ_t² learned by Adam
                 (`weighting.lr`, 0 = train.learning_rate) in the train state
    dwa          Liu et al. 2019 (dynamic weight average): w = softmax(r / temperature), r_t the
                 ratio of task t's mean loss over the last two windows of `weighting.window` steps
    rlw          Lin et al. 2022 (random loss weighting): w = softmax(N(0, I)) each step
    famo         Liu et al. 2023: Σ_t z_t log L_t / c, z = softmax(ξ), c = Σ z_t / L_t (no
                 gradient); ξ updated by Adam (`famo_lr`, `famo_decay`) from the change of log L_t
                 between consecutive steps (the next batch's losses: one forward pass per step)
  gradient aggregation (per-task gradients of the shared parameters; mtljax/aggregation.py)
    pcgrad, mgda, upgrad, cagrad (`cagrad_c`), nash_mtl (`nash_max_norm`); the task heads
    (`heads_<task>`) take their own task's gradient.

State that a strategy keeps between steps lives in `state["weighting_state"]` (each ensemble
member its own), checkpointed with the rest of the train state. A task without a label in the
batch (mask sum 0) takes no part: weight 0, no state change, no gradient.

This module only returns the pieces (`pieces(config)` → keyword arguments of
`objective.Weighting`); mtljax/objective.py wraps them, so it imports nothing from there.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from mtljax import aggregation
from mtljax.losses import normalized_weights

LOSS_KINDS = ("fixed", "equal", "uncertainty", "dwa", "rlw", "famo")
GRAD_KINDS = aggregation.STRATEGIES
KINDS = LOSS_KINDS + GRAD_KINDS
# strategies that only mean something with two or more tasks
NEED_TWO = ("dwa", "rlw", "famo") + GRAD_KINDS
DEFAULTS = {
  "kind": "",
  "lr": 0.0,  # uncertainty: Adam learning rate of the log-variances (0 = train.learning_rate)
  "temperature": 2.0,  # dwa
  "window": 20,  # dwa: steps per loss average
  "famo_lr": 0.025,
  "famo_decay": 0.001,
  "cagrad_c": 0.4,
  "nash_max_norm": 1.0,
}


def options(config) -> dict[str, Any]:
  """`config.weighting` with defaults; `kind` resolved (`config.objective.weighting` maps)."""
  section = dict(config.get("weighting", None) or {})
  out = {**DEFAULTS, **section}
  if not out["kind"]:
    out["kind"] = (config.get("objective", None) or {}).get("weighting", "fixed")
  return out


def problems(config) -> list[str]:
  """Every mistake of `config.weighting` (unknown kind/key, a strategy needing two tasks)."""
  section = dict(config.get("weighting", None) or {})
  out = []
  unknown = sorted(set(section) - set(DEFAULTS))
  if unknown:
    out.append(f"config.weighting: unknown keys {unknown} (allowed: {sorted(DEFAULTS)})")
  kind = options(config)["kind"]
  if kind not in KINDS:
    out.append(f"config.weighting.kind={kind!r} is not one of {', '.join(KINDS)}")
  elif kind in NEED_TWO and len(config.tasks) < 2:
    out.append(
      f"config.weighting.kind={kind!r} weighs two or more tasks against each other, but "
      f"config.tasks has {len(config.tasks)} ({', '.join(config.tasks)}); use 'fixed'"
    )
  for key in ("window",):
    if key in section and int(section[key]) < 1:
      out.append(f"config.weighting.{key}={section[key]!r} must be >= 1")
  return out


def present_of(ctx, names) -> jax.Array:
  """`[T]` bool: the tasks with at least one label in the (global) batch."""
  return jnp.stack([jnp.sum(ctx.masks[t]) > 0 for t in names])


def _vector(losses: Mapping[str, jax.Array]) -> jax.Array:
  return jnp.stack([jnp.asarray(losses[t], jnp.float32) for t in losses])


def _masked_softmax(x, present):
  x = jnp.where(present, x, -jnp.inf)
  z = jax.nn.softmax(x)
  return jnp.where(present, z, 0.0)


def _state_or_init(ctx, init):
  s = getattr(ctx, "weighting_state", None)
  return s if s is not None else init()


# ============================================================================ loss weightings
def _weighted(weights):
  return lambda losses, ctx: sum(weights[t] * losses[t] for t in losses)


def _uncertainty(config, names, opts):
  T = len(names)
  lr = float(opts["lr"]) or float(config.train.learning_rate)
  tx = optax.adam(lr)

  def init():
    params = {"log_var": jnp.zeros((T,), jnp.float32)}
    return {"params": params, "opt": tx.init(params)}

  def combine(losses, ctx):
    s = _state_or_init(ctx, init)["params"]["log_var"]
    p = present_of(ctx, names).astype(jnp.float32)
    return jnp.sum(p * 0.5 * (jnp.exp(-s) * _vector(losses) + s))

  def update(state, wgrads, losses, present, rng):
    del losses, present, rng
    updates, opt = tx.update(wgrads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}

  return {"combine": combine, "init_state": init, "update_state": update, "learned": True}


def _dwa(config, names, opts):
  T, temp, window = len(names), float(opts["temperature"]), int(opts["window"])

  def init():
    z = jnp.zeros((T,), jnp.float32)
    return {"sum": z, "count": z, "prev": z, "prev2": z, "n": jnp.zeros((), jnp.int32)}

  def weights(state, present):
    ratio = state["prev"] / jnp.where(state["prev2"] > 0, state["prev2"], 1.0)
    ready = (state["n"] >= 2) & (state["prev2"] > 0) & (state["prev"] > 0)
    return _masked_softmax(jnp.where(ready, ratio, 1.0) / temp, present)

  def combine(losses, ctx):
    w = weights(_state_or_init(ctx, init), present_of(ctx, names))
    return jnp.sum(w * _vector(losses))

  def update(state, wgrads, losses, present, rng):
    del wgrads, rng
    p = present.astype(jnp.float32)
    s, c = state["sum"] + p * losses, state["count"] + p
    step = jnp.sum(c) > 0  # a window counts steps where any task had labels
    full = jnp.max(c) >= window
    mean = jnp.where(c > 0, s / jnp.where(c > 0, c, 1.0), state["prev"])
    z = jnp.zeros_like(s)
    return {
      "sum": jnp.where(full, z, s),
      "count": jnp.where(full, z, c),
      "prev": jnp.where(full, mean, state["prev"]),
      "prev2": jnp.where(full, state["prev"], state["prev2"]),
      "n": state["n"] + (full & step).astype(jnp.int32),
    }

  return {"combine": combine, "init_state": init, "update_state": update}


def _rlw(config, names, opts):
  def combine(losses, ctx):
    z = jax.random.normal(jax.random.fold_in(ctx.rng, 0x51A7), (len(names),))
    return jnp.sum(_masked_softmax(z, present_of(ctx, names)) * _vector(losses))

  return {"combine": combine}


def _famo(config, names, opts):
  T, eps = len(names), 1e-8
  tx = optax.chain(
    optax.add_decayed_weights(float(opts["famo_decay"])), optax.adam(opts["famo_lr"])
  )

  def init():
    logits = jnp.zeros((T,), jnp.float32)
    z = jnp.zeros((T,), jnp.float32)
    # prev: each task's last log-loss; seen: 1 once it has one
    return {"logits": logits, "opt": tx.init(logits), "prev": z, "seen": z}

  def combine(losses, ctx):
    state = _state_or_init(ctx, init)
    present = present_of(ctx, names)
    z = _masked_softmax(state["logits"], present)
    d = jnp.where(present, _vector(losses) + eps, 1.0)
    c = jax.lax.stop_gradient(jnp.sum(z / d))
    return jnp.sum(z * jnp.log(d)) / c

  def update(state, wgrads, losses, present, rng):
    del wgrads, rng
    logl = jnp.log(losses + eps)
    seen = present & (state["seen"] > 0)
    delta = jnp.where(seen, state["prev"] - logl, 0.0)
    _, vjp = jax.vjp(lambda x: _masked_softmax(x, present), state["logits"])
    (g,) = vjp(delta)
    updates, opt = tx.update(g, state["opt"], state["logits"])
    logits = jnp.where(
      jnp.any(seen), optax.apply_updates(state["logits"], updates), state["logits"]
    )
    opt = jax.tree.map(lambda a, b: jnp.where(jnp.any(seen), a, b), opt, state["opt"])
    return {
      "logits": logits,
      "opt": opt,
      "prev": jnp.where(present, logl, state["prev"]),
      "seen": jnp.maximum(state["seen"], present.astype(jnp.float32)),
    }

  return {"combine": combine, "init_state": init, "update_state": update}


# ============================================================================ aggregation
def _gram(kind, opts):
  if kind == "pcgrad":

    def weights(M, present, rng):
      T = M.shape[0]
      perms = jax.vmap(lambda k: jax.random.permutation(k, T))(jax.random.split(rng, T))
      return aggregation.pcgrad(M, present, perms)

    return weights
  fns = {
    "mgda": lambda M, p: aggregation.mgda(M, p),
    "upgrad": lambda M, p: aggregation.upgrad(M, p),
    "cagrad": lambda M, p: aggregation.cagrad(M, p, c=float(opts["cagrad_c"])),
    "nash_mtl": lambda M, p: aggregation.nash_mtl(M, p, max_norm=float(opts["nash_max_norm"])),
  }
  fn = fns[kind]
  return lambda M, present, rng: fn(M, present)


_FACTORIES = {"uncertainty": _uncertainty, "dwa": _dwa, "rlw": _rlw, "famo": _famo}


def pieces(config, kind: str) -> dict[str, Any]:
  """Keyword arguments of `objective.Weighting` for `kind` (besides `name`)."""
  names = tuple(config.tasks)
  opts = options(config)
  if kind == "fixed":
    w = normalized_weights({t: c.weight for t, c in config.tasks.items()})
  else:
    w = normalized_weights({t: 1.0 for t in names})
  out = {"weights": w, "combine": _weighted(w)}
  if kind in _FACTORIES:
    out.update(_FACTORIES[kind](config, names, opts))
    out["log_weights"] = True
  elif kind in GRAD_KINDS:
    out["gram_weights"] = _gram(kind, opts)
    out["log_weights"] = True
  return out


def effective_weights(combine, losses: Mapping[str, jax.Array], ctx) -> dict[str, jax.Array]:
  """`∂ combine / ∂ L_t` at this step's losses: each task's effective loss weight."""
  stopped = {t: jax.lax.stop_gradient(v) for t, v in losses.items()}
  return jax.grad(lambda ls: combine(ls, ctx))(stopped)
