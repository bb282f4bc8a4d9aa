"""The explain run's per-pair path, one (example, target) pair per row: the oracle that the
run's targets-per-call path (`mtljax.explain.batches`) is checked against."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtljax.attribution import ensemble as ens_lib
from mtljax.attribution import methods
from mtljax.attribution import targets as targets_lib
from mtljax.explain import batches, setup


def make_attribute_fn(
  model,
  config: ml_collections.ConfigDict,
  name: str,
  image_hw: tuple[int, int],
  num_segments: int | None = None,
) -> Callable:
  """`(stacked_variables, inputs, idx, segments) -> (member_maps [E,B,H,W], ens [B,H,W], mass,
  others)`, jitted; for methods that attribute every input, `mass` is each input modality's share
  of the attribution mass `[E, B, M]` and `others` the ensemble map `[B, h, w]` of every other
  image input (otherwise None and {}). `num_segments`: how many labels the segments of
  `needs_segments` methods hold (they are traced under jit)."""
  ex = config.explain
  spec = methods.get_method(name)
  modality = ex.modality
  heads = setup.explain_heads(config)

  def outputs(variables, x):
    return model.apply(variables, x, train=False)[0]

  affine = batches.affine_input_layers(config)
  ctx = methods.Context(
    explain=ex,
    rng=jax.random.key(int(config.seed)),
    modality=modality,
    layer=ex.layer,
    image_hw=image_hw,
    affine_layers=tuple(affine),
    num_segments=num_segments,
  )

  def attribute_member(variables, x, idx, segments):
    f = targets_lib.make_pair_scores(outputs, heads, idx)
    return methods.attribute(spec, f, variables, x, dataclasses.replace(ctx, segments=segments))

  reduce = "sum" if spec.signed else "abs_sum"

  def run(stacked, x, idx, segments):
    per_member, _ = ens_lib.ensemble_attribute(
      lambda v, xx: attribute_member(v, xx, idx, segments), stacked, x, strategy=ex.strategy
    )
    mass, others = None, {}
    if spec.output == "inputs":
      leaves = {
        m: jnp.abs(a).reshape(a.shape[0], a.shape[1], -1).sum(-1) for m, a in per_member.items()
      }
      total = sum(leaves.values()) + 1e-12
      mass = jnp.stack([leaves[m] / total for m in sorted(leaves)], axis=-1)
      # The ensemble map of every other image input (one attribution per modality).
      others = {
        m: ens_lib.ensemble_heatmaps(a, reduce=reduce, signed=spec.signed)[1]
        for m, a in per_member.items()
        if m != modality and a.ndim == 5
      }
      per_member = per_member[modality]
    members, ens_map = ens_lib.ensemble_heatmaps(per_member, reduce=reduce, signed=spec.signed)
    return members, ens_map, mass, others

  return jax.jit(run)


def attribute_pairs(fn, spec, stacked, x, pairs, bs, segments, *, desc):
  """`fn` over the pairs in batches of `bs`: member maps `[E, P, H, W]`, ensemble maps
  `[P, H, W]`, modality shares (list of `[E, b, M]`) and the other inputs' maps `{m: [...]}`."""
  member_maps, ens_maps, masses, others = [], [], [], {}
  del desc
  for start in range(0, len(pairs), bs):
    p = pairs[start : start + bs]
    pad = bs - len(p)  # a fixed batch shape: one compilation per method
    p_full = np.concatenate([p, np.repeat(p[-1:], pad, 0)]) if pad else p
    xb = {m: jnp.asarray(v[p_full[:, 0]]) for m, v in x.items()}
    seg = segments(p_full[:, 0]) if spec.needs_segments else None
    mm, em, mass, other = fn(stacked, xb, jnp.asarray(p_full[:, 1]), seg)
    keep = len(p)
    for m, v in other.items():
      others.setdefault(m, []).append(np.asarray(v[:keep], np.float32))
    member_maps.append(np.asarray(mm[:, :keep], np.float32))
    ens_maps.append(np.asarray(em[:keep], np.float32))
    if mass is not None:
      masses.append(np.asarray(mass[:, :keep]))
  return np.concatenate(member_maps, axis=1), np.concatenate(ens_maps), masses, others
