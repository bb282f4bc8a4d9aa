"""Chunk sizes of the explain run from XLA's compiled memory analysis, against a budget.

An attribution call holds `examples × targets × members × steps` forward/backward passes at once
unless it is told to evaluate fewer together (`jax.lax.map`/`scan` over chunks). `plan` picks the
chunks: it compiles the call (`jax.jit(f).lower(...).compile().memory_analysis()`: temp +
argument + output bytes), and where that exceeds the budget it shrinks one dimension at a time, in
the order given (the caller lists the ones that leave the numbers unchanged first): the memory of
a compiled program is close to affine in a chunk size, so two small compilations (chunk 1 and 2)
give the line, the largest chunk on it below the budget is tried, halved until its compilation
fits. Plans are cached per key (the caller's shapes and settings).

`config.explain.memory_budget`: a fraction (≤ 1) of the free memory of the device the run uses
(on CPU the host's available memory, on an accelerator `bytes_limit - bytes_in_use` of
`device.memory_stats()`), or bytes (> 1); 0 = no sizing (the configured chunks as they are).
`guard` turns an allocation failure that still happens into one `ExplainError` naming the knobs.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.explain.setup import ExplainError

#: Plans already made: `{key: {dimension: chunk}}`.
_PLANS: dict = {}


def free_bytes(device=None) -> int:
  """Free memory of `device` (default: JAX's first device) in bytes: on CPU the host's available
  memory (`MemAvailable` of /proc/meminfo, else free pages from `os.sysconf`), otherwise the
  device's `bytes_limit - bytes_in_use`."""
  device = device or jax.devices()[0]
  stats = None
  if device.platform != "cpu":
    try:
      stats = device.memory_stats()
    except Exception:  # noqa: BLE001 (a backend without memory statistics)
      stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def budget_bytes(setting, device=None) -> int | None:
  """Bytes of `config.explain.memory_budget`: a fraction (0 < s ≤ 1) of `free_bytes`, bytes
  (> 1), or None for 0 (no sizing). ExplainError for a negative setting."""
  value = float(setting or 0)
  if value < 0:
    raise ExplainError(
      f"config.explain.memory_budget={setting!r} must be a fraction of the free memory (0 < s "
      "<= 1), bytes (> 1) or 0 (no sizing)"
    )
  if value == 0:
    return None
  return int(value * free_bytes(device)) if value <= 1 else int(value)


def abstract(tree, rows: int | None = None):
  """Shape-only stand-ins (`jax.ShapeDtypeStruct`) of `tree`'s leaves, for `program_bytes`; with
  `rows`, every leaf's leading axis has that length (one chunk of examples)."""

  def one(a):
    shape = np.shape(a) if rows is None else (rows,) + np.shape(a)[1:]
    return jax.ShapeDtypeStruct(shape, jnp.result_type(a))

  return jax.tree.map(one, tree)


def program_bytes(fn: Callable, *args) -> int:
  """Bytes XLA assigns to `jax.jit(fn)` on `args` (arrays or `jax.ShapeDtypeStruct`s): its
  temporaries, arguments and outputs (`memory_analysis()` of the compiled program)."""
  stats = jax.jit(fn).lower(*args).compile().memory_analysis()
  return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes)


def _fit(measure: Callable[[int], int], largest: int, budget: int) -> tuple[int, int]:
  """`(chunk, bytes)`: the largest chunk in `[1, largest]` whose `measure` fits `budget` (found
  on the affine fit through chunks 1 and 2, then halved until it fits), or 1 and its bytes when
  none does. The chunk is evened out (`ceil(n / ceil(n / c))`), so the last chunk pads least."""
  one = measure(1)
  if one > budget or largest == 1:
    return 1, one
  slope = max(measure(2) - one, 1)
  chunk = min(largest, 1 + (budget - one) // slope)
  while chunk > 1:
    chunk = -(-largest // -(-largest // chunk))
    used = measure(chunk)
    if used <= budget:
      return chunk, used
    chunk //= 2
  return 1, one


def plan(
  key,
  dims: Sequence[tuple[str, int]],
  measure: Callable[[Mapping[str, int]], int],
  budget: int | None,
) -> dict[str, int]:
  """Chunk per dimension so that `measure(chunks)` (bytes) fits `budget`.

  Args:
    key: what the plan depends on (shapes, settings, budget): plans are cached under it.
    dims: `(name, largest)` in the order to shrink them; a dimension is shrunk only once those
      before it are at 1 and the program still does not fit.
    measure: bytes of the program with chunks `{name: chunk}` (e.g. `program_bytes`).
    budget: bytes; None keeps every dimension at its largest (no compilation).

  Returns:
    `{name: chunk}`; every dimension at its largest when that fits (or budget is None).
  """
  chunks = {name: int(largest) for name, largest in dims}
  if budget is None:
    return chunks
  full_key = (key, tuple(dims), budget)
  if full_key in _PLANS:
    return dict(_PLANS[full_key])
  used = measure(chunks)
  for name, largest in dims:
    if used <= budget:
      break
    if largest <= 1:
      continue
    chunks[name], used = _fit(lambda c, name=name: measure({**chunks, name: c}), largest, budget)
  _PLANS[full_key] = dict(chunks)
  return chunks


def is_allocation_failure(e: BaseException) -> bool:
  """Whether `e` is an out-of-memory failure (`MemoryError`, XLA's RESOURCE_EXHAUSTED)."""
  if isinstance(e, MemoryError):
    return True
  text = str(e)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text


@contextlib.contextmanager
def guard(what: str, knobs: Sequence[str]) -> Iterator[None]:
  """Turns an allocation failure inside into one ExplainError naming `what` failed and the
  `knobs` (`--config.explain....=` settings) that make it fit; other errors pass through."""
  try:
    yield
  except Exception as e:  # noqa: BLE001 (only allocation failures are rewritten)
    if not is_allocation_failure(e):
      raise
    first = " ".join(str(e).strip().splitlines()[0].split())[:200] if str(e).strip() else ""
    raise ExplainError(
      f"{what} ran out of memory ({type(e).__name__}: {first}); lower "
      + " or ".join(knobs)
      + " (results of the methods before it are kept)"
    ) from None
