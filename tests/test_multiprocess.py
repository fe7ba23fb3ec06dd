"""A run over two processes (jax.distributed, gloo collectives between CPU
processes) against one process with two CPU devices: the same program, so
the same numbers. Each run is the command line in child processes."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from purejaxppo import distributed
from purejaxppo.checkpoint import restore_checkpoint
from purejaxppo.cli import Args, apply_distributed, read_run_config

# 12 updates of 4 envs x 16 steps, a report every 3.
RUN = ["--env", "CartPole-v1", "--num-envs", "4", "--num-steps", "16", "--total-timesteps", "768",
       "--log-every", "3", "--eval-episodes", "0", "--no-compile-cache", "--cpu-threads", "1"]
# Each case in one process with two CPU devices (key 1) and over two processes
# (key 2). The seeds: one compiled call each way, its final state saved. One
# seed's envs split over the devices: one compiled call in one process, and in
# chunks of 4 updates, each saved, over two; so their equality also says that
# a split run in saved chunks is the one compiled call.
CASES = {
    "seeds": {1: ["--num-seeds", "2"], 2: ["--num-seeds", "2"]},
    "envs": {1: ["--env-devices", "2"], 2: ["--env-devices", "2", "--checkpoint-every", "4"]},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(run_dir: Path, extra: list[str], processes: int) -> list[subprocess.Popen]:
    """The command line over ``processes`` processes of one CPU device each,
    or (``processes=1``) in one process with two CPU devices."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    base = [sys.executable, "-m", "purejaxppo", *RUN, "--run-dir", str(run_dir), *extra]
    if processes == 1:
        commands = [base + ["--cpu-devices", "2"]]
    else:
        address = f"127.0.0.1:{_free_port()}"
        commands = [base + ["--cpu-devices", "1", "--coordinator-address", address, "--num-processes",
                            str(processes), "--process-id", str(i)] for i in range(processes)]
    return [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in commands]


def _finish(procs: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


def _rows(path: Path) -> list[dict]:
    """metrics.csv's rows without the wall-clock column."""
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(f)]


def _assert_same_state(dir_a: Path, dir_b: Path) -> None:
    a, b = restore_checkpoint(dir_a / "checkpoints"), restore_checkpoint(dir_b / "checkpoints")
    assert a.updates_done == b.updates_done == 12
    leaves_a, leaves_b = jax.tree.leaves(a.state), jax.tree.leaves(b.state)
    assert len(leaves_a) == len(leaves_b) > 10
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Over two devices, in one process and over two processes, all at once:
    two seeds (one per device), and one seed's envs split over the devices."""
    root = tmp_path_factory.mktemp("multiprocess")
    procs = {(case, n): _launch(root / f"{case}-{n}", extra, n)
             for case, by_processes in CASES.items() for n, extra in by_processes.items()}
    return root, {key: _finish(p) for key, p in procs.items()}


def test_seeds_over_two_processes_equal_one_process(runs):
    root, outs = runs
    (out_one,), (out_main, out_other) = outs["seeds", 1], outs["seeds", 2]
    one, two = root / "seeds-1", root / "seeds-2"
    assert "| 2 processes | seeds over 2 devices" in out_main
    assert "seeds over 2 devices" in out_one and "processes" not in out_one
    # Process 0 reports and writes; process 1 says so and nothing else.
    assert "final return" in out_main and "final return" not in out_other
    assert out_other.strip().splitlines()[-1] == ("purejaxppo | process 1 of 2 | process 0 reports and "
                                                  "writes the run's files")
    rows = _rows(two / "metrics.csv")
    assert [int(r["update"]) for r in rows] == [3, 3, 6, 6, 9, 9, 12, 12]
    assert rows == _rows(one / "metrics.csv")
    _assert_same_state(one, two)
    assert (two / "summary.json").read_text().count('"processes": 2') == 1


def test_envs_over_two_processes_equal_one_process(runs):
    # One seed's envs over two devices: a gradient all-reduce per minibatch,
    # across processes over gloo. A sum of two shares is the same in either
    # order, so the results are bitwise equal (docs/multiprocess.md).
    root, outs = runs
    assert "| 2 processes | envs over 2 devices" in outs["envs", 2][0]
    assert _rows(root / "envs-2" / "metrics.csv") == _rows(root / "envs-1" / "metrics.csv")
    _assert_same_state(root / "envs-1", root / "envs-2")


def test_a_two_process_run_resumes_bit_exact(runs):
    # The latest checkpoint lost: both processes, relaunched, resume from the
    # one before and end where the uninterrupted run ended.
    root, _ = runs
    resumed = root / "resumed"
    shutil.copytree(root / "envs-2", resumed)
    shutil.rmtree(resumed / "checkpoints" / "12")
    out_main, _ = _finish(_launch(resumed, CASES["envs"][2], 2))
    assert "resumed from update 8 of 12" in out_main
    _assert_same_state(root / "envs-1", resumed)


def test_killed_process_stops_the_other_with_a_clear_error(tmp_path):
    run_dir = tmp_path / "killed"
    main, other = _launch(run_dir, [*CASES["envs"][2], "--total-timesteps", "64000000",
                                    "--heartbeat-timeout", "10", "--log-every", "5"], 2)
    try:
        deadline = time.monotonic() + 120
        while not list(run_dir.glob("checkpoints/*/checksums.json")):  # training, past a save
            assert main.poll() is None and time.monotonic() < deadline, main.communicate()[1][-3000:]
            time.sleep(0.2)
        other.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, err = main.communicate(timeout=60)
        waited = time.monotonic() - killed
    finally:
        for proc in (main, other):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert main.returncode == 1, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("purejaxppo: error: another process of this 2-process run stopped or "
                           "lost contact (this is process 0)"), line
    assert "its checkpoints are in" in line and "each with its own --process-id" in line
    assert waited < 30


def test_initialize_refuses_bad_arguments_before_jax_starts():
    with pytest.raises(ValueError, match="num_processes, process_id not given"):
        distributed.initialize("127.0.0.1:1234")
    with pytest.raises(ValueError, match="coordinator_address='localhost'.*HOST:PORT"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match="coordinator_address='h:0'"):
        distributed.initialize("h:0", 2, 0)
    with pytest.raises(ValueError, match="num_processes=0; allowed: an int >= 1"):
        distributed.initialize("h:1", 0, 0)
    with pytest.raises(ValueError, match="process_id=2; allowed: an int from 0 to 1"):
        distributed.initialize("h:1", 2, 2)
    with pytest.raises(ValueError, match="heartbeat_timeout_s=0"):
        distributed.initialize("h:1", 2, 1, heartbeat_timeout_s=0)
    with pytest.raises(ValueError, match="--distributed lets JAX find the cluster"):
        apply_distributed(Args(distributed=True, num_processes=2))
    with pytest.raises(ValueError, match="--heartbeat-timeout 5 applies to a multi-process run"):
        apply_distributed(Args(heartbeat_timeout=5))
    apply_distributed(Args())  # one process: nothing to join
    assert distributed.process_count() == 1 and distributed.is_main()


def test_one_process_helpers_and_config_reuse(tmp_path):
    x = jax.numpy.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(distributed.to_host({"x": x})["x"], np.asarray(x))
    assert distributed.broadcast_text("runs/a") == "runs/a"
    distributed.barrier("nothing-to-wait-for")
    assert distributed.describe_failure(RuntimeError("Gloo all-reduce failed")) is None
    # --config reruns a run, not a process's place in it.
    import json

    from purejaxppo.checkpoint import config_to_json

    record = {"config": config_to_json(Args().config), "argv": [],
              "args": {"num_seeds": 3, "process_id": 1, "num_processes": 2,
                       "coordinator_address": "h:1", "heartbeat_timeout": 9}}
    (tmp_path / "config.json").write_text(json.dumps(record))
    args = read_run_config(tmp_path)
    assert args.num_seeds == 3 and args.process_id is None and args.num_processes is None
    assert args.coordinator_address is None and args.heartbeat_timeout is None
