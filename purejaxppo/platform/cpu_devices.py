"""CPU devices: how many devices JAX's CPU backend shows, and the rules the
CLI and the benchmarks apply (machine tuning; a Python user opts in).

On a CPU, XLA shows one device unless asked for more, once, when JAX
starts its CPU backend (``jax_num_cpu_devices``, or the
``JAX_NUM_CPU_DEVICES`` environment variable). Each CPU device runs its
program on its own thread, so a multi-seed run split over one device per
core (`purejaxppo.devices.shard_seeds`) keeps every core busy without
handing tiny kernels between threads (with XLA's CPU pool at one thread,
`purejaxppo.platform.cpu_threads`). On a 2-core CPU, CartPole's defaults
over 8 seeds ran at 248k env steps/s on two devices against 140k on one
(``python benchmarks/throughput.py``; docs/cpu.md).

One seed can use the devices too: ``make_train(config, env_devices=D)``
splits its envs over D devices. `env_devices_for` is the rule for when that
pays on a CPU (each device keeps at least `MIN_ENV_SHARE` samples of every
minibatch), and `auto_env_devices` applies it once JAX has started.

`cpu_devices_for` is the rule the CLI's ``--cpu-devices auto`` and the
benchmarks apply (for one seed, the devices its envs will be split over);
`set_cpu_devices` applies a count before JAX starts. ``import purejaxppo``
changes nothing here: it is a process-wide choice.
"""

from __future__ import annotations

import os

from purejaxppo.devices import largest_divisor_at_most
from purejaxppo.platform.cpu_threads import backend_started, parse_count

ENV_VAR = "JAX_NUM_CPU_DEVICES"
MIN_ENV_SHARE = 256  # samples of a minibatch per device, for `env_devices_for`
_XLA_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where known)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    (docs/devices.md). Plain values, decided before JAX starts."""
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
