"""MTC-LIM (multitask façade classification with label interdependency modelling): its evaluation
(`metrics`: OA and κ from mtljax.metrics, class-wise F1, Δm, label co-occurrence) and the Table 3
sweep over the model variants (`python -m mtljax.sweeps.mtc`). The models are in
mtljax/models/lim.py, the data in mtljax/data/ (facades), the config in configs/facades.py.
"""
