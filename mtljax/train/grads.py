"""The gradient of one step for each family of weighting (mtljax/weighting.py, aggregation.py).

Every `grads_fn(params, batch_stats, batch, rng, weighting_state) -> (loss, logs,
new_batch_stats, grads, extra)`; `extra` holds `losses [T]` and `present [T]` (for the
weighting's state update), `wgrads` (the gradient w.r.t. `weighting_state["params"]` of a learned
weighting, else None) and `measure` (`weight_<task>`, `cos_<task>`: what the step logs).

* LOSS (a loss weighting): one `value_and_grad` of the objective (and of the weighting's own
  parameters); the effective weight of task t is `∂ tasks-term / ∂ L_t`.
* GRADIENT (a Gram aggregation): `jax.jacrev` of the vector `[L_1, ..., L_T, Σ other terms]` (one
  forward pass, T + 1 backward passes vmapped); the shared parameters' update is `wᵀ G` with `w` from the
  Gram matrix of their per-task gradients, each task head (`heads_<task>`) takes its own task's
  gradient, and the other terms' gradient is added. Under `jit` over a mesh the jacobian is the
  global batch's (XLA all-reduces it), so the update does not depend on the number of devices.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mtljax import aggregation
from mtljax import weighting as weighting_lib


def _extra(ctx, names, measure, wgrads=None):
  losses = jnp.stack([jax.lax.stop_gradient(ctx.task_losses[t]) for t in names])
  return {
    "losses": losses.astype(jnp.float32),
    "present": weighting_lib.present_of(ctx, names),
    "measure": measure,
    "wgrads": wgrads,
  }


def make_weighted_grads_fn(objective, context_fn) -> Callable:
  """One backward pass of the summed objective (with a learned weighting's parameters)."""
  w, names = objective.weighting, objective.task_names

  def loss_fn(params, wparams, batch_stats, batch, rng, wstate):
    if w.learned:
      wstate = {**wstate, "params": wparams}
    ctx, new_bs = context_fn(params, batch_stats, batch, rng, wstate)
    total, logs = objective(ctx)
    measure = {}
    if w.log_weights:
      eff = weighting_lib.effective_weights(w.combine, ctx.task_losses, ctx)
      measure = {f"weight_{t}": eff[t] for t in names}
    return total, (logs, new_bs, _extra(ctx, names, measure))

  def grads_fn(params, batch_stats, batch, rng, wstate):
    wparams = wstate["params"] if w.learned else None
    argnums = (0, 1) if w.learned else 0
    (loss, (logs, new_bs, extra)), g = jax.value_and_grad(loss_fn, argnums, has_aux=True)(
      params, wparams, batch_stats, batch, rng, wstate
    )
    grads, wgrads = g if w.learned else (g, None)
    return loss, logs, new_bs, grads, {**extra, "wgrads": wgrads}

  return grads_fn


def _is_head(key: str, names) -> bool:
  return any(key == f"heads_{t}" for t in names)


def make_gram_grads_fn(objective, context_fn) -> Callable:
  """Per-task gradients, aggregated on the shared parameters by `weighting.gram_weights`."""
  w, names = objective.weighting, objective.task_names
  T = len(names)

  def vector_fn(params, batch_stats, batch, rng, wstate):
    ctx, new_bs = context_fn(params, batch_stats, batch, rng, wstate)
    vector, other, logs = objective.split(ctx)
    other = jnp.asarray(other, vector.dtype)
    loss = w.combine(ctx.task_losses, ctx) + other
    return jnp.concatenate([vector, other[None]]), (loss, logs, new_bs, _extra(ctx, names, {}))

  def grads_fn(params, batch_stats, batch, rng, wstate):
    jac, (loss, logs, new_bs, extra) = jax.jacrev(vector_fn, has_aux=True)(
      params, batch_stats, batch, rng, wstate
    )
    shared = [k for k in jac if not _is_head(k, names)]
    M = aggregation.gram(
      jax.tree.leaves({k: jax.tree.map(lambda g: g[:T], jac[k]) for k in shared})
    )
    present = extra["present"]
    wts = w.gram_weights(M, present, jax.random.fold_in(rng, 0x9C))
    grads = {}
    for k, sub in jac.items():
      if k in shared:
        grads[k] = jax.tree.map(lambda g: jnp.tensordot(wts, g[:T], axes=1) + g[T], sub)
      else:  # a task head: its own task's gradient (the others' rows are zero)
        grads[k] = jax.tree.map(lambda g: jnp.sum(g[:T], axis=0) + g[T], sub)
    # cosine between each task's shared gradient and the aggregate, from the Gram matrix
    Mw = M @ wts
    agg_norm = jnp.sqrt(jnp.maximum(wts @ Mw, 0.0))
    cos = Mw / jnp.maximum(jnp.sqrt(jnp.maximum(jnp.diag(M), 0.0)) * agg_norm, 1e-12)
    measure = {f"weight_{t}": wts[i] for i, t in enumerate(names)}
    measure.update({f"cos_{t}": jnp.where(present[i], cos[i], 0.0) for i, t in enumerate(names)})
    return loss, logs, new_bs, grads, {**extra, "measure": measure}

  return grads_fn


#: a weighting's family (`weighting.Entry.family`) -> the maker of its step's gradient
MAKERS = {weighting_lib.LOSS: make_weighted_grads_fn, weighting_lib.GRADIENT: make_gram_grads_fn}


def make_grads_fn(objective, context_fn) -> Callable:
  """The gradient of one step for the objective's weighting, by the family it declares."""
  return MAKERS[objective.weighting.family](objective, context_fn)
