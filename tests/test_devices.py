"""Seeds over devices (`purejaxppo.devices`): the rule, the errors, and a
sharded training equal to the one-device run, with no data between devices."""

import json
import os
import subprocess
import sys

import jax
import jaxlib
import numpy as np
import pytest

from purejaxppo.cli import cpu_devices_for_args, parse_args
from purejaxppo.platform.cpu_threads import cpu_threads_for
from purejaxppo.devices import largest_divisor_at_most, seed_sharding, shard_seeds
from purejaxppo.platform.cpu_devices import (
    cpu_devices_for,
    parse_cpu_devices,
    resolve_cpu_devices,
    set_cpu_devices,
)

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


@pytest.mark.parametrize("seeds, cores, expected", [
    (1, 2, 1), (8, 2, 2), (3, 2, 1), (9, 4, 3), (6, 4, 3), (64, 16, 16), (12, 8, 6), (5, 1, 1),
])
def test_cpu_devices_rule(seeds, cores, expected):
    assert cpu_devices_for(seeds, cores) == expected
    assert seeds % expected == 0 and expected <= cores


def test_largest_divisor_against_brute_force():
    for n in range(1, 40):
        for limit in range(1, 12):
            want = max(d for d in range(1, n + 1) if n % d == 0 and d <= limit)
            assert largest_divisor_at_most(n, limit) == want


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "8"])
def test_cpu_devices_rule_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="num_seeds must be a positive int"):
        cpu_devices_for(bad, 2)


def test_parse_and_resolve(monkeypatch):
    assert parse_cpu_devices("auto") == "auto"
    assert parse_cpu_devices("3") == 3 and parse_cpu_devices(2) == 2
    for bad in ("0", "-1", "x", "2.0", True, None):
        with pytest.raises(ValueError, match="allowed: 'auto' or an int >= 1"):
            parse_cpu_devices(bad)
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert resolve_cpu_devices("auto", 8) == cpu_devices_for(8)
    assert resolve_cpu_devices("4", 8) == 4
    # A choice already in the environment is the user's: auto leaves it.
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "3")
    assert resolve_cpu_devices("auto", 8) is None
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert resolve_cpu_devices("auto", 8) is None


def test_cli_reads_cpu_devices_before_the_parse(monkeypatch):
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert cpu_devices_for_args(parse_args([])) == 1
    assert cpu_devices_for_args(parse_args(["--num-seeds", "8"])) == cpu_devices_for(8)
    assert cpu_devices_for_args(parse_args(["--num_seeds=8", "--cpu-devices", "1"])) == 1


def test_threads_rule_with_devices():
    """Seeds split over CPU devices run one thread each, whatever the size."""
    assert cpu_threads_for(2048, 8, cnn=True, devices=2) == 1
    assert cpu_threads_for(2048, 8, devices=1) is None
    with pytest.raises(ValueError, match="devices must be a positive int"):
        cpu_threads_for(4, 1, devices=0)


def test_set_cpu_devices_after_start_is_refused():
    jax.devices()  # this process's backend is up, with one CPU device
    set_cpu_devices(len(jax.devices()))  # the count it has: nothing to do
    with pytest.raises(RuntimeError, match="JAX's CPU backend has started"):
        set_cpu_devices(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="an int >= 1"):
        set_cpu_devices(0)


def test_shard_seeds_on_one_device():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    placed = shard_seeds({"k": keys, "x": np.arange(3.0)})
    np.testing.assert_array_equal(placed["k"], keys)
    assert len(seed_sharding(3).mesh.devices) == 1
    with pytest.raises(ValueError, match="seed axis first, of size 3"):
        shard_seeds({"k": keys, "x": np.zeros(2)})


_CHILD = r"""
import json, re, sys
import numpy as np
import jax
from purejaxppo import PPOConfig, make_train
from purejaxppo.devices import shard_seeds
fields = json.loads(sys.argv[1])
fields["hidden_sizes"] = tuple(fields["hidden_sizes"])
train = jax.vmap(make_train(PPOConfig(**fields)))
keys = jax.random.split(jax.random.PRNGKey(0), int(sys.argv[2]))
one = jax.jit(train)(jax.device_put(keys, jax.devices()[0]))
sharded_keys = shard_seeds(keys)
compiled = jax.jit(train).lower(sharded_keys).compile()
hlo = compiled.as_text()
out = compiled(sharded_keys)
print("RESULT " + json.dumps({
    "devices": len(jax.devices()),
    "key_devices": len(sharded_keys.sharding.device_set),
    "out_devices": len(jax.tree.leaves(out.train_state.params)[0].sharding.device_set),
    "collectives": sorted(set(re.findall(
        r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)\(", hlo))),
    "custom_calls": sorted(set(re.findall(r'custom_call_target="([^"]+)"', hlo))),
    "params": [[np.asarray(a).ravel().tolist(), np.asarray(b).ravel().tolist()] for a, b in zip(
        jax.tree.leaves(one.train_state.params), jax.tree.leaves(out.train_state.params))],
    "metrics": {k: [np.asarray(one.metrics[k]).tolist(), np.asarray(out.metrics[k]).tolist()]
                for k in one.metrics},
}))
"""


@pytest.mark.parametrize("seeds", [4, 2])
def test_seeds_over_two_cpu_devices_equal_one_device(seeds):
    """Four seeds split over two CPU devices (a fresh process made with two):
    each device trains two, nothing moves between them, and the run equals
    the one-device run: parameters bitwise with jaxlib 0.10 and 0.11, to
    float rounding from 0.12 on (its CPU compiler sums some reductions in
    another order for a device's two seeds than for all four: at most
    2.3e-10 apart here; a seed trained on the wrong device's keys or data
    differs by orders of magnitude more), metrics to float rounding. Two
    seeds, one per device, agree to float rounding only, on every jaxlib:
    a device's program is then of one seed, which XLA compiles with other
    summation orders (3e-8 apart after 5 updates of CartPole's defaults)."""
    # A batch of 4 x 64 = 256 samples, a power of two: the shuffle has no
    # cycle-walking loop, whose stopping test, under vmap, is one boolean
    # over all seeds (a scalar all-reduce between devices per iteration).
    fields = dict(env_name="CartPole-v1", total_timesteps=4 * 64 * 3,
                  num_envs=4, num_steps=64, update_epochs=2, num_minibatches=2,
                  hidden_sizes=[16, 16])
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "PJRT_NPROC": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(fields), str(seeds)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert result["devices"] == 2 and result["key_devices"] == 2 and result["out_devices"] == 2
    assert result["collectives"] == []
    # No LAPACK call (e.g. a QR in the init): two CPU devices running batched
    # LAPACK decompositions at once hang in jaxlib 0.10.x (benchmarks/NOTES.md).
    assert not [c for c in result["custom_calls"] if "lapack" in c.lower()], result["custom_calls"]
    bitwise = tuple(int(v) for v in jaxlib.__version__.split(".")[:2]) < (0, 12) and seeds >= 4
    for a, b in result["params"]:
        if bitwise:
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
        else:
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-8)
    for name, (a, b) in result["metrics"].items():
        np.testing.assert_allclose(np.asarray(b, float), np.asarray(a, float),
                                   rtol=1e-5, atol=1e-6, err_msg=name)


def test_cpu_devices_rule_with_no_cores_is_one_device():
    # A core count below 1 (an odd affinity report) still gives a valid count.
    assert cpu_devices_for(4, 0) == 1 and cpu_devices_for(6, -2) == 1


def test_shard_seeds_edge_trees():
    assert shard_seeds({}) == {}
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match=r"seed axis first, of size 2; got a leaf of shape \(\)"):
        shard_seeds({"k": keys, "scale": np.float32(1.0)})


_DEVICES_CHILD = r"""
import json, os
from purejaxppo.devices import seed_sharding, shard_seeds
from purejaxppo.platform.cpu_devices import ENV_VAR, current_cpu_devices, set_cpu_devices
out = {}
os.environ[ENV_VAR] = "3"
out["env3"] = current_cpu_devices()
os.environ[ENV_VAR] = "x"
out["envx"] = current_cpu_devices()
del os.environ[ENV_VAR]
out["unset"] = current_cpu_devices()
set_cpu_devices(4)
out["set4"] = [os.environ.get(ENV_VAR), current_cpu_devices()]
set_cpu_devices(None)
out["set_none"] = [os.environ.get(ENV_VAR), current_cpu_devices()]
set_cpu_devices(1)
out["set1"] = [os.environ.get(ENV_VAR), current_cpu_devices()]
set_cpu_devices(4)
import jax
out["devices"] = len(jax.devices())
out["mesh"] = [seed_sharding(n).mesh.devices.size for n in range(1, 9)]
out["placed"] = [len(shard_seeds(jax.random.split(jax.random.PRNGKey(0), n)).sharding.device_set)
                 for n in (6, 7)]
print("RESULT " + json.dumps(out))
"""


def test_set_cpu_devices_and_seed_sharding_in_a_fresh_process():
    """Before JAX starts: the count is read from JAX_NUM_CPU_DEVICES (digits
    only), set_cpu_devices writes it for child processes and None removes it;
    on the four devices it then asks for, n seeds go to the largest divisor of
    n up to 4 (1, 2, 3, 4, 1, 3, 1, 4 devices for 1..8 seeds)."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", _DEVICES_CHILD], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    assert (out["env3"], out["envx"], out["unset"]) == (3, None, None)
    assert out["set4"] == ["4", 4]
    assert out["set_none"] == [None, None]
    assert out["set1"] == [None, None]  # one device is the default: nothing to set
    assert out["devices"] == 4
    assert out["mesh"] == [1, 2, 3, 4, 1, 3, 1, 4]
    assert out["placed"] == [3, 1]
