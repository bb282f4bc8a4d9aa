r"""The trust acceptance figures from an explain run's files (docs/trust.md): the MPRT cascade of
each method (model-dependent methods fall, the `edges` control stays at 1) and the paired t-test of
each method's deletion / insertion AUC against the `random_map` control's, per target.

    python -m mtljax.main --config=configs/attributes.py:tiny,size=3 --workdir=/tmp/attr
    python -m mtljax.main --config=configs/attributes.py:tiny,size=3 --workdir=/tmp/attr \
      --mode=explain "--config.explain.methods=('saliency','integrated_gradients','edges','random_map')" \
      "--config.explain.metrics=('mprt','deletion','insertion','sparseness')" \
      --config.explain.max_examples=6 --config.explain.ig_steps=8 --config.explain.batch_size=32
    python -m profiling.experiments.trust_acceptance /tmp/attr/explanations/test
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import scipy.stats


def main(folder: str) -> None:
  with open(os.path.join(folder, "results.json")) as f:
    methods = json.load(f)["methods"]
  print("MPRT: Spearman of |map| with the randomised model's, cascade from the top (members mean)")
  for name, r in methods.items():
    curve = (r.get("trust") or {}).get("mprt_curve")
    if curve:
      print(f"  {name:22s} " + "  ".join(f"{v:.3f}" for v in curve["members"]))
  control = os.path.join(folder, "trust_random_map.npz")
  if not os.path.exists(control):
    print("no random_map control in this run: no faithfulness test")
    return
  rand = np.load(control)
  print("Faithfulness against random_map (paired t-test over targets, each member's own map):")
  for name in methods:
    if name == "random_map" or not os.path.exists(os.path.join(folder, f"trust_{name}.npz")):
      continue
    z = np.load(os.path.join(folder, f"trust_{name}.npz"))
    for metric in ("deletion", "insertion"):
      key = f"member_{metric}"
      if key not in z:
        continue
      a, b = z[key].ravel(), rand[key].ravel()
      t, p = scipy.stats.ttest_rel(a, b)
      print(
        f"  {name:22s} {metric:9s} {a.mean():8.3f} vs random {b.mean():8.3f}  t={t:6.2f} "
        f"p={p:.2g} n={len(a)}"
      )


if __name__ == "__main__":
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("folder", help="an explain run's split folder, e.g. W/explanations/test")
  main(ap.parse_args().folder)
