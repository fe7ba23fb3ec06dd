"""The rollout: episode statistics, and `update` against `run_updates`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import make_train
from purejaxppo.envs import VecEnv, make_env
from purejaxppo.rollout import EnvCarry

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_update_and_run_updates_agree(tiny_config):
    """`train.update` stepped from Python and `run_updates` (one scan) make
    the same states and metrics."""
    train = make_train(tiny_config)
    state = jax.jit(train.init)(jax.random.PRNGKey(3))
    scanned, scanned_metrics = jax.jit(lambda s: train.run_updates(s, 2))(state)
    one = jax.jit(train.update)
    stepped, metrics = state, []
    for _ in range(2):
        stepped, m = one(stepped)
        metrics.append(m)
    assert isinstance(stepped.env, EnvCarry) and isinstance(scanned.env, EnvCarry)
    key_data = lambda tree: jax.tree.map(
        lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)
    for x, y in zip(jax.tree.leaves(key_data(scanned)), jax.tree.leaves(key_data(stepped))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    for name, values in scanned_metrics.items():
        np.testing.assert_allclose(values, [m[name] for m in metrics], rtol=1e-6, err_msg=name)


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
    from purejaxppo.fast.random_draws import key_words, keys_from_words
    from purejaxppo.rollout import RolloutRandomness

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
