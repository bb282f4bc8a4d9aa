"""Label hierarchy between classification tasks: a consistency metric and an optional constraint.

`config.hierarchy` (all optional):

  pairs       "auto" (default): every (child, parent) pair of the config's single-class tasks for
              which the dataset's registry entry gives a child → parent class map
              (`label_hierarchy`, e.g. TreeSAT l3 → l2 → l1); "" none; or "l3>l2,l2>l1".
  constraint  "none" (default); "loss": a consistency loss term (`weight` ×
              mean_i -log Σ_c p_child(c | x_i) p_parent(parent(c) | x_i), the log-probability that
              the two predictions agree); "marginal": the parent's probabilities are the child's
              marginalised over the hierarchy (its logits replaced by log Σ_{c ∈ parent} p(c)),
              so the pair is consistent by construction (the parent's head goes unused).
  weight      the loss term's weight (0.1).

Metric (every evaluation, with the task metrics): `hierarchy/<child>_in_<parent>`, the share of
examples whose predicted (argmax) child class lies in the predicted parent class.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import tasks

DEFAULTS = {"pairs": "auto", "constraint": "none", "weight": 0.1}
CONSTRAINTS = ("none", "loss", "marginal")


def options(config) -> dict[str, Any]:
  return {**DEFAULTS, **dict(config.get("hierarchy", None) or {})}


def constraint(config) -> str:
  return options(config)["constraint"]


def _dataset_map(config, dataset=None):
  if dataset is not None:
    return dataset.label_hierarchy
  data = config.get("data", None)
  if not data or not data.get("name"):
    return None
  from mtljax.data import get_dataset

  try:
    return get_dataset(data.name).label_hierarchy
  except (KeyError, ValueError):
    return None


def _single_class(config, t) -> bool:
  kind = config.tasks[t].get("kind")
  return kind in tasks.KINDS and tasks.is_per_example_class(kind)


def _parse(config, problems=None, dataset=None) -> list[tuple[str, str, np.ndarray]]:
  opts = options(config)
  spec, lookup = str(opts["pairs"] or ""), _dataset_map(config, dataset)
  out = []
  if spec == "auto":
    if lookup is None:
      return []
    names = [t for t in config.tasks if _single_class(config, t)]
    for child in names:
      for parent in names:
        m = lookup(child, parent) if child != parent else None
        if m is not None:
          out.append((child, parent, np.asarray(m, np.int32)))
    return out
  for item in filter(None, (s.strip() for s in spec.split(","))):
    child, sep, parent = item.partition(">")
    child, parent = child.strip(), parent.strip()
    where = f"config.hierarchy.pairs={spec!r}: {item!r}"
    if not sep or not child or not parent:
      problems is not None and problems.append(f"{where} is not of the form child>parent")
      continue
    bad = [t for t in (child, parent) if t not in config.tasks or not _single_class(config, t)]
    if bad:
      problems is not None and problems.append(
        f"{where}: a hierarchy pair needs two single-class classification tasks; "
        f"{', '.join(repr(b) for b in bad)} is not one of config.tasks of that kind"
      )
      continue
    m = lookup(child, parent) if lookup is not None else None
    if m is None:
      problems is not None and problems.append(
        f"{where}: the dataset {config.data.get('name')!r} defines no class map from "
        f"{child!r} to {parent!r}"
      )
      continue
    out.append((child, parent, np.asarray(m, np.int32)))
  return out


def pairs(config, dataset=None) -> list[tuple[str, str, np.ndarray]]:
  """`[(child, parent, parent_of_child_class int32 [C_child])]` the config asks for; `dataset`:
  the run's registry entry (`Setup.dataset`; looked up from `config.data.name` when None)."""
  return _parse(config, dataset=dataset)


def problems(config, dataset=None) -> list[str]:
  """Every mistake of `config.hierarchy` (each naming its key); `dataset`: as for `pairs`."""
  out: list[str] = []
  opts = options(config)
  unknown = sorted(set(dict(config.get("hierarchy", None) or {})) - set(DEFAULTS))
  if unknown:
    out.append(f"config.hierarchy: unknown keys {unknown} (allowed: {sorted(DEFAULTS)})")
  if opts["constraint"] not in CONSTRAINTS:
    out.append(f"config.hierarchy.constraint={opts['constraint']!r} is not one of {CONSTRAINTS}")
  found = _parse(config, out, dataset)
  if opts["constraint"] in ("loss", "marginal") and not found and not out:
    out.append(
      f"config.hierarchy.constraint={opts['constraint']!r} but no hierarchy pair applies "
      f"(config.hierarchy.pairs={opts['pairs']!r})"
    )
  return out


# ============================================================================ the constraint
def _log_marginal(child_logits, parent_of, num_parent):
  """log p(parent = k) = log Σ_{c: parent_of[c] = k} softmax(child)_c (−inf-safe)."""
  logp = jax.nn.log_softmax(child_logits, axis=-1)
  onehot = jnp.asarray(np.eye(num_parent, dtype=np.float32)[parent_of])  # [C_child, C_parent]
  masked = jnp.where(onehot > 0, logp[..., :, None], -1e30)
  return jax.nn.logsumexp(masked, axis=-2)


def output_transform(config, dataset=None):
  """`outputs -> outputs` for `constraint = "marginal"` (identity otherwise): each parent's
  logits become the log-marginal of its child's softmax (applied len(pairs) times so that a
  chain l3 > l2 > l1 propagates whatever the order of the pairs). `dataset`: as for `pairs`."""
  found = pairs(config, dataset) if constraint(config) == "marginal" else []
  if not found:
    return lambda outputs: outputs

  def transform(outputs):
    out = dict(outputs)
    for _ in range(len(found)):
      for child, parent, m in found:
        out[parent] = _log_marginal(out[child], m, out[parent].shape[-1])
    return out

  return transform


def consistency_term(config):
  """Loss term: `weight` × mean over valid examples of −log P(child and parent agree)."""
  found, weight = pairs(config), float(options(config)["weight"])

  def term(ctx):
    valid = ctx.batch["valid"].astype(jnp.float32)
    total, logs = 0.0, {}
    for child, parent, m in found:
      pc = jax.nn.softmax(ctx.outputs[child], axis=-1)
      pp = jax.nn.softmax(ctx.outputs[parent], axis=-1)
      agree = jnp.sum(pc * pp[..., jnp.asarray(m)], axis=-1)
      nll = -jnp.log(jnp.clip(agree, 1e-7, 1.0))
      value = jnp.sum(nll * valid) / jnp.maximum(jnp.sum(valid), 1.0)
      logs[f"hierarchy_{child}_{parent}"] = value
      total = total + weight * value
    return jnp.asarray(total, jnp.float32), logs

  return term


# ============================================================================ the metric
def metrics(config, pred_of: Callable[[str], np.ndarray], found=None) -> dict[str, float]:
  """`{hierarchy/<child>_in_<parent>: share}` from an evaluation's gathered class probabilities
  (`pred_of(task) -> [N, C]`; an ensemble's or one member's); `found`: `pairs(config)` when
  already resolved."""
  result = {}
  for child, parent, m in pairs(config) if found is None else found:
    pc, pp = np.asarray(pred_of(child)), np.asarray(pred_of(parent))
    if pc.ndim < 2 or pp.ndim < 2 or len(pc) == 0:
      continue
    result[f"hierarchy/{child}_in_{parent}"] = float(
      np.mean(m[np.argmax(pc, -1)] == np.argmax(pp, -1))
    )
  return result
