r"""Two finished egl_compare.py rows of shortcut CUB compared on test accuracy, paired per example.

    python -m profiling.experiments.egl_paired_accuracy --out /tmp/megl3/final megl_0.05+p \
        res_0.05 gradia_0.05

For every test example the member-mean correctness of each row (its ensemble's members at the
last checkpoint), then a paired t-test of the first row against each other row
(docs/explanation-guided.md, the 5 % comparison).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from configs import attributes


def correctness(workdir: str) -> np.ndarray:
  """[N] the share of the row's members that classify each test example correctly."""
  from mtljax.sweeps import egl

  saved = json.load(open(os.path.join(workdir, "config.json")))
  cfg = attributes.get_config(f"shortcut,size={saved['ensemble']['size']}")
  cfg.data.synthetic.dir = saved["data"]["synthetic"]["dir"]
  return egl.score_workdir(cfg, workdir, "test")["correct_examples"].mean(0)


def parser() -> argparse.ArgumentParser:
  """The command line (docs/explanation-guided.md's commands are checked against it)."""
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument(
    "--out", required=True, help="the --out folder of profiling/experiments/egl_compare.py"
  )
  ap.add_argument("rows", nargs="+", help="row labels; the first is compared with the others")
  return ap


def main(argv=None):
  from scipy import stats

  a = parser().parse_args(argv)
  first = correctness(os.path.join(a.out, a.rows[0]))
  for row in a.rows[1:]:
    other = correctness(os.path.join(a.out, row))
    t, p = stats.ttest_rel(first, other)
    print(
      f"{a.rows[0]} {first.mean():.3f} vs {row} {other.mean():.3f}: paired t {t:+.2f}, "
      f"p {p:.1e} (n={len(first)})"
    )


if __name__ == "__main__":
  main()
