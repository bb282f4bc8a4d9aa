"""2-D convolutions on CPU backed by oneDNN (the kernels PyTorch calls) through `jax.ffi`.

XLA:CPU's own convolutions run at about half of oneDNN's speed here (docs/performance.md). This
package holds the C++ kernels (conv.cc: forward, input gradient, kernel gradient), their build on
first use (build.py) and the differentiable JAX function over them (ops.py).
`mtljax.models.convolution` routes every conv of mtljax's models here when `config.conv` says so.

It lives under mtljax/models/ because it is a model op: the models import it, and in the layer
order of tests/test_imports.py models may import only leaves and data.
"""

from mtljax.models.onednn.ops import available, conv  # noqa: F401
