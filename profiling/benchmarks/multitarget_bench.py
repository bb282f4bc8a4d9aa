r"""K targets per image: mtljax's target axis against Captum's loop over targets and mtljax's own
per-target forms, side by side in one process.

    python -m profiling.benchmarks.multitarget_bench  # cnn, resnet18 at 64 px, K = 1 4 8
    python -m profiling.benchmarks.multitarget_bench --models cnn --methods saliency --targets 4

E members (profiling/benchmarks/common.py: the 3-conv CNN and ResNet-18, identical weights in JAX
and torch) explain K classes of each of B images (example b: classes b, b+1, ..., b+K-1 mod C),
averaged over members. Columns (seconds per call, median of interleaved repeats):
  captum   Captum, one `attribute(target=...)` call per target and member (the only way it does K
           targets: K full passes)
  grads    mtljax target axis, K `jax.grad` calls of the K scores in one program (XLA shares the
           forward; each backward at batch B) — what "auto" picks on CPU
  vjp      mtljax target axis, one `jax.vjp` with its pullback vmapped over K one-hot cotangents
           (one backward at batch K·B) — what "auto" picks on GPU/TPU
  loop     mtljax, K one-target calls (a Python loop over targets)
  rows     mtljax, every (image, target) pair its own row of one call (the explain run's former
           per-row form: K forward passes, batch K·B)
Members run with the ensemble strategy "auto" (on CPU a loop over members with XLA's
convolutions, vmap with oneDNN's: `--conv`). Each
row checks that all forms agree with the loop (and Captum with it), then reports the ratios.
Methods: saliency (|gradient|), gradcam (last conv block, no upsampling), ig (riemann_middle,
`--ig-steps`, split after the affine first layer as the explain run does).
"""

from __future__ import annotations

import argparse
import time

import jax.numpy as jnp
import numpy as np

from mtljax.attribution import ensemble as ens_lib
from mtljax.attribution import layers
from mtljax.attribution import methods as attr_lib
from profiling.benchmarks import common

FORMS = ("grads", "vjp", "loop", "rows")


def method_fn(model, name, method, index, a, form="auto"):
  """`(variables, x) -> attribution` for targets `index` `[B]` (one) or `[B, K]` (target axis)."""

  def score(v, x):
    out = model.apply(v, x)
    if index.ndim == 1:
      return jnp.take_along_axis(out, index[:, None], axis=1)[:, 0]
    return jnp.take_along_axis(out, index, axis=1)

  if method == "ig":
    split = layers.affine_split(score, common.AFFINE_FIRST_LAYER[name])
    return lambda v, x: attr_lib.integrated_gradients(
      score, v, x, steps=a.ig_steps, batch_steps=a.ig_chunk, split=split, target_form=form
    )
  if method == "saliency":
    return lambda v, x: attr_lib.saliency(score, v, x, target_form=form)
  layer_fn = layers.flax_layer_fn(score, common.GRAD_CAM_LAYER[name])
  return lambda v, x: attr_lib.grad_cam(layer_fn, v, x, target_form=form)


def captum_fn(torch_models, name, method, x_np, index_np, a):
  import torch

  x = torch.from_numpy(common.to_nchw(x_np))

  def run():
    per_k = []
    for k in range(index_np.shape[1]):
      t = torch.from_numpy(index_np[:, k].astype(np.int64))
      outs = [common.captum_attribution(m, name, method, x, t, a).detach() for m in torch_models]
      per_k.append(torch.stack(outs).mean(0))
    return torch.stack(per_k, 1)  # [B, K, ...]

  return run


def nhwc(t):
  a = t.numpy()  # [B, K, C, H, W] → [B, K, H, W, C]; Grad-CAM [B, K, h, w] passes through
  return np.moveaxis(a, 2, -1) if a.ndim == 5 else a


def bench(name, method, k, a, model, stacked, torch_models, rows):
  rng = np.random.default_rng(0)
  x_np = rng.normal(size=(a.batch, *common.input_shape(name, a.size))).astype(np.float32)
  classes = common.NUM_CLASSES[name]
  index_np = ((np.arange(a.batch)[:, None] + np.arange(k)[None]) % classes).astype(np.int32)
  x, index = jnp.asarray(x_np), jnp.asarray(index_np)

  def ensemble(fn, xx):
    return ens_lib.ensemble_attribute(fn, stacked, xx, strategy="auto")[1]

  fns = {}
  if torch_models:
    fns["captum"] = captum_fn(torch_models, name, method, x_np, index_np, a)
  for form in ("grads", "vjp"):
    fns[form] = (lambda f: lambda: ensemble(f, x))(method_fn(model, name, method, index, a, form))
  singles = [method_fn(model, name, method, index[:, j], a) for j in range(k)]
  fns["loop"] = lambda: jnp.stack([ensemble(f, x) for f in singles], axis=1)
  x_rows = jnp.repeat(x, k, axis=0)
  rows_fn = method_fn(model, name, method, index.reshape(-1), a)
  fns["rows"] = lambda: (lambda r: r.reshape((a.batch, k) + r.shape[1:]))(ensemble(rows_fn, x_rows))
  fns = {f: fn for f, fn in fns.items() if f == "captum" or f in a.forms}
  print(f"\n{name} {method}: E={a.members}, B={a.batch}, K={k} ...", flush=True)
  times = common.time_side_by_side(fns, a.repeats)
  ref = np.asarray(fns["loop" if "loop" in fns else "rows"]())  # the per-target reference
  row = {"model": name, "method": method, "K": k, "members": a.members, "batch": a.batch}
  row["max_rel_diff"] = max(common.max_rel_diff(fns[f](), ref) for f in fns if f != "captum")
  if "captum" in fns:
    row["captum_rel_diff"] = common.max_rel_diff(nhwc(fns["captum"]()), ref)
  for f, t in times.items():
    row[f"{f}_s"] = t["median_s"]
  best = attr_lib.resolve_target_form("auto")
  row["auto_form"] = best
  for f in times:
    if f != best:
      row[f"{best}_vs_{f}"] = times[f]["median_s"] / times[best]["median_s"]
  rows.append(row)
  print("  " + " | ".join(f"{f} {t['median_s']:.3f} s" for f, t in times.items()), flush=True)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", nargs="+", default=["cnn", "resnet18"], choices=["cnn", "resnet18"])
  ap.add_argument("--methods", nargs="+", default=["saliency", "gradcam", "ig"])
  ap.add_argument("--targets", nargs="+", type=int, default=[1, 4, 8])
  ap.add_argument("--members", type=int, default=11)
  ap.add_argument("--size", type=int, default=64)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--ig-steps", type=int, default=8)
  ap.add_argument("--ig-chunk", type=int, default=8)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS, help="mtljax forms")
  ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
  ap.add_argument("--skip-captum", action="store_true")
  ap.add_argument("--out", default="profiling/results/multitarget_bench.json")
  common.add_conv_option(ap)
  a = ap.parse_args(argv)
  payload = common.start_run(a, torch_threads=0 if a.skip_captum else a.threads)
  with common.conv_backend(a.conv):
    run(a, payload)


def run(a, payload):
  t0 = time.perf_counter()
  rows = []
  for name in a.models:
    model, stacked = common.init_ensemble(name, a.size, a.members)
    torch_models = []
    if not a.skip_captum:
      torch_models = [common.torch_model(name, common.member(stacked, i)) for i in range(a.members)]
      for p in (p for m in torch_models for p in m.parameters()):
        p.requires_grad_(False)
    for method in a.methods:
      for k in a.targets:
        bench(name, method, k, a, model, stacked, torch_models, rows)
        payload["rows"] = rows
        common.write_json(a.out, payload)
  best = attr_lib.resolve_target_form("auto")
  cols = [("model", "model"), ("method", "method"), ("K", "K")]
  cols += [(f"{f}_s", f"{f} s") for f in (["captum"] if not a.skip_captum else []) + a.forms]
  cols += [(f"{best}_vs_{f}", f"{best} ÷ {f}") for f in ["captum", *a.forms] if f != best]
  cols += [("max_rel_diff", "forms rel. diff"), ("captum_rel_diff", "Captum rel. diff")]
  print(
    f"\nseconds per call (E={a.members} members, B={a.batch} images, K targets each); "
    f"{payload['device'].get('cpu_model', payload['device']['device'])} "
    f"({payload['device']['backend']}), total {time.perf_counter() - t0:.0f} s"
  )
  payload["table"] = common.print_table(rows, cols)
  common.write_json(a.out, payload)


if __name__ == "__main__":
  main()
