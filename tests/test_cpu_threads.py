"""The CPU pool size: the rule, the argument checks, and that a pool set
before JAX starts is the one XLA runs on, with the same numbers."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from purejaxppo.platform.cpu_threads import (
    ENV_VAR,
    SMALL_RUN_MAX_ENVS,
    cpu_threads_for,
    current_cpu_threads,
    parse_cpu_threads,
    resolve_cpu_threads,
    set_cpu_threads,
    uses_cnn,
)


@pytest.mark.parametrize("num_envs, num_seeds, cnn, expected", [
    (4, 1, False, 1),                       # CartPole defaults
    (16, 1, False, 1),
    (SMALL_RUN_MAX_ENVS, 1, False, 1),
    (SMALL_RUN_MAX_ENVS + 1, 1, False, None),
    (4, 8, False, 1),                       # the defaults over 8 seeds
    (4, 9, False, None),
    (2048, 1, False, None),
    (4, 1, True, None),                     # a CNN splits well across cores
])
def test_cpu_threads_for_rule(num_envs, num_seeds, cnn, expected):
    assert cpu_threads_for(num_envs, num_seeds, cnn) == expected


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_cpu_threads_for_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        cpu_threads_for(bad)


def test_uses_cnn_from_names_alone():
    assert uses_cnn("Breakout-MinAtar") and uses_cnn("CartPole-v1", "cnn")
    assert not uses_cnn("CartPole-v1") and not uses_cnn("Breakout-MinAtar", "mlp")


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), ("default", None), (None, None), ("3", 3), (2, 2),
])
def test_parse_cpu_threads(value, expected):
    assert parse_cpu_threads(value) == expected


@pytest.mark.parametrize("bad", ["0", "-2", "x", "1.5", True, 0])
def test_parse_cpu_threads_rejects(bad):
    with pytest.raises(ValueError, match=r"cpu_threads=.* allowed: 'auto', 'default' or an int >= 1"):
        parse_cpu_threads(bad)


def test_auto_keeps_a_pool_the_user_set(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "2")
    assert resolve_cpu_threads("auto", num_envs=4) == 2
    assert resolve_cpu_threads("default", num_envs=4) is None
    monkeypatch.delenv(ENV_VAR)
    assert resolve_cpu_threads("auto", num_envs=4) == 1


def test_set_cpu_threads_after_start_is_an_error(monkeypatch):
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # this process's backend has started
    running = current_cpu_threads()
    set_cpu_threads(running)  # asking for the running pool is fine
    with pytest.raises(RuntimeError, match="JAX's CPU backend has started"):
        set_cpu_threads(7 if running != 7 else 5)
    with pytest.raises(ValueError, match="int >= 1"):
        set_cpu_threads(0)


_CHILD = """
import json, os, sys
from purejaxppo.platform.cpu_threads import set_cpu_threads
threads = json.loads(sys.argv[1])
set_cpu_threads(threads)
import jax, numpy as np
from purejaxppo import PPOConfig, make_train
config = PPOConfig(**json.loads(sys.argv[2]))
out = jax.jit(make_train(config))(jax.random.PRNGKey(3))
pool = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
try:
    set_cpu_threads(None if threads else 1)
    late = "accepted"
except RuntimeError:
    late = "refused"
print("RESULT " + json.dumps({
    "params": [np.asarray(x).tolist() for x in jax.tree.leaves(out.train_state.params)],
    "loss": np.asarray(out.metrics["value_loss"]).tolist(),
    "eigen_threads": pool.count("tf_XLAEigen"),
    "late": late,
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the thread names")
def test_one_thread_pool_runs_the_same_training(tiny_config):
    """A fresh process with a one-thread pool runs XLA on one worker thread,
    refuses a later change, and trains to the same numbers as the default
    pool (up to float summation order)."""
    fields = dict(env_name="CartPole-v1", total_timesteps=tiny_config.total_timesteps,
                  num_envs=4, num_steps=32, update_epochs=2, num_minibatches=2,
                  hidden_sizes=[16, 16])
    results = {}
    for threads in (1, None):
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(threads), json.dumps(fields)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
        results[threads] = json.loads(line[len("RESULT "):])
    assert results[1]["eigen_threads"] == 1
    assert results[1]["late"] == "refused"
    for a, b in zip(results[1]["params"], results[None]["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results[1]["loss"], results[None]["loss"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("value, expected", [
    ("4", 4), (" 2 ", 2), ("0", 1), ("-3", 1), ("x", None), ("", None),
])
def test_current_cpu_threads_reads_the_variable_as_xla_does(monkeypatch, value, expected):
    """XLA reads a PJRT_NPROC below 1 as one thread per CPU device (here 1);
    a value that is not an int is no request."""
    monkeypatch.setenv(ENV_VAR, value)
    assert current_cpu_threads() == expected
    monkeypatch.delenv(ENV_VAR)
    assert current_cpu_threads() is None


def test_set_cpu_threads_before_start_writes_and_removes_the_variable(monkeypatch):
    from purejaxppo.platform import cpu_threads

    monkeypatch.setattr(cpu_threads, "backend_started", lambda: False)
    monkeypatch.delenv(ENV_VAR, raising=False)
    set_cpu_threads(3)
    assert os.environ[ENV_VAR] == "3" and current_cpu_threads() == 3
    set_cpu_threads(None)
    assert ENV_VAR not in os.environ and current_cpu_threads() is None


@pytest.mark.parametrize("bad", [2.5, 3.0, "+3", " 3x"])
def test_parse_counts_refuse_what_is_not_a_plain_int(bad):
    """3.0 and 2.5 are not ints: neither is silently truncated to a count."""
    from purejaxppo.platform.cpu_devices import parse_cpu_devices

    with pytest.raises(ValueError, match="^" + re.escape(f"cpu_threads={bad!r} is not allowed; allowed: 'auto', 'default' or an int >= 1") + "$"):
        parse_cpu_threads(bad)
    with pytest.raises(ValueError, match="^" + re.escape(f"cpu_devices={bad!r} is not allowed; allowed: 'auto' or an int >= 1") + "$"):
        parse_cpu_devices(bad)


def test_auto_with_seeds_over_devices_is_one_thread(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_cpu_threads("auto", num_envs=64) is None
    assert resolve_cpu_threads("auto", num_envs=64, num_seeds=8, cnn=True, devices=2) == 1
    assert resolve_cpu_threads("auto", num_envs=4, cnn=True) is None
    with pytest.raises(ValueError, match="num_seeds must be a positive int, got 0"):
        cpu_threads_for(4, 0)


@pytest.mark.parametrize("platforms, expected", [
    ("cpu", False), ("CPU", False), (" cpu ", False), ("cpu,cuda", False), ("cuda", True),
    ("tpu,cpu", True), ("Cuda", True), ("rocm, cpu", True),
])
def test_accelerator_expected_follows_the_first_named_platform(monkeypatch, platforms, expected):
    from purejaxppo.platform.cpu_threads import accelerator_expected

    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert accelerator_expected() is expected
