r"""Cost of explanation-guided training steps, side by side in one run.

    python -m profiling.benchmarks.egl_bench --out /tmp/egl_bench.json  # 32×32×3, batch 32
    python -m profiling.benchmarks.egl_bench --size 16 --batch 64 --repeats 10

One SGD training step of the benchmark CNN (profiling/benchmarks/common.py `cnn`: three 3×3 convs,
ReLU, global average pooling, a linear head; the same network and weights in JAX and PyTorch) with:
  plain                 cross-entropy only
  rrr / gradia / res / megl   + the explanation loss of mtljax/egl/losses.py on the input gradient
  rrr centred           + RRR on the centred log-probabilities (`rrr_output="centred_log_probs"`:
                          one input gradient per class: VJPs after one forward pass in
                          JAX, a loop of double-backprop gradients in PyTorch)
  gradia@conv3          + GRADIA on Grad-CAM at conv3
each jitted in JAX; and in PyTorch the plain step and the same RRR step (input gradient with
`create_graph=True`, double backprop; and its centred form). All timed interleaved
(profiling/benchmarks/common.py `time_side_by_side`), so contention on a shared machine hits every
row alike; the table gives each step's median and its ratio to the plain step of its framework, and
JAX's RRR against PyTorch's. The RRR loss values of both frameworks are checked to agree first.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtljax.egl import losses
from mtljax.egl import maps as sal
from profiling.benchmarks import common


def _jax_steps(model, lam, lr):
  def score(p, x):
    return model.apply({"params": p}, x)

  def ce(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(score(p, x), y).mean()

  def expl(kind, saliency="input_gradient", output="sum_log_probs"):
    def loss(p, x, y, m, prior):
      flags = jnp.ones(x.shape[0])
      if kind == "rrr":
        return losses.rrr(score, p, x, m, flags, labels=y, output=output)
      smap = sal.class_map(score, p, x, y, saliency)
      if kind == "gradia":
        return losses.gradia(smap, m, flags)
      if kind == "res":
        return losses.res(smap, m, flags)
      return sum(losses.megl(smap, m, flags, prior, flags))

    return loss

  terms = {"plain": None, "rrr": expl("rrr"),
           "rrr centred": expl("rrr", output="centred_log_probs"),
           "gradia": expl("gradia"), "res": expl("res"),
           "megl": expl("megl"), "gradia@conv3": expl("gradia", "gradcam@conv3")}  # fmt: skip

  def make(term):
    def total(p, x, y, m, prior):
      value = ce(p, x, y)
      return value if term is None else value + lam * term(p, x, y, m, prior)

    @jax.jit
    def step(p, x, y, m, prior):
      value, g = jax.value_and_grad(total)(p, x, y, m, prior)
      return jax.tree.map(lambda a, b: a - lr * b, p, g), value

    return step

  return {name: make(t) for name, t in terms.items()}, terms["rrr"], terms["rrr centred"]


def _torch_steps(tmodel, lam, lr):
  import torch

  opt = torch.optim.SGD(tmodel.parameters(), lr=lr)

  def plain(x, y, m):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(tmodel(x), y)
    loss.backward()
    opt.step()
    return loss.detach()

  def rrr_value(x, m, centred=False):
    x = x.detach().requires_grad_(True)
    logp = torch.log_softmax(tmodel(x), -1)
    outs = [logp[:, c] - logp.mean(-1) for c in range(logp.shape[1])] if centred else [logp]
    value = 0
    for out in outs:  # one double-backprop input gradient per output
      (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
      value = value + (((1 - m)[:, None] * g) ** 2).sum((1, 2, 3)).mean()
    return value, x

  def rrr(x, y, m, centred=False):
    opt.zero_grad()
    value, xg = rrr_value(x, m, centred)
    loss = torch.nn.functional.cross_entropy(tmodel(xg), y) + lam * value
    loss.backward()
    opt.step()
    return loss.detach()

  steps = {"plain": plain, "rrr": rrr, "rrr centred": lambda x, y, m: rrr(x, y, m, True)}
  return steps, rrr_value


def parser() -> argparse.ArgumentParser:
  """The command line (docs/explanation-guided.md's commands are checked against it)."""
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", type=int, default=32)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--lam", type=float, default=1.0)
  ap.add_argument("--torch-threads", type=int, default=0)
  ap.add_argument("--out", default="")
  return ap


def main(argv=None):
  a = parser().parse_args(argv)
  payload = common.start_run(a, torch_threads=a.torch_threads)
  import torch

  model = common.jax_model("cnn")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(a.batch, a.size, a.size, 3)).astype(np.float32)
  y = rng.integers(0, 10, a.batch).astype(np.int32)
  m = np.zeros((a.batch, a.size, a.size), np.float32)
  m[:, a.size // 4 : 3 * a.size // 4, a.size // 4 : 3 * a.size // 4] = 1
  prior = (m + 0.05) / (m + 0.05).sum((1, 2), keepdims=True)
  variables = model.init(jax.random.key(0), x[:1])
  params = variables["params"]
  jsteps, jrrr, jrrr_c = _jax_steps(model, a.lam, 1e-3)
  tmodel = common.torch_model("cnn", variables).train()
  tsteps, trrr = _torch_steps(tmodel, a.lam, 1e-3)
  tx, ty, tm = torch.from_numpy(common.to_nchw(x)), torch.from_numpy(y).long(), torch.from_numpy(m)

  # The same RRR loss in both frameworks (same weights, before any step).
  jv = float(jrrr(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(m), None))
  tv = float(trrr(tx, tm)[0])
  print(f"RRR loss: JAX {jv:.6g}, PyTorch {tv:.6g} (rel diff {abs(jv - tv) / abs(tv):.1e})")
  jvc = float(jrrr_c(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(m), None))
  tvc = float(trrr(tx, tm, True)[0])
  print(f"centred RRR loss: JAX {jvc:.6g}, PyTorch {tvc:.6g} (rel diff {abs(jvc - tvc) / tvc:.1e})")
  args = (params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(m), jnp.asarray(prior))
  fns = {f"jax {k}": (lambda s=s: s(*args)) for k, s in jsteps.items()}
  fns.update({f"torch {k}": (lambda s=s: s(tx, ty, tm)) for k, s in tsteps.items()})
  times = common.time_side_by_side(fns, repeats=a.repeats)
  rows = []
  for name, t in times.items():
    fw, kind = name.split(" ", 1)
    rows.append({
      "step": name, "ms": 1e3 * t["median_s"],
      "x_plain": t["median_s"] / times[f"{fw} plain"]["median_s"],
      "compile_s": t["first_call_s"] if fw == "jax" else None,
    })  # fmt: skip
  ratio = times["jax rrr"]["median_s"] / times["torch rrr"]["median_s"]
  ratio_c = times["jax rrr centred"]["median_s"] / times["torch rrr centred"]["median_s"]
  text = common.print_table(
    rows,
    [("step", "step"), ("ms", "median ms"), ("x_plain", "× plain"), ("compile_s", "first call s")],
  )
  print(f"JAX RRR step / PyTorch RRR step: {ratio:.2f}; centred: {ratio_c:.2f}")
  payload["rows"], payload["rrr_loss"] = rows, {"jax": jv, "torch": tv}
  payload["rrr_centred_loss"] = {"jax": jvc, "torch": tvc}
  payload["jax_rrr_over_torch_rrr"], payload["table"] = ratio, text
  payload["jax_rrr_centred_over_torch"] = ratio_c
  if a.out:
    common.write_json(a.out, payload)


if __name__ == "__main__":
  main()
