r"""Map-only trust metrics on a realistic batch: mtljax's jitted program against Quantus 0.6.0,
side by side in one process.

    python -m profiling.benchmarks.trust_map_bench  # 512 maps of 64x64
    python -m profiling.benchmarks.trust_map_bench --batch 256 --size 224 --repeats 3

The five map-only metrics (sparseness, complexity/entropy, pointing game, relevance mass, relevance
rank) of `--batch` non-negative maps `[B, size, size]` with box masks, as a user runs them after an
explain run: mtljax = the five registry entries (`trust.registry.TRUST_METRICS`) in one jitted
program, as the explain run computes them per batch; Quantus = its five metric objects called on the same arrays (`abs=True`
and `normalise=False` where they apply; the maps are already non-negative). Also timed: the five
separate jitted `trust.map_metrics` functions (five dispatches). The numbers of both sides
are compared (max abs difference printed). Throughput = maps per second, median of `--repeats`
interleaved runs after one warm-up call (compilation reported separately).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.attribution.trust import map_metrics, registry
from profiling.benchmarks import common

NAMES = ("sparseness", "entropy", "pointing_game", "relevance_mass", "relevance_rank")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--size", type=int, default=64)
  ap.add_argument("--batch", type=int, default=512)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default="")
  args = ap.parse_args(argv)
  import quantus

  payload = common.start_run(args)
  np.seterr(all="ignore")
  b, s = args.batch, args.size
  rng = np.random.default_rng(0)
  maps = np.abs(rng.normal(size=(b, s, s))).astype(np.float32) ** 3
  masks = np.zeros((b, s, s), bool)
  lo = rng.integers(0, s // 2, (b, 2))
  for i, (r0, c0) in enumerate(lo):
    masks[i, r0 : r0 + s // 3, c0 : c0 + s // 4] = True
  mj, sj = jnp.asarray(maps), jnp.asarray(masks)
  separate = {
    "sparseness": jax.jit(map_metrics.sparseness),
    "entropy": jax.jit(map_metrics.entropy),
    "pointing_game": jax.jit(map_metrics.pointing_game),
    "relevance_mass": jax.jit(map_metrics.relevance_mass),
    "relevance_rank": jax.jit(map_metrics.relevance_rank),
  }

  @jax.jit
  def one_program(m, mk):
    """The explain run's map-only program: every entry on the same maps (masks where needed)."""
    out = {}
    for k in NAMES:
      entry = registry.TRUST_METRICS[k]
      masks = {"masks": mk} if "masks" in entry.needs else {}
      out[k] = entry.fn(registry.Inputs(maps=m, settings=None, **masks))
    return out

  def ours_separate():
    return {k: f(mj) if k in NAMES[:2] else f(mj, sj) for k, f in separate.items()}

  q = dict(disable_warnings=True, normalise=False, display_progressbar=False)
  a, sb = maps[:, None], masks[:, None].astype(np.float32)
  call = dict(model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(b, int), channel_first=True)
  metrics = {
    "sparseness": quantus.Sparseness(abs=True, **q),
    "entropy": quantus.Complexity(abs=True, **q),
    "pointing_game": quantus.PointingGame(**q),
    "relevance_mass": quantus.RelevanceMassAccuracy(**q),
    "relevance_rank": quantus.RelevanceRankAccuracy(**q),
  }

  def theirs():
    return {
      k: np.asarray(m(a_batch=a.copy(), **({} if k in NAMES[:2] else {"s_batch": sb}), **call))
      for k, m in metrics.items()
    }

  t = common.time_side_by_side(
    {
      "mtljax_one_program": lambda: one_program(mj, sj),
      "mtljax_separate": ours_separate,
      "quantus": theirs,
    },
    args.repeats,
    block=lambda r: jax.block_until_ready(r),
  )
  got, want = one_program(mj, sj), theirs()
  diff = {k: float(np.nanmax(np.abs(np.asarray(got[k]) - want[k]))) for k in NAMES}
  row = {
    "device": jax.devices()[0].device_kind,
    "maps": f"{b}x{s}x{s}",
    "one_program_maps_per_s": b / t["mtljax_one_program"]["median_s"],
    "separate_maps_per_s": b / t["mtljax_separate"]["median_s"],
    "quantus_maps_per_s": b / t["quantus"]["median_s"],
    "one_program_x_quantus": t["quantus"]["median_s"] / t["mtljax_one_program"]["median_s"],
    "separate_x_quantus": t["quantus"]["median_s"] / t["mtljax_separate"]["median_s"],
    "one_program_first_call_s": t["mtljax_one_program"]["first_call_s"],
    "max_abs_diff": max(diff.values()),
  }
  print("max |mtljax - Quantus| per metric:", diff, flush=True)
  payload["rows"] = [row]
  common.print_table([row], [(k, k) for k in row])
  if args.out:
    common.write_json(args.out, payload)


if __name__ == "__main__":
  main()
