"""mtljax.models.pooling.max_pool against flax's `nn.max_pool` (and PyTorch's tie rule).

The forward is the same reduce-window; the derivative rule here must give flax's gradient, second
order and forward-mode tangent wherever the maximum is unique, the first maximum's element where
it is not (PyTorch's `max_pool2d`), and compile without the scatter and index arrays that made
the gradient slow.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax.models import pooling

# (input shape, window, strides, padding): ResNet's stem pool, the U-Net's, SAME on odd sizes
# with unequal windows and strides.
CASES = [
  ((2, 9, 9, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),
  ((2, 8, 6, 4), (2, 2), (2, 2), "VALID"),
  ((3, 7, 5, 2), (3, 2), (1, 2), "SAME"),
  ((1, 10, 11, 2), (3, 3), (3, 2), ((0, 2), (1, 0))),
]


@pytest.mark.parametrize("shape,window,strides,padding", CASES, ids=str)
def test_equals_flax_forward_gradients_and_tangents(shape, window, strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)  # continuous: no ties
  ours = lambda x: pooling.max_pool(x, window, strides, padding)
  flax = lambda x: nn.max_pool(x, window, strides, padding)
  np.testing.assert_array_equal(ours(x), flax(x))
  g = jnp.asarray(rng.normal(size=flax(x).shape), jnp.float32)
  np.testing.assert_array_equal(jax.vjp(ours, x)[1](g)[0], jax.vjp(flax, x)[1](g)[0])
  t = jnp.asarray(rng.normal(size=shape), jnp.float32)
  np.testing.assert_array_equal(jax.jvp(ours, (x,), (t,))[1], jax.jvp(flax, (x,), (t,))[1])

  def second(f):  # d/dx of a function of the input gradient (the explanation-guided losses)
    return jax.grad(lambda x: jnp.sum(jnp.sin(jax.grad(lambda x: jnp.sum(jnp.sin(f(x))))(x))))

  np.testing.assert_allclose(second(ours)(x), second(flax)(x), rtol=1e-5, atol=1e-6)
  batched = jnp.stack([x, 2 * x])  # leading batch dimensions, as under vmap
  np.testing.assert_array_equal(pooling.max_pool(batched, window, strides, padding)[1], flax(2 * x))


def test_ties_send_the_gradient_to_the_first_maximum():
  """A window of equal values (ReLU zeros): the whole cotangent goes to its first element in
  row-major order, once; the padding (−inf) never gets any."""
  x = jnp.zeros((1, 4, 4, 1), jnp.float32).at[0, 3, 3, 0].set(1.0)
  y, vjp = jax.vjp(lambda x: pooling.max_pool(x, (2, 2), (2, 2)), x)
  (dx,) = vjp(jnp.ones_like(y))
  want = np.zeros((4, 4))
  want[0, 0] = want[0, 2] = want[2, 0] = want[3, 3] = 1.0
  np.testing.assert_array_equal(dx[0, :, :, 0], want)
  torch = pytest.importorskip("torch")
  tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  torch.nn.functional.max_pool2d(tx, 2, 2).sum().backward()
  np.testing.assert_array_equal(tx.grad.numpy()[0, 0], want)
  (dx,) = jax.grad(lambda x: jnp.sum(pooling.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))))(-x)
  assert float(dx.sum()) == 4.0  # four windows, each one element (never the padding)


def test_the_gradient_compiles_without_scatter_or_index_arrays():
  """What made flax's slow (a scatter, input-sized iotas) is absent, and the argmax is kept."""
  x = jnp.zeros((2, 16, 16, 8), jnp.float32)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(pooling.max_pool(x, (3, 3), (2, 2), ((1, 1),) * 2))))
  hlo = grad.lower(x).compile().as_text()
  ops = set(re.findall(r"= \S+ ([\w-]+)\(", hlo))
  assert not ops & {"scatter", "iota", "select-and-scatter"}, ops
  # The index of each window's maximum is computed once, into its own int8 buffer (not re-run
  # inside the gradient's fusion for every input element).
  assert re.search(r"^\s*%\S+ = s8\[2,8,8,8\]\S* fusion\(", hlo, re.M), hlo
  flax = jax.jit(jax.grad(lambda x: jnp.sum(nn.max_pool(x, (3, 3), (2, 2), ((1, 1),) * 2))))
  assert {"scatter", "iota"} <= set(
    re.findall(r"= \S+ ([\w-]+)\(", flax.lower(x).compile().as_text())
  )
