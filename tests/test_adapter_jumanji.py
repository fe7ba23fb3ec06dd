"""The Jumanji adapter (purejaxppo.adapters.jumanji): protocol, termination
vs truncation against Jumanji's own step, observation layout, actions, and a
tiny training run."""

import pytest

pytest.importorskip("jumanji", reason="the jumanji extra is not installed: pip install 'purejaxppo[jumanji]'")
pytestmark = pytest.mark.usefixtures("quick_compiles")  # large env graphs: compile-bound

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import PPOConfig, make_train
from purejaxppo.adapters import jumanji as adapter
from purejaxppo.envs import check_env

# A 6x6 Snake with a 6-step time limit: random actions end some episodes by
# a true end (the snake hits a wall or turns back on itself) and others by
# the time limit, within a few steps.
SNAKE = {"num_rows": 6, "num_cols": 6, "time_limit": 6}
CELLS = 6 * 6 * 5  # Snake's grid: (rows, cols, 5) feature maps


@pytest.fixture(scope="module")
def snake():
    return adapter.make("Snake-v1", **SNAKE)


@pytest.fixture(scope="module")
def side_by_side(snake):
    """The adapter and Jumanji's own Snake stepped with the same random
    actions from the same reset key (64 envs x 9 steps), under the default
    params and under params that cut episodes at 3 steps: one compile."""
    env, params = snake
    suite = env.suite_env

    def run(key, params):
        reset_key, key = jax.random.split(key)
        _, state = env.reset(reset_key, params)
        inner, _ = suite.reset(reset_key)

        def step(carry, key):
            state, inner, ended = carry
            act_key, step_key = jax.random.split(key)
            action = jax.random.randint(act_key, (), 0, 4)
            obs, state, reward, terminated, truncated, info = env.step(step_key, state, action, params)
            inner, ts = suite.step(inner, action)
            out = {"before_end": ~ended, "obs": obs, "final": info["final_observation"],
                   "reward": reward, "terminated": terminated, "truncated": truncated,
                   "time": state.time, "grid": ts.observation.grid,
                   "step_count": ts.observation.step_count, "mask": ts.observation.action_mask,
                   "suite_reward": ts.reward, "suite_last": ts.last(),
                   "suite_discount": ts.discount}
            return (state, inner, ended | ts.last()), out

        _, out = jax.lax.scan(step, (state, inner, jnp.zeros((), bool)), jax.random.split(key, 9))
        return out

    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    runner = jax.jit(jax.vmap(run, in_axes=(0, None)))
    out_default = jax.tree.map(np.asarray, runner(keys, params))
    out_cut = jax.tree.map(np.asarray, runner(keys, params.replace(max_steps_in_episode=3)))
    return out_default, out_cut


def test_check_env(snake):
    env, params = snake
    assert params.max_steps_in_episode == SNAKE["time_limit"]
    assert check_env(env, params, num_steps=8) == []


def test_observation_is_jumanjis_flattened(side_by_side):
    out, _ = side_by_side
    live = out["before_end"]
    final = out["final"][live]
    assert final.shape[-1] == CELLS + 1 + 4
    np.testing.assert_array_equal(final[:, :CELLS], out["grid"][live].reshape(-1, CELLS))
    np.testing.assert_array_equal(final[:, CELLS], out["step_count"][live])
    np.testing.assert_array_equal(final[:, CELLS + 1:], out["mask"][live].astype(np.float32))
    np.testing.assert_array_equal(out["reward"][live], out["suite_reward"][live])


def test_termination_and_truncation_map_jumanjis_time_steps(side_by_side):
    out, _ = side_by_side
    live = out["before_end"]
    steps = np.arange(1, out["time"].shape[1] + 1)[None, :]
    last, discount = out["suite_last"], out["suite_discount"]
    # Jumanji's Snake ends with discount 0 both at a true end and at its
    # time limit; the time limit is a truncation.
    true_end = last & (discount == 0) & (steps < SNAKE["time_limit"])
    np.testing.assert_array_equal(out["terminated"][live], true_end[live])
    np.testing.assert_array_equal(out["truncated"][live], (last & ~true_end)[live])
    assert (out["terminated"] & live).sum() > 0
    assert (out["truncated"] & live).sum() > 0
    assert np.all(np.broadcast_to(steps, live.shape)[live & out["truncated"]] == SNAKE["time_limit"])
    # where the episode ended, obs is the next episode's first observation
    # and final_observation the one it ended in; elsewhere they are one.
    done = out["terminated"] | out["truncated"]
    assert np.all(out["time"][done] == 0)
    assert np.all(out["obs"][done][:, CELLS] == 0)  # the reset's step_count
    assert np.all(out["final"][done & live][:, CELLS] > 0)
    np.testing.assert_array_equal(out["obs"][~done], out["final"][~done])


def test_max_steps_in_episode_truncates_before_jumanji_ends(side_by_side):
    _, out = side_by_side
    live = out["before_end"]
    first = live[:, :3]  # steps 1-3 of the first episode
    cut = first & ~out["suite_last"][:, :3]
    # the params' limit (3 < Jumanji's 6) truncates at step 3 where Jumanji goes on
    assert np.all(out["truncated"][:, 2][cut[:, 2]])
    assert not np.any(out["truncated"][:, :2][cut[:, :2]])
    assert not np.any(out["terminated"][:, 2][cut[:, 2]])
    assert cut[:, 2].sum() > 0
    assert np.all(out["final"][:, 2][first[:, 2]][:, CELLS] == 3)


def test_unknown_id_and_keyword():
    with pytest.raises(ValueError, match=r"'Snek-v1'.*Allowed: .*Snake-v1"):
        adapter.make("Snek-v1")
    with pytest.raises(ValueError, match=r"\['colour'\].*allowed: num_cols, num_rows, time_limit"):
        adapter.make("Snake-v1", colour=1)


def test_generator_keywords():
    env, params = adapter.make("Maze-v0", num_rows=5, num_cols=5)
    assert (env.suite_env.num_rows, env.suite_env.num_cols) == (5, 5)
    assert params.max_steps_in_episode == 25  # Maze's default time limit: rows * cols
    # agent and target (row, col), walls, action mask, step count
    assert env.observation_space(params).shape == (2 + 2 + 25 + 4 + 1,)
    with pytest.raises(ValueError, match=r"num_rows \(for RandomGenerator\)"):
        adapter.make("Maze-v0", rows=5)


def test_multi_discrete_actions_flatten_row_major():
    env, params = adapter.make("Cleaner-v0")  # three agents, 4 moves each
    assert env.action_space(params).n == 64
    joint = np.asarray(jax.vmap(env.decode_action)(jnp.arange(64)))
    np.testing.assert_array_equal(joint, np.stack(np.unravel_index(np.arange(64), (4, 4, 4)), -1))
    assert joint.dtype == np.dtype(env.suite_env.action_spec.dtype)


def test_unsupported_action_specs():
    with pytest.raises(ValueError, match=r"Connector-v3 .*9,765,625 joint actions"):
        adapter.make("Connector-v3")  # 10 agents x 5 moves
    with pytest.raises(ValueError, match=r"SearchAndRescue-v0 has a BoundedArray action spec"):
        adapter.make("SearchAndRescue-v0")  # continuous moves


def test_tiny_training_run():
    config = PPOConfig(env_name="jumanji/Snake-v1", env_kwargs=SNAKE, num_envs=4, num_steps=8,
                       total_timesteps=2 * 4 * 8, update_epochs=1, num_minibatches=1,
                       hidden_sizes=(16, 16))
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    for name in ("policy_loss", "value_loss", "entropy"):
        values = np.asarray(result.metrics[name])
        assert values.shape == (2,) and np.all(np.isfinite(values)), name
    assert np.asarray(result.metrics["episodes_finished"]).sum() > 0
