"""Explanation-guided training.

``maps``: the maps a loss trains through, from the attribution registry (differentiable w.r.t.
the params); ``losses``: the explanation-loss kinds (RRR, GRADIA, RES, MEGL) as a registry;
``term``: the objective term "explanation" (``config.explanation_loss``) and its config check;
``config``: that config section; ``textual``: sentences grounded by saliency. The comparison
sweep is ``mtljax.sweeps.egl``. Docs: docs/explanation-guided.md.
"""
