"""The Brax adapter (purejaxppo.adapters.brax): protocol, time limit vs
termination against Brax's own EpisodeWrapper, and a tiny training run.

Brax physics compiles slowly on CPU: the physics tests use the inverted
pendulum on the "spring" pipeline (the quickest to compile) with short
episodes, in XLA's quick compile mode, and the training run uses Brax's
physics-free "fast" test env.
"""

import sys

import pytest

pytest.importorskip("brax", reason="the brax extra is not installed: pip install 'purejaxppo[brax]'")

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo import PPOConfig, make_train
from purejaxppo.envs import check_env, load_env

BACKEND = (("backend", "spring"),)
LIMIT = 10  # the time limit (steps) of the short episodes used here

pytestmark = pytest.mark.usefixtures("quick_compiles")


@pytest.fixture(scope="module")
def pendulum():
    env, params = load_env("brax/inverted_pendulum", dict(BACKEND))
    return env, params.replace(max_steps_in_episode=LIMIT)


def test_spaces_and_defaults(pendulum):
    env, params = pendulum
    assert env.default_params.max_steps_in_episode == 1000  # Brax's training episode length
    obs_space, act_space = env.observation_space(params), env.action_space(params)
    assert tuple(obs_space.shape) == (4,)  # cart position, pole angle, and their velocities
    assert tuple(act_space.shape) == (1,)
    assert float(act_space.low) == -1.0 and float(act_space.high) == 1.0
    assert env.name == "brax/inverted_pendulum"


def test_check_env(pendulum):
    env, params = pendulum
    assert check_env(env, params, num_envs=2, num_steps=3 * LIMIT) == []


def test_dict_observations_are_flattened():
    # Brax's "fast" test env with dict observations: the state (2,) and two
    # 4x4x3 images, concatenated in key order
    env, params = load_env("brax/fast", {"obs_mode": "dict_pixels_state"})
    assert tuple(env.observation_space(params).shape) == (2 + 2 * 48,)
    assert check_env(env, params.replace(max_steps_in_episode=3), num_envs=2, num_steps=4) == []


def test_termination_and_truncation_match_brax(pendulum):
    """Both the adapter and Brax's EpisodeWrapper (same reset key, same
    actions, episode_length = the adapter's limit) run from one reset until
    Brax's episode ends: a still cart keeps the pole up until the time limit
    (Brax: done with truncation 1; here: truncated, not terminated), a cart
    pushed hard one way drops it first (Brax: done with truncation 0; here:
    terminated). Observations, rewards and the final observation agree."""
    from brax.envs.wrappers.training import EpisodeWrapper

    env, params = pendulum
    brax_env = EpisodeWrapper(env.brax_env, LIMIT, 1)

    @jax.jit
    @jax.vmap
    def both(actions):
        key = jax.random.PRNGKey(3)
        _, state = env.reset(key, params)

        def our_step(s, a):
            out = env.step(key, s, a, params)
            return out[1], out

        ours = jax.lax.scan(our_step, state, actions)[1]
        theirs = jax.lax.scan(lambda s, a: (brax_env.step(s, a),) * 2, brax_env.reset(key), actions)[1]
        return ours, (theirs.obs, theirs.reward, theirs.done, theirs.info["truncation"])

    still = jnp.zeros((LIMIT + 2, 1))
    push = jnp.full((LIMIT + 2, 1), 1.0)
    (obs, _, reward, terminated, truncated, info), (b_obs, b_reward, b_done, b_trunc) = jax.tree.map(
        np.asarray, both(jnp.stack([still, push])))

    for run, (label, kind) in enumerate((("still", "truncated"), ("push", "terminated"))):
        ends = np.flatnonzero(b_done[run])
        assert ends.size, f"{label}: Brax's episode did not end in {LIMIT + 2} steps"
        end = ends[0]
        assert (end == LIMIT - 1) == (kind == "truncated"), (label, end)
        np.testing.assert_allclose(info["final_observation"][run, : end + 1], b_obs[run, : end + 1],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(obs[run, :end], b_obs[run, :end], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(reward[run, : end + 1], b_reward[run, : end + 1])
        assert not terminated[run, :end].any() and not truncated[run, :end].any()
        assert terminated[run, end] == (kind == "terminated") == (b_trunc[run, end] == 0)
        assert truncated[run, end] == (kind == "truncated") == (b_trunc[run, end] == 1)
        # the step after the end starts a new episode: its observation is a reset one
        assert np.abs(obs[run, end]).max() <= 0.01 + 1e-6
        assert not np.allclose(obs[run, end], info["final_observation"][run, end])


def test_unknown_id_and_missing_extra(monkeypatch):
    with pytest.raises(ValueError, match=r"no environment 'invertedpendulum'.*inverted_pendulum"):
        load_env("brax/invertedpendulum")
    monkeypatch.setitem(sys.modules, "brax", None)  # as if brax were not installed
    with pytest.raises(ImportError, match=r"pip install 'purejaxppo\[brax\]'"):
        load_env("brax/inverted_pendulum")


def test_tiny_training_run():
    # Brax's "fast" test env (a point pushed along a line, no physics
    # pipeline) compiles in seconds; the pendulum's physics is checked above
    config = PPOConfig(env_name="brax/fast", env_params=(("max_steps_in_episode", LIMIT),),
                       num_envs=4, num_steps=8, total_timesteps=2 * 4 * 8, update_epochs=1,
                       num_minibatches=2, hidden_sizes=(16, 16), normalize_obs=True)
    metrics = jax.jit(make_train(config))(jax.random.PRNGKey(0)).metrics
    for name in ("loss", "policy_loss", "value_loss", "grad_norm"):
        assert metrics[name].shape == (2,)
        assert np.all(np.isfinite(np.asarray(metrics[name]))), name
    # no termination, so each env's 16 steps hold one time limit (at step LIMIT)
    np.testing.assert_array_equal(np.asarray(metrics["episodes_finished"]), [0, 4])
    assert float(np.asarray(metrics["episode_length"])[1]) == LIMIT
