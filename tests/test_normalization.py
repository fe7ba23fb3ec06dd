"""Running statistics against NumPy: observation normalisation and reward scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.evaluation import make_evaluate
from purejaxppo.normalization import START_COUNT, RewardScaler, RunningMeanStd

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


def _stream(seed, batches, shape, loc=3.0, scale=2.0):
    rng = np.random.default_rng(seed)
    return [rng.normal(loc, scale, size=(n, *shape)).astype(np.float32) for n in batches]


def test_safe_start_is_identity_then_clipped():
    stats = RunningMeanStd.create((3,))
    x = jnp.array([[0.5, -2.0, 30.0], [-30.0, 10.0, -10.5]])
    np.testing.assert_allclose(stats.normalize(x, 10.0), [[0.5, -2.0, 10.0], [-10.0, 10.0, -10.0]], rtol=1e-6)
    assert float(stats.count) == pytest.approx(START_COUNT)


def test_running_mean_var_equal_numpy_over_a_stream():
    batches = _stream(0, [7, 64, 1, 200, 33], (4,))
    stats = RunningMeanStd.create((4,))
    for b in batches:
        stats = jax.jit(RunningMeanStd.update)(stats, b)
    data = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-4)
    assert float(stats.count) == pytest.approx(len(data) + START_COUNT)


def test_result_does_not_depend_on_how_the_stream_is_cut():
    (data,) = _stream(1, [120], (2,))
    one = RunningMeanStd.create((2,)).update(data)
    many = RunningMeanStd.create((2,))
    for chunk in np.split(data, [5, 6, 50, 90]):
        many = many.update(chunk)
    np.testing.assert_allclose(one.mean, many.mean, rtol=1e-5)
    np.testing.assert_allclose(one.var, many.var, rtol=1e-5)


def test_rollout_batch_merges_all_envs_and_steps():
    """A (T, N, D) rollout counts T*N samples: the statistics of every env together."""
    rng = np.random.default_rng(2)
    # Each env has its own offset: per-env statistics would differ from the pooled ones.
    rollout = (rng.normal(size=(16, 5, 3)) + np.arange(5)[None, :, None] * 4).astype(np.float32)
    stats = RunningMeanStd.create((3,)).update(rollout)
    pooled = rollout.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(stats.mean, pooled.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.var, pooled.var(0), rtol=1e-4)


def test_merge_across_a_mapped_axis_equals_the_pooled_batch():
    """``axis_name``: each member of a mapped axis (a device, a vmapped env
    group) holds part of the batch; the merged statistics are the pooled ones,
    identical on every member."""
    rng = np.random.default_rng(3)
    parts = (rng.normal(size=(4, 32, 2)) * [1.0, 5.0] + np.arange(4)[:, None, None]).astype(np.float32)
    start = RunningMeanStd.create((2,)).update(rng.normal(size=(10, 2)).astype(np.float32))
    mapped = jax.vmap(lambda part: start.update(part, axis_name="i"), axis_name="i")(parts)
    pooled = start.update(parts.reshape(-1, 2))
    for leaf_mapped, leaf_pooled in zip(jax.tree.leaves(mapped), jax.tree.leaves(pooled)):
        np.testing.assert_allclose(leaf_mapped, np.broadcast_to(leaf_pooled, leaf_mapped.shape), rtol=1e-5)


def test_variance_is_exact_far_from_zero():
    """Two-pass merge: no cancellation from E[x^2] - E[x]^2 at a large offset."""
    (data,) = _stream(4, [4096], (1,), loc=1e4, scale=1.0)
    stats = RunningMeanStd.create((1,)).update(data[:2048]).update(data[2048:])
    np.testing.assert_allclose(stats.var, data.astype(np.float64).var(0), rtol=1e-2)


def test_update_rejects_a_batch_of_the_wrong_sample_shape():
    with pytest.raises(ValueError, match="sample shape"):
        RunningMeanStd.create((3,)).update(jnp.zeros((8, 4)))


def _numpy_discounted_returns(rewards, dones, gamma, start):
    ret, out = start.copy(), []
    for r, d in zip(rewards, dones):
        ret = gamma * ret + r
        out.append(ret.copy())
        ret = np.where(d, 0.0, ret)
    return np.stack(out), ret


def test_reward_scaler_equals_numpy_across_rollouts():
    rng = np.random.default_rng(5)
    gamma, T, N = 0.9, 25, 6
    rewards = rng.normal(1.0, 3.0, size=(3, T, N)).astype(np.float32)
    dones = rng.random(size=(3, T, N)) < 0.1
    scaler = RewardScaler.create(N)
    update = jax.jit(RewardScaler.update)
    start = np.zeros(N)
    all_returns = []
    for k in range(3):  # three rollouts: the per-env return carries across them
        scaler = update(scaler, rewards[k], dones[k], gamma)
        returns, start = _numpy_discounted_returns(rewards[k], dones[k], gamma, start)
        all_returns.append(returns)
    np.testing.assert_allclose(scaler.discounted_return, start, rtol=1e-5, atol=1e-5)
    pooled = np.concatenate(all_returns).ravel()
    np.testing.assert_allclose(scaler.return_stats.var, pooled.var(), rtol=1e-4)
    scaled = scaler.scale(jnp.asarray(rewards[0]), 10.0)
    expected = np.clip(rewards[0] / np.sqrt(pooled.var() + 1e-8), -10, 10)
    np.testing.assert_allclose(scaled, expected, rtol=1e-4)
    # Signs are kept (no mean subtraction) and the clip holds.
    assert np.all(np.sign(scaled) == np.sign(rewards[0]))
    assert float(jnp.max(jnp.abs(scaler.scale(jnp.full((2,), 1e9), 3.0)))) == 3.0


def test_training_updates_statistics_only_when_enabled():
    base = PPOConfig(env_name="Pendulum-v1", num_envs=4, num_steps=16, num_minibatches=2,
                     total_timesteps=4 * 16 * 3)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    on = jax.jit(jax.vmap(make_train(base.replace(normalize_obs=True, normalize_reward=True))))(keys)
    off = jax.jit(jax.vmap(make_train(base)))(keys)
    samples = 3 * 16 * 4
    np.testing.assert_allclose(on.train_state.obs_norm.count, samples + START_COUNT, rtol=1e-6)
    np.testing.assert_allclose(on.train_state.reward_scaler.return_stats.count, samples + START_COUNT, rtol=1e-6)
    assert on.train_state.obs_norm.mean.shape == (2, 3)
    # Pendulum's observation is (cos, sin, angular velocity): |cos|, |sin| <= 1.
    assert np.all(np.abs(on.train_state.obs_norm.mean[:, :2]) <= 1.0)
    assert np.all(on.train_state.obs_norm.var > 0)
    np.testing.assert_allclose(off.train_state.obs_norm.count, START_COUNT)
    np.testing.assert_allclose(off.train_state.reward_scaler.return_stats.count, START_COUNT)
    for name, value in on.metrics.items():
        if name not in ("episode_return", "episode_length"):
            assert np.all(np.isfinite(value)), name


def test_evaluation_needs_the_statistics_when_observations_are_normalised():
    config = PPOConfig(env_name="CartPole-v1", num_envs=4, num_steps=16, num_minibatches=2,
                       total_timesteps=64, normalize_obs=True)
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    evaluate = make_evaluate(config, num_episodes=2)
    with pytest.raises(ValueError, match="obs_norm"):
        evaluate(result.train_state.params, jax.random.PRNGKey(1))
    returns = evaluate(result.train_state.params, jax.random.PRNGKey(1), result.train_state.obs_norm)
    assert returns.shape == (2,) and np.all(returns >= 1)


class _ClipSpy:
    """Duck-types `RunningMeanStd.normalize`, recording the clip it is given."""

    def __init__(self):
        self.clips = []

    def normalize(self, obs, clip):
        self.clips.append(clip)
        return obs


def test_evaluation_clips_observations_as_the_run_did():
    # A run that swept obs_clip through HyperParams evaluates with its own value.
    config = PPOConfig(env_name="CartPole-v1", num_envs=4, num_steps=16, num_minibatches=2,
                       total_timesteps=64, normalize_obs=True, obs_clip=10.0)
    train = make_train(config)
    params = jax.jit(train.init)(jax.random.PRNGKey(0)).params
    evaluate = make_evaluate(config, num_episodes=2)
    default, swept = _ClipSpy(), _ClipSpy()
    evaluate(params, jax.random.PRNGKey(1), default)
    evaluate(params, jax.random.PRNGKey(1), swept, obs_clip=2.5)
    assert set(default.clips) == {10.0} and set(swept.clips) == {2.5}


def test_scaled_rewards_are_clipped_on_both_sides():
    scaler = RewardScaler.create(3)
    np.testing.assert_array_equal(scaler.scale(jnp.array([-1e9, 2.0, 1e9]), 3.0), [-3.0, 2.0, 3.0])
