"""Explanations you can trust: faithfulness, randomisation (sanity), robustness, localisation and
complexity metrics as pure jitted JAX functions, and the members' spread.

Modules: `ops` (baselines, ranks, correlations, chunked steps), `faithfulness`, `sanity`,
`robustness`, `map_metrics` (localisation, complexity, uncertainty), `registry` (`TRUST_METRICS`:
what `config.explain.metrics` may name, each entry with its function; `register` adds one). The
explain run's evaluation is `mtljax/explain/trust.py`. Definitions: `docs/trust.md`.
"""

from mtljax.attribution.trust.registry import TRUST_METRICS, Inputs, TrustMetric, register, resolve

__all__ = ["TRUST_METRICS", "Inputs", "TrustMetric", "register", "resolve"]
