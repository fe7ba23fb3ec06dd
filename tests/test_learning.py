"""It learns: CartPole to the 500 cap with defaults; Pendulum clearly improves.

These train for real (tens of seconds each on 2 CPU cores); seeds are vmapped
so each test compiles once.
"""

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.evaluation import final_return, make_evaluate

pytestmark = pytest.mark.slow


def test_cartpole_defaults_reach_475_within_5e5_steps():
    config = PPOConfig(env_name="CartPole-v1", total_timesteps=500_000)
    keys = jax.random.split(jax.random.PRNGKey(42), 4)  # 8 seeds: examples/cartpole_seeds.py
    result = jax.jit(jax.vmap(make_train(config)))(keys)
    finals = final_return(result.metrics)
    assert np.median(finals) >= 475, finals
    assert np.all(np.nanmax(np.asarray(result.metrics["episode_return"]), axis=1) >= 475), finals
    greedy = jax.jit(jax.vmap(make_evaluate(config, num_episodes=8)))(
        result.train_state.params, jax.random.split(jax.random.PRNGKey(7), 4)
    )
    assert np.median(np.asarray(greedy).mean(axis=1)) >= 475


def test_pendulum_clearly_improves():
    config = PPOConfig(
        env_name="Pendulum-v1", total_timesteps=200_000, num_envs=16, num_steps=128,
        update_epochs=10, num_minibatches=16, lr=1e-3, gamma=0.95, ent_coef=0.0, clip_vloss=False,
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    result = jax.jit(jax.vmap(make_train(config)))(keys)
    returns = np.asarray(result.metrics["episode_return"])
    start = np.nanmean(returns[:, :5], axis=1)
    finals = final_return(result.metrics)
    assert np.all(start < -1000), start  # a random policy: about -1200
    assert np.all(finals > start + 500), (start, finals)
