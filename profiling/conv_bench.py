r"""Per-layer convolution timings: XLA:CPU (forward, input gradient, kernel gradient, and two
alternative kernel-gradient formulations) against PyTorch's oneDNN, side by side in one process.

    python profiling/conv_bench.py                  # ResNet-18's conv shapes at 304 px, batch 16
    python profiling/conv_bench.py --batch 4 --repeats 10

Shapes (NHWC, HWIO): the stem (7×7 stride 2, 3 → 64 on 304×304) and one 3×3 conv of each stage
(76², 38², 19², 10²). Columns, in milliseconds (medians of interleaved runs,
`common.time_side_by_side`): JAX forward, input gradient `dx`, kernel gradient `dw` (what XLA emits
for `jax.vjp`), `dw` as nine shifted matmuls (`shift`), `dw` as one matmul of im2col patches
(`patches`; both checked against XLA's `dw`), and PyTorch forward and forward + both gradients.
The train step needs forward + dw for every conv and dx for all but the first (XLA skips the
stem's dx: the input is not differentiated). Results go to JSON (`--out`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# (batch-free) input side, in channels, out channels, kernel, stride: ResNet-18 at 304 px.
SHAPES = ((304, 3, 64, 7, 2), (76, 64, 64, 3, 1), (38, 128, 128, 3, 1), (19, 256, 256, 3, 1),
          (10, 512, 512, 3, 1))
_DN = ("NHWC", "HWIO", "NHWC")


def _dw_shift(x, g, k, stride):
  """Kernel gradient as k² matmuls of strided input slices with the output gradient."""
  p, (b, ho, wo, _) = k // 2, g.shape
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  taps = [jnp.einsum("bhwc,bhwo->co", lax.slice(
      xp, (0, i, j, 0), (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, x.shape[3]),
      (1, stride, stride, 1)), g) for i in range(k) for j in range(k)]
  return jnp.stack(taps).reshape(k, k, x.shape[3], g.shape[3])


def _dw_patches(x, g, k, stride):
  """Kernel gradient as one matmul of im2col patches (feature order: channel, row, column)."""
  p = k // 2
  pt = lax.conv_general_dilated_patches(x, (k, k), (stride, stride), [(p, p)] * 2,
                                        dimension_numbers=_DN)
  d = jnp.einsum("bhwp,bhwo->po", pt, g)
  return d.reshape(x.shape[3], k, k, g.shape[3]).transpose(1, 2, 0, 3)


def bench_shape(side, cin, cout, k, stride, a):
  p = k // 2
  x = jax.random.normal(jax.random.key(0), (a.batch, side, side, cin))
  w = 0.05 * jax.random.normal(jax.random.key(1), (k, k, cin, cout))

  def conv(x, w):
    return lax.conv_general_dilated(x, w, (stride, stride), [(p, p)] * 2, dimension_numbers=_DN)

  g = 0.01 * jnp.ones(jax.eval_shape(conv, x, w).shape)
  fns = {
      "fwd": jax.jit(conv),
      "dx": jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
      "dw": jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
      "dw_shift": jax.jit(lambda x, w, g: _dw_shift(x, g, k, stride)),
      "dw_patches": jax.jit(lambda x, w, g: _dw_patches(x, g, k, stride)),
  }
  row = {"shape": f"{a.batch}×{side}²×{cin}→{cout} {k}×{k}/{stride}"}
  ref = fns["dw"](x, w, g)
  for name in ("dw_shift", "dw_patches"):
    alt = fns[name](x, w, g)
    row[f"{name}_rel_err"] = float(jnp.max(jnp.abs(alt - ref)) / jnp.max(jnp.abs(ref)))
  calls = {f"jax_{name}": functools.partial(fn, x, w) if name == "fwd" else
           functools.partial(fn, x, w, g) for name, fn in fns.items()}
  if not a.skip_torch:
    import torch
    tx = torch.randn(a.batch, cin, side, side, requires_grad=True)
    tw = torch.randn(cout, cin, k, k, requires_grad=True)

    def tfwd():
      return torch.nn.functional.conv2d(tx, tw, stride=stride, padding=p)

    tg = torch.ones_like(tfwd())

    def tfwd_no_grad():
      with torch.no_grad():
        return tfwd()

    calls["torch_fwd"] = tfwd_no_grad
    calls["torch_train"] = lambda: torch.autograd.grad(tfwd(), (tx, tw) if cin > 3 else (tw,), tg)
  times = common.time_side_by_side(
      calls, a.repeats, block=lambda r: jax.block_until_ready(r) if isinstance(r, jax.Array) else r)
  row.update({f"{name}_ms": 1e3 * t["median_s"] for name, t in times.items()})
  row["jax_train_ms"] = row["jax_fwd_ms"] + row["jax_dw_ms"] + (row["jax_dx_ms"] if cin > 3 else 0)
  if not a.skip_torch:
    row["jax_vs_torch_train"] = row["torch_train_ms"] / row["jax_train_ms"]
  return row


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
  ap.add_argument("--skip-torch", action="store_true")
  ap.add_argument("--out", default="profiling/results/conv_bench.json")
  a = ap.parse_args()
  payload = common.start_run(a, torch_threads=0 if a.skip_torch else a.threads)
  for shape in SHAPES:
    payload["rows"].append(bench_shape(*shape, a))
    print("  " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in payload["rows"][-1].items()), flush=True)
  cols = [("shape", "conv"), ("jax_fwd_ms", "fwd ms"), ("jax_dx_ms", "dx ms"), ("jax_dw_ms", "dw ms"),
          ("jax_dw_shift_ms", "dw shift ms"), ("jax_dw_patches_ms", "dw patches ms"),
          ("jax_train_ms", "JAX fwd+grads ms")]
  if not a.skip_torch:
    cols += [("torch_fwd_ms", "torch fwd ms"), ("torch_train_ms", "torch fwd+grads ms"),
             ("jax_vs_torch_train", "torch ÷ JAX")]
  payload["table"] = common.print_table(payload["rows"], cols)
  common.write_json(a.out, payload)


if __name__ == "__main__":
  main()
