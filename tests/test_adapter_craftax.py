"""The craftax adapter (purejaxppo/adapters/craftax.py) on purejaxppo's env protocol.

Craftax compiles slowly (its world generation and step are large graphs), so
the file compiles each piece once: the protocol check, one scan of gymnax's
``step`` that checks termination against truncation, and one tiny training
run.
"""

import numpy as np
import pytest

pytest.importorskip("craftax", reason="the craftax extra is not installed: pip install 'purejaxppo[craftax]'")
pytestmark = pytest.mark.usefixtures("quick_compiles")  # large env graphs: compile-bound

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from purejaxppo import PPOConfig, make_train  # noqa: E402
from purejaxppo.adapters import craftax as adapter  # noqa: E402
from purejaxppo.envs import check_env, load_env  # noqa: E402

ENV = "Craftax-Classic-Symbolic-v1"
HEALTH = 7 * 9 * 21 + 12  # the health feature of the Classic symbolic observation (health / 10)


@pytest.fixture(scope="module")
def classic():
    return load_env(f"craftax/{ENV}")


def test_spaces_params_and_check_env(classic):
    env, params = classic
    assert params.max_steps_in_episode == 10_000  # craftax Classic's max_timesteps
    assert env.observation_space(params).shape == (1345,)
    assert env.action_space(params).n == 17
    assert len(adapter.achievement_names(ENV)) == 22
    assert adapter.achievement_names(ENV)[0] == "collect_wood"
    assert check_env(env, params.replace(max_steps_in_episode=3), num_envs=2, num_steps=4) == []


def test_termination_truncation_and_final_observation(classic):
    """Three envs for 3 NOOP steps: A with a 3-step limit (truncated at
    step 3), B the same but at zero health (dies at step 1: terminated), C
    as A with craftax's own limit (goes on, and shows what A ended in)."""
    from craftax.craftax_classic.envs.craftax_state import EnvParams

    env, params = classic
    steps = 3
    limits = jnp.array([steps, steps, params.max_steps_in_episode])
    batched = params.replace(max_steps_in_episode=limits)
    axes = jax.tree.map(lambda _: None, params).replace(max_steps_in_episode=0)
    key = jax.random.PRNGKey(0)
    reset_keys = jnp.stack([key, jax.random.PRNGKey(1), key])
    own_limit = EnvParams(max_timesteps=steps)

    def run(reset_keys, params):
        obs, state = jax.vmap(env.reset, in_axes=(0, axes))(reset_keys, params)
        # the chunked world generation gives craftax's own worlds
        own_obs, own_state = jax.vmap(env.inner.reset_env, in_axes=(0, None))(
            reset_keys, env.craftax_params(params))
        same = jnp.array([jnp.array_equal(a, b) for a, b in
                          zip(jax.tree.leaves((obs, state)), jax.tree.leaves((own_obs, own_state)))])
        state = state.replace(player_health=state.player_health.at[1].set(0))
        def body(state, key):
            keys = jnp.stack([key, jax.random.fold_in(key, 1), key])
            obs, state, reward, term, trunc, info = jax.vmap(env.step, in_axes=(0, 0, None, axes))(
                keys, state, jnp.int32(0), params)
            craftax_done = jax.vmap(env.inner.is_terminal, in_axes=(0, None))(state, own_limit)
            return state, (obs, info["final_observation"], term, trunc, state.timestep, craftax_done,
                           info["achievements"])
        _, out = jax.lax.scan(body, state, jax.random.split(jax.random.PRNGKey(2), steps))
        return obs, same, out

    reset_obs, same, (obs, final, term, trunc, timestep, craftax_done, achieved) = jax.device_get(
        jax.jit(run)(reset_keys, batched))
    assert same.all()
    assert reset_obs[:, HEALTH] == pytest.approx(0.9, abs=1e-3)
    # B dies at its first step: terminated, not truncated; it ended at zero health
    # and is reset (full health, step counter 0).
    assert term[:, 1].tolist() == [True, False, False]
    assert not trunc[:, 1].any()
    assert final[0, 1, HEALTH] == 0.0 and obs[0, 1, HEALTH] == pytest.approx(0.9, abs=1e-3)
    assert timestep[:, 1].tolist() == [0, 1, 2]
    # A is truncated at its limit, never terminated; craftax's own time limit
    # ends C's (unreset) episode at the same step, and A's final observation
    # is C's observation there; A is reset, C goes on.
    assert trunc[:, 0].tolist() == [False, False, True] and not term[:, 0].any()
    assert craftax_done[:, 2].tolist() == [False, False, True]
    assert not (term[:, 2] | trunc[:, 2]).any()
    np.testing.assert_array_equal(final[2, 0], obs[2, 2])
    np.testing.assert_array_equal(final[:2, 0], obs[:2, 0])  # not ended: final is obs
    assert timestep[:, 0].tolist() == [1, 2, 0] and timestep[:, 2].tolist() == [1, 2, 3]
    assert not np.array_equal(obs[2, 0], obs[2, 2])
    assert achieved.shape == (steps, 3, 22) and achieved.dtype == bool


def test_unknown_id_and_static_params():
    with pytest.raises(ValueError, match="Craftax-Nope-v1.*Craftax-Classic-Symbolic-v1"):
        load_env("craftax/Craftax-Nope-v1")
    with pytest.raises(ValueError, match="no_such_field"):
        load_env(f"craftax/{ENV}", {"no_such_field": 1})
    env, _ = adapter.make(ENV, map_size=(32, 32))
    assert env.inner.static_env_params.map_size == (32, 32)


def test_tiny_training_run():
    config = PPOConfig(env_name=f"craftax/{ENV}", num_envs=4, num_steps=8, num_minibatches=2,
                       update_epochs=1, total_timesteps=4 * 8 * 2, hidden_sizes=(16,),
                       env_params={"max_steps_in_episode": 5})
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    metrics = jax.device_get(result.metrics)
    assert metrics["loss"].shape == (2,) and np.isfinite(metrics["loss"]).all()
    # each env ends its first episode by its 5-step limit, within the first update's 8 steps
    assert np.isfinite(metrics["episode_return"]).all()
    assert 0 < metrics["episode_length"][0] <= 5
