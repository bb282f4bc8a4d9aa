"""Explanations you can trust: faithfulness, randomisation (sanity), robustness, localisation and
complexity metrics as pure jitted JAX functions, the members' spread, and the explain run's page.

Modules: `core` (baselines, ranks, correlations, chunked steps), `faithfulness`, `sanity`,
`robustness`, `simple` (localisation, complexity, uncertainty), `registry` (`TRUST_METRICS`, what
`config.explain.metrics` may name), `evaluate` (the explain run's hook), `page` (the HTML page).
Definitions: `docs/trust.md`.
"""

from mtljax.attribution.trust.registry import TRUST_METRICS, TrustMetric, resolve

__all__ = ["TRUST_METRICS", "TrustMetric", "resolve"]
