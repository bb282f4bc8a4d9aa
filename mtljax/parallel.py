"""Device mesh and shardings: one code path for 1 CPU, N simulated devices, a GPU host or a pod.

Data parallelism is expressed with `jax.jit` over a `Mesh` with a `data` axis (the modern form of
pmap): the batch is sharded along its leading axis, parameters and optimizer state are replicated,
and XLA inserts the gradient all-reduce. BatchNorm statistics are means over the *global* batch,
so the result does not depend on the number of devices. An ensemble may add an `ensemble` axis
that spreads its stacked members over devices (`config.ensemble.devices`).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
ENSEMBLE_AXIS = "ensemble"


def make_mesh(num_devices: int | None = None, ensemble: int = 1) -> jax.sharding.Mesh:
  """A mesh over the first `num_devices` global devices (all by default).

  `ensemble = 1`: one `data` axis. `ensemble = k > 1`: a `(data, ensemble)` mesh of shape
  `(n / k, k)` whose `ensemble` axis spreads the stacked members of an ensemble over k devices
  (each holds E / k members and computes only those), while the batch is split along `data`. The
  k devices of an `ensemble` row are consecutive, so they sit on one host: every process still
  reads distinct rows of the batch.
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if n > len(devices):
    raise ValueError(f"asked for a mesh of {n} devices but only {len(devices)} exist")
  auto = jax.sharding.AxisType.Auto  # the classic sharding propagation (jax >= 0.8: Explicit)
  if ensemble <= 1:
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(auto,), devices=devices[:n])
  local = jax.local_device_count()
  if n % ensemble or local % ensemble:
    raise ValueError(
      f"config.ensemble.devices={ensemble} must divide the number of devices ({n}) "
      f"and the devices per process ({local})"
    )
  grid = np.asarray(devices[:n], dtype=object).reshape(n // ensemble, ensemble)
  return jax.sharding.Mesh(grid, (DATA_AXIS, ENSEMBLE_AXIS), axis_types=(auto, auto))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def ensemble_sharded(mesh) -> NamedSharding:
  """Arrays with a leading member axis: split over `ensemble` (replicated without that axis)."""
  return NamedSharding(mesh, P(ENSEMBLE_AXIS) if ENSEMBLE_AXIS in mesh.axis_names else P())


def data_size(mesh) -> int:
  """Devices the batch is split over."""
  return int(mesh.shape[DATA_AXIS])


def check_batch_size(batch_size: int, mesh, what: str = "config.train.batch_size") -> None:
  n = data_size(mesh)
  if batch_size % n:
    raise ValueError(
      f"{what}={batch_size} must be divisible by the number of devices along the data axis ({n})"
    )


def shard_batch(batch, mesh):
  """Host batch (this process's rows, numpy) → global jax arrays sharded along `data`."""
  sharding = data_sharded(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )


def gather(tree):
  """Global (data-sharded) arrays → full numpy arrays on every host.

  One process: a device-to-host copy. Several: each host holds only its rows, so the rows are
  all-gathered across processes (`multihost_utils.process_allgather`)."""
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  auto: bool = False,
) -> bool:
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
      raise ValueError(
        f"coordinator {coordinator_address} given but the number of processes "
        f"({num_processes}) or this process's id ({process_id}) is missing: set "
        "--num_processes/--process_id or JAX_NUM_PROCESSES/JAX_PROCESS_ID"
      )
    jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    return True
  if auto:
    jax.distributed.initialize()
    return True
  return False
