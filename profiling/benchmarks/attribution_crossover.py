r"""Where the member loop overtakes vmap: the measurement behind `ensemble.resolve_strategy`'s
`LOOP_BELOW_PARAM_SHARE` for conv models on CPU with oneDNN's convolutions.

    python -m profiling.benchmarks.attribution_crossover
    python -m profiling.benchmarks.attribution_crossover --cases resnet18:ig:2 cnn:saliency:64

Each case `model:method:batch` (the models and methods of attribution_bench.py, E members at
`--size` px) is timed with both strategies side by side (warm, interleaved, medians of
`--repeats`), beside the figure "auto" decides by: one member's parameter bytes per byte its
attribution program writes (`ensemble.param_share`, from the traced program). A loop call copies
the member's parameters out of the stack; vmap holds every member's activations at once. The
table is sorted by that share, so the crossover reads off as the share where loop ÷ vmap passes 1.
"""

from __future__ import annotations

import argparse
import os

import jax.numpy as jnp
import numpy as np

from mtljax import fileio
from mtljax.attribution import ensemble as ens_lib
from profiling.benchmarks import attribution_bench, common

DEFAULT_CASES = (
  "cnn:saliency:4",
  "cnn:gradcam:4",
  "cnn:ig:4",
  "cnn:ig:16",
  "resnet18:saliency:4",
  "resnet18:gradcam:4",
  "resnet18:saliency:32",
  "resnet18:ig:1",
  "resnet18:ig:4",
)


def measure(case: str, a) -> dict:
  name, method, batch = case.split(":")
  batch = int(batch)
  model, stacked = common.init_ensemble(name, a.size, a.members)
  shape = (batch, *common.input_shape(name, a.size))
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
  targets = jnp.asarray(np.arange(batch) % common.NUM_CLASSES[name], jnp.int32)
  fn = attribution_bench.jax_attribute_fn(model, name, method, targets, a)
  share = ens_lib.param_share(fn, stacked, x)
  fns = {
    s: (lambda s=s: ens_lib.ensemble_attribute(fn, stacked, x, strategy=s)[1])
    for s in ("vmap", "loop")
  }
  times = common.time_side_by_side(fns, a.repeats)
  vmap_s, loop_s = times["vmap"]["median_s"], times["loop"]["median_s"]
  auto = ens_lib.resolve_strategy("auto", stacked, attribute_fn=fn, inputs=x)
  row = {"case": case, "param_share": share, "vmap_s": vmap_s, "loop_s": loop_s}
  row.update({"loop_over_vmap": loop_s / vmap_s, "auto_picks": auto})
  row["auto_is_faster"] = (auto == "loop") == (loop_s < vmap_s)
  print(
    f"  {case:22s} share {share:.4f} | vmap {vmap_s:.3f} s | loop {loop_s:.3f} s | "
    f"loop/vmap {loop_s / vmap_s:.2f} | auto picks {auto}",
    flush=True,
  )
  return row


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES))
  ap.add_argument("--members", type=int, default=11)
  ap.add_argument("--size", type=int, default=64)
  ap.add_argument("--ig-steps", type=int, default=32)
  ap.add_argument("--ig-chunk", type=int, default=8)
  ap.add_argument("--sg-samples", type=int, default=16)
  ap.add_argument("--sg-stdev", type=float, default=0.15)
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--out", default="profiling/results/attribution_crossover.json")
  common.add_conv_option(ap)
  a = ap.parse_args(argv)
  if a.conv == "auto":
    a.conv = "onednn"  # the rule is about oneDNN's convolutions
  with common.conv_backend(a.conv):
    rows = [measure(c, a) for c in a.cases]
  rows.sort(key=lambda r: r["param_share"])
  print(f"\nthreshold LOOP_BELOW_PARAM_SHARE = {ens_lib.LOOP_BELOW_PARAM_SHARE}")
  print("| case | param share | vmap s | loop s | loop ÷ vmap | auto picks | auto faster |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['case']} | {r['param_share']:.4f} | {r['vmap_s']:.3f} | {r['loop_s']:.3f} | "
      f"{r['loop_over_vmap']:.2f} | {r['auto_picks']} | {r['auto_is_faster']} |"
    )
  os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
  fileio.write_json(a.out, {"args": vars(a), "rows": rows})
  print(f"wrote {a.out}")


if __name__ == "__main__":
  main()
