"""Data parallelism with JAX sharding: one mesh over every device of every process.

The global batch is split across all devices; parameters, optimizer state and
BatchNorm statistics are replicated. The jitted train step is the single-device
program: XLA's SPMD partitioner inserts the all-reduces for gradients and for
BatchNorm's batch means, so statistics are over the global batch and N devices
train the same model as one device with the same global batch.

Across hosts, each process reads and holds one shard of the training set
(`data_shards` in the config equals the number of processes); the dataset is a
global array `[S, N/S, 28, 28]` whose shard s lives on process s's devices.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan.errors import one_line

# Mesh axes: processes (hosts) x devices of one process. The batch axis is split
# over both, so on one host this is a 1-D mesh over the local devices.
PROCESS, DEVICE = "process", "device"
BATCH_SPEC = P((PROCESS, DEVICE))


class ParallelError(Exception):
    """A device or cluster setting that cannot work; the message is one line."""


class JoinInterrupted(ParallelError):
    """Ctrl-C or SIGTERM while waiting for the other processes at start."""


# JAX's own deadline is set this much later than ours, so that ours, which ends
# in one line, always comes first (JAX's ends the process with a C++ trace).
_JAX_TIMEOUT_MARGIN_S = 30


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: int = 120,
               stop: threading.Event | None = None) -> None:
    """Joins a multi-process run (`jax.distributed.initialize`) when asked.

    With `coordinator` the three values come from the flags; without it, JAX
    reads them from a SLURM job step (`srun`) or an Open MPI launch (`mpirun`) of
    more than one task. A single process (the usual case) needs nothing.

    Raises:
      ParallelError: bad values, or not joined within `timeout` seconds.
      JoinInterrupted: `stop` was set (train.py's SIGINT and SIGTERM handlers
        set it) or a KeyboardInterrupt arrived while waiting.
    """
    if coordinator is None and num_processes is None and process_id is None:
        if not _cluster_environment():
            return
        args: dict[str, Any] = {}
        where = "the other processes of the cluster job"
    else:
        if coordinator is None or num_processes is None or process_id is None:
            raise ParallelError("`coordinator`, `num_processes` and `process_id` "
                                "go together")
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ParallelError(f"`coordinator` must be host:port, like "
                                f"10.0.0.1:1234; got {coordinator!r}")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ParallelError(f"`process_id` must be in 0..{num_processes - 1} "
                                f"and `num_processes` positive")
        args = {"coordinator_address": coordinator, "num_processes": num_processes,
                "process_id": process_id}
        where = (f"all {num_processes} processes to join at {coordinator}"
                 if process_id == 0 else f"the coordinator at {coordinator}")
    # CPU devices of different processes talk through Gloo (GPUs use NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _join(args, timeout, where, stop or threading.Event())


def _join(args: dict[str, Any], timeout: int, where: str,
          stop: threading.Event) -> None:
    """`jax.distributed.initialize(**args)` in a helper thread, so that the main
    thread, waiting for it, still sees a stop request and keeps the deadline.
    (JAX's wait blocks signals and ends the process with a C++ trace.)
    The caller exits at once after a ParallelError (`cli.fail`), helper and all.
    """
    failure: list[Exception] = []

    def run() -> None:
        try:
            jax.distributed.initialize(
                **args, initialization_timeout=timeout + _JAX_TIMEOUT_MARGIN_S)
        except Exception as e:  # noqa: BLE001 - JAX raises several types here.
            failure.append(e)

    helper = threading.Thread(target=run, name="join-distributed-run", daemon=True)
    try:
        print(f"waiting up to {timeout} s for {where}", file=sys.stderr, flush=True)
        helper.start()
        deadline = time.monotonic() + timeout
        while helper.is_alive() and time.monotonic() < deadline and not stop.is_set():
            helper.join(0.1)
        waiting = helper.is_alive()
    except KeyboardInterrupt:
        stop.set()
    if stop.is_set():
        raise JoinInterrupted(f"interrupted while waiting for {where}") from None
    if waiting:
        raise ParallelError(f"waited {timeout} s for {where} (`coordinator_timeout`); "
                            "is every process started, with the same address?")
    if failure:
        raise ParallelError(f"cannot join the distributed run: "
                            f"{one_line(failure[0])}") from None


def _cluster_environment() -> bool:
    """A multi-task launch JAX's cluster detection understands."""
    def count(var: str) -> int:
        try:
            return int(os.environ.get(var, "1"))
        except ValueError:
            return 1
    # SLURM: inside a job step only (srun sets the step's node list), as JAX.
    if os.environ.get("SLURM_STEP_NODELIST") and count("SLURM_NTASKS") > 1:
        return True
    return count("OMPI_COMM_WORLD_SIZE") > 1


def make_mesh(devices_per_process: int | None = None) -> Mesh:
    """A (process, device) mesh over the first `devices_per_process` local devices
    of every process (all of them by default)."""
    n_local = jax.local_device_count()
    use = n_local if devices_per_process is None else devices_per_process
    if not 1 <= use <= n_local:
        raise ParallelError(f"`devices` must be between 1 and {n_local} "
                            f"(the local {jax.default_backend()} devices), got {use}")
    rows = []
    for p in range(jax.process_count()):
        mine = sorted((d for d in jax.devices() if d.process_index == p),
                      key=lambda d: d.id)
        rows.append(mine[:use])
    return Mesh(np.array(rows), (PROCESS, DEVICE))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole value (parameters, optimizer state, keys)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over every device of the mesh."""
    return NamedSharding(mesh, BATCH_SPEC)


def check_batch(mesh: Mesh, batch_size: int, data_shards: int) -> None:
    """The global batch must split evenly over the devices and the data shards."""
    if batch_size % mesh.size:
        raise ParallelError(f"`batch_size` {batch_size} does not split evenly over "
                            f"{mesh.size} devices")
    if batch_size % data_shards:
        raise ParallelError(f"`batch_size` {batch_size} does not split evenly over "
                            f"{data_shards} data shards")


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places host or single-device values on every device of the mesh."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype,
                                                              jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(a)))
        return jax.make_array_from_process_local_data(sharding, np.asarray(a))
    return jax.tree.map(put, tree)


def shard_dataset(images: np.ndarray, labels: np.ndarray, data_shards: int,
                  mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    """The training set as global arrays `[S, N/S, 28, 28]` and `[S, N/S]`.

    In one process `images`/`labels` are the whole set, cut here into S contiguous
    shards (the `N % S` last examples left out) and put on every device. In a
    multi-process run (S = number of processes) they are this process's shard only
    (`gan.data.load_mnist(shard=...)`), which stays on this process's devices.
    """
    if jax.process_count() == 1:
        per = len(labels) // data_shards
        images = images[:per * data_shards].reshape(data_shards, per,
                                                    *images.shape[1:])
        labels = labels[:per * data_shards].reshape(data_shards, per)
        sharding = replicated(mesh)
        return jax.device_put(images, sharding), jax.device_put(labels, sharding)
    sharding = NamedSharding(mesh, P(PROCESS))
    return (jax.make_array_from_process_local_data(
                sharding, images[None], (data_shards,) + images.shape),
            jax.make_array_from_process_local_data(
                sharding, labels[None], (data_shards,) + labels.shape))


def to_host(tree: Any) -> Any:
    """NumPy copies of (replicated) arrays, read from this process's first device
    in one batched transfer."""
    return jax.device_get(jax.tree.map(
        lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree))


def is_primary() -> bool:
    """Process 0 writes logs, grids and other files; every process checkpoints."""
    return jax.process_index() == 0
