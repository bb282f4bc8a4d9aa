r"""Per-layer convolution timings: XLA:CPU (forward, input gradient, kernel gradient, two
alternative kernel-gradient formulations and a Winograd convolution) against PyTorch's oneDNN, side
by side in one process.

    python -m profiling.benchmarks.conv_bench  # ResNet-18's conv shapes at 304 px, batch 16
    python -m profiling.benchmarks.conv_bench --batch 4 --repeats 10

Shapes (NHWC, HWIO): the stem (7×7 stride 2, 3 → 64 on 304×304) and one 3×3 conv of each stage
(76², 38², 19², 10²). Columns, in milliseconds (medians of interleaved runs,
`common.time_side_by_side`): JAX forward, input gradient `dx`, kernel gradient `dw` (what XLA emits
for `jax.vjp`), `dw` as nine shifted matmuls (`shift`), `dw` as one matmul of im2col patches
(`patches`; both checked against XLA's `dw`), forward + both gradients of a Winograd F(2×2, 3×3)
convolution (3×3 stride-1 layers only; gradients by autodiff, checked against XLA's, and timed
against XLA's convolution with its gradients in one program as well), and
PyTorch forward and forward + both gradients.
The train step needs forward + dw for every conv and dx for all but the first (XLA skips the
stem's dx: the input is not differentiated). Results go to JSON (`--out`).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
from jax import lax

from profiling.benchmarks import common

# (batch-free) input side, in channels, out channels, kernel, stride: ResNet-18 at 304 px.
SHAPES = (
  (304, 3, 64, 7, 2),
  (76, 64, 64, 3, 1),
  (38, 128, 128, 3, 1),
  (19, 256, 256, 3, 1),
  (10, 512, 512, 3, 1),
)
_DN = ("NHWC", "HWIO", "NHWC")


def _dw_shift(x, g, k, stride):
  """Kernel gradient as k² matmuls of strided input slices with the output gradient."""
  p, (b, ho, wo, _) = k // 2, g.shape
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  taps = [
    jnp.einsum(
      "bhwc,bhwo->co",
      lax.slice(
        xp,
        (0, i, j, 0),
        (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, x.shape[3]),
        (1, stride, stride, 1),
      ),
      g,
    )
    for i in range(k)
    for j in range(k)
  ]
  return jnp.stack(taps).reshape(k, k, x.shape[3], g.shape[3])


def _dw_patches(x, g, k, stride):
  """Kernel gradient as one matmul of im2col patches (feature order: channel, row, column)."""
  p = k // 2
  pt = lax.conv_general_dilated_patches(
    x, (k, k), (stride, stride), [(p, p)] * 2, dimension_numbers=_DN
  )
  d = jnp.einsum("bhwp,bhwo->po", pt, g)
  return d.reshape(x.shape[3], k, k, g.shape[3]).transpose(1, 2, 0, 3)


# Winograd F(2×2, 3×3) (Lavin & Gray, 2016): each 2×2 output tile is A^T [(G w G^T) ⊙ (B^T d B)] A
# of its 4×4 input tile d, so the 9 multiply-adds per output pixel and channel pair become 4, done as
# 16 batched matmuls over (tiles × in channels) @ (in × out channels).
_WINO_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def _wino_bt(r0, r1, r2, r3):
  """B^T applied along one axis of the 4×4 input tiles."""
  return r0 - r2, r1 + r2, r2 - r1, r1 - r3


def _wino_at(m0, m1, m2, m3):
  """A^T applied along one axis of the 4×4 products."""
  return m0 + m1 + m2, m1 - m2 - m3


def winograd_conv3x3(x, w):
  """3×3 stride-1 SAME convolution (NHWC, HWIO) by Winograd F(2×2, 3×3)."""
  n, h, wd, c = x.shape
  nh, nw = -(-h // 2), -(-wd // 2)  # output tiles per axis
  # Tile i covers padded rows 2i .. 2i + 3: blocks i and i + 1 of a reshape into row pairs.
  xp = jnp.pad(x, ((0, 0), (1, 2 * nh + 1 - h), (1, 2 * nw + 1 - wd), (0, 0)))
  xr = xp.reshape(n, nh + 1, 2, 2 * (nw + 1), c)
  tiles = []
  for v in _wino_bt(*(xr[:, a // 2 : a // 2 + nh, a % 2] for a in range(4))):
    vr = v.reshape(n, nh, nw + 1, 2, c)
    tiles.extend(_wino_bt(*(vr[:, :, b // 2 : b // 2 + nw, b % 2] for b in range(4))))
  g = jnp.asarray(_WINO_G, x.dtype)
  u = jnp.einsum("ak,klco,bl->abco", g, w, g).reshape(16, c, w.shape[3])
  m = jnp.einsum("tpc,tco->tpo", jnp.stack(tiles).reshape(16, n * nh * nw, c), u)
  m = m.reshape(4, 4, n, nh, nw, w.shape[3])
  rows = [jnp.stack(_wino_at(*r), axis=3) for r in _wino_at(*m)]  # 2 × [n, nh, nw, 2, o]
  y = jnp.stack(rows, axis=2)  # [n, nh, 2, nw, 2, o]
  return y.reshape(n, 2 * nh, 2 * nw, w.shape[3])[:, :h, :wd]


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

  def train(conv_fn, x, w, g):  # forward and both gradients in one program
    y, vjp = jax.vjp(conv_fn, x, w)
    return y, *vjp(g)

  if (k, stride) == (3, 1):
    fns["xla_train"] = jax.jit(functools.partial(train, conv))
    fns["wino_train"] = jax.jit(functools.partial(train, winograd_conv3x3))
  row = {"shape": f"{a.batch}×{side}²×{cin}→{cout} {k}×{k}/{stride}"}
  if "wino_train" in fns:
    ref = fns["xla_train"](x, w, g)
    row["wino_rel_err"] = max(
      common.max_rel_diff(u, r) for u, r in zip(fns["wino_train"](x, w, g), ref)
    )
  ref = fns["dw"](x, w, g)
  for name in ("dw_shift", "dw_patches"):
    row[f"{name}_rel_err"] = common.max_rel_diff(fns[name](x, w, g), ref)
  calls = {
    f"jax_{name}": functools.partial(fn, x, w) if name == "fwd" else functools.partial(fn, x, w, g)
    for name, fn in fns.items()
  }
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
  times = common.time_side_by_side(calls, a.repeats)
  row.update({f"{name}_ms": 1e3 * t["median_s"] for name, t in times.items()})
  row["jax_train_ms"] = row["jax_fwd_ms"] + row["jax_dw_ms"] + (row["jax_dx_ms"] if cin > 3 else 0)
  if "jax_wino_train_ms" in row:
    row["wino_vs_xla_train"] = row["jax_xla_train_ms"] / row["jax_wino_train_ms"]
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
    print(
      "  "
      + ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in payload["rows"][-1].items()
      ),
      flush=True,
    )
  cols = [
    ("shape", "conv"),
    ("jax_fwd_ms", "fwd ms"),
    ("jax_dx_ms", "dx ms"),
    ("jax_dw_ms", "dw ms"),
    ("jax_dw_shift_ms", "dw shift ms"),
    ("jax_dw_patches_ms", "dw patches ms"),
    ("jax_train_ms", "JAX fwd+grads ms"),
    ("jax_xla_train_ms", "one program ms"),
    ("jax_wino_train_ms", "Winograd fwd+grads ms"),
    ("wino_vs_xla_train", "XLA ÷ Winograd"),
  ]
  if not a.skip_torch:
    cols += [
      ("torch_fwd_ms", "torch fwd ms"),
      ("torch_train_ms", "torch fwd+grads ms"),
      ("jax_vs_torch_train", "torch ÷ JAX"),
    ]
  payload["table"] = common.print_table(payload["rows"], cols)
  common.write_json(a.out, payload)


if __name__ == "__main__":
  main()
