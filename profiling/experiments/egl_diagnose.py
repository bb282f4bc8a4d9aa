r"""Why an explanation loss does (not) bite: its size and parameter gradient against the task's.

    python -m profiling.experiments.egl_diagnose --workdir W/plain  # a finished shortcut-CUB run

On one batch of training images (every mask given, λ = 1), at a fresh initialisation and at the
workdir's last checkpoint (member 0): the class cross-entropy, RRR (input gradient), GRADIA and
RES (Grad-CAM at conv2), each as value / ‖∂/∂θ‖; the decoy's and the relevant region's share of
the input-gradient and Grad-CAM maps; the overlap of the decoy with the masks; and the share of
the decoy in MEGL's attribute-map rationale target (docs/notes/explanation-guided-rounds.md, "Why
RRR and GRADIA did nothing").

    python -m profiling.experiments.egl_diagnose --workdir W/rrr_0.2+gp --annotated

`--annotated`: whether the explanation loss is memorised by the annotated examples — per member,
on the training split, accuracy, swapped accuracy (the decoy repainted in another example's
colour) and the Grad-CAM decoy share, for the examples with a mask and for those without
(docs/notes/explanation-guided-rounds.md, seventh round).
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from configs import attributes
from mtljax.data.source import capability
from mtljax.egl import losses
from mtljax.egl import maps as saliency

GRADCAM = "gradcam@encoders_image/conv2"


def _norm(tree):
  return float(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(tree))))


def diagnose(model, params, batch_stats, x, y, ya, rel, dec) -> dict:
  def score_of(task):
    def score(p, xx):
      v = {"params": p, "batch_stats": batch_stats}
      return model.apply(v, {"image": xx}, train=False)[0][task]

    return score

  score = score_of("class")
  mask, flags = jnp.asarray(rel), jnp.ones(len(y))

  def ce(p):
    lp = jax.nn.log_softmax(score(p, x))
    return -jnp.mean(jnp.take_along_axis(lp, y[:, None], 1))

  terms = {
    "cross-entropy": ce,
    "rrr (input gradient)": lambda p: losses.rrr(score, p, x, mask, flags),
    "gradia (Grad-CAM)": lambda p: losses.gradia(
      saliency.class_map(score, p, x, y, GRADCAM), mask, flags
    ),
    "res (Grad-CAM)": lambda p: losses.res(
      saliency.class_map(score, p, x, y, GRADCAM), mask, flags
    ),
  }
  out = {}
  for name, fn in terms.items():
    v, g = jax.value_and_grad(fn)(params)
    out[name] = f"{float(v):.3g} / {_norm(g):.3g}"
  for sal in ("input_gradient", GRADCAM):
    m = saliency.class_map(score, params, x, y, sal)
    out[f"{sal}: decoy / relevant share"] = _shares(m, dec, rel)
  u = losses.attribute_union(score_of("attributes"), params, x, ya, GRADCAM)
  out["MEGL attribute-map target: decoy / relevant share"] = _shares(u, dec, rel)
  return out


def _shares(m, dec, rel) -> str:
  """The mean share of each map's mass `[B, H, W]` on the decoy and on the relevant region."""
  tot = jnp.maximum(m.sum((1, 2)), 1e-12)
  share = lambda region: float(jnp.mean((m * region).sum((1, 2)) / tot))  # noqa: E731
  return f"{share(dec):.3f} / {share(rel):.3f}"


def annotated_vs_not(cfg, workdir: str) -> None:
  """Print the `--annotated` table (module docstring)."""
  from mtljax.data import annotations
  from mtljax.sweeps import egl

  m = egl.score_workdir(cfg, workdir, "train", GRADCAM)  # every training example
  has = annotations.annotated(len(m["index"]), float(cfg.data.mask_fraction))[m["index"]]
  print(f"{workdir}: {int(has.sum())} of {len(has)} training examples with a mask")
  for tag, sel in (("with a mask", has), ("without", ~has)):
    if not sel.any():
      continue
    cells = {
      "accuracy": m["correct_examples"][:, sel].mean(1),
      "swapped accuracy": m["swapped_correct_examples"][:, sel].mean(1),
      "Grad-CAM decoy share": m["decoy_share_examples"][:, sel].mean(1),
    }
    text = ", ".join(f"{k} {' / '.join(f'{v:.3f}' for v in vs)}" for k, vs in cells.items())
    print(f"  {tag:12s} {text}  (per member)")


def main(argv=None):
  from mtljax.explain import setup
  from mtljax.train import build

  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", required=True, help="a finished configs/attributes.py:shortcut run")
  ap.add_argument("--examples", type=int, default=96)
  ap.add_argument("--annotated", action="store_true", help="annotated vs not (docstring)")
  a = ap.parse_args(argv)
  saved = json.load(open(os.path.join(a.workdir, "config.json")))
  cfg = attributes.get_config(f"shortcut,size={saved['ensemble']['size']}")
  cfg.data.synthetic.dir = saved["data"]["synthetic"]["dir"]
  cfg.data.mask_fraction = saved["data"]["mask_fraction"]
  if a.annotated:
    return annotated_vs_not(cfg, a.workdir)
  s = build.setup(cfg, a.workdir, write_config=False)
  state, _ = setup.restore(cfg, s, a.workdir)
  rel_all, dec_all = capability(s.sources["train"], "explanation_regions")()
  d = setup.collect(s, "train", a.examples, a.examples)
  rel, dec = rel_all[d["index"]].astype(np.float32), dec_all[d["index"]].astype(np.float32)
  print(f"decoy pixels {dec.sum((1, 2)).mean():.1f}, relevant {rel.sum((1, 2)).mean():.1f}, "
        f"decoy ∩ relevant / decoy {(dec * rel).sum() / dec.sum():.3f}")  # fmt: skip
  x = jnp.asarray(d["inputs"]["image"])
  y = jnp.asarray(d["targets"]["class"], jnp.int32)
  ya = jnp.asarray(d["targets"]["attributes"], jnp.float32)
  init = s.model.init(jax.random.key(1), {"image": x[:2]}, train=False)
  first = lambda t: jax.tree.map(lambda v: v[0], t)  # noqa: E731
  runs = {
    "init": (init["params"], init["batch_stats"]),
    "trained (member 0)": (first(state["params"]), first(state["batch_stats"])),
  }
  for tag, (p, bs) in runs.items():
    print(f"== {tag} (value / ‖∂/∂θ‖ at λ = 1)")
    for k, v in diagnose(s.model, p, bs, x, y, ya, rel, dec).items():
      print(f"  {k}: {v}")


if __name__ == "__main__":
  main()
