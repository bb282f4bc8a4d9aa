"""Intrinsic multitask explanation (mtl-explainability paper §4.2, Appendix C).

From a workdir's per-epoch predictions (`predictions/<split>/epoch_NNN.npz`): error correlations
between tasks, correct/false combinations of two classification tasks and their hierarchy
adherence, an auxiliary regression error per combination, the main error split by auxiliary
correctness (per example and per group), and error maps of dense tasks; written as PNG, CSV/JSON
and one `report/index.html` by `report.analyze_workdir` (`--mode=analyze`).

  stats.py        the statistics (pure numpy/scipy)
  predictions.py  reading and checking the prediction files; `AnalysisError`
  figures.py      matplotlib figures
  per_epoch.py    one pass over the epochs: the rows of every table
  sections.py     each section's CSV, figure and text
  html_page.py    the CSV writer and the HTML page
  report.py       `analyze_workdir`: what to analyse (settings, pair, hierarchy) and the run
"""

from mtljax.analysis.predictions import AnalysisError

__all__ = ["AnalysisError"]
