"""The navix adapter (purejaxppo.adapters.navix): protocol, termination vs
truncation and final observations against navix's own step, ids, and a tiny
training run."""

import sys

import pytest

pytest.importorskip("navix", reason="the navix extra is not installed: pip install 'purejaxppo[navix]'")
pytestmark = pytest.mark.usefixtures("quick_compiles")  # large env graphs: compile-bound

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import PPOConfig, make_train
from purejaxppo.adapters import navix as adapter
from purejaxppo.envs import check_env

# Empty-5x5: the agent starts at (1, 1) facing east, the goal is at (3, 3).
# MiniGrid's actions: 0 turn left, 1 turn right, 2 forward.
TO_GOAL = [2, 2, 1, 2, 2]  # reaches the goal on the 5th step (a true end)
LIMIT = 6  # navix's time limit for these tests


@pytest.fixture(scope="module")
def empty():
    return adapter.make("Navix-Empty-5x5-v0", max_steps=LIMIT, penalty_coeff=0.9)


def test_check_env(empty):
    env, params = empty
    assert params.max_steps_in_episode == LIMIT
    assert env.observation_space(params).shape == (5 * 5 * 3,)
    # 12 random steps with a 6-step limit: resets happen inside the check
    assert check_env(env, params, num_envs=4, num_steps=12) == []


def test_termination_truncation_and_final_observation_match_navix(empty):
    """The adapter under gymnax's step and navix's own (auto-resetting) step,
    with the same actions: a time-limit end (6 turns), then the goal."""
    env, params = empty
    suite = env.nx_env
    actions = [0] * LIMIT + TO_GOAL + [0]
    ours_step = jax.jit(env.step)
    navix_step = jax.jit(suite.step)
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, params)
    ts = jax.jit(suite.reset)(key)
    np.testing.assert_array_equal(obs, np.ravel(ts.observation))
    seen, rewards = [], []
    short_params = params.replace(max_steps_in_episode=2)  # traced: the same compile
    _, short_state = env.reset(key, short_params)
    for t, action in enumerate(actions):
        key, sub = jax.random.split(key)
        action = jnp.int32(action)
        obs, state, reward, terminated, truncated, info = ours_step(sub, state, action, params)
        ts = navix_step(ts, action)
        assert bool(terminated) == bool(ts.is_termination()), t
        assert bool(truncated) == bool(ts.is_truncation()), t
        np.testing.assert_allclose(float(reward), float(ts.reward), rtol=1e-6)
        np.testing.assert_array_equal(info["final_observation"], np.ravel(ts.observation))
        seen.append((bool(terminated), bool(truncated)))
        rewards.append(float(reward))
        if ts.is_done():
            ts = navix_step(ts, action)  # navix resets one call later
            assert int(ts.t) == 0
        np.testing.assert_array_equal(obs, np.ravel(ts.observation))
        assert int(state.time) == int(ts.t)
        if t < 2:  # params cut episodes earlier than navix's own limit
            short = ours_step(sub, short_state, action, short_params)
            short_state = short[1]
            assert bool(short[4]) == (t == 1) and not bool(short[3])
    assert seen[LIMIT - 1] == (False, True)  # the time limit: truncated only
    assert seen[LIMIT + len(TO_GOAL) - 1] == (True, False)  # the goal: terminated
    assert sum(map(any, seen)) == 2
    # MiniGrid's reward at the goal (penalty_coeff=0.9), 0 elsewhere
    assert rewards[LIMIT + len(TO_GOAL) - 1] == pytest.approx(1 - 0.9 * len(TO_GOAL) / LIMIT)
    assert sum(rewards) == rewards[LIMIT + len(TO_GOAL) - 1]


def test_unknown_id_observation_and_missing_extra(monkeypatch):
    with pytest.raises(ValueError, match=r"no env 'Navix-Empty-5x6-v0'.*Navix-Empty-6x6-v0"):
        adapter.make("Navix-Empty-5x6-v0")
    with pytest.raises(ValueError, match="observation='rgb'"):
        adapter.make("Navix-Empty-5x5-v0", observation="rgb")
    monkeypatch.setitem(sys.modules, "navix", None)
    with pytest.raises(ImportError, match=r"pip install 'purejaxppo\[navix\]'"):
        adapter.make("Navix-Empty-5x5-v0")


def test_tiny_training_run_gives_finite_losses():
    config = PPOConfig(env_name="navix/Navix-Empty-5x5-v0", env_kwargs=(("max_steps", LIMIT),),
                       num_envs=4, num_steps=8, total_timesteps=64, update_epochs=1,
                       num_minibatches=1, hidden_sizes=(16, 16))
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    for name in ("policy_loss", "value_loss", "entropy"):
        assert result.metrics[name].shape == (2,)
        assert np.isfinite(result.metrics[name]).all(), name
    assert result.train_state.env.obs.shape == (4, 5 * 5 * 3)
