"""Side-by-side speed comparisons: each script times mtljax against a reference (Captum, Quantus,
PyTorch, TorchJD) or against its own alternatives, interleaved in one process. Shared models and
the timing harness: `common.py`."""
