r"""Explanation-guided training on decoy digits: baseline vs each loss vs the annotated fraction.

    python profiling/egl_compare.py --out /tmp/egl_cmp                # the full table (~10 min,
                                                                      # 2-core CPU)
    python profiling/egl_compare.py --out W --kinds rrr --fractions 0.2 --members 3
    python profiling/egl_compare.py --family attributes --out W2 --members 2 \
        --kinds rrr gradia res megl --fractions 0.05 0.2      # configs/attributes.py:shortcut

Rows: `clean` (plain model, no decoy: the accuracy the decoy takes away), `plain` (the decoy, no
explanation loss = annotated fraction 0), then every loss of `--kinds` at every fraction of
`--fractions`; on `--family attributes` also `megl_<f>+r`: MEGL with masks on f and textual
rationales (generated from the planted attributes) on `--rationale-fraction` of the examples. Each row is one seeds ensemble of `--members` members trained in one vmapped step
(mean ± std over the members), scored on the decoy-free test split (mtljax/egl/compare.py).
Writes `<out>/egl_comparison.md` and `.json`; each run's workdir is `<out>/<row>`.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import attributes, digits  # noqa: E402
from mtljax.egl import compare  # noqa: E402

#: λ per loss, chosen on decoy digits (input-gradient maps of the MLP; on the validation split's
#: loss scale so that each term is comparable to the task loss at the start of training); used
#: unchanged on shortcut CUB (not tuned there, docs/explanation-guided.md).
LAMBDA = {"rrr": 10.0, "gradia": 5.0, "res": 5.0, "megl": 5.0}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--family", default="digits", choices=("digits", "attributes"))
  ap.add_argument("--variant", default="", help="extra variant tokens of the config file")
  ap.add_argument("--rationale-fraction", type=float, default=1.0)
  ap.add_argument("--members", type=int, default=3)
  ap.add_argument("--kinds", nargs="+", default=["rrr", "gradia", "res", "megl"])
  ap.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.2, 1.0])
  ap.add_argument("--epochs", type=int, default=0, help="0 = the config's")
  ap.add_argument("--saliency", default="input_gradient")
  ap.add_argument(
    "--only", nargs="*", default=(), help="run only these rows (labels), in this order"
  )
  a = ap.parse_args(argv)
  variant = ",".join(filter(None, [a.variant, f"size={a.members}"]))
  if a.family == "digits":
    base, clean = digits.get_config(variant + ",decoy"), digits.get_config(variant)
    names = ("data_decoy", "data_clean")
  else:
    base = attributes.get_config(variant + ",shortcut")
    clean = attributes.get_config(variant + ",shortcut")
    clean.data.synthetic.decoy_size = 0.0
    names = ("data_decoy", "data_clean")
  for c, name in zip((base, clean), names):
    c.data.synthetic.dir = os.path.join(a.out, name)
    c.explanation_loss.saliency = a.saliency
    if a.epochs:
      c.train.num_epochs = a.epochs
  settings = [{"label": "plain", "kind": "none", "fraction": 0.0}]
  for kind in a.kinds:
    for f in a.fractions:
      settings.append(
        {"label": f"{kind}_{f:g}", "kind": kind, "fraction": f,
         "overrides": {"explanation_loss.lam": LAMBDA[kind]}}
      )  # fmt: skip
    if kind == "megl" and a.family == "attributes":
      for f in a.fractions:
        settings.append(
          {"label": f"megl_{f:g}+r", "kind": kind, "fraction": f,
           "overrides": {"explanation_loss.lam": LAMBDA[kind],
                         "data.rationale_fraction": a.rationale_fraction}}
        )  # fmt: skip
  keep = lambda label: not a.only or label in a.only  # noqa: E731
  settings = [st for st in settings if keep(st["label"])]
  if a.only:  # in the order given
    settings.sort(key=lambda st: list(a.only).index(st["label"]))
  rows = compare.compare(base, settings, a.out, clean_config=clean if keep("clean") else None)
  print(compare.table(rows))
  print(f"written: {os.path.join(a.out, 'egl_comparison.md')}")


if __name__ == "__main__":
  main()
