"""One seed's envs split over devices (`make_train(config, env_devices=D)`):
the reductions across the device axis against the same reductions over the
whole batch, the rule that picks D, its errors, and (in a fresh process with
two CPU devices) a split training run: replicated state the same on every
device, each device its own envs, a resume with another split refused.

The reductions are checked under `jax.vmap` with an ``axis_name``, which
runs the same collectives (`pmean`, `psum`, `all_gather`) as `shard_map`
over devices, in this process and on one device."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig
from purejaxppo.devices import largest_divisor_at_most
from purejaxppo.platform.cpu_devices import MIN_ENV_SHARE, cpu_devices_for, env_devices_for
from purejaxppo.losses import LossStatic, Minibatch, normalize
from purejaxppo.rollout import EpisodeStats
from purejaxppo.train import explained_variance
from purejaxppo.fast.shuffle import shuffle_keys
from purejaxppo.update import UpdateSettings, init_opt_state, make_optimizer, minibatch_gradient, ppo_update

AXIS = "shares"


def _shares(x, d):
    """``x`` (n, ...) as d equal shares (d, n / d, ...)."""
    return x.reshape((d, x.shape[0] // d) + x.shape[1:])


def _linear_apply(params, obs):
    from purejaxppo.distributions import Categorical

    return Categorical(logits=obs @ params["w"]), obs @ params["v"]


def _minibatch(key, size):
    k = jax.random.split(key, 6)
    return Minibatch(
        obs=jax.random.normal(k[0], (size, 3)),
        actions=jax.random.randint(k[1], (size,), 0, 4),
        log_probs=-jnp.abs(jax.random.normal(k[2], (size,))) - 1.0,
        values=jax.random.normal(k[3], (size,)),
        # Shares with different advantage statistics (offset and scale):
        # normalising each share on its own would show.
        advantages=jax.random.normal(k[4], (size,)) * jnp.repeat(jnp.arange(1.0, 5.0), size // 4)
        + jnp.repeat(jnp.arange(4.0), size // 4),
        returns=jax.random.normal(k[5], (size,)) + 1.0,
    )


@pytest.mark.parametrize("d", [1, 2, 4])
def test_normalize_over_shares_is_normalize_over_the_union(d):
    x = jax.random.normal(jax.random.PRNGKey(0), (64,)) * jnp.repeat(jnp.arange(1.0, 5.0), 16) + 3.0
    split = jax.vmap(lambda s: normalize(s, axis_name=AXIS), axis_name=AXIS)(_shares(x, d))
    np.testing.assert_allclose(np.asarray(split).ravel(), normalize(x), rtol=1e-5, atol=1e-6)
    if d > 1:  # each share normalised alone is another thing
        alone = jax.vmap(normalize)(_shares(x, d))
        assert np.max(np.abs(np.asarray(alone).ravel() - normalize(x))) > 0.1


def test_explained_variance_and_episode_summary_over_shares():
    k = jax.random.split(jax.random.PRNGKey(1), 2)
    pred = jax.random.normal(k[0], (32,))
    target = pred + 0.5 * jax.random.normal(k[1], (32,)) + jnp.repeat(jnp.arange(2.0), 16)
    split = jax.vmap(lambda p, t: explained_variance(p, t, AXIS), axis_name=AXIS)(
        _shares(pred, 2), _shares(target, 2))
    np.testing.assert_allclose(split, explained_variance(pred, target), rtol=1e-5)

    # Envs 0-3 on the first device, 4-7 on the second; only envs 1, 2 and 6 finished.
    stats = EpisodeStats.zeros(8).replace(
        last_return=jnp.arange(8.0) * 10, last_length=jnp.arange(8),
        num_finished=jnp.array([0, 1, 3, 0, 0, 0, 2, 0]))
    split = jax.vmap(lambda s: s.summary(AXIS), axis_name=AXIS)(
        jax.tree.map(lambda x: _shares(x, 2), stats))
    whole = stats.summary()
    np.testing.assert_allclose(whole["episode_return"], 30.0)  # (10 + 20 + 60) / 3
    for name in whole:
        np.testing.assert_allclose(split[name], whole[name])  # the same on both devices
    none = jax.vmap(lambda s: s.summary(AXIS), axis_name=AXIS)(
        jax.tree.map(lambda x: _shares(x, 2), EpisodeStats.zeros(8)))
    assert np.all(np.isnan(none["episode_return"]))


@pytest.mark.parametrize("num_chunks", [1, 2])
@pytest.mark.parametrize("norm_adv", [True, False])
def test_minibatch_gradient_over_shares_is_the_union_gradient(num_chunks, norm_adv):
    """Each device's gradient over its share, averaged across the axis, with
    the advantages normalised over the union, equals the gradient of the
    whole minibatch; every diagnostic too, and every device holds it."""
    hp = PPOConfig().hyperparams()
    static = LossStatic(norm_adv=norm_adv, clip_vloss=True, policy_objective="clip")
    params = {"w": jax.random.normal(jax.random.PRNGKey(2), (3, 4)),
              "v": jax.random.normal(jax.random.PRNGKey(3), (3,))}
    batch = _minibatch(jax.random.PRNGKey(4), 64)
    whole = minibatch_gradient(params, _linear_apply, batch, hp, UpdateSettings(1, 1, static))
    split = jax.vmap(
        lambda b: minibatch_gradient(params, _linear_apply, b, hp,
                                     UpdateSettings(1, 1, static, num_chunks, AXIS)),
        axis_name=AXIS)(jax.tree.map(lambda x: _shares(x, 2), batch))
    for path, a in jax.tree_util.tree_leaves_with_path(whole):
        b = np.asarray(_at(split, path))
        np.testing.assert_allclose(b[0], a, rtol=2e-5, atol=1e-6, err_msg=str(path))
        np.testing.assert_array_equal(b[0], b[1])  # the same on both devices


def _at(tree, path):
    for entry in path:
        tree = tree[entry.idx] if hasattr(entry, "idx") else tree[entry.key]
    return tree


def test_ppo_update_over_shares_is_the_whole_batch_update():
    """With one minibatch per epoch, every gradient step's minibatch is the
    whole batch however each device shuffles its share, so the split update
    must equal the one-device update step for step: parameters, Adam state
    and diagnostics (``grad_norm`` of the averaged gradient), on every
    device."""
    hp = PPOConfig().hyperparams()
    static = LossStatic(norm_adv=True, clip_vloss=True, policy_objective="clip")
    params = {"w": jnp.zeros((3, 4)), "v": jnp.zeros((3,))}
    tx, _ = make_optimizer(hp.lr, hp.max_grad_norm, True, 100)
    batch = _minibatch(jax.random.PRNGKey(5), 128)
    run = lambda b, key, axis: ppo_update(
        params, init_opt_state(tx, params), tx, _linear_apply, b, shuffle_keys(key, 3), hp,
        UpdateSettings(3, 1, static, axis_name=axis))
    whole = run(batch, jax.random.PRNGKey(6), None)
    keys = jax.random.split(jax.random.PRNGKey(7), 2)  # each device its own shuffle
    split = jax.vmap(lambda b, k: run(b, k, AXIS), axis_name=AXIS)(
        jax.tree.map(lambda x: _shares(x, 2), batch), keys)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split)):
        b = np.asarray(b)
        np.testing.assert_allclose(b[0], a, rtol=2e-5, atol=1e-6)
        np.testing.assert_array_equal(b[0], b[1])
    # Without the axis (each device on its own share) the update differs.
    alone = jax.vmap(lambda b, k: run(b, k, None))(jax.tree.map(lambda x: _shares(x, 2), batch), keys)
    assert np.max(np.abs(np.asarray(alone[0]["w"][0]) - np.asarray(whole[0]["w"]))) > 1e-4


@pytest.mark.parametrize("num_envs, minibatch, cores, expected", [
    (2048, 65536, 2, 2),  # 2048 x 128, 4 minibatches
    (16, 512, 2, 2),      # shares of exactly MIN_ENV_SHARE
    (8, 256, 2, 1),       # shares of 128: the all-reduce costs more than the split gains
    (16, 128, 2, 1),      # Pendulum's preset: shares of 64
    (4, 128, 2, 1),       # CartPole's defaults
    (64, 1024, 2, 2),     # MinAtar's CNN case
    (2048, 65536, 1, 1),  # one core
    (24, 1536, 8, 6),     # 8 would leave shares of 192: the most devices that leave 256
    (9, 2304, 2, 1),      # an odd env count
])
def test_env_devices_rule(num_envs, minibatch, cores, expected):
    assert MIN_ENV_SHARE == 256
    assert env_devices_for(num_envs, minibatch, cores) == expected
    # A grad_chunk_size each share must hold: the whole minibatch leaves no split.
    assert env_devices_for(num_envs, minibatch, cores, grad_chunk_size=minibatch) == 1
    assert env_devices_for(num_envs, minibatch, cores, grad_chunk_size=1) == expected
    # The CPU device count asked for before JAX starts: the envs' for one seed, the seeds' else.
    assert cpu_devices_for(1, cores, num_envs, minibatch) == expected
    assert cpu_devices_for(8, cores, num_envs, minibatch) == largest_divisor_at_most(8, cores)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None])
def test_env_devices_rule_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        env_devices_for(bad, 256, 2)
    with pytest.raises(ValueError, match="minibatch_size must be a positive int"):
        env_devices_for(8, bad, 2)


def test_make_train_refuses_a_bad_split():
    from purejaxppo import make_train

    config = PPOConfig(env_name="CartPole-v1", num_envs=6, num_steps=8, total_timesteps=6 * 8 * 2)
    n = len(jax.devices())
    with pytest.raises(ValueError, match=rf"env_devices={n + 1}: allowed 1 to {n}, the devices JAX sees"):
        make_train(config, env_devices=n + 1)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"env_devices={bad}: allowed 1 to {n}"):
            make_train(config, env_devices=bad)
    for bad in ("2", 2.0, True):
        with pytest.raises(TypeError, match="env_devices must be None, an int >= 1 or a sequence"):
            make_train(config, env_devices=bad)
    with pytest.raises(ValueError, match="env_devices must be distinct devices"):
        make_train(config, env_devices=[jax.devices()[0]] * 2)
    with pytest.raises(ValueError, match="env_devices must be distinct devices"):
        make_train(config, env_devices=[])


def test_one_device_split_trains():
    """``env_devices=1``: the split program on one device (a `shard_map` over
    one device, its collectives over one member) runs and learns as the
    unsplit one does in distribution: finite metrics, the state's shapes."""
    from purejaxppo import make_train

    config = PPOConfig(env_name="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=4 * 32 * 3,
                       update_epochs=2, num_minibatches=2, hidden_sizes=(16, 16))
    split, plain = make_train(config, env_devices=1), make_train(config)
    a, b = jax.jit(split)(jax.random.PRNGKey(0)), jax.jit(plain)(jax.random.PRNGKey(0))
    assert jax.tree.map(jnp.shape, a.train_state) == jax.tree.map(jnp.shape, b.train_state)
    assert set(a.metrics) == set(b.metrics)
    for name in ("loss", "grad_norm", "explained_variance", "episodes_finished"):
        assert np.all(np.isfinite(np.asarray(a.metrics[name]))), name
    assert split.env_devices == (jax.devices()[0],) and split.config is config


_CHILD = r"""
import json, sys, tempfile
import numpy as np
import jax
from purejaxppo import PPOConfig, make_train
from purejaxppo.checkpoint import train_with_checkpoints

out = {"devices": len(jax.devices())}
config = PPOConfig(env_name="CartPole-v1", num_envs=8, num_steps=32, total_timesteps=8 * 32 * 6,
                   update_epochs=2, num_minibatches=2, hidden_sizes=(16, 16))
train = make_train(config, env_devices=2)
result = jax.jit(train)(jax.random.PRNGKey(0))
state = result.train_state
obs = state.env.obs
out["obs_devices"] = len(obs.sharding.device_set)
out["obs_shape"] = list(obs.shape)
shards = [np.asarray(s.data) for s in obs.addressable_shards]
out["obs_shard_shapes"] = [list(s.shape) for s in shards]
out["envs_differ"] = bool(np.any(shards[0] != shards[1]))
# Replicated leaves: each device's own copy (check_vma is off, so the copies
# are what each device computed), bitwise the same.
same = []
for leaf in jax.tree.leaves((state.params, state.opt_state, state.obs_norm, state.rng, state.update_step,
                             state.reward_scaler.return_stats, result.metrics)):
    copies = [np.asarray(s.data) for s in leaf.addressable_shards]
    same.append(len(copies) == 2 and all(np.array_equal(copies[0], c, equal_nan=True) for c in copies))
out["replicated_same"] = all(same)
out["metrics_finite"] = bool(np.all(np.isfinite(np.asarray(result.metrics["loss"]))))
out["episodes_finished"] = np.asarray(result.metrics["episodes_finished"]).tolist()

# Seeds under vmap of the split program.
keys = jax.random.split(jax.random.PRNGKey(1), 2)
seeds = jax.jit(jax.vmap(train))(keys)
out["seed_obs_shape"] = list(seeds.train_state.env.obs.shape)
out["seeds_differ"] = bool(np.any(np.asarray(seeds.train_state.env.obs[0]) != np.asarray(seeds.train_state.env.obs[1])))

# A run split over 2 devices, stopped after 4 of 6 updates, then resumed with
# another split: refused. (A resumed split run equal to an unbroken one, in
# fresh processes: tests/test_multiprocess.py.)
class Stop(Exception):
    pass
def stop_at_4(done, metrics):
    if done == 4:
        raise Stop
directory = tempfile.mkdtemp()
keys1 = jax.random.split(jax.random.PRNGKey(0), 1)
try:
    train_with_checkpoints(make_train(config, env_devices=2), keys1, directory, every=2, callback=stop_at_4)
except Stop:
    pass
try:
    train_with_checkpoints(make_train(config), keys1, directory, every=2)
except ValueError as error:
    out["other_split"] = str(error)

# Normalised observations and rewards, continuous actions, chunked gradients:
# the running statistics are merged across the devices, so the same on both.
pendulum = PPOConfig(env_name="Pendulum-v1", num_envs=8, num_steps=64, total_timesteps=8 * 64 * 3,
                     update_epochs=2, num_minibatches=2, hidden_sizes=(16, 16), normalize_obs=True,
                     normalize_reward=True, grad_chunk_size=64)
p_state = jax.jit(make_train(pendulum, env_devices=2))(jax.random.PRNGKey(2)).train_state
stats = []
for leaf in jax.tree.leaves((p_state.params, p_state.obs_norm, p_state.reward_scaler.return_stats)):
    copies = [np.asarray(s.data) for s in leaf.addressable_shards]
    stats.append(len(copies) == 2 and np.array_equal(copies[0], copies[1]))
out["pendulum_replicated_same"] = all(stats)
out["pendulum_obs_count"] = float(np.asarray(p_state.obs_norm.count))
out["pendulum_return_count"] = float(np.asarray(p_state.reward_scaler.return_stats.count))

# A recurrent policy split over the devices: each device carries its envs'
# hidden states and replays their sequences; the parameters stay the same.
gru = PPOConfig(env_name="CartPole-v1", num_envs=8, num_steps=16, total_timesteps=8 * 16 * 2,
                update_epochs=2, num_minibatches=2, hidden_sizes=(8,), recurrent="gru", recurrent_size=8)
g_state = jax.jit(make_train(gru, env_devices=2))(jax.random.PRNGKey(3)).train_state
hidden = [np.asarray(s.data) for s in g_state.env.hidden.addressable_shards]
out["gru_hidden_shards"] = [list(h.shape) for h in hidden]
out["gru_params_same"] = all(
    np.array_equal(*[np.asarray(s.data) for s in leaf.addressable_shards]) for leaf in jax.tree.leaves(g_state.params))
try:
    make_train(gru.replace(num_envs=4, num_minibatches=4, total_timesteps=4 * 16 * 2), env_devices=2)
except ValueError as error:
    out["gru_split_error"] = str(error)

# Live reports of a split run: one per reported update (from the first device),
# carrying both seeds, equal to the run's metrics.
reports = []
logged = make_train(config.replace(log_every=2), env_devices=2,
                    log_fn=lambda u, m: reports.append((u, np.asarray(m["loss"]).tolist())))
logged_result = jax.block_until_ready(jax.jit(jax.vmap(logged))(keys))  # reports come as it runs
out["reports"] = [u for u, _ in reports]
out["reports_equal"] = all(
    np.array_equal(np.asarray(loss), np.asarray(logged_result.metrics["loss"])[:, u - 1]) for u, loss in reports)

# The split's errors name the field and what is allowed.
errors = {}
for name, fields in {"envs": dict(num_envs=7), "minibatch": dict(num_envs=8, num_steps=3, num_minibatches=8),
                     "share": dict(num_envs=8, num_steps=3, num_minibatches=12),
                     "chunk": dict(num_envs=8, num_steps=32, num_minibatches=2, grad_chunk_size=128)}.items():
    try:
        make_train(config.replace(**fields, total_timesteps=4096), env_devices=2)
    except ValueError as error:
        errors[name] = str(error)
out["errors"] = errors
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_device_run():
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "PJRT_NPROC": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_split_run_places_envs_and_replicates_the_rest(two_device_run):
    r = two_device_run
    assert r["devices"] == 2 and r["obs_devices"] == 2
    assert r["obs_shape"] == [8, 4] and r["obs_shard_shapes"] == [[4, 4], [4, 4]]
    assert r["envs_differ"], "both devices stepped the same envs"
    assert r["replicated_same"], "a replicated leaf differs between the devices"
    assert r["metrics_finite"]
    # psum'd over both devices' envs: 8 envs x 32 steps finish episodes (CartPole's
    # random start: at least a few in the first update).
    assert len(r["episodes_finished"]) == 6 and r["episodes_finished"][0] >= 2


def test_split_run_reports_once_per_update_not_once_per_device(two_device_run):
    r = two_device_run
    assert r["reports"] == [2, 4, 6] and r["reports_equal"]


def test_split_run_under_vmap(two_device_run):
    r = two_device_run
    assert r["seed_obs_shape"] == [2, 8, 4] and r["seeds_differ"]


def test_split_run_errors(two_device_run):
    errors = two_device_run["errors"]
    assert "env_devices=2: num_envs=7 is not a multiple of 2; allowed: a num_envs that 2 divides" in errors["envs"]
    assert ("minibatch_size=3 (batch_size/num_minibatches = 24/8) is not a multiple of 2; allowed"
            in errors["minibatch"])
    assert ("norm_adv=True with each device's minibatch share of 1 sample (minibatch_size=2 over 2 "
            "devices); allowed: fewer num_minibatches, fewer devices, or norm_adv=False") in errors["share"]
    assert ("grad_chunk_size=128 does not divide each device's minibatch share of 64 samples; "
            "allowed: None or a divisor of 64") in errors["chunk"]
    assert all("or env_devices=None (one device)" in e for e in errors.values())


def test_split_run_of_a_recurrent_policy(two_device_run):
    r = two_device_run
    assert r["gru_hidden_shards"] == [[4, 1, 8], [4, 1, 8]] and r["gru_params_same"]
    assert ("num_minibatches=4 does not divide each device's 2 env sequences (recurrent='gru'); "
            "allowed: a num_envs that 8 divides") in r["gru_split_error"]


def test_split_run_merges_running_statistics_and_keeps_its_split_in_checkpoints(two_device_run):
    r = two_device_run
    # Observation and return statistics over both devices' envs: 3 updates x 64 steps x 8 envs.
    assert r["pendulum_replicated_same"]
    assert r["pendulum_obs_count"] == r["pendulum_return_count"] == 3 * 64 * 8
    assert ("holds a run whose envs were split over 2 device(s) (make_train's env_devices); this "
            "train splits them over 1") in r["other_split"]
    assert "Resume with env_devices=2" in r["other_split"]


def test_cli_reads_the_env_split_before_the_parse(monkeypatch):
    """For one seed, ``--cpu-devices auto`` asks for the devices
    ``--env-devices auto`` will split its envs over: from the flags, else the
    env's preset, before JAX starts (on a 2-core machine here)."""
    from purejaxppo.platform import cpu_devices as devices
    from purejaxppo.cli import cpu_devices_for_args, parse_args

    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(devices, "available_cores", lambda: 2)
    big = ["--num-envs", "2048", "--num-steps", "128"]
    assert cpu_devices_for_args(parse_args([])) == 1  # CartPole's preset: 4 envs
    assert cpu_devices_for_args(parse_args(big)) == 2
    assert cpu_devices_for_args(parse_args([*big, "--env-devices", "1"])) == 1
    assert cpu_devices_for_args(parse_args(["--env-devices", "2"])) == 2  # asked for: made
    assert cpu_devices_for_args(parse_args(["--env-devices=2", "--cpu-devices", "1"])) == 1
    assert cpu_devices_for_args(parse_args([*big, "--cpu-devices", "1"])) == 1
    assert cpu_devices_for_args(parse_args([*big, "--num-seeds", "3"])) == 1  # seeds: 3 over 2 cores
    assert cpu_devices_for_args(parse_args([*big, "--num-seeds", "3", "--env-devices", "2"])) == 2
    # A chunk size that a device's share (32,768) does not hold: no split.
    assert cpu_devices_for_args(parse_args([*big, "--grad-chunk-size", "65536"])) == 1
    assert cpu_devices_for_args(parse_args([*big, "--grad-chunk-size", "8192"])) == 2
    assert cpu_devices_for_args(parse_args(["--num-envs", "8"])) == 1  # shares of 128
    assert cpu_devices_for_args(parse_args(["--num-envs", "16"])) == 2  # shares of 256
    assert cpu_devices_for_args(parse_args(["--num-envs", "16", "--num-minibatches", "8"])) == 1
    # MinAtar's preset (64 envs x 128 steps, 8 minibatches): shares of 512.
    assert cpu_devices_for_args(parse_args(["--env", "Breakout-MinAtar"])) == 2
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "1")  # the environment's choice wins
    assert cpu_devices_for_args(parse_args(big)) is None


def test_cli_trains_one_seed_over_two_devices(tmp_path):
    """A fresh CLI process: one seed of 16 envs goes over two CPU devices
    (shares of 256 samples), on one thread each, and says so."""
    if "JAX_NUM_CPU_DEVICES" in os.environ or "device_count" in os.environ.get("XLA_FLAGS", ""):
        pytest.skip("the environment chose the CPU device count")
    from purejaxppo.platform.cpu_devices import available_cores

    out = tmp_path / "run.json"
    flags = ["--env", "CartPole-v1", "--total-timesteps", str(16 * 128 * 2), "--num-envs", "16",
             "--hidden-sizes", "8", "--eval-episodes", "2", "--no-compile-cache", "--json-out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "purejaxppo", *flags], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())["summary"]
    expected = 2 if available_cores() >= 2 else 1
    assert summary["env_devices"] == expected
    assert ("envs over 2 devices" in proc.stdout) == (expected == 2)
    if expected == 2 and "PJRT_NPROC" not in os.environ:
        assert "cpu threads 1 (auto)" in proc.stdout
    assert np.isfinite(summary["eval_return"][0])
