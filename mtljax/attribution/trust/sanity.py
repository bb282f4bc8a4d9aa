"""Randomisation (sanity) tests, Adebayo et al. 2018: does the map depend on the model?

`explain(params, x [B, H, W, C]) -> maps [B, H, W]` is the attribution method on the explained
target; `explain_target(params, x, idx [B]) -> maps` the same for any target. Pure and jit-able.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from mtljax.attribution.trust import ops

RANDOMISATIONS = ("normal_like", "permute")


def param_layers(params, order: Sequence[str] | None = None) -> list[str]:
  """Paths ("a/b/c") of the modules that own parameter arrays, in `order` (module paths in call
  order, e.g. `flax_utils.module_paths`) where given, else in the tree's order."""
  owners = []

  def walk(tree, path):
    if any(not isinstance(v, dict) for v in tree.values()):
      owners.append("/".join(path))
    for k, v in tree.items():
      if isinstance(v, dict):
        walk(v, path + [k])

  walk(params, [])
  if order is None:
    return owners
  pos = {p: i for i, p in enumerate(order)}
  # A module that is not in the call order keeps its tree position after the known ones.
  return sorted(owners, key=lambda p: (pos.get(p, len(pos)), owners.index(p)))


def _randomised(params, rng, how: str):
  """Every leaf replaced by a random draw: "normal_like" N(0, std(leaf)^2) (a zero leaf, e.g. a
  bias at init, by N(0, 0.01^2)); "permute" a random permutation of the leaf's entries."""
  leaves, tree = jax.tree.flatten(params)
  if how == "normal_like":
    # One draw for all the leaves, cut into pieces: a draw per leaf compiles one random-bits
    # kernel per leaf, about a second apiece on CPU (9 s of the first MPRT call on an 8-leaf CNN).
    sizes = [leaf.size for leaf in leaves]
    z = jax.random.normal(rng, (sum(sizes),), jnp.float32)
    out, start = [], 0
    for leaf, n in zip(leaves, sizes):
      std = jnp.std(leaf)
      piece = z[start : start + n].reshape(leaf.shape) * jnp.where(std > 0, std, 0.01)
      out.append(piece.astype(leaf.dtype))
      start += n
  elif how == "permute":
    keys = jax.random.split(rng, len(leaves))
    out = [
      jax.random.permutation(k, leaf.reshape(-1)).reshape(leaf.shape)
      for k, leaf in zip(keys, leaves)
    ]
  else:
    raise ValueError(f"unknown randomisation {how!r}; known: {', '.join(RANDOMISATIONS)}")
  return jax.tree.unflatten(tree, out)


def _layer_of_leaves(params, layers):
  """The cascade position of every leaf's module (len(layers) = never randomised); an entry of
  `layers` is a module path or a tuple of them (randomised together, one step)."""
  step = {}
  for i, group in enumerate(layers):
    for path in (group,) if isinstance(group, str) else group:
      step[path] = i
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return [
    step.get("/".join(str(getattr(p, "key", p)) for p in path[:-1]), len(layers))
    for path, _ in flat
  ]


def group_layers(layers: Sequence[str], groups: int) -> list[tuple[str, ...]]:
  """`layers` cut into at most `groups` consecutive blocks (0 = one block per layer): the cascade
  then stops `groups` times, at the same cost per stop."""
  n = len(layers)
  groups = n if groups <= 0 else min(groups, n)
  edges = [round(i * n / groups) for i in range(groups + 1)]
  return [tuple(layers[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def mprt(
  explain: Callable,
  params,
  x,
  maps,
  rng,
  *,
  layers: Sequence[str],
  randomisation: str = "normal_like",
  similarity: str = "spearman",
  absolute: bool = True,
  chunk: int | None = None,
  random_params=None,
):
  """Cascading model parameter randomisation test (Adebayo et al. 2018, §3.1).

  Layers are randomised cumulatively in the order of `layers` (top-down: pass the call order
  reversed, so the head goes first); after the l-th, the method explains the randomised model and
  the map is compared with the original `maps [B, H, W]` by `similarity` (Spearman rank correlation
  by default) of their absolute values (`absolute`). `random_params` (a pytree like `params`)
  gives the random weights instead of drawing them from `rng` (to pass another library's draws).
  `maps` may have leading axes (`[..., B, H, W]`, e.g. members), which `explain` returns too.
  Returns `[L, ..., B]`: a method that depends on the model falls towards 0 as l grows.

  `chunk` None (the default): every stop's explanation is traced on its own, with the weights it
  takes known at trace time (XLA shares the forward pass of the layers not yet randomised between
  stops); 2.5x faster on CPU than one traced explanation in a loop, at L times the compilation.
  An int: one traced explanation in a `jax.lax.map` loop over the stops, `chunk` of them vmapped
  together (vmapping batches the weights, which XLA:CPU runs as grouped convolutions: keep it at
  1 there), for explanations too large to compile L times."""
  ops.check_maps(x, maps)
  if random_params is None:
    random_params = _randomised(params, rng, randomisation)
  pos = _layer_of_leaves(params, list(layers))
  leaves, tree = jax.tree.flatten(params)
  rand_leaves = jax.tree.leaves(random_params)
  flat = lambda a: a.reshape(*a.shape[:-2], -1)  # noqa: E731
  # The original maps' ranks once, not once per stop.
  sim = ops.similarity_to(similarity, flat(jnp.abs(maps) if absolute else maps))

  def at(step):
    if isinstance(step, int):  # a stop known at trace time: its weights picked, no select
      mixed = [r if step >= p else v for p, r, v in zip(pos, rand_leaves, leaves)]
    else:
      mixed = [jnp.where(step >= p, r, v) for p, r, v in zip(pos, rand_leaves, leaves)]
    m = explain(jax.tree.unflatten(tree, mixed), x)
    return sim(flat(jnp.abs(m) if absolute else m))

  if chunk is None:
    return jnp.stack([at(step) for step in range(len(layers))])
  return ops.map_steps(at, jnp.arange(len(layers)), chunk)


def random_logit(
  explain_target: Callable, params, x, maps, other, *, similarity="spearman", absolute: bool = True
):
  """Random logit test (Sixt et al. 2020): similarity of the map of the explained target
  (`maps [B, H, W]`) with the map of another target `other [B]` (e.g. `other_targets`). Low =
  the method tells targets apart. Returns `[B]`."""
  ops.check_maps(x, maps)
  m = explain_target(params, x, other)
  a, o = (jnp.abs(maps), jnp.abs(m)) if absolute else (maps, m)
  flat = lambda v: v.reshape(*v.shape[:-2], -1)  # noqa: E731
  return ops.similarity(similarity)(flat(a), flat(o))


def other_targets(rng, idx, num_targets: int):
  """A uniformly drawn target `[B]` different from each `idx [B]` (needs `num_targets` ≥ 2)."""
  shift = jax.random.randint(rng, idx.shape, 1, num_targets)
  return (idx + shift) % num_targets
