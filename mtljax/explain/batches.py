"""The explain run's targets, all of an example at once: one attribution call per batch
of examples gives every target's maps (`[B, K, ...]`, the attribution API's target axis), so each
member and each IG step / noise sample / perturbation runs one forward pass for all K targets of an
image instead of K.

The rows written by the explain run stay the `(example, target)` pairs of
`setup.explained_targets`, in their order: `group_pairs` turns the pairs into padded per-example
targets `[N, K]` with a validity mask (K = the most targets any example has, so one compilation
serves the run), and `attribute_examples` scatters the maps back to the pair rows.
`config.explain.target_chunk` bounds memory (targets per compiled sub-call) and
`config.explain.target_form` picks how the gradient methods share the forward
(`base.resolve_target_form`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from mtljax import interrupts
from mtljax.attribution import ensemble as ens_lib
from mtljax.attribution import methods
from mtljax.attribution import targets as targets_lib
from mtljax.explain import memory, setup
from mtljax.models import encoders


def group_pairs(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """`(examples [N], index [N, K], valid [N, K], rows [N, K])` of pairs `[P, 2]`.

  `examples`: the distinct examples in order of first appearance; `index[n, :k_n]` their targets in
  pair order, padded with the example's last target (`valid` False); `rows[n, j]` the pair row of
  `(examples[n], index[n, j])` (-1 for padding).
  """
  pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
  examples, first = np.unique(pairs[:, 0], return_index=True)
  examples = examples[np.argsort(first)]
  where = {int(e): n for n, e in enumerate(examples)}
  per = [[] for _ in examples]
  for row, (e, _) in enumerate(pairs):
    per[where[int(e)]].append(row)
  k = max((len(r) for r in per), default=1)
  rows = np.full((len(examples), k), -1, np.int64)
  for n, r in enumerate(per):
    rows[n, : len(r)] = r
  valid = rows >= 0
  filled = np.where(valid, rows, np.take_along_axis(rows, valid.sum(1, keepdims=True) - 1, 1))
  return examples, pairs[filled, 1].astype(np.int32), valid, rows


def affine_input_layers(config: ml_collections.ConfigDict) -> list[str]:
  """Each encoder's first layer that is affine in its modality (`encoders_<m>/<layer>`):
  Integrated Gradients runs it twice instead of once per step, and its transpose once (exact;
  `methods.integrated_gradients(split=...)`)."""
  affine = []
  for m in sorted(config.inputs):
    layer = encoders.affine_input_layer(
      config.inputs[m].get("encoder"), config.inputs[m].get("encoder_kwargs")
    )
    if layer:
      affine.append(f"encoders_{m}/{layer}")
  return affine


def method_context(config: ml_collections.ConfigDict, image_hw, num_segments=None):
  """The `methods.Context` of the image explain run, with the target settings of
  `config.explain`."""
  ex = config.explain
  affine = affine_input_layers(config)
  return methods.Context(
    explain=ex,
    rng=jax.random.key(int(config.seed)),
    modality=ex.modality,
    layer=ex.layer,
    image_hw=image_hw,
    affine_layers=tuple(affine),
    num_segments=num_segments,
    target_form=str(ex.get("target_form", "auto")),
    target_chunk=int(ex.get("target_chunk", 0)) or None,
  )


def make_targets_attribute_fn(
  model,
  config: ml_collections.ConfigDict,
  name: str,
  image_hw: tuple[int, int],
  num_segments: int | None = None,
  chunks: dict[str, int] | None = None,
) -> Callable:
  """`(stacked, inputs, index [B, K], valid [B, K], segments) -> (member_maps [E, B, K, H, W],
  ens [B, K, H, W], mass [E, B, K, M] or None, others {m: [B, K, h, w]}, bands {m: [E, B, K,
  C_m]})`, jitted: the target-axis
  counterpart of a per-pair attribution (members × targets × examples in one call). `chunks`:
  `{"steps", "targets", "members": n}` evaluated together (`sized_attribute_fn`); a missing key
  or a count as large as the configured one = as configured."""
  ex = config.explain
  spec = methods.get_method(name)
  heads = setup.explain_heads(config)  # config.explain.tasks: one or several heads
  ctx = method_context(config, image_hw, num_segments)
  chunks = dict(chunks or {})
  if chunks.get("targets"):
    ctx = dataclasses.replace(ctx, target_chunk=chunks["targets"])
  ctx = dataclasses.replace(ctx, chunk=chunks.get("steps"))
  reduce = "sum" if spec.signed else "abs_sum"

  def outputs(variables, x):
    return model.apply(variables, x, train=False)[0]

  def attribute_member(variables, x, index, valid, segments):
    return methods.attribute_targets(
      spec,
      lambda i, v: targets_lib.make_target_scores(outputs, heads, i, v),
      variables,
      x,
      index,
      valid,
      dataclasses.replace(ctx, segments=segments),
    )

  def heatmaps(per_member):  # [E, B, K, ...] → normalised maps [E, B, K, H, W], [B, K, H, W]
    maps = ens_lib.normalize(
      ens_lib.to_heatmap(per_member, reduce=reduce, batch_dims=3), signed=spec.signed
    )
    return maps, ens_lib.normalize(jnp.mean(maps, axis=0), signed=spec.signed)

  def run(stacked, x, index, valid, segments):
    per_member, _ = ens_lib.ensemble_attribute(
      lambda v, xx: attribute_member(v, xx, index, valid, segments),
      stacked,
      x,
      strategy=ex.strategy,
      member_chunk=chunks.get("members"),
    )
    mass, others, bands = None, {}, {}
    if spec.output == "inputs":
      leaves = {m: jnp.abs(a).reshape(a.shape[:3] + (-1,)).sum(-1) for m, a in per_member.items()}
      total = sum(leaves.values()) + 1e-12
      mass = jnp.stack([leaves[m] / total for m in sorted(leaves)], axis=-1)
      # Each band's share of the whole attribution (an image's last axis; any other input is
      # one band): which bands a prediction rests on, per target.
      bands = {
        m: (jnp.abs(a).sum((3, 4)) if a.ndim == 6 else leaves[m][..., None]) / total[..., None]
        for m, a in per_member.items()
      }
      others = {
        m: heatmaps(a)[1] for m, a in per_member.items() if m != ex.modality and a.ndim == 6
      }
      per_member = per_member[ex.modality]
    members, ens_map = heatmaps(per_member)
    return members, ens_map, mass, others, bands

  return jax.jit(run)


def sized_attribute_fn(
  model, config, name: str, image_hw, num_segments, stacked, x, pairs
) -> tuple[Callable, int, dict[str, int], dict[str, int]]:
  """`make_targets_attribute_fn` with chunks that fit `config.explain.memory_budget`
  (`memory.plan` on the compiled program of one batch): the method's steps / samples first, then
  targets, then members (when they are vmapped), then examples per call. The maps are the same
  whichever chunks (up to float rounding; random methods draw per batch, so their draws change
  only when the examples per call do). Returns `(fn, examples per call, chunks, largest)`."""
  ex = config.explain
  spec = methods.get_method(name)
  _, index, _, _ = group_pairs(pairs)
  num_targets, size = index.shape[1], jax.tree.leaves(stacked)[0].shape[0]
  dims = []
  if spec.chunks is not None:
    dims.append(("steps", spec.chunks(method_context(config, image_hw, num_segments))[1]))
  dims.append(("targets", int(ex.get("target_chunk", 0)) or num_targets))
  if ens_lib.resolve_strategy(ex.strategy, stacked) == "vmap":
    dims.append(("members", size))
  dims.append(("examples", int(ex.batch_size)))
  largest = dict(dims)
  built: dict[tuple, Callable] = {}

  def build(chunks):
    key = tuple(sorted(chunks.items()))
    if key not in built:
      used = {k: v for k, v in chunks.items() if v < largest[k] and k != "examples"}
      built[key] = make_targets_attribute_fn(model, config, name, image_hw, num_segments, used)
    return built[key]

  def measure(chunks):
    b = chunks["examples"]
    xb = memory.abstract(x, b)
    idx = jax.ShapeDtypeStruct((b, num_targets), jnp.int32)
    ok = jax.ShapeDtypeStruct((b, num_targets), jnp.bool_)
    seg = jax.ShapeDtypeStruct((b,) + tuple(image_hw), jnp.int32) if spec.needs_segments else None
    return memory.program_bytes(build(chunks), memory.abstract(stacked), xb, idx, ok, seg)

  shapes = tuple((m, v.shape[1:], str(v.dtype)) for m, v in sorted(x.items()))
  key = (name, shapes, num_targets, size, str(sorted(ex.items())), str(model))
  budget = memory.budget_bytes(ex.get("memory_budget", 0.5))
  chunks = memory.plan(key, dims, measure, budget)
  return build(chunks), chunks["examples"], chunks, largest


def attribute_examples(fn, spec, stacked, x, pairs, bs, segments, *, desc):
  """`fn` (from `make_targets_attribute_fn`) over the examples of `pairs`, `bs` examples per call,
  every target of an example in the same call. Returns rows in the order of `pairs`: member maps
  `[E, P, H, W]`, ensemble maps `[P, H, W]`, modality shares (a list of `[E, P, M]`), the other
  inputs' maps `{m: [[P, h, w]]}` and each band's share of the attribution `{m: [E, P, C_m]}`
  (empty for a layer method)."""
  examples, index, valid, rows = group_pairs(pairs)
  member_maps = ens_maps = mass_rows = None
  others: dict[str, np.ndarray] = {}
  bands: dict[str, np.ndarray] = {}

  def put(store, value, batch_rows, axis):
    """Scatter `value [..., b, K, ...]` (batch at `axis`) into `store [..., P, ...]`."""
    keep = batch_rows >= 0
    value = np.moveaxis(np.asarray(value, np.float32), (axis, axis + 1), (0, 1))[keep]
    if store is None:
      store = np.zeros((len(pairs),) + value.shape[1:], np.float32)
    store[batch_rows[keep]] = value
    return store

  for start in tqdm(
    range(0, len(examples), bs), desc=desc, disable=not setup.is_main(), mininterval=2
  ):
    interrupts.point("explain.batch")
    interrupts.check()  # SIGTERM/SIGINT: stop before the next batch
    sl = slice(start, start + bs)
    ex_b, idx_b, ok_b, rows_b = examples[sl], index[sl], valid[sl], rows[sl]
    pad = bs - len(ex_b)  # a fixed batch shape: one compilation per method
    if pad:
      ex_b = np.concatenate([ex_b, np.repeat(ex_b[-1:], pad)])
      idx_b = np.concatenate([idx_b, np.repeat(idx_b[-1:], pad, 0)])
      ok_b = np.concatenate([ok_b, np.zeros((pad,) + ok_b.shape[1:], bool)])
      rows_b = np.concatenate([rows_b, np.full((pad,) + rows_b.shape[1:], -1)])
    xb = {m: jnp.asarray(v[ex_b]) for m, v in x.items()}
    seg = segments(ex_b) if spec.needs_segments else None
    mm, em, mass, other, band = fn(stacked, xb, jnp.asarray(idx_b), jnp.asarray(ok_b), seg)
    member_maps = put(member_maps, mm, rows_b, 1)
    ens_maps = put(ens_maps, em, rows_b, 0)
    if mass is not None:
      mass_rows = put(mass_rows, mass, rows_b, 1)
    for m, v in other.items():
      others[m] = put(others.get(m), v, rows_b, 0)
    for m, v in band.items():
      bands[m] = put(bands.get(m), v, rows_b, 1)
  member_maps = np.moveaxis(member_maps, 0, 1)  # [P, E, ...] → [E, P, ...]
  masses = [] if mass_rows is None else [np.moveaxis(mass_rows, 0, 1)]
  bands = {m: np.moveaxis(v, 0, 1) for m, v in bands.items()}
  return member_maps, ens_maps, masses, {m: [v] for m, v in others.items()}, bands
