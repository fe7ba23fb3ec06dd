"""Full-state checkpoints of a training run, and a run that resumes from them.

A PPO run's whole state is its `TrainState`: parameters, optimizer state (Adam
moments and step count, so the annealed learning rate too), env states and
current observations, episode statistics, observation and reward
statistics, the PRNG key and the update count. A checkpoint here holds all
of it, plus what makes the run self-describing: the per-update metrics so far,
the `HyperParams` it runs with, its `PPOConfig` and the key it started from.
Checkpoints are written with orbax (`orbax.checkpoint.CheckpointManager`): one
directory per update count, written atomically (a checkpoint interrupted
mid-write is not listed), the oldest removed beyond ``max_to_keep``.

`train_with_checkpoints` runs ``train`` in chunks of ``every`` updates, each
chunk one compiled `lax.scan` (``train.run_updates``), and saves after each.
Called again with the same directory, config, key and hyperparameters it
resumes from the latest checkpoint. The results do not depend on where the
run stopped, nor on ``every``: an interrupted and resumed run is bitwise
equal to an uninterrupted one (``tests/test_checkpoint.py``). Against one
call of ``jax.jit(train)`` they are the same computation, compiled as other
XLA programs (the init apart from the updates), so they agree up to float
rounding; on CartPole they are bitwise equal, and where they are not, the
differences start in the last bits and grow as training's feedback
amplifies them.

    >>> run = train_with_checkpoints(make_train(config), key, "ckpt/", every=100)
    >>> run.result.metrics["episode_return"]        # as jax.jit(train)(key) gives
    >>> restore_checkpoint("ckpt/", config).state   # the state at the latest save
    >>> policy = restore_policy("ckpt/", tune_config, seed=3)   # one seed's policy,
    >>> make_train(tune_config)(key, None, policy.params, policy.obs_norm)  # to fine-tune

Everything inside a chunk stays one pure compiled function; the host steps in
only between chunks, to save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import operator
import os
import signal
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from purejaxppo.config import HYPERPARAM_FIELDS, PPOConfig
from purejaxppo.distributed import barrier, describe_failure, is_main, to_host
from purejaxppo.divergence import NonFiniteError, first_nonfinite
from purejaxppo.hyperparams import HyperParams
from purejaxppo.normalization import RunningMeanStd
from purejaxppo.paths import output_dir
from purejaxppo.pbt import PBTConfig, PBTState, PBTTrainer, make_pbt
from purejaxppo.train import ENV_AXIS, TrainResult, TrainState, make_train

FORMAT = 2  # bumped when what a checkpoint holds changes
MANIFEST = "checksums.json"  # in each step's directory: every file's size and SHA-256

# Compiled programs of `train_with_checkpoints`, per training function.
_PROGRAMS: "weakref.WeakKeyDictionary[Callable, dict]" = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What `restore_checkpoint` reads back.

    Attributes:
        state: the `TrainState` after ``updates_done`` updates (leading batch
            axes as the run had them, e.g. (seeds,) under `jax.vmap`).
        metrics: each metric of the updates so far, (*batch, updates_done),
            NumPy arrays.
        hparams: the run's `HyperParams`, NumPy arrays.
        updates_done: updates the state has had.
        rng: the PRNG key (or keys) the run started from.
        config: the run's `PPOConfig`.
        start: fingerprints (SHA-256) of the ``params`` and ``obs_norm`` the
            run was started from, None for each it was not given.
        env_devices: the devices each run's envs were split over
            (`make_train`'s ``env_devices``; 1 for checkpoints written
            before it was recorded).
        pbt: the `PBTConfig` of a population-based run (``state`` is then
            a `purejaxppo.pbt.PBTState`, ``hparams`` the first population),
            else None.
    """

    state: TrainState
    metrics: dict[str, np.ndarray]
    hparams: HyperParams
    updates_done: int
    rng: jax.Array
    config: PPOConfig
    start: dict[str, str | None]
    env_devices: int = 1
    pbt: PBTConfig | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointedRun:
    """What `train_with_checkpoints` returns.

    Attributes:
        result: the `TrainResult` of the whole run, as ``train`` returns it.
        resumed_from: the update count of the checkpoint the run resumed
            from, or None for a fresh start.
        compile_s: seconds spent compiling (init and chunk programs).
        run_s: seconds spent running them (each to ``block_until_ready``).
        save_s: seconds spent writing checkpoints and sealing each
            (`seal_checkpoint`).
        set_aside: the newer checkpoints found unreadable or corrupt and
            moved aside before resuming (``on_bad_checkpoint="fallback"``).
    """

    result: TrainResult
    resumed_from: int | None
    compile_s: float
    run_s: float
    save_s: float
    set_aside: tuple[BadCheckpoint, ...] = ()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray, jax.Array)) and np.ndim(value) == 0:
        value = np.asarray(value).item()  # e.g. np.int32(100) in env_params
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def config_to_json(config: PPOConfig) -> dict[str, Any]:
    """``config``'s fields as JSON values (tuples become lists)."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _untuple(value: Any) -> Any:
    """JSON's lists back as the tuples they were written from."""
    return tuple(_untuple(x) for x in value) if isinstance(value, list) else value


# A config.json may name PPO's objective as ``policy_objective``, the
# field `PPOConfig.algorithm` reads as these rungs.
_OBJECTIVE_ALGORITHMS = {"clip": "ppo_clip", "kl_penalty": "ppo_penalty"}


def config_from_json(fields: dict[str, Any]) -> PPOConfig:
    """The `PPOConfig` that `config_to_json` wrote (validated again)."""
    fields = dict(fields)
    if "policy_objective" in fields and "algorithm" not in fields:
        objective = fields.pop("policy_objective")
        if objective not in _OBJECTIVE_ALGORITHMS:
            raise ValueError(f"config.json has policy_objective={objective!r}; allowed there: "
                             f"{', '.join(_OBJECTIVE_ALGORITHMS)} (else name the algorithm, one of "
                             "purejaxppo.config.ALGORITHMS)")
        fields["algorithm"] = _OBJECTIVE_ALGORITHMS[objective]
    return PPOConfig(**{name: _untuple(value) for name, value in fields.items()})


def start_record(params: Any = None, obs_norm: Any = None) -> dict[str, str | None]:
    """What a run started from, as a checkpoint records it (``start``):
    fingerprints of the given ``params`` and ``obs_norm``, None for each not given."""
    return {"params": _fingerprint(params), "obs_norm": _fingerprint(obs_norm)}


def _fingerprint(tree: Any) -> str | None:
    """A SHA-256 of ``tree``'s structure, shapes, dtypes and bytes (None for None)."""
    if tree is None:
        return None
    digest = hashlib.sha256(str(jax.tree.structure(tree)).encode())
    for leaf in jax.tree.leaves(tree):
        leaf = np.asarray(leaf)
        digest.update(f"{leaf.shape}{leaf.dtype}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_info(rng: jax.Array) -> dict[str, Any]:
    typed = _is_key(rng)
    data = to_host(jax.random.key_data(rng) if typed else rng)
    if data.dtype != np.uint32:
        raise TypeError(f"rng must be a PRNG key (typed, or raw uint32 data), got dtype {data.dtype}")
    return {
        "typed": bool(typed),
        "impl": str(jax.random.key_impl(rng)) if typed else None,
        # Raw key data means JAX's default PRNG of the time: recorded, since
        # another default reads the same words as another run (or not at all).
        "default_impl": None if typed else str(jax.config.jax_default_prng_impl),
        "shape": list(data.shape),
        "data": data.reshape(-1).tolist(),
    }


def _check_default_impl(info: dict[str, Any], where: str) -> None:
    """A run saved from raw key data is restored under the same default PRNG."""
    saved, now = info.get("default_impl"), str(jax.config.jax_default_prng_impl)
    if not info["typed"] and saved is not None and saved != now:
        raise ValueError(
            f"{where} holds a run started from raw key data under jax_default_prng_impl="
            f"{saved!r}, but the default is now {now!r}; restore it with "
            f"jax.config.update('jax_default_prng_impl', {saved!r})"
        )


def _key_from_info(info: dict[str, Any]) -> jax.Array:
    data = jnp.asarray(np.asarray(info["data"], np.uint32).reshape(info["shape"]))
    return jax.random.wrap_key_data(data, impl=info["impl"]) if info["typed"] else data


def _batch_shape(rng: jax.Array) -> tuple[int, ...]:
    """The run's batch axes: a key's leading axes (none for one key)."""
    return tuple(rng.shape) if _is_key(rng) else tuple(rng.shape[:-1])


def _keys_to_data(tree):
    """Typed PRNG keys as their uint32 data (what orbax can write)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_state(config: PPOConfig, key_info: dict[str, Any], pbt: PBTConfig | None = None,
                    env: Any = None, env_params: Any = None):
    """The `TrainState` (with ``pbt``, `PBTState`) shapes and dtypes of a run
    of ``config`` (on ``env`` where given) started from a key like
    ``key_info``'s, typed keys as their data."""
    key = _key_from_info(key_info)
    envs = dict(env=env, env_params=env_params)
    train = make_train(config, **envs) if pbt is None else make_pbt(config, pbt, **envs)
    member = train if pbt is None else train.trainer
    hp = None if pbt is None else train.default_hparams()
    if config.reference_kl:  # the reference policy: parameters (and statistics) like fresh ones
        obs_norm = RunningMeanStd.create(member.env_spec.obs_shape) if config.normalize_obs else None
        init = lambda k: train.init(k, hp, member.random_params(k), obs_norm)
    else:
        init = lambda k: train.init(k, hp)
    for _ in _batch_shape(key):
        init = jax.vmap(init)
    return jax.eval_shape(lambda k: _keys_to_data(init(k)), key), jax.eval_shape(init, key)


def _manager(directory: str | Path, max_to_keep: int | None = None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def latest_step(directory: str | Path) -> int | None:
    """The update count of the latest complete checkpoint in ``directory``, or
    None when it holds none (or does not exist)."""
    if not Path(directory).is_dir():
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def save_checkpoint(
    directory: str | Path,
    config: PPOConfig,
    state: TrainState,
    metrics: dict[str, Any],
    hparams: HyperParams,
    rng: jax.Array,
    *,
    start: dict[str, str | None] | None = None,
    max_to_keep: int | None = 2,
    manager: ocp.CheckpointManager | None = None,
    env_devices: int = 1,
    pbt: PBTConfig | None = None,
) -> int:
    """Write ``state`` and the run's record to ``directory``; return the step.

    The checkpoint is named by ``state.update_step`` (the same for every seed
    of a vmapped run). ``metrics`` are the metrics of all updates so far
    (leading batch axes, then updates); ``rng`` the key or keys the run
    started from. With a ``manager`` (an open orbax `CheckpointManager`) the
    write is asynchronous: call ``manager.wait_until_finished()`` and then
    `seal_checkpoint` before reading it. Without one, this waits for the
    write and seals it (writes its checksums). ``start`` records
    what the run started from (`train_with_checkpoints` passes fingerprints
    of given ``params`` and ``obs_norm``), ``env_devices`` the devices its
    envs are split over (`make_train`'s ``env_devices``), which a resumed
    run must split them over too. A population-based run's ``state`` is a
    `purejaxppo.pbt.PBTState` and ``pbt`` its `PBTConfig`.

    A directory holds one run's checkpoints, in order: where it holds some
    already, the step must come after the latest one, and (without a
    ``manager``, whose caller checked when it started) the config and key
    must be that checkpoint's. Else a `ValueError`, before anything is
    written: a lower step would be written and then pruned at once by
    ``max_to_keep``, another run's would push this run's out.
    """
    if isinstance(state, PBTState) != (pbt is not None):
        raise ValueError("a population's PBTState is saved with its PBTConfig (pbt=...), and only it")
    steps = np.unique(to_host(state.update_step))
    if steps.size != 1:
        raise ValueError(f"state.update_step differs across the batch: {steps.tolist()}")
    step = int(steps[0])
    batch = tuple(np.shape(state.update_step))
    if batch != _batch_shape(rng):
        raise ValueError(
            f"the state's batch axes {batch} are not the key's {_batch_shape(rng)}: pass the key "
            "each run started from, broadcast to the batch (for a sweep over hyperparameters "
            "with one key, jnp.broadcast_to(key, batch + key.shape))"
        )
    if not metrics:
        raise ValueError("metrics must hold the metrics of the updates so far (at least one update)")
    metrics = to_host(dict(metrics))  # whole on every process (orbax writes them from process 0)
    record = {
        "format": FORMAT,
        "config": config_to_json(config),
        "rng": _key_info(rng),
        "updates_done": step,
        "metrics": {name: [list(v.shape), str(v.dtype)] for name, v in metrics.items()},
        "hparams": {name: list(np.shape(getattr(hparams, name))) for name in HYPERPARAM_FIELDS},
        "start": start or {"params": None, "obs_norm": None},
        "env_devices": int(env_devices),
        "pbt": None if pbt is None else {k: _jsonable(v) for k, v in dataclasses.asdict(pbt).items()},
    }
    for name, value in metrics.items():
        if value.shape[-1:] != (step,):
            raise ValueError(f"metrics[{name!r}] has shape {value.shape}; its last axis must be "
                             f"the {step} updates done")
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_keys_to_data(state)),
        update_metrics=ocp.args.StandardSave(metrics),  # "metrics" is orbax's own item
        hparams=ocp.args.StandardSave(to_host(hparams)),
        run=ocp.args.JsonSave(record),
    )
    if manager is not None:
        _check_step_after(manager.latest_step(), step, directory)
        manager.save(step, args=args)
        return step
    with _manager(directory, max_to_keep) as own:
        latest = own.latest_step()
        _check_step_after(latest, step, directory)
        if latest is not None:
            _check_intact(directory, latest)
            saved = own.restore(latest, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run
            where = f"checkpoint {directory}/{latest}"
            if saved.get("format") != FORMAT:
                raise ValueError(f"{where} has format {saved.get('format')!r}; this version of "
                                 f"purejaxppo writes format {FORMAT}: write to another directory")
            check_same_config(config_from_json(saved["config"]), config, where)
            _check_same_pbt(_pbt_from_json(saved.get("pbt")), pbt, where)
            _check_same_key(saved["rng"], rng, where)
        own.save(step, args=args)
        own.wait_until_finished()
    if is_main():
        seal_checkpoint(directory, step)
    barrier(f"purejaxppo-sealed-{step}")  # sealed before any process goes on
    return step


WRITING = threading.Event()
"""Set while `train_with_checkpoints` hands a checkpoint to orbax."""


class _Sealer(threading.Thread):
    """Waits for orbax to finish the write of ``step`` and seals it, beside
    the next chunk's computation; `finish` joins it and raises what it hit.
    Until finished it is in `_SEALERS` (`finish_writes`)."""

    def __init__(self, manager: ocp.CheckpointManager, directory, step: int):
        super().__init__(name=f"purejaxppo-seal-{step}", daemon=True)
        self.manager, self.directory, self.step, self.error = manager, directory, step, None
        # Waited on instead of join(): a join cut short by Ctrl-C may return
        # early the next time (CPython), before the seal is written.
        self.done = threading.Event()
        _SEALERS.add(self)
        self.start()

    def run(self):
        try:
            self.manager.wait_until_finished()
            if is_main():  # one process seals (orbax has gathered every process's writes)
                seal_checkpoint(self.directory, self.step)
        except BaseException as error:  # re-raised by finish(), in the caller's thread
            self.error = error
        finally:
            self.done.set()

    def finish(self) -> None:
        self.done.wait()
        _SEALERS.discard(self)
        if self.error is not None:
            error, self.error = self.error, None
            raise error


_SEALERS: set = set()


def finish_writes(timeout: float = 60.0) -> None:
    """Wait (up to ``timeout`` seconds) for the checkpoints being written in
    the background to be finished and sealed: what a process about to end
    abruptly (the command line on Ctrl-C) calls first."""
    deadline = time.monotonic() + timeout
    for sealer in list(_SEALERS):
        sealer.done.wait(max(deadline - time.monotonic(), 0))


@contextlib.contextmanager
def writing():
    """A checkpoint write that Ctrl-C does not cut short: a SIGINT that
    arrives inside is held, and handled (a `KeyboardInterrupt` by default)
    once the write is sealed. Outside the main thread, or where Python does
    not handle SIGINT, it holds nothing."""
    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(handler):
        yield
        return
    held = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    WRITING.set()
    try:
        yield
    finally:
        WRITING.clear()
        signal.signal(signal.SIGINT, handler)
        if held:
            handler(signal.SIGINT, held[0])


@dataclasses.dataclass(frozen=True)
class BadCheckpoint:
    """A checkpoint that failed `verify_checkpoint`.

    Attributes:
        step: its update count.
        path: the file at fault (or the step's directory).
        reason: what is wrong with it, in a few words.
        moved_to: where `train_with_checkpoints` moved it aside, or None.
    """

    step: int
    path: str
    reason: str
    moved_to: str | None = None

    def __str__(self) -> str:
        moved = f"; moved aside to {self.moved_to}" if self.moved_to else ""
        return f"checkpoint of update {self.step} is unreadable: {self.path}: {self.reason}{moved}"


class CheckpointError(ValueError):
    """A checkpoint is unreadable or corrupt; ``.bad`` says which and why."""

    def __init__(self, bad: BadCheckpoint):
        super().__init__(str(bad))
        self.bad = bad


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal_checkpoint(directory: str | Path, step: int) -> Path:
    """Write the checksums of the finished checkpoint of update ``step``:
    ``DIR/<step>/checksums.json`` with every file's size and SHA-256
    (`verify_checkpoint` checks them). Written atomically, last: a step
    directory without it was not finished. Returns its path."""
    step_dir = Path(directory) / str(step)
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    record = {"algorithm": "sha256", "files": {
        str(p.relative_to(step_dir)): [p.stat().st_size, _file_digest(p)] for p in files}}
    target = step_dir / MANIFEST
    partial = target.with_suffix(".partial")
    with open(partial, "w") as file:
        json.dump(record, file, indent=0)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, target)
    return target


def verify_checkpoint(directory: str | Path, step: int) -> BadCheckpoint | None:
    """Check the checkpoint of update ``step`` against its checksums: None if
    every file is there with its saved size and SHA-256, else a
    `BadCheckpoint` naming the first file that is not and why."""
    step_dir = Path(directory) / str(step)
    manifest = step_dir / MANIFEST
    bad = lambda path, reason: BadCheckpoint(step, str(path), reason)
    if not manifest.is_file():
        _check_format(step_dir)
        return bad(manifest, "missing: the checkpoint was never sealed (its write was "
                             "interrupted, or emptied since)")
    try:
        files = json.loads(manifest.read_text())["files"]
        files = {name: (int(size), str(digest)) for name, (size, digest) in files.items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return bad(manifest, f"unreadable ({type(error).__name__}: {error})")
    for name, (size, digest) in files.items():
        path = step_dir / name
        if not path.is_file():
            return bad(path, "missing")
        actual = path.stat().st_size
        if actual != size:
            return bad(path, f"{actual} bytes where {size} were written (truncated or overwritten)")
        try:
            if _file_digest(path) != digest:
                return bad(path, "its SHA-256 is not the one written (corrupt bytes)")
        except OSError as error:
            return bad(path, f"unreadable ({error.strerror or error})")
    return None


def _check_intact(directory: str | Path, step: int) -> None:
    """`CheckpointError` unless the checkpoint of ``step`` passes `verify_checkpoint`."""
    bad = verify_checkpoint(directory, step)
    if bad is not None:
        raise CheckpointError(bad)


def _check_format(step_dir: Path) -> None:
    """A `ValueError` if ``step_dir`` reads as a whole checkpoint of another
    format (written by another version, hence without checksums)."""
    try:
        saved = json.loads((step_dir / "run" / "metadata").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return
    if saved != FORMAT:
        raise ValueError(f"checkpoint {step_dir} has format {saved!r}; this version of purejaxppo "
                         f"reads format {FORMAT}: resume it with the version that wrote it, or "
                         "write to another directory")


def _move_aside(directory: Path, bad: BadCheckpoint) -> BadCheckpoint:
    """Rename the bad checkpoint's directory to ``bad-<step>`` (never
    deleted), out of orbax's sight; return ``bad`` with where it went."""
    source = directory / str(bad.step)
    target, n = directory / f"bad-{bad.step}", 1
    while target.exists():
        n += 1
        target = directory / f"bad-{bad.step}-{n}"
    os.rename(source, target)
    return dataclasses.replace(bad, moved_to=str(target))


ON_BAD_CHECKPOINT = ("fallback", "stop")


def newest_intact_step(
    directory: str | Path, on_bad: str = "fallback"
) -> tuple[int | None, tuple[BadCheckpoint, ...]]:
    """The newest checkpoint in ``directory`` that `verify_checkpoint` passes.

    Each newer one that fails is, with ``on_bad="fallback"``, moved aside to
    ``bad-<step>`` and reported (a `warnings.warn` of one line); with
    ``on_bad="stop"`` the first raises `CheckpointError` and nothing moves.
    Returns ``(step or None, the checkpoints moved aside)``.
    """
    if on_bad not in ON_BAD_CHECKPOINT:
        raise ValueError(f"on_bad_checkpoint={on_bad!r}; allowed: {', '.join(map(repr, ON_BAD_CHECKPOINT))}")
    directory = Path(directory)
    if not directory.is_dir():
        return None, ()
    with _manager(directory) as manager:
        steps = sorted(manager.all_steps(), reverse=True)
    barrier("purejaxppo-steps-listed")  # every process checks the same steps
    moved, found = [], None
    for step in steps:
        bad = verify_checkpoint(directory, step)
        if bad is None:
            found = step
            break
        if on_bad == "stop":
            raise CheckpointError(bad)
        if is_main():  # every process finds the same; one moves it
            bad = _move_aside(directory, bad)
            warnings.warn(str(bad), CheckpointWarning, stacklevel=2)
        moved.append(bad)
    barrier("purejaxppo-steps-checked")  # moved aside before any process lists the steps again
    return found, tuple(moved)


class CheckpointWarning(UserWarning):
    """A checkpoint was set aside as unreadable (`newest_intact_step`)."""


def _check_step_after(latest: int | None, step: int, directory: str | Path) -> None:
    if latest is not None and step <= latest:
        raise ValueError(
            f"save_checkpoint: step {step} is not after the latest checkpoint in {directory}, "
            f"step {latest}; a directory holds one run's checkpoints, in order. Write to "
            "another directory (or resume from that checkpoint)"
        )


def restore_checkpoint(
    directory: str | Path,
    config: PPOConfig | None = None,
    *,
    step: int | None = None,
    sharding: jax.sharding.Sharding | None = None,
    rng: jax.Array | None = None,
    verify: bool = True,
    env: Any = None,
    env_params: Any = None,
) -> Checkpoint:
    """Read the checkpoint of update ``step`` (default: the latest) back.

    Args:
        directory: where `save_checkpoint` or `train_with_checkpoints` wrote.
        config: the config the caller means to continue with; it must equal
            the saved one (a `ValueError` names every field that differs).
            None takes the saved config as it is.
        step: which update count to read; None for the latest.
        sharding: where to put the state's arrays (e.g.
            `purejaxppo.devices.seed_sharding` for seeds over devices); by
            default on this process's first device.
        rng: if given, the key (or keys) the run must have started from;
            checked, like ``config``, before any array is read.
        verify: check every file against the checksums written with it
            first (`verify_checkpoint`).
        env, env_params: the env object the run trained on, where it was
            given to `make_train` as one (its state's shapes come from it);
            None for an env its config names.

    Raises:
        FileNotFoundError: ``directory`` holds no such checkpoint.
        CheckpointError: a file of it is missing, truncated or corrupt.
        ValueError: the checkpoint is of another format, config or key.
    """
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"no checkpoint directory {directory}")
    with _manager(directory) as manager:
        available = manager.all_steps()
        if not available or (step is not None and step not in available):
            raise FileNotFoundError(
                f"no checkpoint{'' if step is None else f' of step {step}'} in {directory} "
                f"(steps there: {sorted(available) or 'none'})"
            )
        step = max(available) if step is None else step
        if verify:
            _check_intact(directory, step)
        record = manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run
        if record.get("format") != FORMAT:
            raise ValueError(f"checkpoint {directory}/{step} has format {record.get('format')!r}; "
                             f"this version of purejaxppo reads format {FORMAT}")
        saved_config = config_from_json(record["config"])
        where = f"checkpoint {directory}/{step}"
        _check_default_impl(record["rng"], where)
        if config is not None:
            check_same_config(saved_config, config, where)
        if rng is not None:
            _check_same_key(record["rng"], rng, where)
        pbt = _pbt_from_json(record.get("pbt"))
        data_state, state_like = _abstract_state(saved_config, record["rng"], pbt, env, env_params)
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), data_state)
        host = lambda shape, dtype: np.zeros(shape, dtype)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            update_metrics=ocp.args.StandardRestore(
                {name: host(shape, dtype) for name, (shape, dtype) in record["metrics"].items()}
            ),
            hparams=ocp.args.StandardRestore(
                {name: host(shape, np.float32) for name, shape in record["hparams"].items()}
            ),
        ))
    key = _key_from_info(record["rng"])
    impl = jax.random.key_impl(key) if _is_key(key) else None
    state = jax.tree.map(
        lambda data, like: jax.random.wrap_key_data(data, impl=impl) if _is_key(like) else data,
        restored.state, state_like,
    )
    return Checkpoint(
        state=state,
        metrics=dict(restored.update_metrics),
        hparams=HyperParams(**restored.hparams),
        updates_done=int(record["updates_done"]),
        rng=key,
        config=saved_config,
        start=record["start"],
        env_devices=int(record.get("env_devices", 1)),
        pbt=pbt,
    )


def _pbt_from_json(fields: dict[str, Any] | None) -> PBTConfig | None:
    if fields is None:
        return None
    return PBTConfig(**{name: _untuple(value) for name, value in fields.items()})


def _check_same_pbt(saved: PBTConfig | None, given: PBTConfig | None, where: str) -> None:
    if saved != given:
        describe = lambda p: "no population" if p is None else repr(p)
        raise ValueError(f"{where} holds a run of {describe(saved)}; this run has {describe(given)}. "
                         "Resume with the same population settings, or write to another directory")


@dataclasses.dataclass(frozen=True)
class Policy:
    """One seed's policy read from a checkpoint by `restore_policy`: what
    ``train(rng, params=..., obs_norm=...)`` starts from (and, with
    ``reference_kl``, keeps as the reference).

    Attributes:
        params: the network parameters, NumPy arrays with no batch axis.
        obs_norm: the observation statistics the policy acts through (the
            unused start statistics, mean 0 and variance 1, when its run had
            ``normalize_obs=False``), NumPy arrays.
        config: the config of the run that trained it.
        updates_done: the updates it had had.
        seed: its flat index among the run's seeds (0 for a run of one key).
    """

    params: Any
    obs_norm: RunningMeanStd
    config: PPOConfig
    updates_done: int
    seed: int


def restore_policy(
    directory: str | Path,
    config: PPOConfig | None = None,
    *,
    seed: int = 0,
    step: int | None = None,
    env: Any = None,
    env_params: Any = None,
) -> Policy:
    """One seed's policy from the checkpoint of update ``step`` (default: the
    latest) in ``directory``, to start another run from.

    Args:
        directory: where `save_checkpoint` or `train_with_checkpoints` wrote
            (the command line's ``--checkpoint-dir``).
        config: the config of the run to be started from it, checked against
            the saved one: a policy trained on normalised observations
            (``normalize_obs=True``) cannot act in a run without them, and
            its network must be the saved one's: the same ``activation``
            here (the parameters would fit another one and compute another
            function), the same shapes (``train`` checks them). The env may
            differ where its shapes fit (transfer).
        seed: for a run of several seeds (keys with batch axes), which one:
            the flat index over its batch axes, 0 <= seed < number of seeds
            (of a population-based run, over its seeds and members:
            ``seed_index * population + member``).
        step: which update count to read; None for the latest.
        env, env_params: the env object the run trained on, where it was
            given to `make_train` as one (`restore_checkpoint`).

    Raises:
        FileNotFoundError: ``directory`` holds no such checkpoint.
        ValueError: ``seed`` out of range, or the saved run's observation
            normalisation or activation does not fit ``config``.
    """
    ckpt = restore_checkpoint(directory, step=step, env=env, env_params=env_params)
    where = f"checkpoint {directory}/{ckpt.updates_done}"
    batch = _batch_shape(ckpt.rng)
    state = ckpt.state
    if ckpt.pbt is not None:  # a population's members: the runs, flat over seeds and members
        state, batch = state.members, batch + (ckpt.pbt.population,)
    seeds = math.prod(batch)
    try:
        index = None if isinstance(seed, bool) else operator.index(seed)
    except TypeError:
        index = None
    if index is None or not 0 <= index < seeds:
        raise ValueError(f"seed (the command line's --init-seed) must be an int in [0, {seeds}) for "
                         f"{where}, a run of {seeds} seed(s) (batch axes {batch}); got {seed!r}")
    if config is not None and ckpt.config.normalize_obs and not config.normalize_obs:
        raise ValueError(
            f"{where} holds a policy trained on normalised observations (normalize_obs=True "
            "there); a run starting from it needs normalize_obs=True, and starts from its "
            "statistics"
        )
    if config is not None and ckpt.config.activation != config.activation:
        raise ValueError(
            f"{where} holds a policy with activation={ckpt.config.activation!r}; the run starting "
            f"from it has activation={config.activation!r}, with which the same parameters compute "
            f"another policy. Allowed: activation={ckpt.config.activation!r} (the command line's "
            f"--activation {ckpt.config.activation})"
        )
    pick = lambda x: np.asarray(x).reshape((seeds,) + np.shape(x)[len(batch):])[index, ...]
    return Policy(
        params=jax.tree.map(pick, state.params),
        obs_norm=jax.tree.map(pick, state.obs_norm),
        config=ckpt.config,
        updates_done=ckpt.updates_done,
        seed=index,
    )


WATCHING_FIELDS = ("log_every",)
"""`PPOConfig` fields that change how a run is watched, not what it computes:
a resumed run may change them."""


def check_same_config(saved: PPOConfig, given: PPOConfig, where: str) -> None:
    """Raise `ValueError` naming each field in which ``given`` differs from
    ``saved`` (a resumed run must continue the same run)."""
    a, b = config_to_json(saved), config_to_json(given)
    diffs = [f"{name}={b[name]!r} (saved: {a[name]!r})" for name in a
             if a[name] != b.get(name) and name not in WATCHING_FIELDS]
    if diffs:
        raise ValueError(f"{where} is of another config: {'; '.join(diffs)}. Resume with the "
                         "saved config, or write to another directory")


def _check_same_key(saved: dict[str, Any], rng: jax.Array, where: str) -> None:
    given = _key_info(rng)
    if "default_impl" not in saved:  # written before the default was recorded
        given.pop("default_impl")
    if saved != given:
        describe = lambda info: (f"{'typed ' + info['impl'] if info['typed'] else 'raw'} key(s) of shape "
                                 f"{tuple(info['shape'])}: {info['data'][:8]}{' ...' if len(info['data']) > 8 else ''}")
        raise ValueError(f"{where} holds a run started from another key ({describe(saved)}; given "
                         f"{describe(given)}); resume with the run's own key, or write to another "
                         "directory")


def _check_same_hparams(saved_hp: HyperParams, hp: HyperParams, where: str) -> None:
    for name in HYPERPARAM_FIELDS:
        saved, given = np.asarray(getattr(saved_hp, name)), np.asarray(getattr(hp, name), np.float32)
        if saved.shape != given.shape or not np.array_equal(saved, given):
            raise ValueError(f"{where} holds a run with hparams.{name} = {saved.tolist()}; "
                             f"given {given.tolist()}. Resume with the run's own hyperparameters")


def _positive_int(name: str, value: Any, what: str) -> int:
    """``value`` as an int >= 1 (NumPy ints too), else a `ValueError` naming it."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"{name} must be an int >= 1 ({what}), got {value!r}")
    return number


def _hparams_axes(hp: HyperParams, batch_ndim: int, inner_ndim: int = 0) -> HyperParams:
    """vmap axes of ``hp``: 0 for leaves batched like the keys, else None.
    ``inner_ndim``: the axes one run's own hyperparameters have (1 for a
    population's)."""
    def axis(x):
        nd = np.ndim(x) - inner_ndim
        if nd not in (0, batch_ndim):
            raise ValueError(f"hparams leaves must be {'scalars' if not inner_ndim else f'{inner_ndim}-d'} "
                             f"or carry the keys' batch axes ({batch_ndim}) before those; got a leaf of "
                             f"shape {np.shape(x)}. For a sweep from one key, pass the key broadcast "
                             "to the sweep: jnp.broadcast_to(key, batch + key.shape)")
        return 0 if nd else None
    return jax.tree.map(axis, hp)


def _vmapped(fn: Callable, batch_ndim: int, in_axes) -> Callable:
    for _ in range(batch_ndim):
        fn = jax.vmap(fn, in_axes=in_axes)
    return fn


def train_with_checkpoints(
    train: Callable[..., TrainResult],
    rng: jax.Array,
    directory: str | Path,
    *,
    every: int,
    hparams: HyperParams | None = None,
    params: Any = None,
    obs_norm: Any = None,
    max_to_keep: int | None = 2,
    callback: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    on_bad_checkpoint: str = "fallback",
    stop_on_nonfinite: bool = True,
) -> CheckpointedRun:
    """Run ``train`` (from `make_train`) to the end, saving every ``every``
    updates to ``directory`` and resuming from its latest checkpoint.

    Args:
        train: the training function of `make_train`.
        rng: one PRNG key, or keys with leading batch axes (seeds); each axis
            is a `jax.vmap`, as in ``jax.jit(jax.vmap(train))(keys)``. Keys
            placed by `purejaxppo.devices.shard_seeds` keep their devices,
            and so does a resumed state.
        directory: the run's checkpoint directory (created if absent). If it
            holds a checkpoint, the run resumes from the latest one, which
            must be of the same config, key and hyperparameters (else a
            `ValueError` says which differs).
        every: updates per compiled chunk, and between checkpoints (an int
            >= 1; a last, shorter chunk finishes the run). Results do not
            depend on it.
        hparams: as for ``train``: None (the config's), or a `HyperParams`
            whose leaves are scalars or batched like ``rng``.
        params, obs_norm: as for ``train``, the same for every seed: a
            pretrained policy to start from (and keep as the reference
            policy with ``config.reference_kl``). Used at a fresh start; a
            resumed run has them in its state.
        max_to_keep: checkpoints kept (the newest); None keeps all.
        callback: called on the host after each chunk as
            ``callback(updates_done, chunk_metrics)`` (NumPy arrays,
            (*batch, chunk updates)), e.g. to log progress.
        on_bad_checkpoint: what a newest checkpoint that fails its checksums
            (`verify_checkpoint`: a file missing, truncated or corrupt)
            does: ``"fallback"`` moves it aside to ``bad-<step>``, warns in
            one line and resumes from the newest intact one (a fresh start
            if none is); ``"stop"`` raises `CheckpointError`.
        stop_on_nonfinite: after a chunk in which the loss, gradient norm
            or parameters went NaN or infinite (the ``nonfinite`` metric,
            `purejaxppo.divergence`), raise `NonFiniteError` naming the
            update and the last good checkpoint, without saving that chunk.

    Returns:
        A `CheckpointedRun`: the `TrainResult` of the whole run (metrics of
        every update, the restored ones included) and timings.

    Raises:
        ValueError: bad arguments, or ``directory`` is not a writable
            directory (checked before anything compiles), or holds another
            run.
    """
    config: PPOConfig = train.config
    every = _positive_int("every", every, "updates between checkpoints")
    output_dir("directory", directory)
    if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                    or max_to_keep < 1):
        raise ValueError(f"max_to_keep must be None or an int >= 1, got {max_to_keep!r}")
    _key_info(rng)  # a key, or a clear error
    batch_ndim = len(_batch_shape(rng))
    pbt = train.pbt if isinstance(train, PBTTrainer) else None
    hp = train.default_hparams() if hparams is None else hparams
    hp_axes = _hparams_axes(hp, batch_ndim, train.hparams_ndim)
    started_from = start_record(params, obs_norm)
    where = f"checkpoint directory {directory}"
    sharding = getattr(rng, "sharding", None)
    if not isinstance(sharding, (jax.sharding.NamedSharding, jax.sharding.SingleDeviceSharding)):
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    env_devices = getattr(train, "env_devices", None)
    num_env_devices = len(env_devices) if env_devices else 1
    if env_devices:
        # Envs split over devices (`make_train`'s env_devices): states are kept
        # whole on each of them between chunks; each program splits the envs.
        mesh = jax.sharding.Mesh(np.array(env_devices), (ENV_AXIS,))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        rng = jax.device_put(rng, sharding)

    compile_s = run_s = save_s = 0.0

    programs = _PROGRAMS.setdefault(train, {})

    def compiled(name, make_fn, *args):
        """The compiled program ``name`` for ``args``, compiled once per
        ``train`` (a second run, or a resumed one, in the same process reuses it)."""
        nonlocal compile_s
        signature = jax.tree.map(lambda x: (np.shape(x), str(getattr(x, "dtype", type(x))),
                                            getattr(x, "sharding", None)), args)
        key = (name, batch_ndim, str(hp_axes), str(signature))
        if key not in programs:
            start = time.perf_counter()
            programs[key] = jax.jit(make_fn()).lower(*args).compile()
            compile_s += time.perf_counter() - start
        return programs[key]

    def timed(fn, *args):
        nonlocal run_s
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        run_s += time.perf_counter() - start
        return out

    resumed_from, set_aside = newest_intact_step(directory, on_bad_checkpoint)
    if resumed_from is not None:
        member = train.trainer if pbt is not None else train
        ckpt = restore_checkpoint(directory, config, step=resumed_from, sharding=sharding, rng=rng,
                                  verify=False,  # just verified
                                  env=member.env, env_params=member.env_params)
        _check_same_pbt(ckpt.pbt, pbt, where)
        _check_same_hparams(ckpt.hparams, hp, where)
        if ckpt.env_devices != num_env_devices:
            # Each device draws its own envs' randomness: another split would
            # go on as another run, not this one.
            raise ValueError(
                f"{where} holds a run whose envs were split over {ckpt.env_devices} device(s) "
                f"(make_train's env_devices); this train splits them over {num_env_devices}, "
                "which would not continue the same run. Resume with "
                f"env_devices={ckpt.env_devices if ckpt.env_devices > 1 else None} "
                "(the CLI: --env-devices), or write to another directory"
            )
        for name, given in started_from.items():  # what was passed must be what the run started from
            if given is not None and given != ckpt.start[name]:
                raise ValueError(
                    f"{where} holds a run started from "
                    f"{'other ' + name if ckpt.start[name] else 'no given ' + name + ' (a fresh start)'}"
                    f"; the {name} given now differ. Resume without passing {name} (the state holds "
                    "them), or write to another directory"
                )
        state, done, so_far = ckpt.state, ckpt.updates_done, ckpt.metrics
        started_from = ckpt.start  # recorded again with each save, given now or not
    else:
        # Strong types, as a restored state has: the chunk programs then see
        # the same argument types (and hit the compilation cache) either way.
        init = lambda: _vmapped(lambda *a: _strong_types(train.init(*a)), batch_ndim, (0, hp_axes, None, None))
        state = timed(compiled("init", init, rng, hp, params, obs_norm), rng, hp, params, obs_norm)
        # Placed as a restored state is (committed to ``sharding``): the chunk
        # programs lower the same for a fresh and a resumed run.
        state = jax.device_put(state, sharding)
        done, so_far = 0, None

    last_good = resumed_from
    manager = _manager(directory, max_to_keep)
    sealer = None  # finishes and seals the latest write while the next chunk runs
    peer_lost = False
    try:
        try:
            while done < config.num_updates:
                n = min(every, config.num_updates - done)
                chunk = lambda: _vmapped(functools.partial(_run_chunk, train, n), batch_ndim,
                                         (0, hp_axes, None))
                offset = np.int32(done)  # traced: every chunk of n updates is one program
                state, metrics = timed(compiled(("updates", n), chunk, state, hp, offset), state, hp, offset)
                state = jax.device_put(state, sharding)  # as placed as a restored one (see above)
                so_far = _append(so_far, metrics)
                if sealer is not None:  # the previous write ran beside this chunk
                    start = time.perf_counter()
                    sealer.finish()
                    sealer = None
                    save_s += time.perf_counter() - start
                divergence = first_nonfinite(so_far) if stop_on_nonfinite else None
                if divergence is not None:
                    raise NonFiniteError(divergence, last_good, str(directory), so_far)
                done += n
                start = time.perf_counter()
                with writing():  # handed to orbax whole before Ctrl-C stops the run
                    save_checkpoint(directory, config, state, so_far, hp, rng, start=started_from,
                                    manager=manager, env_devices=num_env_devices, pbt=pbt)
                    sealer = _Sealer(manager, directory, done)
                last_good = done
                save_s += time.perf_counter() - start
                if callback is not None:
                    callback(done, {name: so_far[name][..., -n:] for name in so_far})
        except BaseException as error:
            # Another process of a multi-process run is gone: the write under
            # way waits for its share, which never comes. Left unfinished
            # (unsealed), so the error reaches the caller now.
            peer_lost = describe_failure(error) is not None
            raise
        finally:
            # However else the run ends (Ctrl-C, a callback's exception), the
            # write under way is finished and sealed before the directory closes.
            start = time.perf_counter()
            if sealer is not None and not peer_lost:
                sealer.finish()
            save_s += time.perf_counter() - start
    finally:
        if not peer_lost:
            manager.close()

    all_metrics = {name: jnp.asarray(value) for name, value in so_far.items()}
    return CheckpointedRun(
        result=TrainResult(train_state=state, metrics=all_metrics),
        resumed_from=resumed_from,
        compile_s=compile_s,
        run_s=run_s,
        save_s=save_s,
        set_aside=set_aside,
    )


def _strong_types(tree):
    """``tree`` with no weakly typed leaf (e.g. gymnax's ``time = 0``)."""
    return jax.tree.map(lambda x: x if _is_key(x) else x.astype(x.dtype), tree)


def _run_chunk(train, num_updates: int, state: TrainState, hp: HyperParams, first_update):
    return train.run_updates(state, num_updates, hp, first_update)


def _append(so_far: dict[str, np.ndarray] | None, chunk: dict[str, Any]) -> dict[str, np.ndarray]:
    """The metrics of the updates so far, then ``chunk``'s, along the update axis."""
    chunk = to_host(dict(chunk))  # every run's, on every process
    if so_far is None:
        return chunk
    if set(so_far) != set(chunk):
        raise ValueError(f"the checkpoint's metrics {sorted(so_far)} are not the ones this run "
                         f"computes {sorted(chunk)}")
    return {name: np.concatenate([so_far[name], chunk[name]], axis=-1) for name in so_far}

