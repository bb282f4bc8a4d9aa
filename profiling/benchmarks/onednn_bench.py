r"""oneDNN's convolutions (config.conv="onednn") against XLA's and PyTorch's, side by side in one run.

    python -m profiling.benchmarks.onednn_bench                        # layers + TreeSAT step
    python -m profiling.benchmarks.onednn_bench --parts layers --size 64 --batch 4   # quick look
    python -m profiling.benchmarks.onednn_bench --parts attribution -- --size 64     # + Captum

Parts:
  layers       every conv shape of ResNet-18 at `--size` px, batch `--batch`: forward, input
               gradient and kernel gradient, each jitted alone, XLA vs oneDNN vs torch.nn.functional
               (PyTorch calls oneDNN too: the gap between the last two is our call's overhead).
  treesat      the TreeSAT Experiment 7 train step (profiling/benchmarks/train_bench.py) with
               conv="xla" and conv="onednn", and the same step in PyTorch.
  attribution  profiling/benchmarks/attribution_bench.py (one-target Saliency, Grad-CAM and IG on
               the 3-conv CNN and ResNet-18 against Captum) once per backend; arguments after `--`
               go to it (its own results file gets the backend's name appended).
Threads: oneDNN runs its own GNU OpenMP team (OMP_NUM_THREADS, default all cores) beside XLA's
pool; set OMP_NUM_THREADS to compare. Results go to JSON (`--out`).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import fileio
from mtljax.models import convolution, onednn
from profiling.benchmarks import common

# (name, input side at 304 px, cin, cout, kernel, stride, padding): ResNet-18's distinct convs
RESNET18 = [
  ("stem 7x7/2", 1, 4, 64, 7, 2, 3),
  ("stage1 3x3", 4, 64, 64, 3, 1, 1),
  ("stage2 3x3/2", 4, 64, 128, 3, 2, 1),
  ("stage2 3x3", 8, 128, 128, 3, 1, 1),
  ("stage2 1x1/2", 4, 64, 128, 1, 2, 0),
  ("stage3 3x3/2", 8, 128, 256, 3, 2, 1),
  ("stage3 3x3", 16, 256, 256, 3, 1, 1),
  ("stage3 1x1/2", 8, 128, 256, 1, 2, 0),
  ("stage4 3x3/2", 16, 256, 512, 3, 2, 1),
  ("stage4 3x3", 32, 512, 512, 3, 1, 1),
  ("stage4 1x1/2", 16, 256, 512, 1, 2, 0),
]
DN = ("NHWC", "HWIO", "NHWC")


def _layer_fns(backend, x, w, stride, pad):
  def conv(x, w):
    with convolution.use(backend):
      return convolution.conv_general_dilated(
        x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=DN
      )

  y = jax.eval_shape(conv, x, w)
  dy = jnp.ones(y.shape, y.dtype)
  fwd = jax.jit(conv)
  bwd = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy))
  data = jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy))
  weights = jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy))
  return {
    "fwd": lambda: fwd(x, w),
    "bwd_data": lambda: data(x, w, dy),
    "bwd_weights": lambda: weights(x, w, dy),
    "fwd+bwd": lambda: bwd(x, w, dy),
  }


def _torch_fns(x, w, stride, pad):
  import torch
  import torch.nn.functional as F

  tx = torch.from_numpy(common.to_nchw(np.asarray(x))).requires_grad_(True)
  tw = torch.from_numpy(np.ascontiguousarray(np.asarray(w).transpose(3, 2, 0, 1)))
  tw.requires_grad_(True)
  y = F.conv2d(tx, tw, stride=stride, padding=pad)
  dy = torch.ones_like(y)

  def grads(*wrt):
    out = F.conv2d(tx, tw, stride=stride, padding=pad)
    return torch.autograd.grad(out, wrt, dy)

  return {
    "fwd": lambda: F.conv2d(tx.detach(), tw.detach(), stride=stride, padding=pad),
    "bwd_data": lambda: grads(tx),
    "bwd_weights": lambda: grads(tw),
    "fwd+bwd": lambda: grads(tx, tw),
  }


def bench_layers(a, rows):
  try:
    import torch  # noqa: F401

    have_torch = True
  except ImportError:
    have_torch = False
  rng = np.random.default_rng(0)
  scale = a.size / 304
  for name, div, cin, cout, k, s, p in RESNET18:
    side = max(1, round(304 / div * scale)) if div > 1 else a.size
    x = jnp.asarray(rng.normal(size=(a.batch, side, side, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) * 0.05, jnp.float32)
    fns = {b: _layer_fns(b, x, w, s, p) for b in ("xla", "onednn")}
    if have_torch:
      fns["pytorch"] = _torch_fns(x, w, s, p)
    for kind in ("fwd", "bwd_data", "bwd_weights", "fwd+bwd"):
      t = common.time_side_by_side({b: f[kind] for b, f in fns.items()}, a.repeats)
      row = {"part": "layers", "layer": name, "kind": kind, "side": side, "batch": a.batch}
      row.update({f"{b}_s": v["median_s"] for b, v in t.items()})
      row["onednn_vs_xla"] = row["xla_s"] / row["onednn_s"]
      rows.append(row)
      others = "  ".join(f"{b} {v['median_s'] * 1e3:8.2f} ms" for b, v in t.items())
      print(f"{name:14s} {kind:12s} {others}  oneDNN {row['onednn_vs_xla']:.2f}x XLA", flush=True)


def bench_treesat(a, rows):
  import torch

  from mtljax import train
  from mtljax.models.multitask import build_model
  from profiling.benchmarks import train_bench

  targs = argparse.Namespace(size=a.size, batch=a.batch)
  fns = {}
  for backend in ("xla", "onednn"):
    config, _, tx, batch, state = train_bench._treesat_setup(targs)
    config.conv = backend
    model = build_model(config)
    step = jax.jit(train.make_train_step(model, tx, config, {}), donate_argnums=(0,))
    holder = {"state": jax.tree.map(jnp.array, state), "batch": jax.tree.map(jnp.asarray, batch)}

    def run(step=step, holder=holder):
      holder["state"], m = step(holder["state"], holder["batch"], jax.random.key(0))
      return m["loss"]

    fns[backend] = run
  torch_step = train_bench._torch_treesat(state, config, targs)
  tb = batch["inputs"]
  t_inputs = tuple(torch.from_numpy(v) for v in (common.to_nchw(tb["aerial"]), tb["s1"], tb["s2"]))
  t_targets = tuple(
    torch.from_numpy(batch["targets"][k].astype(np.int64 if k != "age" else np.float32))
    for k in ("l3", "l2", "age")
  )
  fns["pytorch"] = lambda: torch_step(t_inputs, t_targets)
  t = common.time_side_by_side(fns, a.repeats)
  row = {"part": "treesat", "batch": a.batch, "aerial": a.size}
  row.update({f"{b}_s": v["median_s"] for b, v in t.items()})
  row["onednn_vs_xla"] = row["xla_s"] / row["onednn_s"]
  row["onednn_vs_pytorch"] = row["pytorch_s"] / row["onednn_s"]
  rows.append(row)
  print(
    f"TreeSAT step, batch {a.batch} at {a.size}px: XLA {row['xla_s']:.3f} s, oneDNN "
    f"{row['onednn_s']:.3f} s, PyTorch {row['pytorch_s']:.3f} s → oneDNN is "
    f"{row['onednn_vs_xla']:.2f}x XLA, {row['onednn_vs_pytorch']:.2f}x PyTorch",
    flush=True,
  )


def bench_attribution(a, rows, extra):
  from profiling.benchmarks import attribution_bench

  for backend in ("xla", "onednn"):
    out = f"profiling/results/attribution_bench_{backend}.json"
    argv = sys.argv
    sys.argv = ["attribution_bench", *extra, "--conv", backend, "--out", out]
    try:
      attribution_bench.main()
    finally:
      sys.argv = argv
    rows.append({"part": "attribution", "conv": backend, "results": out})


def main():
  argv = sys.argv[1:]
  extra = argv[argv.index("--") + 1 :] if "--" in argv else []
  argv = argv[: argv.index("--")] if "--" in argv else argv
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument(
    "--parts",
    nargs="+",
    default=["layers", "treesat"],
    choices=["layers", "treesat", "attribution"],
  )
  ap.add_argument("--size", type=int, default=304, help="ResNet-18 / TreeSAT aerial image side")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default="profiling/results/onednn_bench.json")
  a = ap.parse_args(argv)
  if not onednn.available():
    sys.exit("error: the oneDNN convolutions are unavailable here (the line above says why)")
  print(
    f"jax {jax.__version__}, {jax.devices()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
  )
  rows = []
  if "layers" in a.parts:
    bench_layers(a, rows)
  if "treesat" in a.parts:
    bench_treesat(a, rows)
  if "attribution" in a.parts:
    bench_attribution(a, rows, extra)
  os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
  fileio.write_json(a.out, {"args": vars(a), "rows": rows})
  print(f"wrote {a.out}")


if __name__ == "__main__":
  main()
