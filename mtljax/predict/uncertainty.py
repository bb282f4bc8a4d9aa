"""An ensemble's prediction and its uncertainty from its members' outputs (jax, jit-able).

Classification (one class per example or per pixel), the usual split of the predictive entropy
(Depeweg et al. 2018; ensembles paper §3): with member probabilities p_m and their mean p̄,

  entropy            H[p̄]                 total uncertainty of the averaged prediction
  expected_entropy   mean_m H[p_m]         what each member is unsure of (aleatoric part)
  mutual_information H[p̄] - mean_m H[p_m]  what the members disagree on (epistemic part)

(in nats). Multilabel tasks get the same three per label (a Bernoulli each), summed over the
labels. Regression: the mean of the members and their spread (standard deviation over members,
in the target's units). One member gives mutual information and spread 0.
"""

from __future__ import annotations

import jax.numpy as jnp

from mtljax import tasks

_TINY = 1e-12


def _entropy(p, axis=-1):
  return -jnp.sum(p * jnp.log(jnp.clip(p, _TINY, 1.0)), axis=axis)


def _bernoulli(p):
  return _entropy(jnp.stack([p, 1.0 - p], axis=-1))


def split_entropy(members, binary: bool = False) -> dict:
  """`members` `[E, B, ..., K]` probabilities → `{"prob": p̄ [B, ..., K], "entropy",
  "expected_entropy", "mutual_information": [B, ...]}`; `binary`: K independent labels (summed)."""
  mean = jnp.mean(members, axis=0)
  if binary:
    total, expected = jnp.sum(_bernoulli(mean), -1), jnp.mean(jnp.sum(_bernoulli(members), -1), 0)
  else:
    total, expected = _entropy(mean), jnp.mean(_entropy(members), axis=0)
  return {
    "prob": mean,
    "entropy": total,
    "expected_entropy": expected,
    "mutual_information": jnp.maximum(total - expected, 0.0),
  }


def summarise(task_cfgs, members: dict) -> dict:
  """`{task: [E, B, ...]}` activated member outputs (probabilities, or values in the target's
  units) → flat `{"<task>/<key>": array}` with the keys above (`value`, `spread` for values),
  and `"<task>/members"` `[B, E, ...]` for the tasks with one prediction per example."""
  out = {}
  for t, m in members.items():
    kind = tasks.of(task_cfgs[t])
    if kind.target == tasks.VALUE:
      got = {"value": jnp.mean(m, axis=0), "spread": jnp.std(m, axis=0)}
    else:
      got = split_entropy(m, binary=kind.target == tasks.LABELS)
    if not kind.dense:
      got["members"] = jnp.moveaxis(m, 0, 1)
    out.update({f"{t}/{k}": v for k, v in got.items()})
  return out
