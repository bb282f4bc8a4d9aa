r"""Ensemble attribution throughput: mtljax (every strategy) against Captum looping over the same
PyTorch models, side by side in one process.

    python -m profiling.benchmarks.attribution_bench  # cnn, mlp, resnet18 at 64 px
    python -m profiling.benchmarks.attribution_bench --models resnet18 --size 304 --batch 4
    python -m profiling.benchmarks.attribution_bench --models cnn --methods ig --members 11 --repeats 5

For each model (see profiling/benchmarks/common.py: the 3-conv CNN, the TreeSAT aerial ResNet-18,
the TreeSAT Sentinel MLP) E members are initialised with different seeds in JAX and copied into E
identical torch modules. Each method explains the logit of one class per example:
  ig          Integrated Gradients, riemann_middle, `--ig-steps` steps evaluated `--ig-chunk` at a
              time on both sides (Captum's internal_batch_size = chunk × batch); the JAX side
              splits after the model's first layer, affine in the input (the MLP's first Dense,
              the CNN's first conv, ResNet-18's stem conv), as the explain run does
              (`integrated_gradients(split=...)`: same attributions, that layer runs twice
              instead of once per step and its transpose once)
  ig_plain    the same without the split
  saliency    |gradient|
  gradcam     Grad-CAM on the last conv block (no upsampling on either side)
  smoothgrad  NoiseTunnel(Saliency) with `--sg-samples` samples, all in one batch on both sides
The JAX columns are `mtljax.attribution.ensemble.ensemble_attribute` with strategy auto (what the
explain run uses), vmap (all members in one vectorised program), loop (Python loop over a jitted
single-member function: the baseline that auto must never lose to) and map (`lax.map` over
members). Every row checks that JAX and Captum agree (mean attributions, relative max error) and
reports throughput as explained example-members per second and ratios against Captum and the
loop. Results also go to JSON (`--out`).
"""

from __future__ import annotations

import argparse
import functools
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.attribution import ensemble as ens_lib
from mtljax.attribution import layers
from mtljax.attribution import methods as attr_lib
from profiling.benchmarks import common

METHODS = ("ig", "saliency", "gradcam", "smoothgrad", "ig_plain")
DEFAULT_METHODS = ("ig", "saliency", "gradcam", "smoothgrad")
STRATEGIES = ("auto", "vmap", "loop", "map")


def jax_attribute_fn(model, name, method, targets, a):
  """`(variables, x) -> attribution` of one member, closed over the method's settings."""

  def score(v, x):
    return jnp.take_along_axis(model.apply(v, x), targets[:, None], axis=1)[:, 0]

  if method in ("ig", "ig_plain"):
    split = None
    if method == "ig":
      split = layers.affine_split(score, common.AFFINE_FIRST_LAYER[name])
    return lambda v, x: attr_lib.integrated_gradients(
      score, v, x, steps=a.ig_steps, batch_steps=a.ig_chunk, split=split
    )
  if method == "saliency":
    return lambda v, x: attr_lib.saliency(score, v, x)
  if method == "gradcam":
    layer_fn = layers.flax_layer_fn(score, common.GRAD_CAM_LAYER[name])
    return lambda v, x: attr_lib.grad_cam(layer_fn, v, x)
  if method == "smoothgrad":
    key = jax.random.key(0)
    # PAIR's relative noise level: stdev · (max − min) of each example; Captum gets the same
    # absolute level (computed below), so both add noise of equal size.
    return lambda v, x: attr_lib.smoothgrad(
      attr_lib.saliency, score, v, x, key, samples=a.sg_samples, stdev=a.sg_stdev
    )
  raise ValueError(method)


def captum_fn(torch_models, name, method, x_np, targets_np, a):
  import torch
  from captum import attr as cattr

  x = torch.from_numpy(common.to_nchw(x_np))
  t = torch.from_numpy(targets_np.astype(np.int64))
  b = x.shape[0]
  spread = float(np.mean(x_np.reshape(b, -1).max(1) - x_np.reshape(b, -1).min(1)))

  def one(m):
    if method == "smoothgrad":
      return cattr.NoiseTunnel(cattr.Saliency(m)).attribute(
        x, nt_type="smoothgrad", nt_samples=a.sg_samples, stdevs=a.sg_stdev * spread, target=t
      )
    # ig_plain is IG without the affine split on the mtljax side: the same Captum reference
    return common.captum_attribution(m, name, "ig" if method == "ig_plain" else method, x, t, a)

  def run():
    outs = [one(m).detach() for m in torch_models]
    return torch.stack(outs).mean(0)

  return run


def to_nhwc_map(t):
  a = t.numpy()  # [B, C, H, W] attributions → NHWC; Grad-CAM maps [B, h, w] pass through
  return np.moveaxis(a, 1, -1) if a.ndim == 4 else a


def bench_model(name, a, rows, payload):
  size = a.size if name != "mlp" else 0
  batch = a.mlp_batch if name == "mlp" else a.batch
  model, stacked = common.init_ensemble(name, size, a.members)
  rng = np.random.default_rng(0)
  x_np = rng.normal(size=(batch, *common.input_shape(name, size))).astype(np.float32)
  targets_np = (np.arange(batch) % common.NUM_CLASSES[name]).astype(np.int32)
  x, targets = jnp.asarray(x_np), jnp.asarray(targets_np)
  torch_models = []
  if not a.skip_captum:
    torch_models = [common.torch_model(name, common.member(stacked, i)) for i in range(a.members)]
    for p in (p for m in torch_models for p in m.parameters()):
      p.requires_grad_(False)
  for method in a.methods:
    if method == "gradcam" and name == "mlp":
      continue
    fn = jax_attribute_fn(model, name, method, targets, a)
    fns = (
      {}
      if a.skip_captum
      else {"captum": captum_fn(torch_models, name, method, x_np, targets_np, a)}
    )
    for s in a.strategies:
      fns[s] = functools.partial(
        lambda s: ens_lib.ensemble_attribute(
          fn, stacked, x, strategy=s, member_chunk=a.member_chunk
        )[1],
        s,
      )
    print(
      f"\n{name} {method}: E={a.members}, batch {batch}, input {x_np.shape[1:]} ...", flush=True
    )
    times = common.time_side_by_side(fns, a.repeats)
    err = None
    if "captum" in fns:
      err = common.max_rel_diff(fns[a.strategies[0]](), to_nhwc_map(fns["captum"]()))
    work = a.members * batch
    row = {
      "model": name,
      "method": method,
      "members": a.members,
      "batch": batch,
      "input": "x".join(map(str, x_np.shape[1:])),
      "max_rel_diff_vs_captum": err,
      "auto_picks": ens_lib.resolve_strategy("auto", stacked, attribute_fn=fn, inputs=x),
    }
    for k, t in times.items():
      row[f"{k}_s"] = t["median_s"]
      row[f"{k}_per_s"] = work / t["median_s"]
      row[f"{k}_first_call_s"] = t["first_call_s"]
    row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for s in a.strategies:
      if "captum" in times:
        row[f"{s}_vs_captum"] = times["captum"]["median_s"] / times[s]["median_s"]
      if "loop" in times:
        row[f"{s}_vs_loop"] = times["loop"]["median_s"] / times[s]["median_s"]
    rows.append(row)
    payload["rows"] = rows
    print(
      "  "
      + " | ".join(f"{k} {t['median_s']:.3f} s" for k, t in times.items())
      + "".join(
        f" | {s} {row[f'{s}_vs_captum']:.2f}x captum"
        for s in a.strategies
        if f"{s}_vs_captum" in row
      )
      + (f" | max rel diff {err:.1e}" if err is not None else "")
      + f" | peak RSS {row['peak_rss_gib']:.2f} GiB",
      flush=True,
    )


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument(
    "--models", nargs="+", default=["cnn", "mlp", "resnet18"], choices=list(common.NUM_CLASSES)
  )
  ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
  ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
  ap.add_argument("--members", type=int, default=11)
  ap.add_argument("--member-chunk", type=int, default=None)
  ap.add_argument("--size", type=int, default=64, help="image side (cnn, resnet18)")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--mlp-batch", type=int, default=256)
  ap.add_argument("--ig-steps", type=int, default=32)
  ap.add_argument("--ig-chunk", type=int, default=8, help="IG steps per vectorised call")
  ap.add_argument("--sg-samples", type=int, default=16)
  ap.add_argument("--sg-stdev", type=float, default=0.15)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
  ap.add_argument(
    "--skip-captum",
    action="store_true",
    help="JAX only (e.g. to read the peak memory of the JAX side alone)",
  )
  ap.add_argument("--out", default="profiling/results/attribution_bench.json")
  common.add_conv_option(ap)
  a = ap.parse_args()
  payload = common.start_run(a, torch_threads=0 if a.skip_captum else a.threads)
  with common.conv_backend(a.conv):
    run(a, payload)


def run(a, payload):
  t0 = time.perf_counter()
  rows = []
  for name in a.models:
    bench_model(name, a, rows, payload)
    common.write_json(a.out, payload)
  cols = [("model", "model"), ("method", "method"), ("input", "input")]
  if not a.skip_captum:
    cols.append(("captum_per_s", "Captum /s"))
  cols += [(f"{s}_per_s", f"{s} /s") for s in a.strategies]
  if not a.skip_captum:
    cols += [(f"{s}_vs_captum", f"{s} ÷ Captum") for s in a.strategies if s in ("auto", "vmap")]
  if "loop" in a.strategies:
    cols += [(f"{s}_vs_loop", f"{s} ÷ loop") for s in a.strategies if s != "loop"]
  cols += [
    ("auto_picks", "auto picks"),
    ("max_rel_diff_vs_captum", "rel. diff"),
    ("peak_rss_gib", "peak RSS GiB"),
  ]
  print(
    f"\nthroughput in explained example·members per second; {payload['device']['device']} "
    f"({payload['device']['backend']}), total {time.perf_counter() - t0:.0f} s"
  )
  payload["table"] = common.print_table(rows, cols)
  common.write_json(a.out, payload)


if __name__ == "__main__":
  main()
