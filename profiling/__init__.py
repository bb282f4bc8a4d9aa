"""Benchmarks and experiments, run as modules from the repository root (not part of the installed
package): `python -m profiling.benchmarks.<name>`, `python -m profiling.experiments.<name>`."""
