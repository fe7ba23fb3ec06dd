"""How many threads XLA's CPU runtime uses to run a compiled program.

XLA's CPU client (the backend JAX uses on a CPU) runs every compiled
program on a thread pool of one thread per core, sized once, when the
backend starts, from the ``PJRT_NPROC`` environment variable or else the
core count. A PPO run on a few environments is thousands of tiny kernels
per update (the env step, the policy on 4 observations, one minibatch
gradient on 128 samples); handing them between threads costs more than
the second core gives back. Large batches and convolutions are the
opposite: their kernels are big enough to split.

On the project's 2-core CPU, in alternating fresh processes with each
pool (benchmarks/NOTES.md): CartPole defaults (4 envs) and the
defaults vmapped over 8 seeds ran 10-50% faster on one thread; 64 or more
envs and the MinAtar CNN ran 10-45% slower. The XLA compile stays
parallel (it has its own threads) but took 10-25% longer with a
one-thread pool. Measure a machine of your own with ``python
benchmarks/throughput.py --cpu-threads default`` against the default
``--cpu-threads auto``. The numbers are the same either way up to float
summation order.

`cpu_threads_for` encodes that rule; `set_cpu_threads` applies a choice,
and must run before JAX starts its CPU backend (before the first
computation): the pool is sized once per process. The CLI
(``--cpu-threads``) and the benchmarks use both. A library does not
decide this for its caller's whole process, so ``import purejaxppo``
changes nothing here; set ``PJRT_NPROC=1`` or call `set_cpu_threads(1)`
first thing to get it in your own scripts.
"""

from __future__ import annotations

import os


ENV_VAR = "PJRT_NPROC"
SMALL_RUN_MAX_ENVS = 32
"""`cpu_threads_for` picks one thread up to this many envs in all seeds."""


def uses_cnn(env_name: str, torso: str = "auto") -> bool:
    """Whether a run trains the CNN torso: ``torso="cnn"``, or ``"auto"`` on a
    MinAtar env (gymnax's image-observation family). Decided from the names
    alone: building the env would start JAX's backend."""
    return torso == "cnn" or (torso == "auto" and "MinAtar" in env_name)


def cpu_threads_for(
    num_envs: int, num_seeds: int = 1, cnn: bool = False, devices: int = 1
) -> int | None:
    """The CPU pool size that ran such a config fastest here: 1 for a small
    run (``num_envs * num_seeds <= SMALL_RUN_MAX_ENVS``, MLP torso) and for
    seeds split over ``devices`` > 1 CPU devices (each device runs on its
    own thread; `purejaxppo.devices`), else ``None`` (XLA's default, one
    thread per core). Takes plain values, not a `PPOConfig`: it is decided
    before JAX starts, and building a config imports gymnax, which starts it."""
    for name, value in (("num_envs", num_envs), ("num_seeds", num_seeds), ("devices", devices)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if devices > 1:
        return 1
    return 1 if num_envs * num_seeds <= SMALL_RUN_MAX_ENVS and not cnn else None


def accelerator_expected() -> bool:
    """Whether JAX will likely run this process on a GPU or TPU, judged before
    it starts: ``JAX_PLATFORMS`` names another platform first, or, with it
    unset, a PJRT plugin (the ``jax_plugins`` packages and entry points JAX
    loads: CUDA, ROCm) or ``libtpu`` is installed.

    The CLI's ``auto`` rules (this module's pool, `purejaxppo.devices`' CPU
    devices) are for XLA's CPU kernels; ``PJRT_NPROC`` also sizes a GPU
    client's host thread pools, so there they are left alone. A plugin
    installed on a machine without its device makes this True while JAX
    falls back to the CPU: the pool then stays XLA's default unless asked
    for (``--cpu-threads 1``)."""
    import importlib.metadata
    import importlib.util
    import pkgutil

    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0].strip() != "cpu"
    if importlib.util.find_spec("libtpu") is not None:
        return True
    try:
        import jax_plugins
    except ImportError:
        jax_plugins = None
    if jax_plugins is not None and any(pkgutil.iter_modules(jax_plugins.__path__)):
        return True
    return any(True for _ in importlib.metadata.entry_points(group="jax_plugins"))


def backend_started() -> bool:
    """Whether JAX has started its backends (after which the pool is fixed)."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def current_cpu_threads() -> int | None:
    """The pool size requested through ``PJRT_NPROC`` (None: XLA's default;
    XLA reads a value below 1 as one thread per CPU device, here 1)."""
    value = os.environ.get(ENV_VAR, "").strip()
    return max(int(value), 1) if value.lstrip("-").isdigit() else None


def set_cpu_threads(threads: int | None) -> None:
    """Size XLA's CPU thread pool: ``threads`` >= 1, or None for XLA's default
    (one per core). Call it before the first JAX computation of the process.

    Raises:
        ValueError: ``threads`` is not None or an int >= 1.
        RuntimeError: JAX's backends have started with another pool size;
            the pool cannot be resized in a running process.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"cpu threads must be None (XLA's default) or an int >= 1, got {threads!r}")
    if current_cpu_threads() == threads:
        return
    if backend_started():
        raise RuntimeError(
            f"cpu threads: cannot change the pool to {threads} (now "
            f"{current_cpu_threads() or 'the default'}): JAX's CPU backend has started, and "
            "its pool is sized once per process. Set it before the first JAX computation, "
            f"or start the process with {ENV_VAR}={threads or ''} in its environment."
        )
    if threads is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = str(threads)


def parse_cpu_threads(value: str | int | None) -> str | int | None:
    """A ``--cpu-threads`` value: ``"auto"`` (`cpu_threads_for`), ``"default"``
    or None (XLA's default pool), or a thread count >= 1."""
    if value is None or value == "default":
        return None
    if value == "auto":
        return "auto"
    return parse_count("cpu_threads", value, "'auto', 'default' or an int >= 1")


def parse_count(field: str, value: str | int, allowed: str) -> int:
    """``value`` (an int, or its plain decimal string) as an int >= 1; else a
    ValueError naming ``field``, the value and what is ``allowed``."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or count < 1 or str(count) != str(value).strip():
        raise ValueError(f"{field}={value!r} is not allowed; allowed: {allowed}")
    return count


def resolve_cpu_threads(
    choice: str | int | None, num_envs: int, num_seeds: int = 1, cnn: bool = False,
    devices: int = 1,
) -> int | None:
    """The pool size a run asks for. ``"auto"`` keeps a ``PJRT_NPROC`` already
    in the environment (the user's choice) and otherwise applies
    `cpu_threads_for`; ``None`` / ``"default"`` and counts are taken as they are."""
    choice = parse_cpu_threads(choice)
    if choice != "auto":
        return choice
    if ENV_VAR in os.environ:
        return current_cpu_threads()
    return cpu_threads_for(num_envs, num_seeds, cnn, devices)
