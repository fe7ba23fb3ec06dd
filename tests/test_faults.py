"""Fault injection: nothing lost, nothing silent.

Each case breaks something a long run meets (a corrupt or truncated
checkpoint, a process killed mid-write, a run gone NaN, a bad path, a size
past the machine, a non-finite env parameter, Ctrl-C) and asserts what the
library and the command line do: a one-line message naming the cause, the
right exit status, a resume from the newest intact checkpoint, and never a
hang.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import HyperParams, PPOConfig, make_train
from purejaxppo.checkpoint import (
    BadCheckpoint,
    CheckpointError,
    CheckpointWarning,
    latest_step,
    restore_checkpoint,
    train_with_checkpoints,
    verify_checkpoint,
)
from purejaxppo.cli import exit_code, main, one_line
from purejaxppo.divergence import NonFiniteError, first_nonfinite

CONFIG = PPOConfig(env_name="CartPole-v1", total_timesteps=4 * 16 * 6, num_envs=4, num_steps=16,
                   update_epochs=2, num_minibatches=2, hidden_sizes=(16,))
KEY = jax.random.PRNGKey(0)
# The CLI's smallest run: compiles in a few seconds.
SMALL = ["--env", "CartPole-v1", "--num-envs", "4", "--num-steps", "16", "--hidden-sizes", "8",
         "--eval-episodes", "0", "--no-compile-cache"]


@pytest.fixture(scope="module")
def train():
    return make_train(CONFIG)


@pytest.fixture(scope="module")
def whole(train, tmp_path_factory):
    """The run uninterrupted: 6 updates, a checkpoint every 2 (4 and 6 kept)."""
    directory = tmp_path_factory.mktemp("whole")
    return directory, train_with_checkpoints(train, KEY, directory, every=2)


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_bytes(step_dir):
    path = _largest_file(step_dir / "state")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(255 - b for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))
    return path


def _truncate(step_dir):
    path = _largest_file(step_dir / "state")
    os.truncate(path, path.stat().st_size // 2)
    return path


def _delete(step_dir):
    path = _largest_file(step_dir / "state")
    path.unlink()
    return path


def _delete_metadata(step_dir):
    path = step_dir / "state" / "_METADATA"
    path.unlink()
    return path


def _truncate_record(step_dir):
    path = step_dir / "run" / "metadata"
    os.truncate(path, 89)
    return path


def _empty(step_dir):
    for child in step_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return step_dir / "checksums.json"


def _unsealed(step_dir):
    """Killed after orbax finished the write but before its checksums."""
    path = step_dir / "checksums.json"
    path.unlink()
    return path


DAMAGES = [_flip_bytes, _truncate, _delete, _delete_metadata, _truncate_record, _empty, _unsealed]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_latest_checkpoint_is_set_aside_and_the_run_resumes_from_the_intact_one(
        damage, train, whole, tmp_path):
    source, run = whole
    shutil.copytree(source, tmp_path, dirs_exist_ok=True)
    path = damage(tmp_path / "6")
    bad = verify_checkpoint(tmp_path, 6)
    assert bad is not None and bad.step == 6 and bad.path == str(path), bad
    with pytest.raises(CheckpointError, match=f"checkpoint of update 6 is unreadable: {path}"):
        restore_checkpoint(tmp_path, CONFIG)
    with pytest.warns(CheckpointWarning, match="update 6 .* moved aside to .*bad-6"):
        resumed = train_with_checkpoints(train, KEY, tmp_path, every=2)
    assert resumed.resumed_from == 4
    assert [(b.step, b.path, b.moved_to) for b in resumed.set_aside] == [(6, str(path), str(tmp_path / "bad-6"))]
    assert "\n" not in str(resumed.set_aside[0])
    assert (tmp_path / "bad-6").is_dir()  # kept, never deleted
    for name, values in run.result.metrics.items():  # the same run as the unbroken one
        np.testing.assert_array_equal(resumed.result.metrics[name], values, err_msg=name)
    assert latest_step(tmp_path) == 6 and verify_checkpoint(tmp_path, 6) is None


def test_stop_leaves_a_damaged_checkpoint_in_place(train, whole, tmp_path):
    shutil.copytree(whole[0], tmp_path, dirs_exist_ok=True)
    path = _flip_bytes(tmp_path / "6")
    with pytest.raises(CheckpointError, match=f"update 6 is unreadable: {path}: its SHA-256") as error:
        train_with_checkpoints(train, KEY, tmp_path, every=2, on_bad_checkpoint="stop")
    assert error.value.bad.step == 6 and not (tmp_path / "bad-6").exists()
    with pytest.raises(ValueError, match="on_bad_checkpoint='later'; allowed: 'fallback', 'stop'"):
        train_with_checkpoints(train, KEY, tmp_path, every=2, on_bad_checkpoint="later")


def test_with_every_checkpoint_damaged_the_run_starts_afresh(train, whole, tmp_path):
    shutil.copytree(whole[0], tmp_path, dirs_exist_ok=True)
    _truncate(tmp_path / "6")
    _unsealed(tmp_path / "4")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        fresh = train_with_checkpoints(train, KEY, tmp_path, every=3)
    assert fresh.resumed_from is None and [b.step for b in fresh.set_aside] == [6, 4]
    np.testing.assert_array_equal(fresh.result.metrics["loss"], whole[1].result.metrics["loss"])


def test_a_checkpoint_of_another_format_is_refused_not_set_aside(train, whole, tmp_path):
    """Written by another version (no checksums, another format): a clear
    error, and nothing moved (it is not damaged)."""
    shutil.copytree(whole[0], tmp_path, dirs_exist_ok=True)
    record = tmp_path / "6" / "run" / "metadata"
    record.write_text(record.read_text().replace('"format": 2', '"format": 1'))
    (tmp_path / "6" / "checksums.json").unlink()
    with pytest.raises(ValueError, match="has format 1; this version of purejaxppo reads format 2"):
        train_with_checkpoints(train, KEY, tmp_path, every=2)
    assert (tmp_path / "6").is_dir() and not (tmp_path / "bad-6").exists()


def _nan_from_update(train, update):
    """``train`` whose parameters turn NaN before the given update (counted from 1)."""
    def run_updates(state, num_updates, hp=None, first_update=0):
        def step(state, _):
            poison = state.update_step == update - 1
            params = jax.tree.map(lambda p: jnp.where(poison, jnp.nan, p), state.params)
            return train.update(state.replace(params=params), hp)
        return jax.lax.scan(step, state, None, length=num_updates)
    import dataclasses

    return dataclasses.replace(train, run_updates=run_updates)


def test_nan_stops_the_run_at_its_update_naming_the_last_good_checkpoint(train, tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite loss, grad_norm, params at update 3 \(seed 0\); "
                       rf"the last good checkpoint is {tmp_path}/2 \(update 2\)") as error:
        train_with_checkpoints(_nan_from_update(train, 3), KEY, tmp_path, every=2)
    assert error.value.last_good == 2 and latest_step(tmp_path) == 2  # the NaN chunk unsaved
    assert restore_checkpoint(tmp_path, CONFIG).state.params is not None
    flags = error.value.metrics["nonfinite"]
    assert flags.tolist() == [0, 0, 7, 7]  # loss (1), grad_norm (2) and params (4), from update 3


def test_the_nonfinite_metric_flags_each_part_against_numpy():
    from purejaxppo.divergence import nonfinite_flags

    finite = {"w": jnp.ones(3)}
    cases = [(1.0, 1.0, finite, 0), (np.nan, 1.0, finite, 1), (1.0, np.inf, finite, 2),
             (1.0, 1.0, {"w": jnp.array([1.0, -np.inf, 0.0])}, 4), (np.nan, np.nan, {"w": jnp.full(3, np.nan)}, 7)]
    for loss, norm, params, want in cases:
        assert int(nonfinite_flags(jnp.float32(loss), jnp.float32(norm), params)) == want
    found = first_nonfinite({"nonfinite": np.array([[0, 0, 0, 4], [0, 0, 2, 7]])})
    assert (found.update, found.seed, found.parts, found.seeds) == (3, 1, ("grad_norm",), 1)
    assert first_nonfinite({"nonfinite": np.zeros((2, 5), np.int32)}) is None


def test_the_cli_exits_1_on_nan_with_the_update_and_null_metrics(capsys, tmp_path):
    out = tmp_path / "nan.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*SMALL, "--total-timesteps", "256", "--vf-coef", "3e38", "--max-grad-norm", "3e38",
              "--lr", "1", "--json-out", str(out)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training diverged: non-finite loss, grad_norm, params at update 1" in err
    saved = json.loads(out.read_text())
    assert saved["metrics_median"]["loss"] == [None] * 4  # one null per update, not []
    assert saved["metrics_median"]["nonfinite"] == [7] * 4


def _cli_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert err.startswith("purejaxppo: error: ") and err.count("\n") == 1, err
    return exit_info.value.code, err


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint-dir", "{file}"], "checkpoint_dir='{file}' is a file"),
    (["--checkpoint-dir", ""], "checkpoint_dir is an empty string"),
    (["--checkpoint-dir", "{file}/sub"], "checkpoint_dir='{file}/sub' cannot be created: Not a directory"),
    (["--checkpoint-dir", "/proc/purejaxppo/ckpt"], "checkpoint_dir='/proc/purejaxppo/ckpt' cannot be"),
    (["--json-out", "{tmp}"], "json_out='{tmp}' is a directory"),
    (["--json-out", "{file}/out.json"], "json_out='{file}/out.json': its directory '{file}' cannot be created"),
    (["--json-out", "/proc/out.json"], "json_out='/proc/out.json' cannot be written"),
    (["--json-out", ""], "json_out is an empty string"),
    (["--init-from", "{tmp}/none"], "init_from='{tmp}/none' does not exist"),
], ids=["ckpt-file", "ckpt-empty", "ckpt-under-file", "ckpt-unwritable", "json-dir", "json-under-file",
        "json-unwritable", "json-empty", "init-missing"])
def test_bad_paths_are_refused_before_anything_compiles(capsys, tmp_path, flags, message):
    file = tmp_path / "f"
    file.write_text("hi")
    fill = lambda text: text.format(file=file, tmp=tmp_path)
    code, err = _cli_error(capsys, [*SMALL, "--total-timesteps", "64", *map(fill, flags)])
    assert code == 2 and fill(message) in err
    assert "compile" not in capsys.readouterr().out


def test_a_process_whose_failure_leaves_a_thread_running_still_exits(tmp_path):
    """The hang orbax could cause: a failed write (here a full disk) leaves a
    non-daemon thread that never ends. The entry point reports the error
    and exits anyway."""
    code = ("import threading, sys, purejaxppo.cli as cli\n"
            "def run(*a):\n"
            "    threading.Thread(target=threading.Event().wait).start()\n"
            "    raise OSError(28, 'No space left on device', 'ckpt')\n"
            "cli.run = run\n"
            "sys.argv = ['purejaxppo', '--env', 'CartPole-v1']\n"
            "cli.entry()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "purejaxppo: error: OSError: [Errno 28] No space left on device: 'ckpt'\n"
    # and the run that hung: a file given as the checkpoint directory
    file = tmp_path / "f"
    file.write_text("hi")
    proc = subprocess.run([sys.executable, "-m", "purejaxppo", *SMALL, "--total-timesteps", "64",
                           "--checkpoint-dir", str(file)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is a file" in proc.stderr


@pytest.mark.parametrize("flags, message", [
    (["--num-envs", "1000000000", "--num-steps", "1", "--num-minibatches", "1",
      "--total-timesteps", "1000000000"], r"the run needs about [\d,.]+ GB per device .* has [\d,.]+ GB"),
    (["--num-seeds", "100000000", "--num-envs", "64", "--total-timesteps", "1024"],
     r"the run needs about [\d,.]+ GB per device .* [\d]+ run\(s\) per device\), and cpu:0 has"),
    (["--hidden-sizes", "1000000000", "--total-timesteps", "64"], r"weight matrix of 4,000,000,000 elements"),
    (["--num-envs", "1000000000", "--total-timesteps", "128000000000"], r"over the int32 index"),
    (["--env-params", "max_steps_in_episode=1000000000000", "--total-timesteps", "64"], r"\(int32\)"),
    (["--env-params", "gravity=1e999", "--total-timesteps", "64"], r"gravity=inf .* a finite number"),
    (["--env-params", "gravity=nan", "--total-timesteps", "64"], r"gravity='nan' .* a finite number"),
    (["--env", "MNISTBandit-bsuite", "--total-timesteps", "64"], r"downloads the MNIST dataset"),
], ids=["huge-batch", "huge-seeds", "huge-layer", "batch-over-int32", "env-int32", "env-inf", "env-nan",
        "needs-network"])
def test_sizes_and_env_params_past_the_machine_are_refused_before_compiling(capsys, tmp_path, flags,
                                                                           message):
    if "MNISTBandit-bsuite" in flags and Path("/tmp/mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("MNIST is downloaded here")
    code, err = _cli_error(capsys, [*SMALL, *flags, "--run-dir", str(tmp_path / "run")])
    assert code == 2 and re.search(message, err), err
    assert not (tmp_path / "run").exists()  # a refused run leaves no empty run directory


def test_hyperparams_validate_names_a_non_numeric_field():
    hp = PPOConfig().hyperparams().replace(lr="fast")
    with pytest.raises(TypeError, match="hyperparams.lr = 'fast'; allowed: numbers"):
        HyperParams.validate(hp)


def test_every_error_is_one_line_with_its_exit_status():
    assert exit_code(ValueError("x")) == 2 and exit_code(KeyError("x")) == 2
    assert exit_code(OverflowError("x")) == 2 and exit_code(OSError(28, "No space left")) == 1
    assert exit_code(CheckpointError(BadCheckpoint(3, "f", "missing"))) == 1
    XlaRuntimeError = type("XlaRuntimeError", (RuntimeError,), {})  # as jaxlib names it
    long = XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory\nwhile allocating\nmore lines")
    assert exit_code(long) == 1 and exit_code(RuntimeError("cannot change the pool")) == 2
    assert one_line(long) == "XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory ..."


def _start(argv, tmp_path, name):
    log = open(tmp_path / f"{name}.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "purejaxppo", *argv], stdout=subprocess.DEVNULL,
                            stderr=log, text=True)
    return proc, tmp_path / f"{name}.err"


def _wait_for(condition, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before the fault was injected"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


LONG = [*SMALL, "--total-timesteps", str(4 * 16 * 200000)]


def test_kill_9_during_writes_then_the_same_command_resumes(capsys, tmp_path):
    """SIGKILL while checkpoints are written every update (some of them
    mid-write): the same command resumes from the newest sealed one."""
    directory = tmp_path / "ckpt"
    argv = [*LONG, "--checkpoint-dir", str(directory), "--checkpoint-every", "1",
            "--total-timesteps", str(4 * 16 * 30)]
    proc, _ = _start(argv, tmp_path, "killed")
    _wait_for(lambda: directory.is_dir() and len(list(directory.iterdir())) >= 3, proc)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    main(argv)
    out = capsys.readouterr().out
    assert "resumed from update" in out and "of 30" in out, out


@pytest.mark.parametrize("checkpoints", [True, False], ids=["between-chunks", "inside-one-compiled-call"])
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, checkpoints):
    directory, run_dir = tmp_path / "ckpt", tmp_path / "run"
    argv = [*LONG, "--run-dir", str(run_dir)] + (
        ["--checkpoint-dir", str(directory), "--checkpoint-every", "1"] if checkpoints else [])
    proc, err_file = _start(argv, tmp_path, "sigint")
    if checkpoints:
        _wait_for(lambda: latest_step(directory) is not None if directory.is_dir() else False, proc)
    else:  # wait until the compiled run is under way: its first report is written
        csv_file = run_dir / "metrics.csv"
        _wait_for(lambda: csv_file.exists() and len(csv_file.read_text().splitlines()) >= 2, proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert time.monotonic() - sent < 10  # not at the end of a run of minutes
    err = err_file.read_text()
    assert proc.returncode == 130 and err.count("\n") == 1, err
    assert "Traceback" not in err
    if checkpoints:
        done = latest_step(directory)
        assert f"interrupted at update {done} of 200000; its checkpoints are in {directory}. Resume with: " in err
        assert f"--checkpoint-dir {directory}" in err
        assert verify_checkpoint(directory, done) is None  # sealed: the resume starts there
    else:
        assert re.search(r"interrupted at update [1-9]\d* of 200000; no checkpoint was saved", err), err
        assert err.rstrip().endswith("--checkpoint-every 100")
        # What was reported live is kept: metrics.csv's rows up to the stop.
        rows = (run_dir / "metrics.csv").read_text().splitlines()
        assert rows[0].startswith("update,env_steps,seed,wall_time") and len(rows) >= 2
