"""Per-example (and per-batch) transforms of the pipeline: moments for the input statistics,
select, normalize, augment (random flips / 90° rotations of images and dense targets) and
``Prepare`` (select -> normalize -> ``valid``). The example contract: ``mtljax.data.pipeline``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Example = dict[str, Any]
Stats = Mapping[str, Mapping[str, Sequence[float]]]


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
  """Map over nested dicts (leaves: arrays / scalars)."""
  if isinstance(tree, Mapping):
    return {k: tree_map(fn, tree[k], *(r[k] for r in rest)) for k in tree}
  return fn(tree, *rest)


def example_moments(
  example: Example, input_names: tuple[str, ...]
) -> dict[str, tuple[np.ndarray, ...]]:
  """Per-channel (count, mean, M2) of each input of one example, NaN ignored (float64 [C] each)."""
  out = {}
  for name in input_names:
    x = example["inputs"][name]
    if isinstance(x, Mapping):  # time series {"values", "days", "mask"}: real steps only
      x = np.asarray(x["values"])[np.asarray(x["mask"]) > 0]
    x = np.asarray(x)
    x = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    if x.dtype.kind == "f" and np.isnan(x).any():  # slow path, float64 throughout
      x = x.astype(np.float64)
      ok = ~np.isnan(x)
      count = ok.sum(axis=0).astype(np.float64)
      total = np.where(ok, x, 0.0).sum(axis=0)
      mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
      m2 = np.where(ok, (x - mean) ** 2, 0.0).sum(axis=0)
    else:  # fast path: float32 deviations, float64 accumulation, exact shift correction
      x = x.astype(np.float32, copy=False)
      count = np.full(x.shape[1], float(x.shape[0]))
      mean = x.mean(axis=0, dtype=np.float64)
      shift = mean.astype(np.float32)
      d = x - shift
      m2 = np.einsum("ij,ij->j", d, d, dtype=np.float64) - count * (mean - shift) ** 2
    out[name] = (count, mean, m2)
  return out


def combine_moments(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
  """Chan et al.'s pairwise update of (count, mean, M2)."""
  na, ma, m2a = a
  nb, mb, m2b = b
  n = na + nb
  safe = np.maximum(n, 1.0)
  delta = mb - ma
  mean = ma + delta * nb / safe
  m2 = m2a + m2b + delta**2 * na * nb / safe
  return n, mean, m2


def select(example: Example, input_names: Sequence[str], task_names: Sequence[str]) -> Example:
  """Keep only the requested inputs and tasks (targets and masks); keep ``meta``.

  A task without a mask entry gets mask 1.0.

  Raises:
    KeyError: a requested input or task is not in the example (the message lists what is).
  """
  inputs, targets, masks = example["inputs"], example["targets"], example.get("mask", {})
  missing_in = [k for k in input_names if k not in inputs]
  missing_t = [k for k in task_names if k not in targets]
  if missing_in or missing_t:
    raise KeyError(
      f"requested inputs {missing_in} / tasks {missing_t} not in the example; "
      f"inputs: {sorted(inputs)}, targets: {sorted(targets)}"
    )
  return {
    "inputs": {k: inputs[k] for k in input_names},
    "targets": {k: targets[k] for k in task_names},
    "mask": {k: masks[k] if k in masks else np.float32(1.0) for k in task_names},
    "meta": dict(example.get("meta", {})),
  }


def _stats_arrays(stats: Stats | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """JSON stats -> {name: (mean float32 [C], std float32 [C])}; already-converted entries pass."""
  out = {}
  for k, v in (stats or {}).items():
    out[k] = (
      v
      if isinstance(v, tuple)
      else (np.asarray(v["mean"], np.float32), np.asarray(v["std"], np.float32))
    )
  return out


def normalize(
  example: Example,
  stats: Stats,
  input_names: Sequence[str] | None = None,
  *,
  on_device: bool = False,
) -> Example:
  """Standardise inputs per channel and replace NaN (nodata) by 0.0.

  Each input named in ``stats`` becomes ``(x - mean) / std`` (float32, channels = last axis), so
  the NaN fill 0.0 equals the channel mean. Inputs not in ``stats`` pass through as float32 (their
  NaN also become 0.0, and so do infinities anywhere, so no non-finite value leaves this
  function). If ``input_names`` is given, other inputs are dropped. Targets, masks and meta are
  passed through. ``stats`` is ``compute_stats``' JSON form.

  ``on_device``: an input named in ``stats`` whose array has an integer dtype (8/16-bit imagery
  read through a source's ``stored_inputs`` view) is passed through unchanged; the train / eval
  step standardises it on the accelerator (``standardize_on_device``, the same bytes). An integer
  array has no NaN, so nothing else of this function applies to it.
  """
  arrays = _stats_arrays(stats)
  names = list(example["inputs"]) if input_names is None else list(input_names)
  inputs = {}
  for k in names:
    if isinstance(example["inputs"][k], Mapping):
      inputs[k] = _normalize_series(example["inputs"][k], arrays.get(k))
      continue
    x = np.asarray(example["inputs"][k])
    if on_device and k in arrays and x.dtype.kind in "ui":
      inputs[k] = x
      continue
    if k in arrays:
      x = _standardize(x, *arrays[k])
    else:
      x = x.astype(np.float32)  # a copy: the source's arrays are never modified
    if not np.isfinite(np.add.reduce(x, axis=None)):  # one cheap pass; exact check only then
      bad = ~np.isfinite(x)
      if bad.any():
        x = np.where(bad, np.float32(0.0), x)
    inputs[k] = x
  return {**example, "inputs": inputs}


def _standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """``(float32(x) - mean) / std`` per channel (last axis) as a new float32 array.

  Bit-identical to the plain broadcast, but computed on ``[rows, W * C]`` against ``mean`` / ``std``
  tiled along a row: numpy's inner loop then runs over a whole row instead of C (= 4) values,
  about 5x faster on a 304x304x4 tile; the cast from an integer dtype is fused into the
  subtraction.
  """
  if x.ndim >= 2 and x.shape[-1] == mean.shape[-1] and x.shape[-1] > 0:
    rows = x.reshape(-1, x.shape[-2] * x.shape[-1])
    reps = x.shape[-2]
    out = np.subtract(rows, np.tile(mean, reps), dtype=np.float32)
    np.divide(out, np.tile(std, reps), out=out)
    return out.reshape(x.shape)
  out = np.subtract(x, mean, dtype=np.float32)
  np.divide(out, std, out=out)
  return out


def standardize_on_device(inputs: Mapping[str, Any], stats: Stats | None) -> dict[str, Any]:
  """The device half of ``normalize(..., on_device=True)`` (jax; call it inside a jitted step).

  Every array input named in ``stats`` that arrives with an integer dtype becomes
  ``(float32(x) - mean) / std`` per channel (last axis); float inputs (already standardised on
  the host), time series and inputs without statistics pass through. Which inputs change is
  decided from dtypes at trace time, so a step fed host-normalised batches compiles to the same
  program as before. The values are those of the host path: the cast is exact and IEEE
  subtraction and division round the same on both sides (``tests/test_prepared.py`` checks it).
  """
  import jax
  import jax.numpy as jnp

  arrays = _stats_arrays(stats)
  out = dict(inputs)
  for name, x in inputs.items():
    if name in arrays and not isinstance(x, Mapping) and jnp.issubdtype(x.dtype, jnp.integer):
      mean, std = arrays[name]
      # XLA turns a division by a broadcast into a multiplication by its reciprocal (1 ulp off
      # numpy's division); behind the barrier the divisor is a full array and stays a division.
      std = jax.lax.optimization_barrier(jnp.broadcast_to(jnp.asarray(std), x.shape))
      out[name] = (x.astype(jnp.float32) - jnp.asarray(mean)) / std
  return out


def _normalize_series(
  series: Mapping[str, Any], stats: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, np.ndarray]:
  """A padded time series ``{"values": [T, F], "days": [T], "mask": [T]}`` (mask 1 = real step):
  ``values`` standardised per feature (statistics over real steps, see ``compute_stats``), with
  NaN and padded steps set to 0.0; ``days`` and ``mask`` stay int32 (attribution methods hold
  integer leaves fixed)."""
  mask = np.asarray(series["mask"]).astype(np.int32)
  x = np.asarray(series["values"], np.float32)
  if stats is not None:
    x = (x - stats[0]) / stats[1]
  x = np.where(np.isfinite(x) & (mask[:, None] > 0), x, np.float32(0.0)).astype(np.float32)
  return {"values": x, "days": np.asarray(series["days"]).astype(np.int32), "mask": mask}


def _is_image(x, batched: bool = False) -> bool:
  """An image-like array ``[H, W, C]`` with H == W (``[B, H, W, C]`` when ``batched``)."""
  a = int(batched)
  return x.ndim == 3 + a and x.shape[a] == x.shape[a + 1]


def _is_dense(y, sides: set[int], batched: bool = False) -> bool:
  """A dense target / mask ``[H, W, ...]`` (``[B, H, W, ...]``) whose square side is in ``sides``."""
  a = int(batched)
  return y.ndim >= 2 + a and y.shape[a] == y.shape[a + 1] and y.shape[a] in sides


def _geometric(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
  """rot90 by ``k`` then an optional left-right flip of ``x`` [H, W, ...], as a contiguous copy.

  The trailing axes of a contiguous ``x`` are moved as one opaque item per pixel (a void view):
  the copy then moves whole pixels (16 bytes for 4 float32 bands) instead of single values, about
  2x faster, with the same bytes."""
  x = np.asarray(x)
  item = x.itemsize * int(np.prod(x.shape[2:], dtype=np.int64))
  pixel = x.ndim > 2 and x.flags.c_contiguous and item > 0
  v = x.reshape(*x.shape[:2], -1).view(np.dtype((np.void, item)))[..., 0] if pixel else x
  if k:
    v = np.rot90(v, k, axes=(0, 1))
  if flip:
    v = v[:, ::-1]
  v = np.ascontiguousarray(v)
  return v[..., None].view(x.dtype).reshape(v.shape + x.shape[2:]) if pixel else v


def augment(
  example: Example, rng: np.random.Generator, *, flip: bool = True, rot90: bool = True
) -> Example:
  """One random dihedral transform (rot90 by k*90 deg, then optional left-right flip) for a whole example.

  The same transform applies to every image-like input (ndim 3, H == W, [H, W, C]) — co-registered
  modalities of different resolutions stay aligned — and to every target / mask with ndim >= 2
  whose leading two axes are square and match the side of a transformed input (dense targets).
  Other arrays are untouched. Usable as ``MapDataset.random_map(functools.partial(augment, ...))``.
  """
  k = int(rng.integers(4)) if rot90 else 0
  f = bool(rng.integers(2)) if flip else False
  if k == 0 and not f:
    return example
  inputs = dict(example["inputs"])
  sides = set()
  for name, x in inputs.items():
    if isinstance(x, Mapping):  # time series: nothing to rotate
      continue
    x = np.asarray(x)
    if _is_image(x):
      inputs[name] = _geometric(x, k, f)
      sides.add(x.shape[0])

  def dense(tree: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(tree)
    for name, y in tree.items():
      y = np.asarray(y)
      if _is_dense(y, sides):
        out[name] = _geometric(y, k, f)
    return out

  out = {**example, "inputs": inputs}
  if "targets" in example:
    out["targets"] = dense(example["targets"])
  if "mask" in example:
    out["mask"] = dense(example["mask"])
  return out


def augment_batch(batch: Example, rng, *, flip: bool = True, rot90: bool = True) -> Example:
  """``augment`` for a whole batch on device (jax): one random dihedral transform per example.

  The same rules as ``augment``: every image-like input ``[B, H, W, C]`` (H == W; time series and
  vectors untouched) and every target / mask ``[B, H, W, ...]`` whose side matches a transformed
  input get example b's transform. Jittable and vmappable: an ensemble member can draw its own
  transforms of a shared batch from its own ``rng`` (``train.make_ensemble_train_step``).
  Composed with the host pipeline's ``augment`` of the same options, each member sees each
  example under an independent, uniformly random transform, as separately trained members would.
  """
  import jax
  import jax.numpy as jnp

  if not (flip or rot90):
    return batch
  inputs = batch["inputs"]
  images = [
    name for name, x in inputs.items() if not isinstance(x, Mapping) and _is_image(x, batched=True)
  ]
  if not images:
    return batch
  sides = {inputs[name].shape[1] for name in images}
  size = next(iter(jax.tree.leaves(inputs))).shape[0]
  k_rng, f_rng = jax.random.split(rng)
  k = jax.random.randint(k_rng, (size,), 0, 4) if rot90 else jnp.zeros((size,), jnp.int32)
  f = jax.random.bernoulli(f_rng, 0.5, (size,)) if flip else jnp.zeros((size,), bool)

  def transform(x):
    def one(xi, ki, fi):  # xi [H, W, ...]: rot90 by ki quarter turns, then a left-right flip
      if rot90:
        xi = jax.lax.switch(
          ki, [functools.partial(jnp.rot90, k=r, axes=(0, 1)) for r in range(4)], xi
        )
      return jnp.where(fi, xi[:, ::-1], xi) if flip else xi

    return jax.vmap(one)(x, k, f)

  def dense(tree):
    return {
      name: transform(y) if _is_dense(y, sides, batched=True) else y for name, y in tree.items()
    }

  out = {
    **batch,
    "inputs": {name: transform(x) if name in images else x for name, x in inputs.items()},
  }
  for key in ("targets", "mask"):
    if key in batch:
      out[key] = dense(batch[key])
  return out


class Prepare:
  """select -> normalize -> add ``valid``; picklable (grain may run it in worker processes).

  ``on_device``: integer-stored inputs stay integer (see ``normalize``); the step that consumes
  the batches must then apply ``standardize_on_device``."""

  def __init__(
    self,
    input_names: Sequence[str],
    task_names: Sequence[str],
    stats: Stats | None,
    on_device: bool = False,
  ):
    self.input_names = tuple(input_names)
    self.task_names = tuple(task_names)
    self.stats = _stats_arrays(stats)
    self.on_device = bool(on_device)

  def __call__(self, example: Example) -> Example:
    return self.finish(self.select(example))

  def select(self, example: Example) -> Example:
    return select(example, self.input_names, self.task_names)

  def finish(self, example: Example) -> Example:
    """normalize -> ``valid`` of a selected example."""
    ex = normalize(example, self.stats, on_device=self.on_device)
    ex["targets"] = {k: np.asarray(v) for k, v in ex["targets"].items()}
    ex["mask"] = {k: np.asarray(v, np.float32) for k, v in ex["mask"].items()}
    ex["valid"] = np.float32(1.0)
    return ex


class AugmentThenFinish:
  """``augment`` then ``Prepare.finish`` of a selected example (a ``random_map``; picklable).

  The same bytes as augmenting the normalised example (normalisation is per channel and per
  value, augmentation moves whole pixels), but the pixels moved are the source's (1 byte per
  value for 8-bit imagery read through ``stored_inputs``, instead of 4)."""

  def __init__(self, prepare: Prepare, options: dict[str, bool]):
    self.prepare, self.options = prepare, dict(options)

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    return self.prepare.finish(augment(example, rng, **self.options))


def augment_options(augment_cfg: Any) -> dict[str, bool] | None:
  """None/False -> None; True -> defaults; a mapping / ConfigDict -> its flip/rot90 (``enabled`` may turn it off)."""
  if augment_cfg is None or augment_cfg is False:
    return None
  if augment_cfg is True:
    return {"flip": True, "rot90": True}
  cfg = augment_cfg.to_dict() if hasattr(augment_cfg, "to_dict") else dict(augment_cfg)
  if not cfg.pop("enabled", True):
    return None
  unknown = set(cfg) - {"flip", "rot90"}
  if unknown:
    raise ValueError(f"unknown augmentation options {sorted(unknown)}; known: flip, rot90, enabled")
  kw = {"flip": bool(cfg.get("flip", True)), "rot90": bool(cfg.get("rot90", True))}
  return kw if any(kw.values()) else None
