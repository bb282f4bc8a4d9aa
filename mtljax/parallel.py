"""Device mesh and shardings: one code path for 1 CPU, N simulated devices, a GPU host or a pod.

Data parallelism is expressed with `jax.jit` over a `Mesh` with a `data` axis (the modern form of
pmap): the batch is sharded along its leading axis, parameters and optimizer state are replicated,
and XLA inserts the gradient all-reduce. BatchNorm statistics are means over the *global* batch,
so the result does not depend on the number of devices.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
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


def gather(tree):
  """Global (data-sharded) arrays → full numpy arrays on every host.

  One process: a device-to-host copy. Several: each host holds only its rows, so the rows are
  all-gathered across processes (`multihost_utils.process_allgather`)."""
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           auto: bool = False) -> bool:
  """Starts JAX's multi-controller runtime (`jax.distributed.initialize`) when asked to.

  - explicitly: a coordinator `host:port` with the number of processes and this process's id
    (flags, or the environment variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
    `JAX_PROCESS_ID`, which `launch/local_multiprocess.sh` and `launch/slurm.sbatch` set);
  - `auto=True`: let JAX detect the cluster (Cloud TPU pod slices, SLURM, Open MPI, ...).
  Returns whether the runtime was started. Must run before anything touches a device.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if coordinator_address:
    num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0")) or None
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
      process_id = int(os.environ["JAX_PROCESS_ID"])
    if num_processes is None or process_id is None:
      raise ValueError(f"coordinator {coordinator_address} given but the number of processes "
                       f"({num_processes}) or this process's id ({process_id}) is missing: set "
                       "--num_processes/--process_id or JAX_NUM_PROCESSES/JAX_PROCESS_ID")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
  if auto:
    jax.distributed.initialize()
    return True
  return False
