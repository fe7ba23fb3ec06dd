"""Throughput benchmark: compile time, steady-state env steps/s, memory, compute floor.

    python benchmarks/throughput.py                 # full suite on the default JAX backend
    python benchmarks/throughput.py --quick         # tiny sizes (a smoke run)
    python benchmarks/throughput.py --cases cartpole_default pendulum

The same script runs on CPU, GPU or TPU (nothing in it is backend-specific;
device memory is read through JAX where the backend reports it). Each case
runs in its own subprocess, so its peak host RSS is its own. Per case:

* compile time: ``jit(...).lower(...).compile()``, timed alone in fresh
  processes (cold; the median of ``--compile-repeats``, 3 by default, as
  one process's compile varies by +-15% on a shared machine); and the same
  compile in a further new process served from
  JAX's persistent compilation cache, which one more process filled first
  (warm; `purejaxppo.platform.compile_cache`, what a second run of the CLI pays);
* steady state: the median of ``--repeats`` calls of the compiled function,
  each ended by ``block_until_ready``; env steps/s = steps per call / median;
* env-only rate (uniformly random actions, no network) and rollout-only rate
  (the policy acts, critic and GAE run, no update epochs), same env and sizes;
* the compute floor: the device's dense matmul rate (FLOP/s) and tanh rate
  (evaluations/s), measured in the same run (each the best over a few
  problem sizes of the median of 9 calls: `device_rates`), and the network FLOPs and
  transcendentals per env step counted from the config
  (`benchmarks/flops.py`, checked against XLA's cost analysis); the floor is
  the steps/s those two rates allow, and the table gives the fraction of it
  that training achieves. The rates come from the whole machine (a probe
  process, on XLA's default pool), and again from each case's own
  process, on its pool (which the CPU devices of a process share): the
  second floor is what the case could reach on the threads it has, about
  half the first for a one-thread case. The rates are one device's: on
  GPUs or TPUs, where each device computes apart, a case split over n of
  them has n times the floor.

The parent process stays on JAX's CPU backend (`pin_to_cpu`): every
measurement, the rates included, runs in a child that has the device to
itself, and each child's backend is checked against the probe's (a child
that found a TPU taken would otherwise run on the CPU without an error).

Once per run it also times the start-up a user pays before any of that:
``import purejaxppo`` and a CartPole `PPOConfig` (which imports gymnax) in
a fresh process, the median of ``--compile-repeats`` processes; and the same
with gymnax's plotting imports loaded first, as ``import gymnax`` loads them
(what `purejaxppo.envs.import_gymnax` defers).

Every process of a run compiles with the vector width `purejaxppo.platform.cpu_vectors`
picks for the CPU, as the CLI applies it (``--cpu-vector-width``), and each
case on the CPU pool and devices the CLI would pick for it (``--cpu-threads``,
``--cpu-devices``); on a GPU or TPU backend, no pool or device count is set.

Writes ``benchmarks/results/throughput-<device>.json``, a markdown table
``throughput-<device>.md`` and ``throughput-<device>.png`` (steps/s against
num_envs and against seeds).
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # timing.py and flops.py beside this script
RESULTS = HERE / "results"

_BREAKOUT_CNN = dict(env_name="Breakout-MinAtar", num_envs=64, num_steps=128, update_epochs=4,
                     num_minibatches=8, activation="relu", total_timesteps=64 * 128 * 4)

# name -> (PPOConfig overrides, seeds under vmap)
CASES: dict[str, tuple[dict, int]] = {
    "cartpole_default": (dict(env_name="CartPole-v1", total_timesteps=500_000), 0),
    "cartpole_2048x128": (dict(env_name="CartPole-v1", num_envs=2048, num_steps=128,
                               total_timesteps=2048 * 128 * 4), 0),
    # The same two with the command line's live reports (purejaxppo.loggers: metrics.csv and
    # the progress line), at its default interval of num_updates // 50 updates.
    "cartpole_default_logged": (dict(env_name="CartPole-v1", total_timesteps=500_000, log_every=19), 0),
    "cartpole_2048x128_logged": (dict(env_name="CartPole-v1", num_envs=2048, num_steps=128,
                                      total_timesteps=2048 * 128 * 4, log_every=1), 0),
    "cartpole_default_x8": (dict(env_name="CartPole-v1", total_timesteps=131_072), 8),
    # A GRU of 128 units between the torso and the heads (shared core), the
    # same sizes as cartpole_default and cartpole_default_x8.
    "cartpole_gru": (dict(env_name="CartPole-v1", total_timesteps=131_072, recurrent="gru"), 0),
    "cartpole_gru_x8": (dict(env_name="CartPole-v1", total_timesteps=131_072, recurrent="gru"), 8),
    "cartpole_default_x64": (dict(env_name="CartPole-v1", total_timesteps=32_768), 64),
    "pendulum": (dict(env_name="Pendulum-v1", num_envs=16, num_steps=128, update_epochs=10,
                      num_minibatches=16, total_timesteps=16 * 128 * 40), 0),
    "breakout_minatar_cnn": (_BREAKOUT_CNN, 0),
    "breakout_minatar_cnn_x4": (_BREAKOUT_CNN, 4),
}
SWEEP_ENVS = (4, 16, 64, 256, 1024, 2048)
SWEEP_SEEDS = (1, 8, 64)

QUICK = dict(total_timesteps=4 * 32 * 2, num_envs=4, num_steps=32, num_minibatches=2)


def case_cpu_devices(seeds: int, choice: str, overrides: dict | None = None) -> int | None:
    """The CPU devices a case's seeds, or one seed's envs, are split over
    (`purejaxppo.devices`): ``choice`` "auto" applies the library's rule, as
    the CLI does (for one seed it needs the case's ``overrides``); None
    leaves a count the environment sets."""
    from purejaxppo.platform.cpu_devices import resolve_cpu_devices

    num_envs = minibatch_size = chunk = None
    if overrides is not None and seeds <= 1:
        fields = _fields(overrides)
        num_envs, chunk = fields["num_envs"], fields["grad_chunk_size"]
        minibatch_size = num_envs * fields["num_steps"] // fields["num_minibatches"]
    return resolve_cpu_devices(choice, max(seeds, 1), num_envs, minibatch_size, chunk)


def _fields(overrides: dict) -> dict:
    """Every `PPOConfig` field of a case: the library defaults and its overrides."""
    import dataclasses

    from purejaxppo.config import PPOConfig

    return {f.name: f.default for f in dataclasses.fields(PPOConfig)} | overrides


def case_cpu_threads(overrides: dict, seeds: int, choice: str, devices: int | None = 1) -> int | None:
    """The CPU pool size a case's processes run with (`purejaxppo.platform.cpu_threads`):
    ``choice`` "auto" applies the library's rule to the case, as the CLI does."""
    from purejaxppo.platform.cpu_threads import resolve_cpu_threads, uses_cnn

    fields = _fields(overrides)
    return resolve_cpu_threads(choice, fields["num_envs"], max(seeds, 1),
                               uses_cnn(fields["env_name"], fields["torso"]), devices or 1)


def _checked_arg(parse):
    """An argparse type that checks a value with ``parse`` before anything runs."""

    def check(value: str) -> str:
        try:
            parse(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    return check


def cpu_threads_arg(value: str) -> str:
    """argparse type of ``--cpu-threads``."""
    from purejaxppo.platform.cpu_threads import parse_cpu_threads

    return _checked_arg(parse_cpu_threads)(value)


def cpu_vector_width_arg(value: str) -> str:
    """argparse type of ``--cpu-vector-width``."""
    from purejaxppo.platform.cpu_vectors import parse_cpu_vector_width

    return _checked_arg(parse_cpu_vector_width)(value)


def apply_cpu_vector_width(choice: str) -> int:
    """Set XLA CPU's vector width in this process's ``XLA_FLAGS``, which every
    child process inherits, before JAX starts; return the width in bits."""
    from purejaxppo.platform.cpu_vectors import XLA_DEFAULT_WIDTH, resolve_cpu_vector_width, set_cpu_vector_width

    width = resolve_cpu_vector_width(choice)
    set_cpu_vector_width(width)
    return width or XLA_DEFAULT_WIDTH


def cpu_devices_arg(value: str) -> str:
    """argparse type of ``--cpu-devices``."""
    from purejaxppo.platform.cpu_devices import parse_cpu_devices

    return _checked_arg(parse_cpu_devices)(value)


def add_paired_run_args(parser: argparse.ArgumentParser, out_dir: Path) -> None:
    """The options of the benchmarks that time two sides in alternating pairs
    of fresh processes (``versus_reference.py``, ``compare_revisions.py``)."""
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs of fresh processes per case")
    parser.add_argument("--repeats", type=int, default=3, help="compiled calls per process (median)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out-dir", type=Path, default=out_dir)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per process")


def add_cpu_args(parser: argparse.ArgumentParser, scope: str, devices_help: str | None = None) -> None:
    """The CPU options of the benchmarks: ``--cpu-threads``, ``--cpu-devices``
    (where ``devices_help`` says what it splits) and ``--cpu-vector-width``,
    each applied to ``scope`` (e.g. "each case", "both sides")."""
    parser.add_argument("--cpu-threads", default="auto", type=cpu_threads_arg,
                        help=f"XLA CPU pool size of {scope}: auto (purejaxppo's rule for the case, "
                             "as its CLI applies it), default (one thread per core) or a count")
    if devices_help:
        parser.add_argument("--cpu-devices", default="auto", type=cpu_devices_arg, help=devices_help)
    parser.add_argument("--cpu-vector-width", default="auto", type=cpu_vector_width_arg,
                        help=f"SIMD bits XLA's CPU compiler prefers, for {scope}: auto "
                             "(purejaxppo.platform.cpu_vectors' rule, as its CLI applies it), default "
                             "(XLA's, 256) or 128, 256 or 512")


def parse_overrides(parser: argparse.ArgumentParser, items: list[str], fields: list[str]) -> dict:
    """``--set FIELD=VALUE`` items as config overrides. A value is read as a
    Python literal where it is one (``anneal_lr=False``, ``hidden_sizes=(32, 32)``),
    else kept as a string (``env_name=Acrobot-v1``). An item without ``=``,
    or a field not in ``fields``, is a ``parser.error`` naming it and the
    fields allowed, before anything runs."""
    overrides = {}
    for item in items:
        field, sep, text = item.partition("=")
        if not sep or not field:
            parser.error(f"--set takes FIELD=VALUE, got {item!r}")
        if field not in fields:
            parser.error(f"--set {item}: no field {field!r}; the fields are {sorted(fields)}")
        try:
            overrides[field] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[field] = text
    return overrides


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """``parser.error`` naming the first of ``names`` (attributes of ``args``) below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def write_results(out_dir: Path, stem: str, payload: dict, markdown: str) -> None:
    """``<stem>.json`` (``payload``) and ``<stem>.md`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    (out_dir / f"{stem}.md").write_text(markdown)


def case_cpu_settings(overrides: dict, seeds: int, backend: str, cpu_threads: str = "auto",
                      cpu_devices: str = "auto") -> tuple[int | None, int | None]:
    """``(threads, devices)``: the CPU pool size and CPU devices a case's
    processes get (`case_cpu_threads`, `case_cpu_devices`) where they run on
    the CPU; ``(None, None)`` on any other ``backend``. ``PJRT_NPROC`` also
    sizes the host thread pools of XLA's GPU client, so a rule measured for
    the CPU's kernels is not applied to a GPU's or TPU's host."""
    if backend != "cpu":
        return None, None
    devices = case_cpu_devices(seeds, cpu_devices, overrides)
    return case_cpu_threads(overrides, seeds, cpu_threads, devices), devices


def pin_to_cpu() -> None:
    """Keep this process, a benchmark's parent, on JAX's CPU backend.

    The parent validates configs and counts FLOPs while its children measure,
    and JAX starts its default backend at the first computation: on a GPU the
    parent would then hold most of the device's memory (JAX preallocates it),
    on a TPU the chips themselves (one process at a time; a child then falls
    back to the CPU without an error), for as long as it lives. The children
    inherit the environment, not this setting: they run on the default
    backend, which `probe_device` reports. Call it before the first JAX
    computation of the process (RuntimeError after it)."""
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized() and jax.default_backend() != "cpu":
        raise RuntimeError("pin_to_cpu: JAX's backend has started on "
                           f"{jax.default_backend()}; call it before the first computation")
    jax.config.update("jax_platforms", "cpu")


def run_child(cmd: list[str], env: dict, timeout: int, what: str, backend: str | None = None,
              cwd: Path | None = None) -> dict:
    """The ``RESULT {json}`` line that the child process ``cmd`` prints, as a
    dict; RuntimeError naming ``what`` with the child's stderr if it prints
    none, or if its ``backend`` is not the one given (a child that found the
    device taken and ran on the CPU must not pass as the device's figures)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            row = json.loads(line[len("RESULT "):])
            if backend is not None and row.get("backend") != backend:
                raise RuntimeError(f"{what} ran on JAX backend {row.get('backend')!r}, not on "
                                   f"{backend!r} as the probe did:\n{proc.stderr[-4000:]}")
            return row
    raise RuntimeError(f"{what} failed (exit code {proc.returncode}):\n"
                       f"{proc.stderr[-4000:] or proc.stdout[-2000:]}")


def probe(rates: bool, rate_repeats: int | None = None) -> dict:
    """This process's JAX backend, its device's name and count, and with
    ``rates`` the device's `device_rates`: what `probe_device` reports."""
    import jax

    out = {"backend": jax.default_backend(), "device": device_name(), "device_count": jax.device_count()}
    if rates:
        out["rates"] = device_rates(rate_repeats or RATE_REPEATS)
    return out


def probe_device(rates: bool = True, timeout: int = 1800, rate_repeats: int | None = None) -> dict:
    """`probe` in a fresh process with this one's environment (XLA's default
    CPU pool: the whole machine), so that a parent kept off the device
    (`pin_to_cpu`) learns the backend its children will run on.
    ``rate_repeats``: timed calls per rate probe (default `RATE_REPEATS`)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-probe",
           "rates" if rates else "backend", "--rate-repeats", str(rate_repeats or RATE_REPEATS)]
    return run_child(cmd, child_env(None), timeout, "the device probe")


def child_env(threads: int | None, devices: int | None = None) -> dict:
    """The environment of a benchmark child process with that CPU pool size
    and, unless None (the environment's own), that many CPU devices."""
    from purejaxppo.platform import cpu_threads
    from purejaxppo.platform import cpu_devices as devices_module

    env = {k: v for k, v in os.environ.items() if k != cpu_threads.ENV_VAR}
    if threads is not None:
        env[cpu_threads.ENV_VAR] = str(threads)
    if devices is not None:
        env[devices_module.ENV_VAR] = str(devices)
    return env


def device_name() -> str:
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", "") or dev.platform
    name = dev.platform if dev.platform == "cpu" else f"{dev.platform}-{kind}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower()


def _time_compiled(fn, args, repeats):
    from timing import compile_timed, run_timed

    compiled, compile_s = compile_timed(fn, *args)
    _, run_s, times = run_timed(compiled, *args, repeats=repeats)
    return compile_s, float(run_s), times, compiled


# The compute floor's probes. Each runs at several sizes, because the size
# that reaches a device's peak differs: a CPU's elementwise rate is best on an
# array that fits its L2 cache, an accelerator's on one large enough to hide
# its launch overhead. The device's rate is the best size's median; every
# size's rate is kept in the results, with the spread of the best one's calls.
MATMUL_SIZES = (512, 1024, 2048)  # n of n x n x n float32 products
TANH_SIZES = (1 << 16, 1 << 18, 1 << 20, 1 << 24)  # float32 elements
MATMUL_FLOPS_PER_CALL = 2 * 2048**3 * 2  # each size loops to about this much work per call
TANH_PER_CALL = 1 << 28  # tanh evaluations per call
RATE_REPEATS = 9  # timed calls per probe
QUICK_RATE_REPEATS = 3  # a smoke run's (--quick)


def _probe_rate(fn, args, work: int, repeats: int) -> tuple[float, list[float]]:
    """``work`` per second over the median of ``repeats`` compiled calls, and
    each call's rate."""
    _, median_s, times, _ = _time_compiled(fn, args, repeats)
    return work / median_s, [work / t for t in times]


def device_rates(repeats: int = RATE_REPEATS) -> dict:
    """The device's dense matmul rate (float32 FLOP/s, 2 per multiply-add) and
    tanh rate (evaluations/s): each the best over `MATMUL_SIZES` /
    `TANH_SIZES` of the median of ``repeats`` calls, with the rate of every
    size (``matmul_by_size``, ``tanh_by_size``) and, for the best size, the
    slowest and fastest call's rate (``*_spread``)."""
    import jax
    import jax.numpy as jnp

    def matmul(n: int) -> tuple[float, list[float]]:
        reps = max(1, MATMUL_FLOPS_PER_CALL // (2 * n**3))
        a = jnp.ones((n, n), jnp.float32)
        b = jnp.full((n, n), 1.0 / n, jnp.float32)  # x @ b keeps the values at 1
        mm = lambda a, b: jax.lax.fori_loop(0, reps, lambda i, x: x @ b, a)
        return _probe_rate(mm, (a, b), 2 * n**3 * reps, repeats)

    def tanh(m: int) -> tuple[float, list[float]]:
        reps = max(1, TANH_PER_CALL // m)
        x = jnp.linspace(-2.0, 2.0, m, dtype=jnp.float32)
        th = lambda x: jax.lax.fori_loop(0, reps, lambda i, y: jnp.tanh(y) * 1.5, x)
        return _probe_rate(th, (x,), m * reps, repeats)

    out: dict = {"rate_repeats": repeats}
    for name, key, sizes, probe in (("matmul", "matmul_flops_per_s", MATMUL_SIZES, matmul),
                                    ("tanh", "tanh_per_s", TANH_SIZES, tanh)):
        runs = {str(size): probe(size) for size in sizes}
        out[f"{name}_by_size"] = {size: rate for size, (rate, _) in runs.items()}
        out[key], calls = max(runs.values(), key=lambda run: run[0])
        out[f"{name}_spread"] = [min(calls), max(calls)]
    return out


def _memory(devices) -> dict:
    """Peak host RSS, and the peak memory of the busiest of ``devices`` where
    the backend reports it (each device's too, when there are several)."""
    import resource

    out = {"peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    peaks = []
    for dev in devices:
        try:
            stats = dev.memory_stats() or {}
        except Exception:  # backends without memory stats
            stats = {}
        if "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"] / 2**20)
    if peaks:
        out["peak_device_mb"] = max(peaks)
    if len(peaks) > 1:
        out["peak_device_mb_by_device"] = peaks
    return out


def floor_devices(backend: str, devices: int) -> int:
    """How many times one device's rates a case's floor counts: 1 on the CPU,
    whose devices in one process share one thread pool (the rates' pool: one
    device's program can use it all), else ``devices`` (each GPU or TPU chip
    computes apart, and the rates are measured on one)."""
    return 1 if backend == "cpu" else devices


def _train_fn(overrides: dict, seeds: int):
    """``(config, train, fn, keys)``: the case's training function, vmapped over
    ``seeds`` keys when ``seeds`` > 0."""
    import jax

    import purejaxppo  # noqa: F401
    from purejaxppo import PPOConfig, make_train

    from purejaxppo.devices import shard_seeds
    from purejaxppo.platform.cpu_devices import auto_env_devices

    config = PPOConfig(**overrides)
    # One seed's envs split over the CPU devices there are, as the CLI's
    # --env-devices auto does (`purejaxppo.devices.auto_env_devices`).
    env_devices = 1 if seeds > 1 else auto_env_devices(config.num_envs, config.minibatch_size, 1,
                                                       config.grad_chunk_size)
    train = make_train(config, env_devices=env_devices if env_devices > 1 else None,
                       log_fn=_cli_reporter(config, max(seeds, 1)) if config.log_every else None)
    key = jax.random.PRNGKey(0)
    # Seeds split over the devices there are (`purejaxppo.devices`), as the CLI does.
    keys = shard_seeds(jax.random.split(key, seeds)) if seeds else key
    return config, train, (jax.vmap(train) if seeds else train), keys


def _cli_reporter(config, runs: int):
    """What the command line's live reports do on the host: a metrics.csv
    row per run and the progress line (to a buffer, as off a terminal)."""
    import io
    import tempfile

    from purejaxppo.loggers import CSVLogger, ProgressDisplay, Reporter

    csv_path = Path(tempfile.mkdtemp(prefix="purejaxppo-bench-")) / "metrics.csv"
    display = ProgressDisplay(config.num_updates, config.batch_size, runs, stream=io.StringIO())
    return Reporter([CSVLogger(csv_path), display], config.batch_size)


def compile_case(overrides: dict, seeds: int, cache_dir: str | None = None) -> dict:
    """Compile the case's training function, cold or (with ``cache_dir``) with
    the persistent cache there; the compile time and the cache's status."""
    from purejaxppo.platform.compile_cache import CacheCounter, enable_compilation_cache
    from timing import compile_timed

    if cache_dir:
        enable_compilation_cache(cache_dir, min_compile_time_s=0.0)  # store every program
    _, _, fn, keys = _train_fn(overrides, seeds)
    with CacheCounter() as cache:
        _, compile_s = compile_timed(fn, keys)
    import jax

    return {"compile_s": compile_s, "cache": cache.status, "backend": jax.default_backend()}


def run_case(overrides: dict, seeds: int, repeats: int, rates: dict | None,
             rate_repeats: int = RATE_REPEATS) -> dict:
    """One case, in this process: training, env-only and rollout-only rates."""
    import jax
    import jax.numpy as jnp

    from purejaxppo.advantages import gae
    from purejaxppo.distributions import Categorical, DiagGaussian
    from purejaxppo.envs import VecEnv, make_env
    from purejaxppo.rollout import (RolloutRandomness, EnvCarry, EpisodeStats, collect_rollout, critic_values,
                                    recurrent_critic_values)

    config, train, fn, keys = _train_fn(overrides, seeds)
    n_seeds = max(seeds, 1)
    steps = config.num_updates * config.batch_size * n_seeds
    compile_s, run_s, times, _ = _time_compiled(fn, (keys,), repeats)
    row = {
        "config": overrides, "seeds": n_seeds, "env_steps_per_call": steps,
        "compile_s": compile_s, "run_s": run_s, "run_times_s": times,
        "steps_per_s": steps / run_s,
    }

    env, env_params, spec = make_env(config.env_name, config.env_kwargs, config.env_params, config.obs_features)
    # With the envs split over devices, each device's share, as its training runs them.
    env_devices = getattr(train, "env_devices", None) or [jax.devices()[0]]
    num_envs = config.num_envs // len(env_devices)
    vec = VecEnv(env, env_params, spec, num_envs)
    T, U = config.num_steps, config.num_updates

    def random_policy(_, obs):
        batch = obs.shape[: obs.ndim - len(spec.obs_shape)]
        if spec.discrete:
            return Categorical(jnp.zeros(batch + (spec.action_dim,)))
        return DiagGaussian(jnp.zeros(batch + (spec.action_dim,)), jnp.zeros(batch + (spec.action_dim,)))

    def env_only(rng):
        obs, state = vec.reset(rng)
        carry = EnvCarry(state, obs, EpisodeStats.zeros(num_envs))

        def body(c, k):
            c, traj = collect_rollout(random_policy, None, vec, c, RolloutRandomness.draw(k, vec, T), T)
            return c, jnp.sum(traj.rewards)

        return jax.lax.scan(body, carry, jax.random.split(rng, U))[1]

    net = train.network

    def rollout_only(rng):
        params = train.random_params(rng)
        obs, env_state = vec.reset(rng)
        hidden = net.initial_hidden(num_envs) if config.recurrent else None
        carry = EnvCarry(env_state, obs, EpisodeStats.zeros(num_envs), hidden)
        if config.recurrent:
            policy = lambda p, o, h: net.apply(p, o, h, method=net.step)
        else:
            policy = lambda p, o: net.apply(p, o, method=net.policy)
        value = lambda p, o: net.apply(p, o, method=net.value)

        def body(c, k):
            c, traj = collect_rollout(policy, params, vec, c, RolloutRandomness.draw(k, vec, T), T)
            if config.recurrent:
                values, next_values = recurrent_critic_values(
                    lambda p, h: net.apply(p, h, method=net.hidden_values),
                    lambda p, h, o: net.apply(p, h, o, method=net.bootstrap_values), params, traj)
            else:
                values, next_values = critic_values(value, params, traj, vec.truncation_period())
            adv, _ = gae(traj.rewards, values, next_values, traj.terminated, traj.done,
                         config.gamma, config.gae_lambda)
            return c, jnp.mean(adv)

        return jax.lax.scan(body, carry, jax.random.split(rng, U))[1]

    for name, f in (("env_only", env_only), ("rollout_only", rollout_only)):
        f = jax.vmap(f) if seeds else _on_each_device(f, env_devices)
        c_s, r_s, _, _ = _time_compiled(f, (keys,), repeats)
        row[f"{name}_steps_per_s"] = steps / r_s
        row[f"{name}_compile_s"] = c_s

    row["cost_per_env_step"] = cost = case_cost(config)
    used = sorted(keys.sharding.device_set, key=lambda d: d.id) if seeds else env_devices
    row["env_devices"] = 1 if seeds else len(env_devices)
    row["devices"] = len(used)
    row["backend"] = backend = jax.default_backend()
    row.update(_memory(used))  # before the probes below, whose arrays are not the case's
    if rates:
        scale = floor_devices(backend, len(used))
        row["floor_steps_per_s"] = scale * floor_steps_per_s(cost, rates)
        row["fraction_of_floor"] = row["steps_per_s"] / row["floor_steps_per_s"]
        # The floor of what this case runs on: the rates measured here, on its
        # XLA CPU pool (shared by its devices: one device's program can use it all).
        row["case_rates"] = own = device_rates(rate_repeats)
        row["case_floor_steps_per_s"] = scale * floor_steps_per_s(cost, own)
        row["fraction_of_case_floor"] = row["steps_per_s"] / row["case_floor_steps_per_s"]
    row["xla_cpu_pool_threads"] = _xla_pool_threads()
    return row


def _on_each_device(fn, devices):
    """``fn(rng)`` run on each of ``devices`` at once, each with its own key
    (``rng`` folded with the device's index), its outputs stacked: the
    env-only and rollout-only rates of a case whose envs are split over
    devices, each device stepping its share. ``fn`` itself on one device."""
    import jax
    import numpy as np

    from purejaxppo.train import ENV_AXIS

    if len(devices) == 1:
        return fn
    mesh = jax.sharding.Mesh(np.array(devices), (ENV_AXIS,))
    each = lambda rng: fn(jax.random.fold_in(rng, jax.lax.axis_index(ENV_AXIS)))[None]
    return jax.shard_map(each, mesh=mesh, in_specs=jax.sharding.PartitionSpec(),
                         out_specs=jax.sharding.PartitionSpec(ENV_AXIS), check_vma=False)


def case_cost(config) -> dict:
    """A config's network FLOPs and transcendentals per env step
    (`flops.cost_per_env_step`, with its envs' truncation period)."""
    from purejaxppo.envs import VecEnv, make_env
    from flops import cost_per_env_step

    env, env_params, spec = make_env(config.env_name, config.env_kwargs, config.env_params, config.obs_features)
    return cost_per_env_step(config, spec, VecEnv(env, env_params, spec, config.num_envs).truncation_period())


def floor_steps_per_s(cost: dict, rates: dict) -> float:
    """Env steps/s that a per-step ``cost`` (`flops.cost_per_env_step`)
    allows at the ``rates`` of `device_rates`: the matmul FLOPs at the matmul
    rate plus the transcendentals at the tanh rate."""
    return 1.0 / (cost["flops"] / rates["matmul_flops_per_s"] + cost["transcendentals"] / rates["tanh_per_s"])


def _xla_pool_threads() -> int | None:
    """Threads of XLA's CPU pool in this process (Linux: named tf_XLAEigen), or None."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    return names.count("tf_XLAEigen")


_STARTUP_CODE = """
import time
t = time.perf_counter()
{pre}import purejaxppo
purejaxppo.PPOConfig(env_name="CartPole-v1")
print("STARTUP", time.perf_counter() - t)
"""


def startup_times(repeats: int, timeout: int = 300) -> dict:
    """Seconds from before ``import purejaxppo`` to a built CartPole config,
    in fresh processes (the median of ``repeats``): ``startup_s`` as the
    library does it, ``eager_plotting_s`` with gymnax's plotting imports
    (`purejaxppo.envs.GYMNAX_RENDER_MODULES`) made first, as a plain
    ``import gymnax`` makes them."""
    from purejaxppo.fast.lazy_gymnax import GYMNAX_RENDER_MODULES

    def median_of(pre: str) -> float:
        samples = []
        for _ in range(repeats):
            proc = subprocess.run([sys.executable, "-c", _STARTUP_CODE.format(pre=pre)],
                                  capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0 or "STARTUP" not in proc.stdout:
                raise RuntimeError(f"start-up timing failed:\n{proc.stderr[-4000:]}")
            samples.append(float(proc.stdout.split("STARTUP")[-1]))
        return statistics.median(samples)

    eager = "".join(f"import {name}\n" for name in GYMNAX_RENDER_MODULES)
    return {"startup_s": median_of(""), "eager_plotting_s": median_of(eager)}


def _child(args) -> None:
    if args.child_probe:
        print("RESULT " + json.dumps(probe(args.child_probe == "rates", args.rate_repeats)))
        return
    overrides = json.loads(args.child_config)
    if args.child_compile_cache or args.child_compile_only:
        row = compile_case(overrides, args.child_seeds, args.child_compile_cache)
    else:
        rates = json.loads(args.child_rates) if args.child_rates else None
        row = run_case(overrides, args.child_seeds, args.repeats, rates, args.rate_repeats)
    print("RESULT " + json.dumps(row))


def _spawn(overrides: dict, seeds: int, repeats: int, rates: dict | None, timeout: int,
           compile_cache: str | None = None, compile_only: bool = False,
           cpu_threads: str = "auto", cpu_devices: str = "auto", backend: str = "cpu",
           rate_repeats: int = RATE_REPEATS) -> dict:
    threads, devices = case_cpu_settings(overrides, seeds, backend, cpu_threads, cpu_devices)
    cmd = [sys.executable, __file__, "--child-config", json.dumps(overrides),
           "--child-seeds", str(seeds), "--repeats", str(repeats), "--rate-repeats", str(rate_repeats)]
    if rates:
        cmd += ["--child-rates", json.dumps(rates)]
    if compile_cache:
        cmd += ["--child-compile-cache", compile_cache]
    if compile_only:
        cmd += ["--child-compile-only"]
    row = run_child(cmd, child_env(threads, devices), timeout,
                    f"benchmark case {overrides}, seeds={seeds}", backend)
    return {**row, "cpu_threads": threads}


def _source_revision(untracked: bool = False) -> str | None:
    """The checkout's commit, with ``-dirty`` if tracked files other than
    results (``benchmarks/results/``, which a benchmark run rewrites) differ
    from it, or with ``untracked`` if files git does not track (and does not
    ignore) are there; None outside a git checkout (an installed copy)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain",
                                f"--untracked-files={'normal' if untracked else 'no'}", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def machine_name(cpuinfo: str | None = None) -> str:
    """The host: its CPU model (Linux's ``/proc/cpuinfo``, else ``platform``),
    whether it has AVX-512, its family and model numbers (with the core's
    name for an AMD CPU with AVX-512), and its core count.

    The project's results were timed on several CPUs (an AMD EPYC without
    AVX-512, a Zen 5 EPYC, a Zen 4 one, each named only "AMD EPYC"), and CPU
    timings compare only on
    one model, so each results file names it. ``cpuinfo``: another file to
    read than Linux's ``/proc/cpuinfo``.
    """
    from purejaxppo.platform.cpu_vectors import amd_avx512_core, cpu_info

    info = cpu_info() if cpuinfo is None else cpu_info(cpuinfo)
    model = info.model or platform.processor() or platform.machine()
    isa = ", AVX-512" if "avx512f" in info.flags else (", AVX2" if "avx2" in info.flags else "")
    family = ""
    if info.family is not None:
        core = amd_avx512_core(info)
        family = f", {core + ': ' if core else ''}family {info.family} model {info.model_number}"
    return f"{model} ({platform.machine()}{isa}{family}), {os.cpu_count()} cores"


def run_meta(script: str, probed: dict | None = None) -> dict:
    """What a results file records of its run: device, software, machine,
    XLA flags, the command line, the date and the commit measured. The
    device and backend are ``probed``'s (`probe_device`) where given, else
    this process's."""
    import jax

    probed = probed or {"device": device_name(), "backend": jax.default_backend()}
    return {
        "device": probed["device"],
        "backend": probed["backend"],
        "jax": jax.__version__,
        "machine": machine_name(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": "python " + " ".join([script, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "commit": _source_revision(),
    }


def rates_text(rates: dict) -> str:
    """The floor's two rates as the table's header states them."""
    def spread(name: str, digits: int) -> str:
        low, high = (v / 1e9 for v in rates[f"{name}_spread"])
        return f" (calls {low:.{digits}f}-{high:.{digits}f}, median of {rates['rate_repeats']})"

    return (f"matmul {rates['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s{spread('matmul', 0)}, "
            f"tanh {rates['tanh_per_s'] / 1e9:.2f} G/s{spread('tanh', 1)}")


def threads_text(threads: int | None, backend: str) -> str:
    """A table's "CPU threads" cell: the pool size, "cores" for XLA's
    default pool, "-" on a backend other than the CPU (none was set)."""
    return (str(threads) if threads else "cores") if backend == "cpu" else "-"


def _table(rows: dict, device: str, meta: dict) -> str:
    lines = [
        f"# Throughput on {device}",
        "",
        f"{meta['machine']}; jax {meta['jax']}, backend {meta['backend']}; "
        f"{rates_text(meta['rates'])}. "
        f"Steady state = median of {meta['repeats']} compiled calls; compile timed apart. "
        f"Command: `{meta['command']}` at commit {meta.get('commit') or 'unknown'}, {meta['date']}.",
        "",
        f"Start-up (a fresh process: `import purejaxppo` and a CartPole `PPOConfig`, which imports "
        f"gymnax; median of {meta.get('compile_repeats', 1)}): {meta['startup']['startup_s']:.2f} s; "
        f"{meta['startup']['eager_plotting_s']:.2f} s with gymnax's plotting imports loaded as a plain "
        "`import gymnax` loads them (`purejaxppo.envs.import_gymnax` defers them).",
        "",
        f"Compile (lowering included): cold, the median of {meta.get('compile_repeats', 1)} fresh "
        "processes; warm: in a new process, from JAX's persistent compilation cache (what a "
        "second run of the same config pays).",
        "",
        "CPU threads: the size of XLA's CPU pool the case ran on (`purejaxppo.platform.cpu_threads`; "
        "\"cores\": XLA's default, one per core; \"-\": not set, off the CPU). Devices: the "
        "devices the seeds, or a single seed's envs (`make_train`'s `env_devices`, data parallel), "
        "were split over (`purejaxppo.devices`). Floor: the steps/s the network's "
        "FLOPs and transcendentals per env step (`benchmarks/flops.py`) allow at the matmul and tanh "
        "rates above, measured on the whole machine; its threads' floor: the same at the rates "
        "measured in the case's own process, on its XLA CPU pool (which its devices share)."
        + ("" if meta.get("backend") == "cpu" else
           " Off the CPU the rates are one device's, and both floors count them once per device "
           "the case ran on.")
        + (f" XLA CPU's preferred vector width: {meta.get('cpu_vector_width', 256)} bits in every case "
           f"(`--cpu-vector-width {meta.get('cpu_vector_width_choice', 'auto')}`, `purejaxppo.platform.cpu_vectors`)."
           if meta.get("backend") == "cpu" else ""),
        "",
        "| case | seeds | devices | CPU threads | env steps / call | compile s (cold) | compile s (warm cache) | run s | steps/s | env-only steps/s | rollout-only steps/s | floor steps/s | of floor | its threads' floor | of that | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        warm = f"{r['warm_compile_s']:.2f}" if r.get("warm_cache") == "hit" else "—"
        lines.append(
            f"| {name} | {r['seeds']} | {r.get('devices', 1)} | {threads_text(r.get('cpu_threads'), meta['backend'])} | {r['env_steps_per_call']:,} | {r['compile_s']:.2f} | {warm} | {r['run_s']:.2f} "
            f"| {r['steps_per_s']:,.0f} | {r['env_only_steps_per_s']:,.0f} | {r['rollout_only_steps_per_s']:,.0f} "
            f"| {r.get('floor_steps_per_s', float('nan')):,.0f} | {r.get('fraction_of_floor', float('nan')):.0%} "
            f"| {r.get('case_floor_steps_per_s', float('nan')):,.0f} | {r.get('fraction_of_case_floor', float('nan')):.0%} "
            f"| {r['peak_host_rss_mb']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(sweeps: dict, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, (("num_envs", "num_envs (CartPole, 128 steps)"),
                                       ("seeds", "seeds under vmap (CartPole default)"))):
        pts = sweeps[key]
        xs = [p["x"] for p in pts]
        ax.plot(xs, [p["steps_per_s"] for p in pts], "o-", label="training")
        ax.plot(xs, [p["rollout_only_steps_per_s"] for p in pts], "s--", label="rollout only")
        ax.plot(xs, [p["env_only_steps_per_s"] for p in pts], "^:", label="env only")
        if all("case_floor_steps_per_s" in p for p in pts):
            ax.plot(xs, [p["case_floor_steps_per_s"] for p in pts], "k-.", lw=1,
                    label="compute floor, on its threads")
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="env steps / s (all seeds)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"purejaxppo throughput on {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-repeats", type=int, default=3,
                        help="fresh processes whose cold compile times give the median")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--no-sweep", action="store_true", help="skip the num_envs / seeds sweeps")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    add_cpu_args(parser, "each case", "CPU devices the seeds of a case are split over: auto "
                 "(the library's rule, as the CLI applies it) or a count")
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--child-seeds", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-rates", help=argparse.SUPPRESS)
    parser.add_argument("--child-compile-cache", help=argparse.SUPPRESS)
    parser.add_argument("--child-compile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-probe", choices=("backend", "rates"), help=argparse.SUPPRESS)
    parser.add_argument("--rate-repeats", type=int, default=RATE_REPEATS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    require_positive(parser, args, "repeats", "compile_repeats")
    if args.child_config or args.child_probe:
        return _child(args)

    import purejaxppo  # noqa: F401  (XLA guard before jax starts)

    pin_to_cpu()  # the device is the children's alone
    vector_width = apply_cpu_vector_width(args.cpu_vector_width)
    rate_repeats = QUICK_RATE_REPEATS if args.quick else RATE_REPEATS  # a smoke run's floor is rough
    probed = probe_device(rates=True, timeout=args.timeout, rate_repeats=rate_repeats)
    device, rates = probed["device"], probed["rates"]
    print(f"device {device} ({probed['device_count']} on backend {probed['backend']}): "
          f"{rates_text(rates)}", flush=True)
    # Every child process of this run: the same repeats, timeout, pool and devices
    # rules, and the probe's backend (checked).
    spawn = functools.partial(_spawn, repeats=args.repeats, timeout=args.timeout,
                              cpu_threads=args.cpu_threads, cpu_devices=args.cpu_devices,
                              backend=probed["backend"], rate_repeats=rate_repeats)
    rows = {}
    for name in args.cases:
        overrides, seeds = CASES[name]
        if args.quick:
            overrides = {**overrides, **QUICK}
            seeds = min(seeds, 2)
        rows[name] = r = spawn(overrides, seeds, rates=rates)
        # Cold compiles vary by +-15% between processes here: report the median.
        samples = [r["compile_s"]] + [
            spawn(overrides, seeds, rates=None, compile_only=True)["compile_s"]
            for _ in range(args.compile_repeats - 1)
        ]
        r["compile_samples_s"], r["compile_s"] = samples, statistics.median(samples)
        with tempfile.TemporaryDirectory() as cache_dir:  # fill the cache, then time a hit
            spawn(overrides, seeds, rates=None, compile_cache=cache_dir)
            warm = spawn(overrides, seeds, rates=None, compile_cache=cache_dir)
        r["warm_compile_s"], r["warm_cache"] = warm["compile_s"], warm["cache"]
        print(f"{name:24s} compile {r['compile_s']:6.2f} s (warm cache {warm['compile_s']:.2f} s, "
              f"{warm['cache']})  run {r['run_s']:7.2f} s  "
              f"{r['steps_per_s']:>12,.0f} steps/s  ({r.get('fraction_of_floor', 0):.0%} of floor, "
              f"{r.get('fraction_of_case_floor', 0):.0%} of its threads')", flush=True)

    sweeps = {"num_envs": [], "seeds": []}
    if not args.no_sweep:
        env_sizes = (4, 16) if args.quick else SWEEP_ENVS
        for n in env_sizes:
            o = dict(env_name="CartPole-v1", num_envs=n, num_steps=128 if not args.quick else 32,
                     total_timesteps=max(n * 128 * 8, 65_536) if not args.quick else n * 64)
            r = spawn(o, 0, rates=rates)
            sweeps["num_envs"].append({"x": n, **r})
            print(f"sweep num_envs={n:<5d} {r['steps_per_s']:>12,.0f} steps/s", flush=True)
        for s in ((1, 2) if args.quick else SWEEP_SEEDS):
            o = dict(env_name="CartPole-v1", total_timesteps=max(131_072 // s, 16_384)) if not args.quick else QUICK
            r = spawn(o, s if s > 1 else 0, rates=rates)
            sweeps["seeds"].append({"x": s, **r})
            print(f"sweep seeds={s:<3d} {r['steps_per_s']:>12,.0f} steps/s", flush=True)

    startup = startup_times(args.compile_repeats)
    print(f"start-up {startup['startup_s']:.2f} s (eager plotting imports "
          f"{startup['eager_plotting_s']:.2f} s)", flush=True)
    meta = {
        **run_meta("benchmarks/throughput.py", probed),
        "device_count": probed["device_count"],
        "startup": startup,
        "rates": rates,
        "repeats": args.repeats,
        "compile_repeats": args.compile_repeats,
        "cpu_threads": args.cpu_threads,
        "cpu_devices": args.cpu_devices,
        "cpu_vector_width": vector_width,
        "cpu_vector_width_choice": args.cpu_vector_width,
        "quick": args.quick,
    }
    stem = f"throughput-{device}" + ("-quick" if args.quick else "")
    write_results(args.out_dir, stem, {"meta": meta, "cases": rows, "sweeps": sweeps},
                  _table(rows, device, meta))
    if sweeps["num_envs"] and sweeps["seeds"]:
        _plot(sweeps, args.out_dir / f"{stem}.png", device)
    print(f"wrote {args.out_dir / stem}.{{json,md,png}}")


if __name__ == "__main__":
    main()
