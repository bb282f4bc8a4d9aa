"""Runs that produce a results table (explanation-guided training, trust metrics, task weighting,
resumption after a kill), not a speed comparison."""
