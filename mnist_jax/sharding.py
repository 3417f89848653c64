"""Data parallelism over every device and host: one mesh, parameters replicated, each batch split along "data".

The training loop runs inside `jax.set_mesh(mesh)`; the programs in steps.py then place their outputs with
`replicated` and `split_batches` (batch indices from the host: `put_batches`), and XLA adds the all-reduce of the
gradients. One device is a mesh of one: the same code path, the same programs.
"""

import logging
import warnings
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mnist_jax.errors import UserError

log = logging.getLogger(__name__)

DATA = "data"  # the mesh axis batches are split along


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join a multi-process run: at the address given, or as a detected cluster (Slurm, Open MPI, Kubernetes) says.

    Without arguments and outside a cluster, nothing happens: one process, its own devices.
    """
    given = (coordinator_address, num_processes, process_id)
    if given == (None, None, None) and not _cluster_detected():
        return
    if None not in given and not 0 <= process_id < num_processes:
        raise UserError(f"--process-id must be from 0 to {num_processes - 1} for --num-processes {num_processes}, "
                        f"got {process_id}.")
    try:
        jax.distributed.initialize(*given)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"Cannot join the multi-process run: {str(error).strip().splitlines()[0]}") from None
    log.info("Process %d of %d, with %d of the %d devices.", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def _cluster_detected() -> bool:
    """Whether jax.distributed.initialize() would find a cluster here, from environment variables alone."""
    try:
        from jax._src.clusters import k8s_cluster, ompi_cluster, slurm_cluster  # JAX's own detection
    except ImportError:
        return False
    clusters = (slurm_cluster.SlurmCluster, ompi_cluster.OmpiCluster, k8s_cluster.K8sCluster)
    with warnings.catch_warnings():  # a pod without the `kubernetes` package is a single-process run, not a fault
        warnings.simplefilter("ignore")
        return any(cluster.is_env_present() for cluster in clusters)


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis mesh over the first `num_devices` devices (all of them, every host's, by default)."""
    devices = jax.devices()
    count = len(devices) if num_devices is None else num_devices
    if not 1 <= count <= len(devices):
        raise UserError(f"--devices must be from 1 to {len(devices)} (the devices JAX sees), got {count}.")
    if jax.process_count() > 1 and count != len(devices):
        raise UserError(f"--devices {count}: a run of {jax.process_count()} processes uses all {len(devices)} "
                        f"devices.")
    return jax.make_mesh((count,), (DATA,), devices=devices[:count], axis_types=(AxisType.Auto,))


def check_batch(batch_size: int, mesh: Mesh, flag: str = "--batch-size") -> None:
    """A global batch must split evenly over the devices."""
    devices = mesh.shape[DATA]
    if batch_size % devices:
        raise UserError(f"{flag} {batch_size} does not split evenly over {devices} devices; use a multiple of "
                        f"{devices}.")


def put_replicated(array: np.ndarray, mesh: Mesh) -> jax.Array:
    """A host array copied to every device of the mesh; each process gives its own (identical) copy."""
    return jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec()), array)


def to_host(array: jax.Array) -> np.ndarray:
    """The whole array as NumPy, gathered from the other processes where they hold parts of it (every process
    must call it then)."""
    if array.is_fully_addressable:
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def replicated(tree: Any) -> Any:
    """Inside a jitted program under a mesh: keep `tree` whole on every device (parameters, optimizer state)."""
    if jax.sharding.get_abstract_mesh().empty:
        return tree
    return jax.lax.with_sharding_constraint(tree, PartitionSpec())


def batches_sharding(mesh: Mesh) -> NamedSharding:
    """Where `split_batches` puts a block of batch indices: each device holds its share of every batch (axis 1)."""
    return NamedSharding(mesh, PartitionSpec(None, DATA))


def put_batches(batches_SxB: np.ndarray) -> jax.Array:
    """Batch indices from the host, placed as `split_batches` places them under the current mesh."""
    mesh = jax.sharding.get_mesh()
    if mesh.empty:
        return jax.device_put(batches_SxB)
    return jax.make_array_from_callback(batches_SxB.shape, batches_sharding(mesh), lambda index: batches_SxB[index])


def put_whole(array: np.ndarray) -> jax.Array:
    """A small host array, whole on every device of the current mesh (every process passes the same)."""
    mesh = jax.sharding.get_mesh()
    return jax.device_put(array) if mesh.empty else put_replicated(array, mesh)


def split_batches(batches_SxB: jax.Array) -> jax.Array:
    """Inside a jitted program under a mesh: each device takes its share of every batch (axis 1)."""
    if jax.sharding.get_abstract_mesh().empty:
        return batches_SxB
    return jax.lax.with_sharding_constraint(batches_SxB, PartitionSpec(None, DATA))


def data_devices() -> int:
    """How many devices batches are split over in the current mesh (1 without one)."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty else mesh.shape[DATA]


def is_primary() -> bool:
    """Whether this process writes the run's files and logs (process 0; the only one in most runs)."""
    return jax.process_index() == 0


def describe(mesh: Mesh) -> dict[str, Any]:
    """The mesh for environment.json."""
    return {"axis_names": list(mesh.axis_names), "shape": dict(mesh.shape), "process_count": jax.process_count(),
            "devices": [str(device) for device in mesh.devices.flat]}
