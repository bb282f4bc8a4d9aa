r"""Where the time of one attribution call goes: a per-op profile of the JAX call (jax.profiler)
beside one of Captum's call (torch.profiler), for one member, on the same model and weights.

    python -m profiling.benchmarks.attribution_profile                              # 64 px, batch 4
    python -m profiling.benchmarks.attribution_profile --models resnet18 --size 224 --batch 8
    OMP_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \
      python -m profiling.benchmarks.attribution_profile --threads 1          # one thread each

For each model (profiling/benchmarks/common.py: the 3-conv CNN, ResNet-18) and method (Saliency,
Grad-CAM, IG with the affine split as the explain run does), the jitted JAX call is traced
`--repeats` times and every XLA op of the trace is put in a category by its HLO instruction:
the oneDNN kernels (custom calls, by kind), XLA's convolutions, the max pool and its derivative
(the `max_pool` named scope), batch norm, ReLU, the head's matmul, other fusions. "between ops"
is the call's wall time minus its ops' time (dispatch, waiting; negative when ops overlap). With
`--conv onednn` (or auto where it loads) the oneDNN library's own counters follow: the problems it
ran, the time in the convolution primitives and in the kernel reorders (HWIO to oneDNN's blocked
layout, every call), the primitive cache misses, the threads that called it. Captum's call is
profiled the same way (self CPU time per aten op, grouped alike).

Single-threaded (the third command: oneDNN's, PyTorch's and XLA's threads) the shares count the
work of each side without the threads' interplay; with the defaults they include it. On a busy
machine read the shares, not the absolute times. Results also go to JSON (`--out`).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.attribution import layers
from mtljax.attribution import methods as attr_lib
from profiling.benchmarks import common

METHODS = ("saliency", "gradcam", "ig")


def jax_method(model, name, method, targets, a):
  def score(v, x):
    return jnp.take_along_axis(model.apply(v, x), targets[:, None], axis=1)[:, 0]

  if method == "saliency":
    return lambda v, x: attr_lib.saliency(score, v, x)
  if method == "gradcam":
    layer_fn = layers.flax_layer_fn(score, common.GRAD_CAM_LAYER[name])
    return lambda v, x: attr_lib.grad_cam(layer_fn, v, x)
  split = layers.affine_split(score, common.AFFINE_FIRST_LAYER[name])
  return lambda v, x: attr_lib.integrated_gradients(
    score, v, x, steps=a.ig_steps, batch_steps=a.ig_chunk, split=split
  )


# ============================================================================ JAX: HLO categories
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([\w\-]+)\((.*)$")
# Instructions whose trace events hold other ops' events (loops, calls) or that do no work.
_CONTAINERS = {
  "while",
  "conditional",
  "call",
  "parameter",
  "constant",
  "tuple",
  "get-tuple-element",
}


def hlo_categories(hlo: str) -> dict[str, str]:
  """`{instruction name: category}` of a compiled module's text (the names its trace events
  carry)."""
  bodies, current = collections.defaultdict(set), None
  instrs = {}
  for line in hlo.splitlines():
    head = re.match(r"^%?([\w.\-]+) .*\{\s*$", line)
    if head and " = " not in line.split("{")[0]:
      current = head.group(1)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, op, rest = m.groups()
    if current:
      bodies[current].add(op)
    instrs[name] = (op, rest)
  out = {}
  for name, (op, rest) in instrs.items():
    op_name = (re.search(r'op_name="([^"]*)"', rest) or [None, ""])[1]
    called = re.search(r"calls=%?([\w.\-]+)", rest)
    ops = bodies.get(called.group(1), set()) if called else {op}
    target = re.search(r'custom_call_target="([^"]+)"', rest)
    if target and target.group(1).startswith("mtljax_onednn_conv_"):
      out[name] = "oneDNN " + target.group(1)[len("mtljax_onednn_conv_") :]
    elif "convolution" in ops:
      out[name] = "XLA convolution"
    elif "max_pool" in op_name or ops & {"reduce-window", "select-and-scatter"}:
      out[name] = "max pool"
    elif op not in _CONTAINERS:
      path = op_name.split("/")
      if "dot" in ops:
        out[name] = "matmul (head)"
      elif any(re.fullmatch(r"\w*bn\d?", p) for p in path):
        out[name] = "batch norm"
      elif any("relu" in p for p in path):
        out[name] = "relu"
      else:
        out[name] = "other ops"
  return out


def _trace_events(run, repeats: int) -> list[dict]:
  folder = tempfile.mkdtemp(prefix="mtljax_profile_")
  try:
    jax.profiler.start_trace(folder, create_perfetto_trace=True)
    for _ in range(repeats):
      run()
    jax.profiler.stop_trace()
    (path,) = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      data = json.load(f)
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  return [e for e in data["traceEvents"] if e.get("ph") == "X"]


def _walls(run, repeats: int) -> list[float]:
  """Wall seconds of `repeats` calls of `run` after one warm-up call (compilation, caches)."""
  run()
  walls = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    walls.append(time.perf_counter() - t0)
  return walls


def profile_jax(fn, v, x, a) -> dict:
  from mtljax.models.onednn import build

  jitted = jax.jit(fn)
  categories = hlo_categories(jitted.lower(v, x).compile().as_text())
  run = lambda: jax.block_until_ready(jitted(v, x))
  walls = _walls(run, a.repeats)
  build.stats(reset=True)
  events = _trace_events(run, a.repeats)
  counters = build.stats(reset=True)
  ms = collections.Counter()
  count = collections.Counter()
  for e in events:
    c = categories.get(e["name"])
    if c:
      ms[c] += e["dur"] / 1e3 / a.repeats
      count[c] += 1 / a.repeats
  wall = statistics.median(walls) * 1e3
  ms["between ops"] = wall - sum(ms.values())
  out = {"wall_ms": wall, "ms": dict(ms), "ops": dict(count)}
  if counters and counters["calls_fwd"] + counters["calls_bwd_data"]:
    per = lambda k: sum(counters[f"{k}_{kind}"] for kind in build.KINDS) / a.repeats
    out["onednn"] = {
      "problems": per("problems"),
      "conv_ms": per("conv_ns") / 1e6,
      "reorder_ms": per("reorder_ns") / 1e6,
      "reorder_mib": per("reorder_bytes") / 2**20,
      "plan_misses": counters["plan_misses"] / a.repeats,
      "caller_threads": counters["caller_threads"],
    }
  return out


# ============================================================================ Captum: aten ops
def _aten_category(name: str) -> str:
  if "convolution" in name:
    return "convolution (mkldnn)"
  if "max_pool" in name:
    return "max pool"
  if "batch_norm" in name:
    return "batch norm"
  if any(k in name for k in ("relu", "clamp_min", "threshold")):
    return "relu"
  if any(k in name for k in ("addmm", "linear", "mm")):
    return "matmul (head)"
  return "other ops"


def profile_captum(model, name, method, x_np, targets_np, a) -> dict:
  import torch
  from torch.profiler import ProfilerActivity, profile

  x = torch.from_numpy(common.to_nchw(x_np))
  t = torch.from_numpy(targets_np.astype(np.int64))
  run = lambda: common.captum_attribution(model, name, method, x, t, a)
  walls = _walls(run, a.repeats)
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(a.repeats):
      run()
  ms = collections.Counter()
  count = collections.Counter()
  for e in prof.key_averages():
    if e.key.startswith("aten::"):
      ms[_aten_category(e.key)] += e.self_cpu_time_total / 1e3 / a.repeats
      count[_aten_category(e.key)] += e.count / a.repeats
  wall = statistics.median(walls) * 1e3
  ms["between ops"] = wall - sum(ms.values())
  return {"wall_ms": wall, "ms": dict(ms), "ops": dict(count)}


def _print(label: str, r: dict) -> None:
  print(f"  {label}: {r['wall_ms']:.1f} ms per call", flush=True)
  for c, v in sorted(r["ms"].items(), key=lambda kv: -kv[1]):
    ops = f"{r['ops'][c]:4.0f} ops" if c in r["ops"] else "        "
    print(f"    {v:9.2f} ms {100 * v / r['wall_ms']:5.1f}%  {ops}  {c}")
  if "onednn" in r:
    d = r["onednn"]
    print(
      f"    oneDNN library: {d['problems']:.0f} problems, {d['conv_ms']:.2f} ms in convolutions, "
      f"{d['reorder_ms']:.2f} ms reordering {d['reorder_mib']:.1f} MiB of kernels, "
      f"{d['plan_misses']:.0f} primitive-cache misses, {d['caller_threads']} calling threads"
    )


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", nargs="+", default=["cnn", "resnet18"], choices=["cnn", "resnet18"])
  ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
  ap.add_argument("--size", type=int, default=64)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--ig-steps", type=int, default=32)
  ap.add_argument("--ig-chunk", type=int, default=8)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
  ap.add_argument("--skip-captum", action="store_true")
  ap.add_argument("--out", default="profiling/results/attribution_profile.json")
  common.add_conv_option(ap)
  a = ap.parse_args(argv)
  payload = common.start_run(a, torch_threads=0 if a.skip_captum else a.threads)
  with common.conv_backend(a.conv):
    for name in a.models:
      model, stacked = common.init_ensemble(name, a.size, 1)
      v = common.member(stacked, 0)
      torch_model = None
      if not a.skip_captum:
        torch_model = common.torch_model(name, v)
        for p in torch_model.parameters():
          p.requires_grad_(False)
      x_np = np.random.default_rng(0).normal(size=(a.batch, *common.input_shape(name, a.size)))
      x_np = x_np.astype(np.float32)
      targets_np = (np.arange(a.batch) % common.NUM_CLASSES[name]).astype(np.int32)
      for method in a.methods:
        print(f"\n{name} {method}: batch {a.batch} at {a.size} px", flush=True)
        fn = jax_method(model, name, method, jnp.asarray(targets_np), a)
        row = {"model": name, "method": method}
        row["jax"] = profile_jax(fn, v, jnp.asarray(x_np), a)
        _print(f"JAX ({payload['device'].get('conv', 'xla')} convolutions)", row["jax"])
        if torch_model is not None:
          row["captum"] = profile_captum(torch_model, name, method, x_np, targets_np, a)
          _print("Captum", row["captum"])
        payload["rows"].append(row)
        common.write_json(a.out, payload)


if __name__ == "__main__":
  sys.exit(main())
