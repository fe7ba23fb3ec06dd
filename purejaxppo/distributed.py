"""One training run over several processes: JAX's multi-controller runtime.

Each process runs the same program, `jax.distributed.initialize` joins them,
and from then on `jax.devices()` lists every process's devices while
`jax.local_devices()` lists this process's own. Nothing else changes: the
seeds (`purejaxppo.devices.shard_seeds`) and one seed's envs
(``make_train(config, env_devices=...)``) are split over a `Mesh` of the
global devices by the same code as over one process's devices, and XLA
carries the collectives between processes (NCCL on GPUs, ICI on TPUs, gloo
over TCP for CPUs).

    >>> from purejaxppo import distributed
    >>> distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)  # on each host
    >>> keys = shard_seeds(jax.random.split(jax.random.PRNGKey(0), 8))   # over every host's devices
    >>> result = jax.jit(jax.vmap(make_train(config)))(keys)
    >>> returns = distributed.to_host(result.metrics["episode_return"])  # all seeds, on every host

With no arguments, `initialize` leaves it to JAX to find the cluster (SLURM,
Open MPI, Cloud TPU, ...). Arrays a process holds only part of are read
with `to_host` (a collective: every process calls it at the same point);
files are written by the main process (`is_main`), and checkpoints by
orbax's own multi-process protocol (`purejaxppo.checkpoint`). docs/multiprocess.md
has the commands for SLURM and multi-host GPU and TPU machines.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Any = None,
    heartbeat_timeout_s: int | None = None,
    initialization_timeout_s: int | None = None,
) -> None:
    """Join this process to a run of ``num_processes`` (`jax.distributed.initialize`).

    Call it before anything else uses JAX, the same way in every process.

    Args:
        coordinator_address: ``HOST:PORT`` of process 0, which serves the
            coordination; None with the other two None: JAX detects the
            cluster (SLURM, Open MPI, Cloud TPU, ...).
        num_processes: the processes of the run (>= 1).
        process_id: this process's index, 0 <= process_id < num_processes.
        local_device_ids: the local devices this process uses (JAX's
            default: all of them, or what the cluster assigns).
        heartbeat_timeout_s: seconds without a sign of life after which a
            process is taken as dead and the others stop with an error
            (JAX's default 100). A process that exits is noticed at once by
            the next collective; this bounds the wait for one that hangs.
        initialization_timeout_s: seconds to wait for every process to join
            (JAX's default 300).

    On a CPU, the collectives between processes run over TCP (gloo), set
    here before the backend starts.

    Raises:
        ValueError: an argument is out of range, or only some of the first
            three are given.
    """
    import jax

    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}
    if any(v is None for v in given.values()) and any(v is not None for v in given.values()):
        missing = ", ".join(k for k, v in given.items() if v is None)
        raise ValueError(f"distributed: {missing} not given; allowed: coordinator_address, "
                         "num_processes and process_id together, or none of them (JAX detects "
                         "the cluster: SLURM, Open MPI, Cloud TPU)")
    if coordinator_address is not None:
        check_address(coordinator_address)
        if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
            raise ValueError(f"num_processes={num_processes!r}; allowed: an int >= 1")
        if (isinstance(process_id, bool) or not isinstance(process_id, int)
                or not 0 <= process_id < num_processes):
            raise ValueError(f"process_id={process_id!r}; allowed: an int from 0 to "
                             f"{num_processes - 1} (num_processes={num_processes})")
    timeouts = {"heartbeat_timeout_seconds": heartbeat_timeout_s,
                "initialization_timeout": initialization_timeout_s}
    for name, value in timeouts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name.replace('_seconds', '_s')}={value!r}; allowed: an int >= 1 (seconds)")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids,
                                   **{k: v for k, v in timeouts.items() if v is not None})
    except ValueError as error:
        if coordinator_address is None:
            raise ValueError(f"distributed: JAX found no cluster to join ({error}); allowed: "
                             "run under SLURM, Open MPI or on a Cloud TPU, or give "
                             "coordinator_address, num_processes and process_id") from None
        raise


def check_address(address: str) -> None:
    """A `ValueError` unless ``address`` reads ``HOST:PORT`` with a port of 1 to 65535."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"coordinator_address={address!r}; allowed: HOST:PORT, e.g. "
                         "10.0.0.1:1234 (process 0's host, a free port)")


def process_count() -> int:
    """The processes of the run: 1 without `initialize` (asked without
    starting a JAX backend)."""
    import jax

    return jax.process_count() if jax.distributed.is_initialized() else 1


def is_main() -> bool:
    """Whether this is process 0: the one that prints and writes the run's files."""
    import jax

    return not jax.distributed.is_initialized() or jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """``tree`` with each array leaf as a NumPy array of its whole value.

    An array spread over several processes' devices (e.g. the metrics of
    seeds split over hosts) is gathered from all of them: a collective, so
    every process calls this at the same point of the program. Other
    leaves are read as `numpy.asarray` reads them."""
    import jax

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def broadcast_text(text: str) -> str:
    """Process 0's ``text``, on every process (e.g. a run directory named by
    process 0's clock). A collective; the text itself on one process."""
    if process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode()[:4096].ljust(4096, b"\0"), np.uint8)
    got = np.asarray(multihost_utils.broadcast_one_to_all(data))
    return bytes(got.astype(np.uint8)).rstrip(b"\0").decode()


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier ``name`` (nothing
    with one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def describe_failure(error: BaseException) -> str | None:
    """A sentence for an error that says another process of the run is gone
    (a collective that lost its peer, the coordinator's error), or None."""
    if process_count() == 1:
        return None
    text = str(error)
    # A collective that lost its peer (gloo), the coordinator's notice of a
    # dead process, or orbax waiting in vain for it at a checkpoint's barrier.
    signs = ("Connection closed by peer", "Connection reset by peer", "Gloo", "coordination service",
             "heartbeat", "Broken pipe", "DEADLINE_EXCEEDED", "UNAVAILABLE", "barrier")
    if not any(sign in text for sign in signs):
        return None
    import jax

    return (f"another process of this {jax.process_count()}-process run stopped or lost contact "
            f"(this is process {jax.process_index()}): {text.strip().splitlines()[0][:300]}")
