"""Seeds over devices: one vmapped training run, split across devices by its keys
(and when to split one seed's envs over devices instead).

``jax.jit(jax.vmap(train))(keys)`` trains one seed per key. Put the keys on
a device mesh first, ``keys = shard_seeds(keys)``, and ``jax.jit`` partitions
the same program over the seed axis: each device trains its share of the
seeds, and no data moves between devices (the seeds' computations are
independent). The call itself is unchanged, on CPU, GPU or TPU; the
results are those of the one-device run up to float summation order
(tests/test_devices.py): the parameters bitwise with jaxlib 0.10 and 0.11
where each device trains two seeds or more; to float rounding with jaxlib
0.12 (2.3e-10 apart in the test), whose CPU compiler orders some sums
differently for a device's share of the seeds, and with one seed per device,
whose program XLA compiles for a single seed (3e-8 apart after 5 updates
of CartPole's defaults, a session-22 check); metrics that average over a batch, such as
``explained_variance``, within float rounding. So a checkpointed run resumed
on another device count continues within float rounding, not bit for bit,
where a device held one seed.

On a CPU, XLA shows one device unless asked for more, once, when JAX
starts its CPU backend (``jax_num_cpu_devices``, or the
``JAX_NUM_CPU_DEVICES`` environment variable). Each CPU device runs its
program on its own thread, so a multi-seed run split over one device per
core keeps every core busy without handing tiny kernels between threads
(with XLA's CPU pool at one thread, `purejaxppo.cpu_threads`). On the
project's 2-core CPU, ``python benchmarks/throughput.py`` (at 645f289;
benchmarks/NOTES.md, session 11) ran CartPole defaults over 8 seeds at
248k env steps/s on two devices, where the run before, on one device, gave
140k; over 64 seeds, 244k against 109k.

One seed can use the devices too: ``make_train(config, env_devices=D)``
splits its envs over D devices, data parallel, with one all-reduce per
gradient step (and, with ``norm_adv``, one gather of each device's advantage
mean and spread) (`purejaxppo.train.split_envs_over_devices`). `env_devices_for`
is the rule for when that pays on a CPU (each device keeps at least
`MIN_ENV_SHARE` samples of every minibatch), and `auto_env_devices` applies
it once JAX has started.

`cpu_devices_for` is the rule the CLI's ``--cpu-devices auto`` and the
benchmarks apply (for one seed, the devices its envs will be split over);
`set_cpu_devices` applies a count before JAX starts. As with the thread
pool, ``import purejaxppo`` changes nothing here: it is a process-wide
choice.
"""

from __future__ import annotations

import os

import numpy as np

ENV_VAR = "JAX_NUM_CPU_DEVICES"
SEED_AXIS = "seeds"
MIN_ENV_SHARE = 256  # samples of a minibatch per device, for `env_devices_for`
_XLA_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where known)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest d <= ``limit`` that divides ``n`` (both >= 1)."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def env_devices_for(
    num_envs: int, minibatch_size: int, cores: int | None = None, grad_chunk_size: int | None = None
) -> int:
    """The devices to split one seed's envs over (`purejaxppo.train.make_train`'s
    ``env_devices``): the most, up to one per core, that divide ``num_envs``
    and ``minibatch_size`` and leave each device at least `MIN_ENV_SHARE`
    samples of every minibatch (a multiple of ``grad_chunk_size``, where
    that is set); 1 (no split) when none does.

    Below that share, the collectives between CPU devices (two per
    gradient step) cost more than the split gains: on the project's 2-core
    CPU, CartPole with 16 envs (shares of 256) trained 14% faster over two
    devices, with 8 envs (128) 15% slower, Pendulum's 16 envs (minibatches
    of 128, shares of 64) 38% slower; 2048 envs x 128 steps 28-35% faster
    (benchmarks/NOTES.md, session 25). Plain values, decided before JAX starts."""
    for name, value in (("num_envs", num_envs), ("minibatch_size", minibatch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    limit = available_cores() if cores is None else max(cores, 1)
    fits = [d for d in range(1, limit + 1)
            if num_envs % d == 0 and minibatch_size % d == 0 and minibatch_size // d >= MIN_ENV_SHARE
            and (grad_chunk_size is None or (minibatch_size // d) % grad_chunk_size == 0)]
    return max(fits, default=1)


def auto_env_devices(
    num_envs: int, minibatch_size: int, num_seeds: int = 1, grad_chunk_size: int | None = None
) -> int:
    """``--env-devices auto``, once JAX has started: on the CPU backend with
    one seed, `env_devices_for` over the CPU devices JAX has (which
    `cpu_devices_for` asked for before it started); else 1 (several seeds go
    over the devices instead; GPUs and TPUs are not measured yet)."""
    import jax

    if num_seeds != 1 or jax.default_backend() != "cpu":
        return 1
    return env_devices_for(num_envs, minibatch_size, len(jax.devices()), grad_chunk_size)


def cpu_devices_for(
    num_seeds: int,
    cores: int | None = None,
    num_envs: int | None = None,
    minibatch_size: int | None = None,
    grad_chunk_size: int | None = None,
) -> int:
    """The CPU device count for ``num_seeds`` vmapped seeds: the most devices,
    up to one per core, that split the seeds evenly. For one seed, given its
    ``num_envs`` and ``minibatch_size``, the count `env_devices_for` splits
    its envs over (else 1). Plain values, decided before JAX starts."""
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds must be a positive int, got {num_seeds!r}")
    cores = available_cores() if cores is None else max(cores, 1)
    if num_seeds == 1 and num_envs is not None and minibatch_size is not None:
        return env_devices_for(num_envs, minibatch_size, cores, grad_chunk_size)
    return largest_divisor_at_most(num_seeds, cores)


def current_cpu_devices() -> int | None:
    """The CPU device count this process asks for (None: XLA's default, one),
    from JAX's config or ``JAX_NUM_CPU_DEVICES``."""
    import jax

    value = jax.config.jax_num_cpu_devices
    if value is None or value < 1:
        env = os.environ.get(ENV_VAR, "").strip()
        value = int(env) if env.isdigit() else -1
    return value if value >= 1 else None


def user_set_cpu_devices() -> bool:
    """Whether the environment already chose a CPU device count
    (``JAX_NUM_CPU_DEVICES``, or XLA's ``--xla_force_host_platform_device_count``)."""
    return ENV_VAR in os.environ or _XLA_DEVICE_FLAG in os.environ.get("XLA_FLAGS", "")


def set_cpu_devices(devices: int | None) -> None:
    """Ask JAX's CPU backend for ``devices`` devices (None: its default, one).
    Call it before the first JAX computation of the process.

    Raises:
        ValueError: ``devices`` is not None or an int >= 1.
        RuntimeError: JAX's backends have started with another count.
    """
    import jax

    from purejaxppo.cpu_threads import backend_started

    if devices is not None and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ValueError(f"cpu devices must be None (one device) or an int >= 1, got {devices!r}")
    if current_cpu_devices() == devices or (devices == 1 and current_cpu_devices() is None):
        return
    if backend_started():
        raise RuntimeError(
            f"cpu devices: cannot change the CPU device count to {devices} (now "
            f"{current_cpu_devices() or 1}): JAX's CPU backend has started, and its devices "
            "are made once per process. Set it before the first JAX computation, or start "
            f"the process with {ENV_VAR}={devices or 1} in its environment."
        )
    jax.config.update("jax_num_cpu_devices", -1 if devices is None else devices)
    if devices is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = str(devices)  # child processes inherit it


def parse_cpu_devices(value: str | int | None) -> str | int:
    """A ``--cpu-devices`` value: ``"auto"`` (`cpu_devices_for`) or a count >= 1."""
    from purejaxppo.cpu_threads import parse_count

    if value == "auto":
        return "auto"
    return parse_count("cpu_devices", value, "'auto' or an int >= 1")


def resolve_cpu_devices(
    choice: str | int | None,
    num_seeds: int,
    num_envs: int | None = None,
    minibatch_size: int | None = None,
    grad_chunk_size: int | None = None,
) -> int | None:
    """The CPU device count a run asks for; None leaves the environment's
    choice alone (``"auto"`` when ``JAX_NUM_CPU_DEVICES`` or XLA's device
    flag is set already). A count is taken as it is; ``"auto"`` is
    `cpu_devices_for`."""
    choice = parse_cpu_devices(choice)
    if choice != "auto":
        return choice
    if user_set_cpu_devices():
        return None
    return cpu_devices_for(num_seeds, num_envs=num_envs, minibatch_size=minibatch_size,
                           grad_chunk_size=grad_chunk_size)


def seed_sharding(num_seeds: int, devices=None):
    """A `NamedSharding` that splits a leading seed axis of ``num_seeds``
    over the most of ``devices`` (default: all of JAX's default backend)
    that divide it evenly; one device when none do."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(jax.devices() if devices is None else devices)
    count = largest_divisor_at_most(num_seeds, len(devices))
    mesh = Mesh(np.array(devices[:count]), (SEED_AXIS,))
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree, devices=None):
    """``tree`` (PRNG keys, or any pytree with the seed axis leading every
    leaf) placed by `seed_sharding`: ``jax.jit(jax.vmap(train))`` of it runs
    each device's seeds there."""
    import jax

    leaves = jax.tree.leaves(tree)
    if not leaves:
        return tree
    num_seeds = leaves[0].shape[0]
    for leaf in leaves:
        if leaf.ndim == 0 or leaf.shape[0] != num_seeds:
            raise ValueError(
                f"shard_seeds: every leaf needs the seed axis first, of size {num_seeds}; "
                f"got a leaf of shape {leaf.shape}"
            )
    return jax.device_put(tree, seed_sharding(num_seeds, devices))
