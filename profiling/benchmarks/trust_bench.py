r"""Trust metrics: mtljax (jitted JAX) against Quantus 0.6.0 (PyTorch), side by side in one process.

    python -m profiling.benchmarks.trust_bench  # the 3-conv CNN, 8 images of 24x24
    python -m profiling.benchmarks.trust_bench --size 48 --batch 16 --repeats 3 --out /tmp/t.json

The model is `profiling/benchmarks/common.py`'s 3-conv CNN (64→32→... channels, 10 classes), once
in linen and once in torch with the same weights; the maps are the Saliency maps of the explained
class (`|grad|` summed over channels), the same array on both sides. Every metric that Quantus
also has runs with the same settings on both sides (the numbers agree:
`tests/test_trust_quantus.py`):

  pixel_flipping       `--steps` steps (H*W/steps pixels each; Quantus: 3x as many features, the
                       map broadcast over the channels), black/min baseline; `--chunk` steps per
                       model call (the explain run's `config.explain.trust.chunk`, default 8)
  faithfulness_corr    `--runs` runs of `--subset` pixels, `--chunk` runs per model call
  road                 5 percentages, noisy linear imputation
  max_sensitivity      `--samples` uniform perturbations, re-explained by Saliency
  local_lipschitz      `--samples` Gaussian perturbations, re-explained by Saliency
  random_logit         one off-class map, Spearman
  mprt                 cascading randomisation of the 4 layers, Spearman
  sparseness, complexity, pointing_game, relevance_mass, relevance_rank

Throughput = explained examples per second (median of `--repeats` interleaved runs after one
warm-up call; compilation excluded, reported separately as first-call seconds).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.attribution.trust import faithfulness, map_metrics, ops, robustness, sanity
from profiling.benchmarks import common


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--size", type=int, default=24)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--steps", type=int, default=48)
  ap.add_argument("--runs", type=int, default=32)
  ap.add_argument("--subset", type=int, default=64)
  ap.add_argument("--samples", type=int, default=8)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--metrics", default="all")
  ap.add_argument(
    "--chunk",
    type=int,
    default=8,
    help="perturbation steps per model call of the faithfulness metrics (config.explain.trust.chunk)",
  )
  ap.add_argument("--out", default="")
  common.add_conv_option(ap)
  args = ap.parse_args(argv)
  payload = common.start_run(args)
  with common.conv_backend(args.conv):
    run(args, payload, ap)


def run(args, payload, ap):
  import quantus
  import torch

  np.seterr(all="ignore")
  model, stacked = common.init_ensemble("cnn", args.size, 1)
  v = common.member(stacked, 0)
  tm = common.torch_model("cnn", v)
  b, s = args.batch, args.size
  rng = np.random.default_rng(0)
  x = rng.normal(size=(b, s, s, 3)).astype(np.float32)
  y = rng.integers(0, 10, b)
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  x_nchw = common.to_nchw(x)
  masks = np.zeros((b, s, s), bool)
  masks[:, s // 4 : s // 2, s // 4 : 3 * s // 4] = True

  def explain_target(p, img, t):
    g = jax.grad(lambda im: model.apply(p, im)[jnp.arange(im.shape[0]), t].sum())(img)
    return jnp.abs(g).sum(-1)

  def explain(p, img):
    return explain_target(p, img, yj)

  def score(p, img):  # img: any multiple of the batch's rows (the targets tiled to match)
    return model.apply(p, img)[jnp.arange(img.shape[0]), ops.tile_rows(yj, img.shape[0])]

  def torch_explain(model, inputs, targets, **kwargs):
    xt = torch.tensor(np.asarray(inputs), requires_grad=True)
    out = model(xt)
    out[torch.arange(len(targets)), torch.as_tensor(targets)].sum().backward()
    return xt.grad.abs().sum(1, keepdims=True).numpy()

  class Grey(torch.nn.Module):  # one channel in, repeated to the model's three
    def __init__(self, inner):
      super().__init__()
      self.inner = inner

    def forward(self, z):
      return self.inner(z.repeat(1, 3, 1, 1))

  grey_tm = Grey(tm).eval()
  maps = np.asarray(jax.jit(explain)(v, xj))
  mj, a = jnp.asarray(maps), maps[:, None]
  n = s * s
  step = n // args.steps
  if step * args.steps != n or n % (3 * step):
    # Quantus flips 3 features (channels) per pixel but wants its step to divide H*W.
    ap.error(
      f"--steps must divide H*W={n} and 3*H*W/steps must divide H*W (e.g. size 24, steps 48)"
    )
  key = jax.random.key(0)
  subsets = faithfulness.random_subsets(key, b, n, args.runs, args.subset)
  uni = robustness.uniform_noise(key, args.samples, xj.shape, 0.05)
  gau = robustness.gaussian_noise(key, args.samples, xj.shape, 0.05)
  other = sanity.other_targets(key, yj, 10)
  layers = ["params/head", "params/conv3", "params/conv2", "params/conv1"]
  road_p = [10, 30, 50, 70, 90]

  ours = {
    "pixel_flipping": lambda v, xj, mj: faithfulness.pixel_flipping(
      score, v, xj, mj, features_in_step=step, baseline="min", chunk=args.chunk
    ),
    "faithfulness_correlation": lambda v, xj, mj: faithfulness.faithfulness_correlation(
      score, v, xj, mj, subsets, baseline="min", chunk=args.chunk
    ),
    # ROAD on one grey channel repeated into the model's 3 (Quantus's ROAD indexes pixels of a
    # one-channel explanation: with 3 channels it indexes past the image).
    "road": lambda v, xj, mj: faithfulness.road(
      lambda p, im: score(p, jnp.repeat(im, 3, -1)),
      v,
      xj[..., :1],
      mj,
      jnp.zeros_like(xj[..., :1]),
      percentages=tuple(road_p),
    ),
    # One sample's explanation at a time (`chunk=1`), the fastest on CPU at 48 px.
    "max_sensitivity": lambda v, xj, mj: robustness.max_sensitivity(
      explain, v, xj, mj, uni, chunk=1
    ),
    "local_lipschitz": lambda v, xj, mj: robustness.local_lipschitz(
      explain, v, xj, mj, gau, chunk=1
    ),
    "random_logit": lambda v, xj, mj: sanity.random_logit(explain_target, v, xj, mj, other),
    # Each stop of the cascade traced on its own (the default); a vmap over the stops batches the
    # weights, which XLA:CPU runs as grouped convolutions, much slower.
    "mprt": lambda v, xj, mj: sanity.mprt(explain, v, xj, mj, key, layers=layers),
    "sparseness": lambda v, xj, mj: map_metrics.sparseness(mj),
    "complexity": lambda v, xj, mj: map_metrics.entropy(mj),
    "pointing_game": lambda v, xj, mj: map_metrics.pointing_game(mj, jnp.asarray(masks)),
    "relevance_mass": lambda v, xj, mj: map_metrics.relevance_mass(mj, jnp.asarray(masks)),
    "relevance_rank": lambda v, xj, mj: map_metrics.relevance_rank(mj, jnp.asarray(masks)),
  }
  # The arrays are arguments of the jitted functions: closed-over constants could be folded by XLA
  # at compile time, and the timing would measure nothing.
  ours = {k: functools.partial(jax.jit(f), v, xj, mj) for k, f in ours.items()}
  q = dict(disable_warnings=True, normalise=False)
  call = dict(model=tm, x_batch=x_nchw, y_batch=y, channel_first=True, softmax=False, device="cpu")
  sb = masks[:, None].astype(np.float32)
  noise_draws = {
    "uniform": np.asarray(uni).transpose(0, 1, 4, 2, 3),
    "gauss": np.asarray(gau).transpose(0, 1, 4, 2, 3),
  }

  def replay(kind):
    state = {"i": 0}

    def perturb(arr, indices, **kwargs):
      d = noise_draws[kind][state["i"] % args.samples]
      state["i"] += 1
      return arr + d.reshape(arr.shape)

    return perturb

  theirs = {
    "pixel_flipping": lambda: quantus.PixelFlipping(
      features_in_step=3 * step, abs=False, perturb_baseline="black", **q
    )(a_batch=np.repeat(a, 3, axis=1), **call),
    "faithfulness_correlation": lambda: quantus.FaithfulnessCorrelation(
      nr_runs=args.runs,
      subset_size=args.subset,
      abs=False,
      return_aggregate=False,
      perturb_baseline="black",
      **q,
    )(a_batch=a.copy(), **call),
    "road": lambda: quantus.ROAD(percentages=road_p, noise=0.0, **q)(
      a_batch=a.copy(), **{**call, "model": grey_tm, "x_batch": x_nchw[:, :1].copy()}
    ),
    "max_sensitivity": lambda: quantus.MaxSensitivity(
      nr_samples=args.samples, perturb_func=replay("uniform"), abs=False, **q
    )(a_batch=a.copy(), explain_func=torch_explain, **call),
    "local_lipschitz": lambda: quantus.LocalLipschitzEstimate(
      nr_samples=args.samples, perturb_func=replay("gauss"), abs=False, **q
    )(a_batch=a.copy(), explain_func=torch_explain, **call),
    "random_logit": lambda: quantus.RandomLogit(
      num_classes=10, abs=True, similarity_func=quantus.similarity_func.correlation_spearman, **q
    )(a_batch=a.copy(), explain_func=torch_explain, **call),
    "mprt": lambda: quantus.MPRT(abs=True, **q)(
      a_batch=a.copy(), explain_func=torch_explain, **call
    ),
    "sparseness": lambda: quantus.Sparseness(abs=True, **q)(a_batch=a.copy(), **call),
    "complexity": lambda: quantus.Complexity(abs=True, **q)(a_batch=a.copy(), **call),
    "pointing_game": lambda: quantus.PointingGame(**q)(a_batch=a.copy(), s_batch=sb, **call),
    "relevance_mass": lambda: quantus.RelevanceMassAccuracy(**q)(
      a_batch=a.copy(), s_batch=sb, **call
    ),
    "relevance_rank": lambda: quantus.RelevanceRankAccuracy(**q)(
      a_batch=a.copy(), s_batch=sb, **call
    ),
  }
  names = list(ours) if args.metrics == "all" else args.metrics.split(",")
  if not hasattr(np, "trapz"):  # Quantus 0.6.0's AUC helper calls np.trapz (gone in NumPy 2.4)
    np.trapz = np.trapezoid
  rows = []
  for name in names:
    t = common.time_side_by_side(
      {"mtljax": ours[name], "quantus": theirs[name]},
      args.repeats,
      block=lambda r: jax.block_until_ready(r) if r is not None else r,
    )
    row = {
      "metric": name,
      "mtljax_per_s": b / t["mtljax"]["median_s"],
      "quantus_per_s": b / t["quantus"]["median_s"],
      "speedup": t["quantus"]["median_s"] / t["mtljax"]["median_s"],
      "mtljax_first_call_s": t["mtljax"]["first_call_s"],
    }
    rows.append(row)
    print(row, flush=True)
  payload["rows"] = rows
  common.print_table(
    rows,
    [
      ("metric", "metric"),
      ("mtljax_per_s", "mtljax ex/s"),
      ("quantus_per_s", "Quantus ex/s"),
      ("speedup", "× Quantus"),
      ("mtljax_first_call_s", "mtljax compile+first (s)"),
    ],
  )
  if args.out:
    common.write_json(args.out, payload)


if __name__ == "__main__":
  main()
