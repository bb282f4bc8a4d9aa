"""The ReLU every module uses, switchable to guided backpropagation for explanations.

Guided backprop (Springenberg et al. 2015) and Guided Grad-CAM change the backward rule of every
ReLU: a gradient passes only where the forward input was positive *and* the incoming gradient is
positive. Modules call `relu` from here; inside `with guided_relus():` it is the guided version.
The switch is read when a function is traced, so jit a guided function inside the context (a
function jitted and cached outside it keeps the ordinary ReLU).
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp

_GUIDED = contextvars.ContextVar("mtljax_guided_relu", default=False)


@jax.custom_vjp
def guided_relu(x):
  return jnp.maximum(x, 0)


def _guided_fwd(x):
  return jnp.maximum(x, 0), x


def _guided_bwd(x, g):
  return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


def relu(x):
  return guided_relu(x) if _GUIDED.get() else jax.nn.relu(x)


@contextlib.contextmanager
def guided_relus():
  """Within the block, `relu` back-propagates with the guided rule."""
  token = _GUIDED.set(True)
  try:
    yield
  finally:
    _GUIDED.reset(token)
