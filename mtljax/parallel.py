"""Device mesh and shardings: one code path for 1 CPU, N simulated devices, a GPU host or a pod.

Data parallelism is expressed with `jax.jit` over a `Mesh` with a `data` axis (the modern form of
pmap): the batch is sharded along its leading axis, parameters and optimizer state are replicated,
and XLA inserts the gradient all-reduce. BatchNorm statistics are means over the *global* batch,
so the result does not depend on the number of devices.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` global devices (all by default)."""
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if n > len(devices):
    raise ValueError(f"asked for a mesh of {n} devices but only {len(devices)} exist")
  # Auto axis types: the classic sharding propagation (jax >= 0.8 defaults to Explicit).
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh, what: str = "config.train.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{what}={batch_size} must be divisible by the number of devices ({n})")


def shard_batch(batch, mesh):
  """Host batch (this process's rows, numpy) → global jax arrays sharded along `data`."""
  sharding = data_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def to_host(tree):
  """Fully materialise (possibly sharded) arrays as numpy on this host."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
