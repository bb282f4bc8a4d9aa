"""Task weighting: one registry of the ways the per-task losses (or gradients) become the update.

`config.weighting.kind` names an entry of `WEIGHTINGS` (default "": "fixed"). Each entry declares
its family, which the train step dispatches on (mtljax/train/grads.py):

  loss weightings (LOSS: one backward pass; the entry's `combine(losses, ctx)` is the tasks term)
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
  gradient aggregation (GRADIENT: per-task gradients of the shared parameters, weighted by
  `gram_weights(M [T, T], present [T], rng) -> w [T]`; mtljax/aggregation.py)
    pcgrad, mgda, upgrad, cagrad (`cagrad_c`), nash_mtl (`nash_max_norm`); the task heads
    (`heads_<task>`) take their own task's gradient.

An entry (`Entry`) carries its factory, its family, the fewest tasks it means something with, the
static task weights it starts from and its own settings with their defaults: the keys of
`config.weighting` (config_blocks reads them from here). `register(name, entry)` adds one.

State that a strategy keeps between steps lives in `state["weighting_state"]` (each ensemble
member its own), checkpointed with the rest of the train state. A task without a label in the
batch (mask sum 0) takes no part: weight 0, no state change, no gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from mtljax import aggregation
from mtljax.losses import normalized_weights

LOSS = "loss"  # the entry's `combine` of the per-task losses; one backward pass
GRADIENT = "gradient"  # the entry's `gram_weights` of the per-task gradients' Gram matrix
FAMILIES = (LOSS, GRADIENT)


@dataclasses.dataclass(frozen=True)
class Entry:
  """One weighting of the registry.

  factory: `(config, names (T task names), opts (config.weighting with defaults)) -> {field:
    value}`, the `Weighting` fields the entry sets beyond the static weights: `combine`,
    `init_state`, `update_state`, `learned` (LOSS) or `gram_weights` (GRADIENT).
  family: LOSS or GRADIENT; the train step takes one backward pass for LOSS and the per-task
    gradients for GRADIENT.
  min_tasks: the fewest tasks it means something with (2: it weighs tasks against each other).
  defaults: its settings in `config.weighting` with their default values.
  configured_weights: the static weights (`Weighting.weights`, also those of the auxiliary
    modules' losses) are `config.tasks.<t>.weight` normalised; otherwise 1/T each.
  log_weights: the step logs `weight_<task>` (and `cos_<task>` for GRADIENT).
  """

  factory: Callable[[Any, tuple, Mapping[str, Any]], dict]
  family: str = LOSS
  min_tasks: int = 1
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  configured_weights: bool = False
  log_weights: bool = True


@dataclasses.dataclass(frozen=True)
class Weighting:
  """A built weighting: how the per-task losses become the "tasks" term (LOSS) or the per-task
  gradients the update (GRADIENT).

  weights: static normalised `{task: w_t}` (also used for the auxiliary modules' losses).
  combine: `(task_losses {task: L_t}, ctx) -> scalar`, the tasks term (and the logged loss).
  init_state / update_state: state kept between steps (`init_state() -> tree`,
    `update_state(state, grads of state["params"], losses [T], present [T], rng) -> state`).
  learned: the loss is differentiated w.r.t. `state["weighting_state"]["params"]` too.
  gram_weights: GRADIENT: `(M [T, T], present [T], rng) -> w [T]`.
  """

  name: str
  family: str
  weights: Mapping[str, float]
  combine: Callable[..., jax.Array]
  init_state: Callable[[], Any] | None = None
  update_state: Callable[..., Any] | None = None
  learned: bool = False
  gram_weights: Callable[..., jax.Array] | None = None
  log_weights: bool = False


#: name -> Entry; `register` adds one.
WEIGHTINGS: dict[str, Entry] = {}


def register(name: str, entry: Entry) -> Entry:
  """Adds `entry` under `name`. Its settings share `config.weighting` with every other entry's:
  a key another entry declares must have the same default."""
  if name in WEIGHTINGS:
    raise ValueError(f"weighting {name!r} is already registered")
  if entry.family not in FAMILIES:
    raise ValueError(f"weighting {name!r}: family {entry.family!r} is not one of {FAMILIES}")
  taken = settings()
  for key, value in entry.defaults.items():
    if key == "kind" or (key in taken and taken[key] != value):
      raise ValueError(
        f"weighting {name!r}: setting {key!r} clashes with config.weighting.{key}"
        f"={taken.get(key)!r}"
      )
  WEIGHTINGS[name] = entry
  return entry


def kinds() -> tuple[str, ...]:
  """The registered names, in registration order."""
  return tuple(WEIGHTINGS)


def settings() -> dict[str, Any]:
  """`config.weighting`'s keys and defaults: `kind` ("" = "fixed") and every entry's settings."""
  out: dict[str, Any] = {"kind": ""}
  for entry in WEIGHTINGS.values():
    out.update(entry.defaults)
  return out


def options(config) -> dict[str, Any]:
  """`config.weighting` with defaults; an empty `kind` is "fixed"."""
  out = {**settings(), **dict(config.get("weighting", None) or {})}
  out["kind"] = out["kind"] or "fixed"
  return out


def problems(config) -> list[str]:
  """Every mistake of `config.weighting` (unknown kind/key, too few tasks for the kind, a
  setting out of range)."""
  section = dict(config.get("weighting", None) or {})
  allowed = settings()
  out = []
  unknown = sorted(set(section) - set(allowed))
  if unknown:
    out.append(f"config.weighting: unknown keys {unknown} (allowed: {sorted(allowed)})")
  kind = options(config)["kind"]
  entry = WEIGHTINGS.get(kind)
  if entry is None:
    out.append(f"config.weighting.kind={kind!r} is not one of {', '.join(kinds())}")
  elif len(config.tasks) < entry.min_tasks:
    least = {2: "two", 3: "three"}.get(entry.min_tasks, str(entry.min_tasks))
    out.append(
      f"config.weighting.kind={kind!r} weighs {least} or more tasks against each "
      f"other, but config.tasks has {len(config.tasks)} ({', '.join(config.tasks)}); use 'fixed'"
    )
  for key in ("window",):
    if key in section and int(section[key]) < 1:
      out.append(f"config.weighting.{key}={section[key]!r} must be >= 1")
  return out


def build(config) -> Weighting:
  """The `Weighting` `config.weighting.kind` names (a known kind: see `problems`)."""
  kind = options(config)["kind"]
  entry = WEIGHTINGS[kind]
  names = tuple(config.tasks)
  if entry.configured_weights:
    w = normalized_weights({t: c.weight for t, c in config.tasks.items()})
  else:
    w = normalized_weights({t: 1.0 for t in names})
  fields = {"combine": _weighted(w), **entry.factory(config, names, options(config))}
  return Weighting(kind, entry.family, w, log_weights=entry.log_weights, **fields)


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
def _gram(fn):
  """A GRADIENT factory: `fn(M, present, opts) -> w` as `gram_weights(M, present, rng)`."""
  return lambda config, names, opts: {"gram_weights": lambda M, present, rng: fn(M, present, opts)}


def _pcgrad(config, names, opts):
  def weights(M, present, rng):
    T = M.shape[0]
    perms = jax.vmap(lambda k: jax.random.permutation(k, T))(jax.random.split(rng, T))
    return aggregation.pcgrad(M, present, perms)

  return {"gram_weights": weights}


# ============================================================================ the registry
register("fixed", Entry(lambda c, n, o: {}, configured_weights=True, log_weights=False))
register("equal", Entry(lambda c, n, o: {}, log_weights=False))
# lr: Adam learning rate of the log-variances (0 = train.learning_rate)
register("uncertainty", Entry(_uncertainty, defaults={"lr": 0.0}))
# window: steps per averaged loss
register("dwa", Entry(_dwa, min_tasks=2, defaults={"temperature": 2.0, "window": 20}))
register("rlw", Entry(_rlw, min_tasks=2))
register("famo", Entry(_famo, min_tasks=2, defaults={"famo_lr": 0.025, "famo_decay": 0.001}))
register("pcgrad", Entry(_pcgrad, GRADIENT, min_tasks=2))
register("mgda", Entry(_gram(lambda M, p, o: aggregation.mgda(M, p)), GRADIENT, min_tasks=2))
register("upgrad", Entry(_gram(lambda M, p, o: aggregation.upgrad(M, p)), GRADIENT, min_tasks=2))
register(
  "cagrad",
  Entry(
    _gram(lambda M, p, o: aggregation.cagrad(M, p, c=float(o["cagrad_c"]))),
    GRADIENT,
    min_tasks=2,
    defaults={"cagrad_c": 0.4},
  ),
)
register(
  "nash_mtl",
  Entry(
    _gram(lambda M, p, o: aggregation.nash_mtl(M, p, max_norm=float(o["nash_max_norm"]))),
    GRADIENT,
    min_tasks=2,
    defaults={"nash_max_norm": 1.0},
  ),
)


def effective_weights(combine, losses: Mapping[str, jax.Array], ctx) -> dict[str, jax.Array]:
  """`∂ combine / ∂ L_t` at this step's losses: each task's effective loss weight."""
  stopped = {t: jax.lax.stop_gradient(v) for t, v in losses.items()}
  return jax.grad(lambda ls: combine(ls, ctx))(stopped)
