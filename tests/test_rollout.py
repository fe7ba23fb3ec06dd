"""The rollout's packed carry: leaves packed per dtype and given back exactly,
and a rollout or a run of updates the same, bit for bit, packed or not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
import purejaxppo.rollout as rollout_module
from purejaxppo.envs import VecEnv, make_env
from purejaxppo.rollout import (
    PACK_MAX_SIZE,
    EnvCarry,
    PackedCarry,
    collect_rollout,
    pack_leaves,
    packs,
    unpack_leaves,
)


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("lead", [(3,), (5, 3)])
def test_pack_leaves_groups_by_dtype_in_tree_order_and_unpacks_exactly(lead):
    rng = np.random.default_rng(0)
    tree = {
        "a": jnp.asarray(rng.normal(size=lead), jnp.float32),
        "b": jnp.asarray(rng.integers(0, 9, size=lead + (2,)), jnp.int32),
        "c": (jnp.asarray(rng.normal(size=lead + (3, 2)), jnp.float32),
              jnp.asarray(rng.random(lead + (4,)) > 0.5)),
        "d": jnp.asarray(rng.integers(0, 9, size=lead), jnp.int32),
    }
    arrays, layout = pack_leaves(tree, len(lead))
    assert {name: x.shape for name, x in arrays.items()} == {
        "float32": lead + (7,), "int32": lead + (3,), "bool": lead + (4,)}
    # float32: a, then c[0] flattened; int32: b, then d.
    np.testing.assert_array_equal(arrays["float32"][..., 0], tree["a"])
    np.testing.assert_array_equal(arrays["float32"][..., 1:], tree["c"][0].reshape(lead + (6,)))
    np.testing.assert_array_equal(arrays["int32"][..., 2], tree["d"])
    hash(layout)  # static: a scan carry's structure
    assert_same(unpack_leaves(arrays, layout), tree)
    # Under jit, the same.
    assert_same(jax.jit(lambda t: unpack_leaves(*pack_leaves(t, len(lead))))(tree), tree)


@pytest.mark.parametrize("env_name", ["CartPole-v1", "Breakout-MinAtar", "DeepSea-bsuite"])
def test_a_rollout_is_the_same_from_a_packed_carry(env_name, monkeypatch):
    """Bool, int and float env state (MinAtar), and an env that does its own
    resets (DeepSea): the trajectory and the carry, packed or not, bitwise.
    The unpacked run has packing off (`PACK_MAX_SIZE` below any carry), so
    that a small carry, which `packs` would pack anyway, is compared too."""
    config = PPOConfig(env_name=env_name, num_envs=3, num_steps=8, total_timesteps=24,
                       num_minibatches=1, hidden_sizes=(8,), cnn_channels=(4,))
    train = make_train(config)
    state = train.init(jax.random.PRNGKey(0))
    env, env_params, spec = make_env(env_name)
    vec = VecEnv(env, env_params, spec, 3)
    policy = lambda p, o: train.network.apply(p, o, method=train.network.policy)
    rollout = lambda c, k: collect_rollout(policy, state.params, vec, c, k, 40)
    packed, traj_packed = jax.jit(rollout)(PackedCarry.pack(state.env), jax.random.PRNGKey(1))
    monkeypatch.setattr(rollout_module, "PACK_MAX_SIZE", -1)
    assert not rollout_module.packs(state.env)
    carry, traj = jax.jit(rollout)(state.env, jax.random.PRNGKey(1))
    assert isinstance(carry, EnvCarry) and isinstance(packed, PackedCarry)
    assert_same(traj_packed, traj)
    assert_same(packed.unpack(), carry)
    assert int(carry.episode_stats.num_finished.sum()) > 0 or env_name == "Breakout-MinAtar"


def test_update_and_run_updates_agree_and_keep_the_carry_unpacked(tiny_config, monkeypatch):
    """`train.update` (public, an `EnvCarry` in and out; here with packing
    off) and `run_updates` (the small carry packed inside its scan) make the
    same states and metrics."""
    train = make_train(tiny_config)
    state = train.init(jax.random.PRNGKey(3))
    assert packs(state.env)
    scanned, scanned_metrics = jax.jit(lambda s: train.run_updates(s, 2))(state)
    monkeypatch.setattr(rollout_module, "PACK_MAX_SIZE", -1)
    one = jax.jit(train.update)
    stepped, metrics = state, []
    for _ in range(2):
        stepped, m = one(stepped)
        metrics.append(m)
    assert isinstance(stepped.env, EnvCarry) and isinstance(scanned.env, EnvCarry)
    key_data = lambda tree: jax.tree.map(
        lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)
    assert_same(key_data(scanned), key_data(stepped))
    for name, values in scanned_metrics.items():
        np.testing.assert_allclose(values, [m[name] for m in metrics], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("env_name, num_envs, packed", [
    ("CartPole-v1", 4, True),            # 4 x (5 state + 4 obs + 5 statistics) = 56 elements
    ("CartPole-v1", 16, False),          # 224
    ("Breakout-MinAtar", 1, False),      # 400 observation elements alone
])
def test_only_small_carries_are_packed(env_name, num_envs, packed):
    """`packs`: the carry's elements against `PACK_MAX_SIZE`, per seed under vmap."""
    config = PPOConfig(env_name=env_name, num_envs=num_envs, num_steps=8,
                       total_timesteps=num_envs * 8, num_minibatches=1)
    carry = make_train(config).init(jax.random.PRNGKey(0)).env
    size = sum(x.size for x in jax.tree.leaves(carry))
    assert packs(carry) == packed == (size <= PACK_MAX_SIZE)
    seeds = jax.vmap(make_train(config).init)(jax.random.split(jax.random.PRNGKey(0), 8)).env
    assert jax.vmap(lambda c: jnp.asarray(packs(c)))(seeds).all() == packed


def test_a_carry_of_exactly_the_limit_is_packed():
    at_limit = {"a": jnp.zeros((PACK_MAX_SIZE - 8,)), "b": jnp.zeros((2, 4), jnp.int32)}
    assert packs(at_limit)
    assert not packs({**at_limit, "c": jnp.zeros((1,))})


def test_episode_summary_averages_the_envs_that_finished_one():
    """`EpisodeStats`: each env's last finished episode, averaged over the
    envs that have one (NaN while none has), against a plain loop over envs."""
    from purejaxppo.rollout import EpisodeStats

    rewards = np.array([[1.0, 2.0, 0.5], [1.0, 0.0, 0.5], [1.0, 2.0, 0.5], [3.0, 1.0, 0.5],
                        [1.0, 1.0, 0.5]], np.float32)
    dones = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]], bool)
    stats = EpisodeStats.zeros(3)
    running, length, last = np.zeros(3), np.zeros(3), {}
    for t in range(len(rewards)):
        stats = stats.record(jnp.asarray(rewards[t]), jnp.asarray(dones[t]))
        running, length = running + rewards[t], length + 1
        for env in np.flatnonzero(dones[t]):
            last[env] = (running[env], length[env])
            running[env] = length[env] = 0
        summary = jax.tree.map(float, stats.summary())
        if not last:
            assert np.isnan(summary["episode_return"]) and np.isnan(summary["episode_length"])
        else:
            assert summary["episode_return"] == pytest.approx(np.mean([r for r, _ in last.values()]))
            assert summary["episode_length"] == pytest.approx(np.mean([n for _, n in last.values()]))
    # Env 0 ended one episode (return 3, 3 steps), env 1 two (the last: return 4, 3 steps), env 2 none.
    assert jax.tree.map(float, stats.summary()) == {"episode_return": 3.5, "episode_length": 3.0}
    np.testing.assert_array_equal(stats.num_finished, [1, 2, 0])


def test_rollout_randomness_takes_each_part_from_its_own_words():
    """`RolloutRandomness.from_words`: per env and step, the action noise,
    then the env key, then the reset key, each from its own words (a reset
    state drawn from the env key's words would be tied to its transition)."""
    from purejaxppo.rollout import RolloutRandomness, key_words, keys_from_words

    env, env_params, spec = make_env("CartPole-v1")
    vec = VecEnv(env, env_params, spec, 3)
    key = jax.random.PRNGKey(0)
    T, a, w = 2, spec.action_dim, key_words(key)
    words = jax.random.bits(jax.random.PRNGKey(1), (RolloutRandomness.num_words(vec, T, key),), jnp.uint32)
    bits = words.reshape(T, 3, a + 2 * w)
    drawn = RolloutRandomness.from_words(words, vec, T, key)
    assert_same(drawn.env_keys, keys_from_words(bits[..., a : a + w], key))
    assert_same(drawn.resets, vec.draw_resets(keys_from_words(bits[..., a + w :], key)))
    assert not np.array_equal(np.asarray(bits[..., a : a + w]), np.asarray(bits[..., a + w :]))
