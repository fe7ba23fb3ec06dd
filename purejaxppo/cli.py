"""Command line: ``python -m purejaxppo --env CartPole-v1 [--num-seeds 4] [--lr 3e-4 ...]``.

Trains ``num_seeds`` seeds of one config in a single compiled, vmapped call and
prints a short table: compile time and steady-state time apart, the learning
curve (median over seeds), and each seed's final and greedy-evaluation return.
The seeds are split over the devices (on a CPU, over up to one device per
core: `purejaxppo.devices`), and XLA's CPU pool is sized for the run
(`purejaxppo.platform.cpu_threads`) and XLA CPU's vector width chosen for the CPU
(`purejaxppo.platform.cpu_vectors`), all before JAX starts.

The environment's preset (`purejaxppo.presets`) is the starting point, so
``--env Pendulum-v1`` alone runs the tuned Pendulum config; every `PPOConfig`
field is a flag that overrides it (``--env X --help`` lists them with the
preset's values; ``env_params`` and ``env_kwargs`` as ``KEY=VALUE`` lists,
``--env-params max_steps_in_episode=200``). ``--no-preset`` starts from the
library defaults instead.

``--init-from DIR`` starts every seed from the policy a run saved with
``--checkpoint-dir DIR``; with ``--reference-kl`` that policy is also kept as
the fixed reference of a fine-tuning run (docs/algorithm.md: fine-tuning), which then
resumes from its own checkpoints without ``--init-from``.

``--json-out`` writes strict JSON: a NaN or infinity (an update before any
episode ended) is written as null, one entry per update.

Every path is checked before anything compiles. A failure prints one line
(``purejaxppo: error: ...``) and exits 2 for bad input, 1 for a failure at
run time: a run that goes NaN or infinite stops with the update and the last
good checkpoint. Ctrl-C prints where the run stopped and how to resume it,
and exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

import purejaxppo  # noqa: F401  (applies the XLA guard before jax starts)
from purejaxppo.config import PPOConfig
from purejaxppo.divergence import NonFiniteError, first_nonfinite
from purejaxppo.loggers import Reporter
from purejaxppo.paths import input_dir, output_dir, output_file


@dataclasses.dataclass(frozen=True)
class Args:
    """Train PPO on a gymnax environment, all seeds in one compiled call."""

    config: Annotated[PPOConfig, tyro.conf.arg(name="")] = dataclasses.field(default_factory=PPOConfig)
    env_params: tuple[str, ...] = ()
    """Fields of the env's EnvParams, as KEY=VALUE (a Python literal, else a
    string), over the preset's: e.g. --env-params max_steps_in_episode=200."""
    env_kwargs: tuple[str, ...] = ()
    """Keyword arguments of the env's constructor, as KEY=VALUE (a Python
    literal, else a string), over the preset's."""
    num_seeds: int = 1
    """Seeds trained together under jax.vmap."""
    seed: int = 0
    """Base PRNG seed; seed i uses split(PRNGKey(seed), num_seeds)[i]."""
    eval_episodes: int = 16
    """Greedy evaluation episodes per seed after training (0 to skip)."""
    json_out: str | None = None
    """Write the per-update metrics (median over seeds) and the summary here."""
    checkpoint_dir: str | None = None
    """Save the full train state here every --checkpoint-every updates, and resume
    from the latest checkpoint found there (it must be of the same config, seed
    and num_seeds; purejaxppo.checkpoint)."""
    init_from: str | None = None
    """Start from the policy in this checkpoint directory (its latest checkpoint,
    e.g. another run's --checkpoint-dir) instead of a random one: its parameters
    and observation statistics, the same for every seed. With --reference-kl it
    is also the fixed reference policy of a fine-tuning run. The network flags
    must give its network (purejaxppo.checkpoint.restore_policy)."""
    init_seed: int = 0
    """With --init-from: which of that run's seeds to start from (0 <= i < its
    num_seeds)."""
    checkpoint_every: int = 0
    """Updates between checkpoints; each chunk of updates is one compiled call.
    0: the whole run is one compiled call and only its final state is saved
    (100 with --checkpoint-dir, or when resuming a run saved in chunks)."""
    run_dir: str = "auto"
    """Where the run's files go: config.json (rerun it with --config), metrics.csv
    (each reported update and seed), checkpoints/, summary.json, curves.png.
    auto: runs/<env>/<date-time>; none: write nothing; a run directory that
    holds checkpoints resumes that run."""
    progress: bool = True
    """Report while training: a progress bar on a terminal, else a metrics line
    every 10 s; metrics.csv gets each report as it comes. Reports come every
    --log-every updates (0: auto, about 50 per run) from inside the compiled
    run, which then is not kept in JAX's compilation cache (it holds a host
    callback). --no-progress: no live reports, metrics.csv gets every update
    at the end, and the compiled program is cached."""
    tensorboard: bool = False
    """Also write TensorBoard event files to RUN_DIR/tensorboard (needs the
    tensorboard extra: pip install 'purejaxppo[tensorboard]')."""
    wandb: bool = False
    """Also log to Weights & Biases, in RUN_DIR/wandb (needs the wandb extra;
    WANDB_MODE=offline keeps it local)."""
    wandb_project: str = "purejaxppo"
    """The W&B project of --wandb."""
    on_bad_checkpoint: Literal["fallback", "stop"] = "fallback"
    """When the latest checkpoint fails its checksums (a file missing, truncated
    or corrupt): fallback moves it aside to bad-<step> and resumes from the
    newest intact one; stop exits with the error."""
    preset: bool = True
    """Start from the env's preset (purejaxppo.presets); --no-preset: library defaults."""
    compile_cache: bool = True
    """Keep compiled programs on disk and reuse them when the same run is compiled
    again (JAX's persistent cache, in $PUREJAXPPO_CACHE_DIR or ~/.cache/purejaxppo/xla);
    --no-compile-cache compiles afresh."""
    cpu_threads: str = "auto"
    """Threads XLA's CPU runtime runs the program on: auto (1 for a small run of
    <= 32 envs over all seeds without a CNN, or for seeds split over CPU
    devices, else one per core; a PJRT_NPROC already set wins), default (one
    per core), or a count (purejaxppo.platform.cpu_threads)."""
    cpu_vector_width: str = "auto"
    """SIMD width in bits XLA's CPU compiler prefers: auto (512 on an AMD CPU with
    AVX-512, else XLA's default 256; a width already in XLA_FLAGS wins), default,
    or 128, 256 or 512 (purejaxppo.platform.cpu_vectors)."""
    cpu_devices: str = "auto"
    """CPU devices the seeds are split over: auto (the most, up to one per core,
    that divide num_seeds; for one seed, the devices --env-devices auto splits
    its envs over; a JAX_NUM_CPU_DEVICES already set wins) or a count
    (purejaxppo.devices). Seeds always go over the backend's devices (GPUs too)."""
    env_devices: str = "auto"
    """Devices one seed's envs are split over, data parallel (make_train's
    env_devices): auto (on a CPU with one seed, the most devices, up to one per
    core, that leave each at least 256 samples of every minibatch: 2048 envs
    x 128 steps trained 28-35% faster on two cores; else 1), or a count of
    the backend's devices (GPUs too)."""
    coordinator_address: str | None = None
    """HOST:PORT of process 0, in a run over several processes (jax.distributed;
    docs/multiprocess.md): each process runs the same command with its own
    --process-id, and the seeds or envs split over every process's devices."""
    num_processes: int | None = None
    """The processes of a multi-process run (with --coordinator-address)."""
    process_id: int | None = None
    """This process's index in a multi-process run, 0 to num_processes - 1;
    process 0 prints and writes the run directory."""
    distributed: bool = False
    """Join a multi-process run that JAX finds by itself (SLURM, Open MPI, Cloud
    TPU) instead of --coordinator-address, --num-processes and --process-id."""
    heartbeat_timeout: int | None = None
    """Seconds after which a silent process of a multi-process run is taken as
    dead and the others stop with an error (JAX's default: 100). A process
    that exits is noticed at the next collective, at once."""


# Args fields that say how this process joins a run, not what the run is:
# not reused by --config (each process has its own).
_LAUNCH_ARGS = ("coordinator_address", "num_processes", "process_id", "distributed", "heartbeat_timeout")


def apply_distributed(args: Args) -> None:
    """Join the multi-process run ``args`` name (`purejaxppo.distributed`),
    before anything starts JAX; nothing for a run of one process."""
    from purejaxppo import distributed

    named = (args.coordinator_address, args.num_processes, args.process_id)
    if args.distributed and any(v is not None for v in named):
        raise ValueError("--distributed lets JAX find the cluster; give it alone, or "
                         "--coordinator-address, --num-processes and --process-id without it")
    if args.heartbeat_timeout is not None and not args.distributed and all(v is None for v in named):
        raise ValueError(f"--heartbeat-timeout {args.heartbeat_timeout} applies to a multi-process "
                         "run; allowed with --distributed or --coordinator-address")
    if args.distributed or any(v is not None for v in named):
        distributed.initialize(*named, heartbeat_timeout_s=args.heartbeat_timeout)


def _env_and_preset(argv: list[str]) -> tuple[str, bool]:
    """The env name and ``--[no-]preset`` of ``argv``, read first because the
    env's preset sets every other flag's default (`default_args`)."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--env", "--env-name", "--env_name", dest="env_name",
                       default=PPOConfig.env_name)
    first.add_argument("--preset", action=argparse.BooleanOptionalAction, default=True)
    known, _ = first.parse_known_args(argv)
    return known.env_name, known.preset



def default_args(argv: list[str]) -> Args:
    """The defaults for the full parse: the env's preset, when it has one and
    ``--no-preset`` is absent; otherwise the library defaults for that env.
    An unknown env is left for the full parse to report."""
    from purejaxppo.presets import PRESETS

    env, use_preset = _env_and_preset(argv)
    if use_preset and env in PRESETS:
        return Args(config=PRESETS[env].config(), preset=True)
    try:
        return Args(config=PPOConfig(env_name=env), preset=use_preset)
    except (TypeError, ValueError):
        return Args(preset=use_preset)


def parse_args(argv: list[str]) -> Args:
    """``argv`` as `Args`, the env's preset under the flags; with ``--config
    RUN/config.json``, that run's config and arguments under them. Building
    the config starts no JAX backend, so the CPU settings that must precede
    it (`apply_platform`) can be chosen from the parsed run."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--config", dest="config_file", default=None)
    known, rest = first.parse_known_args(argv)
    default = read_run_config(known.config_file) if known.config_file else default_args(argv)
    description = (__doc__.splitlines()[0] + " Also: 'eval RUN_DIR' plays a trained run's policy "
                   "and draws a GIF; 'plot RUN_DIR...' overlays runs; 'sweep --grid ...' trains a "
                   "hyperparameter grid and 'pbt' a population in one compiled call; 'check-env --env NAME' "
                   "checks an env against the env protocol (each with --help).")
    return tyro.cli(Args, args=rest, default=default, description=description)


def resolve_env_devices(choice: str, num_seeds: int, config: PPOConfig) -> int:
    """The device count ``--env-devices`` asks for, once JAX has started:
    ``auto`` is `purejaxppo.platform.cpu_devices.auto_env_devices`; a count
    is taken as it is (`make_train` checks it)."""
    from purejaxppo.platform.cpu_devices import auto_env_devices
    from purejaxppo.platform.cpu_threads import parse_count

    if choice != "auto":
        return parse_count("env_devices", choice, "'auto' or an int >= 1")
    return auto_env_devices(config.num_envs, config.minibatch_size, num_seeds, config.grad_chunk_size)


def cpu_devices_for_args(args: Args) -> int | None:
    """The CPU device count (`purejaxppo.platform.cpu_devices`) that ``args``
    ask for; None leaves the environment's choice. Chosen before JAX starts."""
    from purejaxppo.platform.cpu_devices import resolve_cpu_devices, user_set_cpu_devices
    from purejaxppo.platform.cpu_threads import parse_count

    config = args.config
    if args.env_devices != "auto" and args.cpu_devices == "auto":
        # --env-devices N: N CPU devices for each seed's envs (the seeds then
        # stay together).
        count = parse_count("env_devices", args.env_devices, "'auto' or an int >= 1")
        return None if user_set_cpu_devices() else count
    one_seed = args.num_seeds == 1
    return resolve_cpu_devices(
        args.cpu_devices, max(args.num_seeds, 1),
        config.num_envs if one_seed else None,
        config.minibatch_size if one_seed else None,
        config.grad_chunk_size if one_seed else None,
    )


def apply_cpu_devices(args: Args) -> int:
    """Make the CPU devices ``args`` ask for, before JAX starts; return the
    count the run splits its seeds over on a CPU. Once JAX has started,
    ``auto`` keeps what there is; an explicit count is an error there."""
    from purejaxppo.platform.cpu_devices import current_cpu_devices, set_cpu_devices
    from purejaxppo.platform.cpu_threads import accelerator_expected, backend_started

    devices = cpu_devices_for_args(args)
    auto = args.cpu_devices == "auto"
    if devices is None or (auto and (backend_started() or accelerator_expected())):
        return current_cpu_devices() or 1
    set_cpu_devices(devices)
    return devices


def cpu_threads_for_args(args: Args, devices: int = 1) -> int | None:
    """The CPU pool size (`purejaxppo.platform.cpu_threads`) that ``args`` ask
    for. ``auto`` looks at num_envs, num_seeds and the torso. Where JAX will
    likely run on a GPU or TPU
    (`purejaxppo.platform.cpu_threads.accelerator_expected`), ``auto`` sets
    nothing."""
    from purejaxppo.platform.cpu_threads import accelerator_expected, resolve_cpu_threads, uses_cnn

    if args.cpu_threads == "auto" and accelerator_expected():
        return None
    return resolve_cpu_threads(
        args.cpu_threads,
        num_envs=args.config.num_envs,
        num_seeds=max(args.num_seeds, 1),
        cnn=uses_cnn(args.config.env_name, args.config.torso),
        devices=devices,
    )


def apply_cpu_threads(args: Args, devices: int = 1) -> str:
    """Size XLA's CPU pool as ``args`` ask, before JAX starts; return a note
    for the output. An explicit count that can no longer be applied (JAX
    started already, e.g. `main` called from a process that used JAX) is an
    error; ``auto`` then keeps the running pool and says so."""
    from purejaxppo.platform.cpu_threads import backend_started, current_cpu_threads, set_cpu_threads

    threads = cpu_threads_for_args(args, devices)
    if args.cpu_threads == "auto" and backend_started() and current_cpu_threads() != threads:
        threads = current_cpu_threads()
        return f"{threads or 'one per core'} (auto: JAX had started; kept)"
    set_cpu_threads(threads)
    return f"{threads or 'one per core'} ({'auto' if args.cpu_threads == 'auto' else '--cpu-threads'})"


def apply_cpu_vector_width(choice: str) -> str:
    """Set XLA CPU's preferred vector width (``--cpu-vector-width``) before
    JAX starts; return a note for the output. Once JAX has started, ``auto``
    keeps the width it started with and says so, and keeps a width set in
    ``XLA_FLAGS``; an explicit width that can no longer be applied is an
    error."""
    from purejaxppo.platform.cpu_threads import backend_started
    from purejaxppo.platform.cpu_vectors import (XLA_DEFAULT_WIDTH, current_cpu_vector_width,
                                                 resolve_cpu_vector_width, set_cpu_vector_width,
                                                 user_set_width)

    width = resolve_cpu_vector_width(choice)
    now = current_cpu_vector_width() or XLA_DEFAULT_WIDTH
    if choice == "auto" and user_set_width():
        return f"{now} bits (XLA_FLAGS)"
    if choice == "auto" and backend_started() and now != (width or XLA_DEFAULT_WIDTH):
        return f"{now} bits (auto: JAX had started; kept)"
    set_cpu_vector_width(width)
    return f"{width or XLA_DEFAULT_WIDTH} bits ({'auto' if choice == 'auto' else '--cpu-vector-width'})"


def apply_platform(args: Args) -> tuple[str, str]:
    """The CLI's machine tuning (`purejaxppo.platform`), applied before JAX
    starts: XLA CPU's vector width, the CPU devices, then the CPU pool.
    Returns the notes ``(cpu threads, cpu vectors)`` for the output."""
    vectors_note = apply_cpu_vector_width(args.cpu_vector_width)
    devices = apply_cpu_devices(args)
    return apply_cpu_threads(args, devices), vectors_note


def run(args: Args, cpu_threads_note: str | None = None, cpu_vectors_note: str | None = None) -> dict:
    """Train as ``args`` say; print the result; return the summary."""
    if args.num_seeds <= 0:
        raise ValueError(f"num_seeds must be a positive int, got {args.num_seeds}")
    if args.eval_episodes < 0:
        raise ValueError(f"eval_episodes must be >= 0, got {args.eval_episodes}")
    if args.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be an int >= 0 (updates; 0: the final state "
                         f"only), got {args.checkpoint_every}")
    if (args.tensorboard or args.wandb) and args.run_dir == "none":
        raise ValueError("--tensorboard and --wandb write into the run directory; allowed with "
                         "--run-dir auto or DIR, not none")
    config = args.config
    if config.log_every == 0 and args.progress:
        config = config.replace(log_every=max(1, config.num_updates // AUTO_REPORTS))
    # Where results go, checked (and made) before anything runs.
    json_out = None if args.json_out is None else output_file("json_out", args.json_out)
    init_from = None if args.init_from is None else input_dir("init_from", args.init_from)
    run_dir = resolve_run_dir(args.run_dir, config.env_name)
    if run_dir is not None:  # one directory for all processes: the one process 0 named
        from purejaxppo.distributed import broadcast_text

        run_dir = Path(broadcast_text(str(run_dir)))
    checkpoint_dir = (args.checkpoint_dir if args.checkpoint_dir is not None
                      else run_dir / "checkpoints" if run_dir is not None else None)
    # The directories the checks make, removed again (if still empty) when the run is refused.
    made = [Path(d) for d in (checkpoint_dir, run_dir) if d is not None and str(d) and not Path(d).exists()]
    if run_dir is not None:
        run_dir = output_dir("run_dir", run_dir)
    try:
        checkpoint_dir = None if checkpoint_dir is None else output_dir("checkpoint_dir", checkpoint_dir)
        return _checked_run(args, config, run_dir, checkpoint_dir, json_out, init_from,
                            cpu_threads_note, cpu_vectors_note)
    except BaseException:
        # A run refused before it started leaves no empty directory behind (once
        # it has started, its run directory holds config.json and stays).
        _remove_if_empty(*made)
        raise


def _checked_run(args: Args, config: PPOConfig, run_dir, checkpoint_dir, json_out, init_from,
                 cpu_threads_note, cpu_vectors_note) -> dict:
    """`run` once its output paths are checked."""
    import jax

    from purejaxppo.distributed import is_main
    from purejaxppo.platform.compile_cache import enable_compilation_cache
    from purejaxppo.devices import largest_divisor_at_most, shard_seeds
    from purejaxppo.memory import check_memory
    from purejaxppo.train import make_train

    config = with_env_args(config, args)
    start, start_note = None, ""
    if init_from is not None:
        from purejaxppo.checkpoint import restore_policy

        start = restore_policy(init_from, config, seed=args.init_seed)
        start_note = f" | from {init_from} (update {start.updates_done}, seed {start.seed})"
    elif config.reference_kl and not _has_checkpoint(checkpoint_dir):
        raise ValueError(
            "reference_kl=True fine-tunes a trained policy and keeps it as the reference: "
            "name the checkpoint directory of the run that trained it, --init-from DIR "
            "(docs/algorithm.md: fine-tuning)"
        )
    elif args.init_seed != 0:
        raise ValueError(f"init_seed={args.init_seed} picks a seed of --init-from's run; "
                         "give --init-from too, or leave init_seed at 0")
    # The policy to start from, the same for every seed; None: random ones.
    params, obs_norm = (start.params, start.obs_norm) if start else (None, None)
    if args.compile_cache:
        enable_compilation_cache()
    env_devices = resolve_env_devices(args.env_devices, args.num_seeds, config)
    resuming = checkpoint_dir is not None and _has_checkpoint(checkpoint_dir)
    every = args.checkpoint_every or (100 if args.checkpoint_dir is not None or resuming else 0)
    # Live reports come from inside the compiled run; without them (--no-progress)
    # the loggers get every update at the end, and the program, free of host
    # callbacks, can be kept in JAX's compilation cache.
    reporter = Reporter([], config.batch_size)
    live = reporter if args.progress else None
    trainer = make_train(config, env_devices=env_devices if env_devices > 1 else None, log_fn=live)
    # The seeds split over the backend's devices (one when there is one), as
    # shard_seeds places them; refused first if they cannot fit there.
    num_devices = 1 if env_devices > 1 else largest_divisor_at_most(args.num_seeds, jax.device_count())
    check_memory(trainer, runs_per_device=args.num_seeds // num_devices)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.num_seeds)
    if env_devices == 1:
        keys = shard_seeds(keys)
        num_devices = len(keys.sharding.device_set)
    if run_dir is not None and is_main():
        write_run_config(run_dir, config, args, PROGRESS["argv"] or [])
    PROGRESS.update(done=0, total=config.num_updates, checkpoint_dir=checkpoint_dir if every else None)
    try:
        # The run's files and reports come from process 0 alone (where the
        # live reports arrive: `purejaxppo.train.make_train`'s log_fn).
        reporter.loggers = make_loggers(args, config, run_dir) if is_main() else []
        return _train_and_report(args, config, trainer, keys, params, obs_norm, every, checkpoint_dir,
                                 run_dir, json_out, start, start_note, env_devices, num_devices,
                                 cpu_threads_note, cpu_vectors_note, reporter)
    finally:
        reporter.close()


def _remove_if_empty(*directories: Path | None) -> None:
    """Remove each of ``directories`` that is empty (made by the path checks
    of a run that was then refused)."""
    for directory in directories:
        try:
            if directory is not None:
                directory.rmdir()
        except OSError:  # not empty, or gone: left as it is
            pass


def _train_and_report(args, config, trainer, keys, params, obs_norm, every, checkpoint_dir, run_dir,
                      json_out, start, start_note, env_devices, num_devices, cpu_threads_note,
                      cpu_vectors_note, reporter) -> dict:
    import jax

    from purejaxppo.distributed import is_main, to_host
    from purejaxppo.platform.compile_cache import CacheCounter
    from purejaxppo.devices import shard_seeds
    from purejaxppo.evaluation import final_return, make_evaluate

    from purejaxppo.presets import PRESETS

    main = is_main()
    say = print if main else (lambda *a, **k: None)  # process 0 speaks for the run
    if not main:
        print(f"purejaxppo | process {jax.process_index()} of {jax.process_count()} | process 0 "
              "reports and writes the run's files", flush=True)
    steps = config.num_updates * config.batch_size
    steps_run, resumed_note = steps, ""
    origin = "preset" if args.preset and config.env_name in PRESETS else "library defaults"
    say(f"purejaxppo | {config.env_name} ({origin} + flags) | {args.num_seeds} seed(s) x {steps:,} steps "
        f"| {config.num_envs} envs x {config.num_steps} steps x {config.num_updates} updates "
        f"| backend {jax.default_backend()}"
        + start_note
        + (f" | {jax.process_count()} processes" if jax.process_count() > 1 else "")
        + (f" | seeds over {num_devices} devices" if num_devices > 1 else "")
        + (f" | envs over {env_devices} devices" if env_devices > 1 else "")
        + (f" | cpu threads {cpu_threads_note}" if cpu_threads_note and jax.default_backend() == "cpu" else "")
        + (f" | cpu vectors {cpu_vectors_note}" if cpu_vectors_note and jax.default_backend() == "cpu" else ""),
        flush=True)
    if not every:
        train = jax.vmap(trainer, in_axes=(0, None, None, None))
        with CacheCounter() as cache:
            start_s = time.perf_counter()
            compiled = jax.jit(train).lower(keys, None, params, obs_norm).compile()
            compile_s = time.perf_counter() - start_s
        start_s = time.perf_counter()
        result = jax.block_until_ready(compiled(keys, None, params, obs_norm))
        run_s = time.perf_counter() - start_s
        metrics = to_host(result.metrics)  # every seed's, on every process
        divergence = first_nonfinite(metrics)
        if divergence is not None:
            if main:
                _write_json(json_out, {"config": repr(config), "error": f"training diverged: {divergence}"},
                            metrics)
            raise NonFiniteError(divergence, None, None, metrics)
        if checkpoint_dir is not None:  # the final state: what `eval` and --init-from read
            from purejaxppo.checkpoint import save_checkpoint, start_record

            save_checkpoint(checkpoint_dir, config, result.train_state, metrics,
                            config.hyperparams(), keys, start=start_record(params, obs_norm),
                            env_devices=env_devices)
    else:
        from purejaxppo.checkpoint import train_with_checkpoints

        try:
            with CacheCounter() as cache:
                run_ = train_with_checkpoints(trainer, keys, checkpoint_dir,
                                              every=every, params=params,
                                              obs_norm=obs_norm,
                                              on_bad_checkpoint=args.on_bad_checkpoint)
        except NonFiniteError as error:
            if main:
                _write_json(json_out, {"config": repr(config), "error": str(error)}, error.metrics)
            raise
        for bad in run_.set_aside:
            say(f"purejaxppo: warning: {bad}", file=sys.stderr)
        result, compile_s, run_s = run_.result, run_.compile_s, run_.run_s
        metrics = to_host(result.metrics)
        done_before = run_.resumed_from or 0
        steps_run = (config.num_updates - done_before) * config.batch_size
        resumed_note = (f" | resumed from update {done_before} of {config.num_updates}"
                        if run_.resumed_from is not None else "")
        resumed_note += f" | checkpoints {run_.save_s:.2f} s in {checkpoint_dir}"
    PROGRESS.update(done=config.num_updates)
    if reporter.last is None:  # nothing came live (--no-progress)
        reporter.replay(metrics)
    reporter.close()  # the progress bar ends before the results print
    finals = final_return(metrics)
    evals = None
    if args.eval_episodes:
        evaluate = jax.jit(jax.vmap(make_evaluate(config, args.eval_episodes)))
        eval_keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.num_seeds)
        if env_devices == 1:  # as the seeds were placed (a split run's params are on its devices)
            eval_keys = shard_seeds(eval_keys)
        evals = to_host(
            evaluate(result.train_state.params, eval_keys, result.train_state.obs_norm)
        ).mean(axis=1)

    curve = _median_over_seeds(metrics["episode_return"])
    cache_note = {"hit": " (from the compilation cache)", "miss": " (cold)", "off": ""}[cache.status] if compile_s else ""
    rate = f"{steps_run * args.num_seeds / run_s:,.0f} env steps/s (all seeds)" if steps_run else "nothing left to run"
    say(f"compile {compile_s:.2f} s{cache_note} | run {run_s:.2f} s | {rate}{resumed_note}")
    say("\nlearning curve (episode_return, median over seeds)")
    say(f"{'progress':>9} {'env steps':>12} {'return':>10}")
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        i = max(int(round(frac * config.num_updates)) - 1, 0)
        say(f"{frac:>9.0%} {(i + 1) * config.batch_size:>12,} {curve[i]:>10.2f}")
    say(f"\n{'seed':>4} {'final return':>13} {'greedy eval':>12}")
    for i in range(args.num_seeds):
        ev = f"{evals[i]:>12.2f}" if evals is not None else f"{'-':>12}"
        say(f"{i:>4} {finals[i]:>13.2f} {ev}")
    median_final = _median_over_seeds(np.asarray(finals)[:, None])  # no warning when all are NaN
    say(f"{'all':>4} {median_final[0]:>13.2f} "
          + (f"{np.median(evals):>12.2f}" if evals is not None else f"{'-':>12}")
          + "  (median)")

    summary = {
        "env_name": config.env_name,
        "num_seeds": args.num_seeds,
        "env_steps_per_seed": steps,
        "compile_s": compile_s,
        "compile_cache": cache.status,
        "run_s": run_s,
        "steps_per_s": steps_run * args.num_seeds / run_s if steps_run else None,
        "resumed_from": None if not every else run_.resumed_from,
        "run_dir": None if run_dir is None else str(run_dir),
        "init_from": None if start is None else {
            "directory": str(args.init_from), "updates_done": start.updates_done, "seed": start.seed},
        "final_return": [float(x) for x in finals],
        "eval_return": None if evals is None else [float(x) for x in evals],
        "backend": jax.default_backend(),
        "cpu_threads": cpu_threads_note,
        "cpu_vector_width": cpu_vectors_note if jax.default_backend() == "cpu" else None,
        "devices": num_devices,
        "processes": jax.process_count(),
        "env_devices": env_devices,
    }
    if not main:
        return summary
    _write_json(json_out, {"summary": summary, "config": repr(config)}, metrics)
    if run_dir is not None:
        (run_dir / "summary.json").write_text(json.dumps(_nan_to_none(summary), indent=1, allow_nan=False))
        _plot_curves(run_dir)
        print(f"\nrun directory: {run_dir} (evaluate: python -m purejaxppo eval {run_dir})")
    return summary


AUTO_REPORTS = 50  # live reports per run when --log-every is left at 0


def resolve_run_dir(choice: str, env_name: str) -> Path | None:
    """``--run-dir``: None for ``none``; ``auto``: ``runs/<env>/<date-time>``
    (under ``$PUREJAXPPO_RUNS`` where set; a suffix where it exists; in
    ``<env>``, a ``/`` or ``:`` of an adapter's or a module's env name is
    ``-``); else the path given."""
    if choice == "none":
        return None
    if choice != "auto":
        return Path(choice)
    label = re.sub(r"[^\w.+-]", "-", env_name)
    base = Path(os.environ.get("PUREJAXPPO_RUNS") or "runs") / label / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


# Args fields that say where a run writes, not what it is: not reused by --config.
_OUTPUT_ARGS = ("run_dir", "checkpoint_dir", "json_out")


def write_run_config(run_dir: Path, config: PPOConfig, args: Args, argv: list[str]) -> None:
    """``config.json``: the exact `PPOConfig`, the other arguments and the
    command line; ``--config`` reads it back."""
    from purejaxppo.checkpoint import config_to_json

    others = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name != "config"}
    record = {"config": config_to_json(config), "args": others, "argv": list(argv)}
    (run_dir / "config.json").write_text(json.dumps(record, indent=1, default=str))


def read_run_config(path: str | Path) -> Args:
    """The `Args` a ``config.json`` records (its output paths left at their
    defaults: a rerun writes a run of its own)."""
    from purejaxppo.checkpoint import config_from_json

    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        record = json.loads(path.read_text())
        config = config_from_json(record["config"])
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in record["args"].items()
                 if k not in _OUTPUT_ARGS + _LAUNCH_ARGS and k in {f.name for f in dataclasses.fields(Args)}}
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file; allowed: a run's config.json (or its "
                         "run directory)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"--config {path} is not a run's config.json: {type(error).__name__}: "
                         f"{error}") from None
    return Args(config=config, **saved)


def make_loggers(args: Args, config: PPOConfig, run_dir: Path | None) -> list:
    """The loggers ``args`` ask for (`purejaxppo.loggers`)."""
    from purejaxppo.checkpoint import config_to_json
    from purejaxppo.loggers import CSVLogger, ProgressDisplay, TensorBoardLogger, WandbLogger

    loggers = []
    if run_dir is not None:
        loggers.append(CSVLogger(run_dir / "metrics.csv"))
    if args.tensorboard:
        loggers.append(TensorBoardLogger(run_dir / "tensorboard"))
    if args.wandb:
        loggers.append(WandbLogger(run_dir, config_to_json(config), project=args.wandb_project,
                                   name=run_dir.name))
    if args.progress:
        loggers += [ProgressDisplay(config.num_updates, config.batch_size, args.num_seeds), _TrackProgress()]
    return loggers


def _plot_curves(run_dir: Path) -> None:
    """``curves.png`` of the run, where matplotlib is installed (the plot extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    from purejaxppo.plotting import plot_runs

    plot_runs([run_dir], out=run_dir / "curves.png")


def _write_json(path: Path | None, payload: dict, metrics) -> None:
    """Write ``payload`` and each metric's median over seeds, one entry per
    update (null where not finite), to ``path`` (None: nothing)."""
    if path is None:
        return
    medians = {name: _median_over_seeds(values).tolist() for name, values in metrics.items()}
    payload = {**payload, "metrics_median": medians}
    path.write_text(json.dumps(_nan_to_none(payload), indent=1, allow_nan=False))


def with_env_args(config: PPOConfig, args: Args) -> PPOConfig:
    """``config`` with ``--env-params`` and ``--env-kwargs`` over its own."""
    for field in ("env_params", "env_kwargs"):
        given = key_values(field, getattr(args, field))
        if given:
            config = config.replace(**{field: {**dict(getattr(config, field)), **given}})
    return config


def key_values(flag: str, items: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` items (``--env-params``) as a dict; each value a Python
    literal where it is one (``200``, ``True``, ``0.5``), else the string.
    An item without ``=`` or a key is a ValueError naming the flag."""
    import ast

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--{flag.replace('_', '-')} takes KEY=VALUE items, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key.strip()] = text
    return out


def _nan_to_none(value):
    """``value`` (dicts, lists, numbers) with every NaN or infinite float as
    None: JSON has no NaN (an update before any episode ended, a seed that
    finished none), and strict readers refuse Python's bare ``NaN``."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _has_checkpoint(directory: Path | None) -> bool:
    """Whether ``directory`` holds a checkpoint to resume (with it, a
    fine-tuning run's state holds its reference policy: no --init-from)."""
    if directory is None:
        return False
    from purejaxppo.checkpoint import latest_step

    return latest_step(directory) is not None


def _median_over_seeds(values) -> np.ndarray:
    """Each update's median over the seeds (axis 0) of a metric, NaN seeds left
    out and NaN where every seed is (e.g. ``episode_return`` before any
    episode has finished)."""
    values = np.asarray(values, np.float64)
    with warnings.catch_warnings():  # the all-NaN updates stay NaN, unwarned
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=0)


def eval_command(argv: list[str]) -> dict:
    """``python -m purejaxppo eval RUN_DIR``: play a trained run's policy,
    print its mean return, and draw an episode as a GIF (``--gif``)."""
    from purejaxppo.render import evaluate_run

    parser = argparse.ArgumentParser(prog="purejaxppo eval", description=eval_command.__doc__.split(":")[1].strip())
    parser.add_argument("run_dir", help="a run directory (python -m purejaxppo --run-dir ...)")
    parser.add_argument("--episodes", type=int, default=16, help="episodes to play (default 16)")
    parser.add_argument("--seed-index", type=int, default=0, help="which of the run's seeds (default 0)")
    parser.add_argument("--sampled", action="store_true", help="sample actions instead of the greedy ones")
    parser.add_argument("--gif", default=None, help="also write one episode as an animated GIF here")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="cut the GIF's episode after this many steps (default: the env's limit)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed of the episodes (default 0)")
    args = _parse_or_exit(parser, argv)
    if args.episodes < 1:
        raise ValueError(f"--episodes {args.episodes}; allowed: an int >= 1")
    gif = None if args.gif is None else output_file("gif", args.gif)
    result = evaluate_run(input_dir("run_dir", args.run_dir), episodes=args.episodes,
                          seed_index=args.seed_index, greedy=not args.sampled, gif=gif, key_seed=args.seed,
                          max_steps=args.max_steps)
    mode = "sampled" if args.sampled else "greedy"
    print(f"{args.run_dir} (seed {args.seed_index}): return {result['mean']:.2f} ± {result['std']:.2f} "
          f"over {args.episodes} {mode} episode(s)")
    if gif is not None:
        print(f"wrote {gif} ({result['frames']} frames)")
    return result


def plot_command(argv: list[str]) -> None:
    """``python -m purejaxppo plot RUN_DIR...``: one metric of several runs
    against env steps, median over seeds and 25-75% band."""
    from purejaxppo.plotting import plot_runs

    parser = argparse.ArgumentParser(prog="purejaxppo plot", description=plot_command.__doc__.split(":")[1].strip())
    parser.add_argument("run_dirs", nargs="+", help="run directories to overlay")
    parser.add_argument("--metric", default="episode_return", help="the metric (default episode_return)")
    parser.add_argument("--out", default="curves.png", help="the image to write (default curves.png)")
    args = _parse_or_exit(parser, argv)
    out = output_file("out", args.out)
    plot_runs([input_dir("run_dir", d) for d in args.run_dirs], metric=args.metric, out=out)
    print(f"wrote {out}")


def check_env_command(argv: list[str]) -> list[str]:
    """``python -m purejaxppo check-env --env NAME``: step an env under jit
    and vmap and print each way it breaks the env protocol (exit 1 if any)."""
    from purejaxppo.envs import check_env, make_env

    parser = argparse.ArgumentParser(prog="purejaxppo check-env",
                                     description=check_env_command.__doc__.split(":")[1].strip())
    parser.add_argument("--env", required=True, help="a gymnax id, '<suite>/<id>' or 'module:function'")
    parser.add_argument("--env-kwargs", nargs="*", default=(), metavar="KEY=VALUE",
                        help="keywords of the env's constructor (or of the function)")
    parser.add_argument("--env-params", nargs="*", default=(), metavar="KEY=VALUE",
                        help="fields of its params to replace")
    parser.add_argument("--steps", type=int, default=64, help="steps of 4 envs to take (default 64)")
    args = _parse_or_exit(parser, argv)
    env, params, spec = make_env(args.env, tuple(key_values("env_kwargs", args.env_kwargs).items()),
                                 tuple(key_values("env_params", args.env_params).items()))
    problems = check_env(env, params, num_steps=args.steps)
    actions = f"Discrete({spec.action_dim})" if spec.discrete else f"Box({spec.action_dim},)"
    if problems:
        print(f"{args.env} breaks the env protocol (docs/environments.md):")
        for problem in problems:
            print(f"  - {problem}")
        raise SystemExit(1)
    print(f"{args.env} keeps the env protocol: observations {spec.obs_shape}, actions {actions}, "
          f"{args.steps} steps of 4 envs under jit and vmap")
    return problems


def _parse_or_exit(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse's errors as our one line (exit 2); ``--help`` as usual."""
    parser.exit_on_error = False
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as error:
        raise ValueError(f"{parser.prog}: {error}") from None


def sweep_command(argv: list[str]) -> dict:
    """``python -m purejaxppo sweep``: `purejaxppo.cli_experiments.sweep_command`."""
    from purejaxppo.cli_experiments import sweep_command as command

    return command(argv)


def pbt_command(argv: list[str]) -> dict:
    """``python -m purejaxppo pbt``: `purejaxppo.cli_experiments.pbt_command`."""
    from purejaxppo.cli_experiments import pbt_command as command

    return command(argv)


SUBCOMMANDS = {"eval": eval_command, "plot": plot_command, "sweep": sweep_command, "pbt": pbt_command,
               "check-env": check_env_command}


# Where the running command is: what Ctrl-C reports.
PROGRESS: dict = {"done": 0, "total": None, "checkpoint_dir": None, "argv": None}


class _TrackProgress:
    """A logger that keeps the last reported update for Ctrl-C's message."""

    def write(self, report) -> None:
        PROGRESS["done"] = report.update

    def close(self) -> None:
        pass


def interrupted_message() -> str:
    """The line Ctrl-C prints: where the run stopped (the newest sealed
    checkpoint, where a resume starts; else the last reported update) and
    how to go on."""
    done, total, directory = PROGRESS["done"], PROGRESS["total"], PROGRESS["checkpoint_dir"]
    if directory is not None:  # where a resume starts: the newest sealed checkpoint
        from purejaxppo.checkpoint import MANIFEST

        sealed = [int(p.parent.name) for p in Path(directory).glob(f"*/{MANIFEST}") if p.parent.name.isdigit()]
        done = max(sealed, default=0)
    where = f"interrupted at update {done}" + (f" of {total}" if total else "")
    command = shlex.join([sys.executable, "-m", "purejaxppo", *(PROGRESS["argv"] or [])])
    if directory is None:
        return (f"{where}; no checkpoint was saved (the run was one compiled call). Rerun with "
                f"checkpoints every 100 updates: {command} --checkpoint-every 100")
    return f"{where}; its checkpoints are in {directory}. Resume with: {command}"


# Failures a user's input causes (exit 2); any other failure exits 1.
_BAD_INPUT = (ValueError, TypeError, KeyError, OverflowError, FileNotFoundError, NotADirectoryError,
              IsADirectoryError)


def exit_code(error: BaseException) -> int:
    """2 for bad input, 1 for a failure at run time (a run gone non-finite,
    an unreadable checkpoint, XLA out of memory, a full disk, a lost
    process of a multi-process run)."""
    from purejaxppo.checkpoint import CheckpointError
    from purejaxppo.distributed import describe_failure

    if isinstance(error, (NonFiniteError, CheckpointError)) or "Xla" in type(error).__name__ \
            or "Jax" in type(error).__name__ or describe_failure(error):
        return 1
    # A RuntimeError of our own says a setting cannot apply (e.g. a CPU pool
    # size once JAX has started): the input's fault.
    return 2 if isinstance(error, _BAD_INPUT + (RuntimeError,)) else 1


def one_line(error: BaseException) -> str:
    """``error`` as one line: its message's first line (XLA's and
    TensorStore's run to pages), named by its type where the message alone
    would not say what failed."""
    text = str(error).strip() or type(error).__name__
    lines = text.splitlines()
    line = lines[0] + (" ..." if len(lines) > 1 else "")
    if isinstance(error, (KeyError, OSError, OverflowError)) or exit_code(error) == 1 and not isinstance(
            error, NonFiniteError):
        line = f"{type(error).__name__}: {line}"
    return line[:2000]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m purejaxppo`` and the ``purejaxppo`` script.

    Raises `SystemExit`: 0 after a run, 2 for bad input, 1 for a failure at
    run time, 130 on Ctrl-C, each failure reported in one line on stderr.
    ``PUREJAXPPO_TRACEBACK=1`` re-raises instead, for a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    PROGRESS.update(done=0, total=None, checkpoint_dir=None, argv=argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            SUBCOMMANDS[argv[0]](argv[1:])
            return
        args = parse_args(argv)
        threads_note, vectors_note = apply_platform(args)  # before anything starts JAX
        apply_distributed(args)
        run(args, threads_note, vectors_note)
    except KeyboardInterrupt:
        try:
            message = interrupted_message()
        except Exception:  # the line is printed whatever happens
            message = "interrupted"
        print(f"purejaxppo: {message}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        if os.environ.get("PUREJAXPPO_TRACEBACK"):
            raise
        from purejaxppo.distributed import describe_failure

        lost = describe_failure(error)
        if lost:  # what to do next: the same as after Ctrl-C, on every process
            lost += (f"; {interrupted_message().replace('interrupted at', 'stopped at', 1)} "
                     "(on every process, each with its own --process-id)")
        print(f"purejaxppo: error: {lost or one_line(error)}", file=sys.stderr)
        raise SystemExit(exit_code(error)) from None


def entry() -> None:
    """``python -m purejaxppo``: `main`, with a process that always exits.

    Ctrl-C is seen at once even while a compiled call runs (Python handles
    signals only between bytecodes): a watcher thread wakes on it, waits up
    to a second for `main` to report it, and otherwise reports it itself
    and ends the process. A failure ends the process without waiting for
    threads that cannot finish (orbax's writers after a failed write)."""
    _watch_interrupts()
    try:
        main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if code != 0:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise


_INTERRUPT_SEEN = threading.Event()


def _watch_interrupts() -> None:
    from purejaxppo.checkpoint import WRITING, finish_writes

    if threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def on_sigint(signum, frame):
        if not _INTERRUPT_SEEN.is_set():  # a second Ctrl-C: the watcher ends the process
            _INTERRUPT_SEEN.set()
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)

    def watch():
        seen = 0
        while True:
            seen += os.read(read_fd, 64).count(signal.SIGINT)
            # The main thread raises KeyboardInterrupt when it next runs
            # Python; blocked in a compiled call, it would not for minutes.
            # A checkpoint being written is finished and sealed first.
            while seen == 1 and WRITING.is_set() and not _INTERRUPT_SEEN.is_set():
                time.sleep(0.02)
            if seen >= 2 or (seen == 1 and not _INTERRUPT_SEEN.wait(1.0)):
                if seen == 1:
                    finish_writes()  # the checkpoint written beside the chunk: sealed
                print(f"purejaxppo: {interrupted_message()}", file=sys.stderr, flush=True)
                os._exit(130)

    threading.Thread(target=watch, name="purejaxppo-interrupts", daemon=True).start()


if __name__ == "__main__":
    entry()
