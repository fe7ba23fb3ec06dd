"""Evaluation against plain loops: greedy episodes played to their first end,
and the final-return summary of a run's metrics."""

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.envs import VecEnv, make_env
from purejaxppo.evaluation import final_return, make_evaluate

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


def _loop_returns(config, params, rng, num_episodes):
    """`make_evaluate`'s returns by a host loop: the same env keys, the
    policy's mode, each env's rewards summed until its first done."""
    train = make_train(config)
    net = train.network
    env, env_params, spec = make_env(config.env_name, config.env_kwargs, config.env_params)
    vec = VecEnv(env, env_params, spec, num_episodes)
    max_steps = int(env_params.max_steps_in_episode)
    reset_key, rng = jax.random.split(rng)
    obs, state = vec.reset(reset_key)
    step = jax.jit(vec.step)
    policy = jax.jit(lambda p, o: net.apply(p, o, method=net.policy).mode())
    returns, active, after_end = np.zeros(num_episodes), np.ones(num_episodes, bool), 0
    for key in jax.random.split(rng, max_steps):
        _, env_key = jax.random.split(key)
        out = step(env_key, state, policy(params, obs))
        reward, done = np.asarray(out.reward), np.asarray(out.terminated | out.truncated)
        after_end += int((~active).sum())
        returns[active] += reward[active]
        active &= ~done
        obs, state = out.obs, out.env_state
    return returns, after_end


@pytest.mark.parametrize("limit", [200, 5])
def test_greedy_episodes_are_played_to_their_first_end(limit):
    """With a 200-step limit the untrained greedy policy lets the pole fall
    within a few dozen steps and the envs play on (reset), whose rewards
    must not count; with a 5-step limit every episode is truncated at
    exactly 5 (the last step's reward counted)."""
    config = PPOConfig(hidden_sizes=(16,), env_params={"max_steps_in_episode": limit})
    params = make_train(config).random_params(jax.random.PRNGKey(3))
    rng = jax.random.PRNGKey(4)
    got = np.asarray(jax.jit(make_evaluate(config, num_episodes=6))(params, rng))
    want, after_end = _loop_returns(config, params, rng, 6)
    np.testing.assert_array_equal(got, want)
    if limit == 5:
        np.testing.assert_array_equal(got, 5.0)
    else:
        assert after_end > 0 and (got < limit).all()  # every episode ended early, and play went on
    # Sampled actions (deterministic=False) play other episodes: the flag is honoured.
    sampled = np.asarray(jax.jit(make_evaluate(config, num_episodes=6, deterministic=False))(params, rng))
    if limit == 200:
        assert not np.array_equal(sampled, got)


def test_final_return_is_the_mean_of_the_last_window_ignoring_nan():
    nan = np.nan
    returns = np.array([[nan, 1.0, 2.0, 3.0, 4.0, nan, 8.0],
                        [5.0, 6.0, 7.0, nan, nan, nan, nan],
                        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    got = final_return({"episode_return": returns}, window=3)
    np.testing.assert_array_equal(got[[0, 2]], [6.0, 1.0])  # (4 + 8) / 2, NaN left out
    assert np.isnan(got[1])  # no episode finished in the window
    assert final_return({"episode_return": returns[2]}, window=3) == 1.0
    assert final_return({"episode_return": returns[0]}, window=100) == pytest.approx(18 / 5)
