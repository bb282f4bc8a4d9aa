"""Learning from explanations: explanation-guided training.

``saliency``: saliency maps as differentiable functions of the params; ``losses``: RRR, GRADIA,
RES and MEGL as the objective term "explanation" (``config.explanation_loss``);
``annotations``: the masks / rationales / class patterns a reader puts in ``example["meta"]``;
``compare``: the baseline-vs-losses-vs-fractions table; ``textual``: sentences grounded by
saliency. Docs: docs/explanation-guided.md.
"""
