r"""Explanation-guided training on decoy digits: baseline vs each loss vs the annotated fraction.

    python -m profiling.experiments.egl_compare --out /tmp/egl_cmp  # the table (~10 min, 2 cores)
    python -m profiling.experiments.egl_compare --out W --kinds rrr --fractions 0.2 --members 3
    python -m profiling.experiments.egl_compare --family attributes --out W2 --members 2 \
        --kinds rrr gradia res megl --fractions 0.05 0.2      # configs/attributes.py:shortcut
    python -m profiling.experiments.egl_compare --family attributes --out W3 --members 1 \
        --fractions 0.2 --kinds gradia --lam gradia=50 --mask-dilation gradia=2 --split val \
        --only gradia_0.2          # one setting of the λ sweep, scored on the validation split
    python -m profiling.experiments.egl_compare --family attributes --out W4 --members 1 \
        --fractions 0.2 --kinds rrr --lam rrr+c=100 --split val --only rrr_0.2+c  # RRR, centred

Rows: `clean` (plain model, no decoy: the accuracy the decoy takes away), `plain` (the decoy, no
explanation loss = annotated fraction 0), then every loss of `--kinds` at every fraction of
`--fractions`; on `--family attributes` also `megl_<f>+r` / `megl_<f>+p`: MEGL with masks on f
and textual rationales (generated from the planted attributes) on `--rationale-fraction` of the
examples, the rationale's target the named attributes' own maps (+r) or their part regions (+p,
keypoint discs), `rrr_<f>+y` / `rrr_<f>+c`: RRR on log p_y or on the centred
log-probabilities (`config.explanation_loss.rrr_output`), and `rrr_<f>+g`: RRR on Grad-CAM at
conv2 as the share of the squared map outside the mask (`rrr_share`); `rrr_<f>+gp`: the same with
the map summed over 4 × 4 blocks before it is squared (`rrr_pool`). Each row is one seeds ensemble of
`--members` members trained in one vmapped step (mean ± std over the members), scored on the
decoy-free test split (mtljax/sweeps/egl.py). `--set KIND.KEY=VALUE` sets any other
`config.explanation_loss` key of one loss (e.g. `--set megl.megl_consistency=0.1`), or a
`config.data` or `config.train` key of its runs (`--set rrr.data.mask_region=box`,
`--set rrr.train.grad_clip_norm=0`).
Writes `<out>/egl_comparison.md` and `.json`; each run's workdir is `<out>/<row>`.
"""

from __future__ import annotations

import argparse
import os

from configs import attributes, digits
from mtljax.sweeps import egl

#: λ per family and loss. digits: chosen on decoy digits (input-gradient maps of the MLP; on the
#: validation split's loss scale so that each term is comparable to the task loss at the start of
#: training). attributes (shortcut CUB, third round): λ and the mask dilation chosen without the
#: test split — per loss, at 20 % masks (1 member, 12 epochs), the setting with the highest
#: `swapped_accuracy` on the decoyed validation split (its decoy repainted in another example's
#: colour) among RRR λ 10…10⁴ × dilation 0/2/4, GRADIA 5/50/500 × 0/2/4, RES 5/20, MEGL 5/20 × 0/2
#: (third round); fourth round: RRR on log p_y (+y) and on the centred log-probabilities (+c),
#: λ 10…1000 × dilation 0/2/4, and MEGL λ 10/20/50 × consistency weight 0.02…0.3; fifth round:
#: RRR on Grad-CAM as a share (+g), λ 3…100 × the mask region; sixth round: RRR summed over
#: p × p blocks (+gp: p 4), p 2…8 × λ 1…1000 × the mask region, on input gradients and Grad-CAM
#: (its centred signed maps too); seventh round: for 24 epochs the same rule picks λ 30 for +gp
#: (`--epochs 24 --lam rrr+gp=30`). The sweeps' tables: docs/notes/explanation-guided-rounds.md.
LAMBDA = {
  "digits": {"rrr": 10.0, "gradia": 5.0, "res": 5.0, "megl": 5.0},
  "attributes": {
    "rrr": 1000.0,
    "rrr+y": 100.0,
    "rrr+c": 100.0,
    "rrr+g": 10.0,
    "rrr+gp": 10.0,
    "gradia": 50.0,
    "res": 20.0,
    "megl": 20.0,
  },
}
#: config.explanation_loss.mask_dilation per family and loss (absent: 0).
DILATION = {
  "digits": {},
  "attributes": {"rrr": 4, "rrr+y": 4, "rrr+c": 4, "rrr+g": 2, "rrr+gp": 2, "gradia": 2, "megl": 2},
}
#: other config.explanation_loss values per family and loss (`--set` adds to / replaces them);
#: attributes: MEGL's consistency weight, chosen by the same validation rule (fourth round).
SETS = {"digits": {}, "attributes": {"megl": {"megl_consistency": 0.1}}}


def parser() -> argparse.ArgumentParser:
  """The command line (docs/explanation-guided.md's commands are checked against it)."""
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
    "--lam", nargs="*", default=(), metavar="KIND=VALUE", help="λ of a loss instead of LAMBDA's"
  )
  ap.add_argument(
    "--saliency-of", nargs="*", default=(), metavar="KIND=SALIENCY",
    help="the supervised map of one loss instead of --saliency",
  )  # fmt: skip
  ap.add_argument(
    "--saliency-mode", default="train", choices=("eval", "train"),
    help="config.explanation_loss.saliency_mode (eval: unstable with BatchNorm, see the doc)",
  )  # fmt: skip
  ap.add_argument(
    "--mask-dilation", nargs="*", default=(), metavar="[KIND=]PIXELS",
    help="config.explanation_loss.mask_dilation of one loss (or of all) instead of DILATION's",
  )  # fmt: skip
  ap.add_argument(
    "--score-saliency", default="input_gradient",
    help="the maps the table scores (e.g. gradcam@encoders_image/conv2, the supervised one)",
  )  # fmt: skip
  ap.add_argument(
    "--split", default="test", help="score on this split (val: the λ rule, swapped_accuracy)"
  )
  ap.add_argument(
    "--set", nargs="*", default=(), metavar="KIND.KEY=VALUE",
    help="another config.explanation_loss (or data., train.) value for one loss, e.g. "
    "megl.megl_consistency=0.1",
  )  # fmt: skip
  ap.add_argument(
    "--only", nargs="*", default=(), help="run only these rows (labels), in this order"
  )
  return ap


def main(argv=None):
  ap = parser()
  a = ap.parse_args(argv)
  lam = dict(LAMBDA[a.family])
  lam.update({k: float(v) for k, _, v in (x.partition("=") for x in a.lam)})
  saliency_of = {k: v for k, _, v in (x.partition("=") for x in a.saliency_of)}
  dilation = dict(DILATION[a.family])
  for x in a.mask_dilation:
    k, _, v = x.rpartition("=")
    dilation.update({k: int(v)} if k else {kind: int(v) for kind in LAMBDA[a.family]})
  extra = {
    kind: {f"explanation_loss.{k}": v for k, v in values.items()}
    for kind, values in SETS[a.family].items()
  }
  for x in a.set:
    name, _, value = x.partition("=")
    kind, _, key = name.partition(".")
    if not key or not value:
      ap.error(f"--set {x!r}: expected KIND.KEY=VALUE, e.g. megl.megl_consistency=0.1")
    if value.lower() in ("true", "false"):
      value = value.lower() == "true"
    else:
      for number in (int, float):
        try:
          value = number(value)
          break
        except ValueError:
          pass
    path = key if key.startswith(("data.", "train.")) else f"explanation_loss.{key}"
    extra.setdefault(kind, {})[path] = value
  variant = ",".join(filter(None, [a.variant, f"size={a.members}"]))
  if a.family == "digits":
    base, clean = digits.get_config(variant + ",decoy"), digits.get_config(variant)
    names = ("data_decoy", "data_clean")
  else:
    base = attributes.get_config(variant + ",shortcut")
    gradcam = base.explanation_loss.saliency  # the config's Grad-CAM layer (the +g rows' map)
    clean = attributes.get_config(variant + ",shortcut")
    clean.data.synthetic.decoy_size = 0.0
    names = ("data_decoy", "data_clean")
  for c, name in zip((base, clean), names):
    c.data.synthetic.dir = os.path.join(a.out, name)
    c.explanation_loss.saliency = a.saliency
    c.explanation_loss.saliency_mode = a.saliency_mode
    if a.epochs:
      c.train.num_epochs = a.epochs

  def setting(label, kind, f, key, first=None, last=None):
    """One row: the loss's λ and mask growth under `key` and its map, then the values `first`,
    then its `--set` values, then `last` (each later one wins)."""
    overrides = {
      "explanation_loss.lam": lam[key],
      "explanation_loss.mask_dilation": dilation.get(key, 0),
      "explanation_loss.saliency": saliency_of.get(kind, a.saliency),
    }
    overrides.update({**(first or {}), **extra.get(kind, {}), **(last or {})})
    return {"label": label, "kind": kind, "fraction": f, "overrides": overrides}

  settings = [{"label": "plain", "kind": "none", "fraction": 0.0}]
  for kind in a.kinds:
    settings += [setting(f"{kind}_{f:g}", kind, f, kind) for f in a.fractions]
    if kind == "rrr" and a.family == "attributes":
      # RRR on log p_y (+y) or on the centred log p (+c): the published Σ_k log p_k vanishes at
      # uniform p (mtljax/egl/losses.py rrr_scores)
      for f in a.fractions:
        for tag, output in (("y", "true_log_prob"), ("c", "centred_log_probs")):
          first = {"explanation_loss.saliency": "input_gradient"}
          last = {"explanation_loss.rrr_output": output}
          settings.append(setting(f"rrr_{f:g}+{tag}", kind, f, f"rrr+{tag}", first, last))
        # RRR on Grad-CAM, as the share of the squared map outside M (fifth round)
        first = {"explanation_loss.saliency": gradcam}
        last = {"explanation_loss.rrr_share": True}
        settings.append(setting(f"rrr_{f:g}+g", kind, f, "rrr+g", first, last))
        # ... summed over 4 × 4 blocks before it is squared (sixth round)
        last = {**last, "explanation_loss.rrr_pool": 4}
        settings.append(setting(f"rrr_{f:g}+gp", kind, f, "rrr+gp", first, last))
    if kind == "megl" and a.family == "attributes":
      for f in a.fractions:
        for tag, target in (("r", "attribute_maps"), ("p", "part_regions")):
          first = {"explanation_loss.rationale_target": target}
          last = {"data.rationale_fraction": a.rationale_fraction}
          settings.append(setting(f"megl_{f:g}+{tag}", kind, f, kind, first, last))
  keep = lambda label: not a.only or label in a.only  # noqa: E731
  settings = [st for st in settings if keep(st["label"])]
  if a.only:  # in the order given
    settings.sort(key=lambda st: list(a.only).index(st["label"]))
  metrics = egl.METRICS + (egl.EXTRA if a.split != "test" else ())
  rows = egl.compare(
    base, settings, a.out, clean_config=clean if keep("clean") else None, split=a.split,
    metrics=metrics, saliency=a.score_saliency,
  )  # fmt: skip
  print(egl.table(rows, metrics))
  print(f"written: the egl_comparison*.md/json of {a.out}")


if __name__ == "__main__":
  main()
