"""The xminigrid adapter (purejaxppo.adapters.xminigrid): protocol,
termination vs truncation and final observations against xminigrid's own
step, ids, and a tiny training run."""

import sys

import pytest

pytest.importorskip("xminigrid", reason="the xminigrid extra is not installed: pip install 'purejaxppo[xminigrid]'")
pytestmark = pytest.mark.usefixtures("quick_compiles")  # large env graphs: compile-bound

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import PPOConfig, make_train
from purejaxppo.adapters import xminigrid as adapter
from purejaxppo.envs import check_env

# Empty-6x6: the agent starts at (1, 1) facing right, the goal is at (4, 4).
# Actions: 0 forward, 1 turn right, 2 turn left.
TO_GOAL = [0, 0, 0, 1, 0, 0, 0]  # reaches the goal on the 7th step (a true end)
LIMIT = 8  # xminigrid's time limit for these tests


@pytest.fixture(scope="module")
def empty():
    return adapter.make("MiniGrid-Empty-6x6", max_steps=LIMIT)


def test_check_env(empty):
    env, params = empty
    assert params.max_steps_in_episode == LIMIT
    assert env.observation_space(params).shape == (7 * 7 * 2,)
    # 12 random steps with a 4-step limit: resets happen inside the check
    assert check_env(env, params.replace(max_steps_in_episode=4), num_envs=4, num_steps=12) == []


def test_termination_truncation_and_final_observation_match_xminigrid(empty):
    """The adapter under gymnax's step and xminigrid's own step (reset one
    call after the end, its DmEnvAutoResetWrapper), with the same actions: a
    time-limit end (8 turns), then the goal."""
    from xminigrid.wrappers import DmEnvAutoResetWrapper

    env, params = empty
    suite = DmEnvAutoResetWrapper(env.suite_env)
    actions = [2] * LIMIT + TO_GOAL + [2]
    ours_step = jax.jit(env.step)
    suite_step = jax.jit(suite.step)
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, params)
    ts = jax.jit(suite.reset)(params.suite, key)
    np.testing.assert_array_equal(obs, np.ravel(ts.observation))
    seen, rewards = [], []
    short_params = params.replace(max_steps_in_episode=2)  # traced: the same compile
    _, short_state = env.reset(key, short_params)
    for t, action in enumerate(actions):
        key, sub = jax.random.split(key)
        action = jnp.int32(action)
        obs, state, reward, terminated, truncated, info = ours_step(sub, state, action, params)
        ts = suite_step(params.suite, ts, action)
        assert bool(terminated) == bool(ts.last() & (ts.discount == 0)), t
        assert bool(truncated) == bool(ts.last() & (ts.discount == 1)), t
        np.testing.assert_allclose(float(reward), float(ts.reward), rtol=1e-6)
        np.testing.assert_array_equal(info["final_observation"], np.ravel(ts.observation))
        seen.append((bool(terminated), bool(truncated)))
        rewards.append(float(reward))
        if ts.last():
            ts = suite_step(params.suite, ts, action)  # the reset, one call later
            assert bool(ts.first())
        np.testing.assert_array_equal(obs, np.ravel(ts.observation))
        assert int(state.time) == int(ts.state.step_num)
        if t < 2:  # params cut episodes earlier than xminigrid's own limit
            short = ours_step(sub, short_state, action, short_params)
            short_state = short[1]
            assert bool(short[4]) == (t == 1) and not bool(short[3])
    assert seen[LIMIT - 1] == (False, True)  # the time limit: truncated only
    assert seen[LIMIT + len(TO_GOAL) - 1] == (True, False)  # the goal: terminated
    assert sum(map(any, seen)) == 2
    # xminigrid's (MiniGrid's) reward at the goal, 0 elsewhere
    assert rewards[LIMIT + len(TO_GOAL) - 1] == pytest.approx(1 - 0.9 * len(TO_GOAL) / LIMIT)
    assert sum(rewards) == rewards[LIMIT + len(TO_GOAL) - 1]


def test_unknown_id_parameter_and_missing_extra(monkeypatch):
    with pytest.raises(ValueError, match=r"no env 'MiniGrid-Empty-7x7'.*MiniGrid-Empty-8x8"):
        adapter.make("MiniGrid-Empty-7x7")
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['size'\]"):
        adapter.make("MiniGrid-Empty-6x6", size=6)
    monkeypatch.setitem(sys.modules, "xminigrid", None)
    with pytest.raises(ImportError, match=r"pip install 'purejaxppo\[xminigrid\]'"):
        adapter.make("MiniGrid-Empty-6x6")


def test_tiny_training_run_gives_finite_losses():
    config = PPOConfig(env_name="xminigrid/MiniGrid-Empty-6x6", env_kwargs=(("max_steps", LIMIT),),
                       num_envs=4, num_steps=8, total_timesteps=64, update_epochs=1,
                       num_minibatches=1, hidden_sizes=(16, 16))
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    for name in ("policy_loss", "value_loss", "entropy"):
        assert result.metrics[name].shape == (2,)
        assert np.isfinite(result.metrics[name]).all(), name
    assert result.train_state.env.obs.shape == (4, 7 * 7 * 2)
