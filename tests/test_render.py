"""Watching a trained policy: played returns against `make_evaluate`, the
recorded episode against those returns, GIFs drawn by gymnax's renderer with
one frame per step, and a run directory's policy evaluated."""

import json
import sys

import jax
import numpy as np
import pytest
from PIL import Image, ImageSequence

from purejaxppo import PPOConfig, make_train
from purejaxppo.checkpoint import config_to_json, restore_policy, train_with_checkpoints
from purejaxppo.envs import make_env
from purejaxppo.evaluation import make_evaluate
from purejaxppo.render import (
    DRAWABLE,
    check_drawable,
    evaluate_run,
    play,
    record_episode,
    render_gif,
)

CATCH_LENGTH = 9  # Catch-bsuite: the ball falls 9 rows, every episode


def _tiny(env_name, **overrides):
    return PPOConfig(env_name=env_name, total_timesteps=4 * 16 * 2, num_envs=4, num_steps=16,
                     hidden_sizes=(8,), **overrides)


def _trained_run(directory, config):
    """A run directory: a 2-update training's checkpoints and its config.json."""
    train_with_checkpoints(make_train(config), jax.random.PRNGKey(0), directory / "checkpoints",
                           every=2)
    (directory / "config.json").write_text(json.dumps(
        {"config": config_to_json(config), "args": {}, "argv": []}))
    return directory


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """CartPole with observation normalisation, so the statistics matter."""
    return _trained_run(tmp_path_factory.mktemp("cartpole"), _tiny("CartPole-v1", normalize_obs=True))


@pytest.fixture(scope="module")
def catch_run(tmp_path_factory):
    """Catch: drawn by gymnax without pygame."""
    return _trained_run(tmp_path_factory.mktemp("catch"), _tiny("Catch-bsuite"))


def _frames(path):
    with Image.open(path) as image:
        return sum(1 for _ in ImageSequence.Iterator(image))


def test_play_returns_make_evaluates_returns(cartpole_run):
    policy = restore_policy(cartpole_run / "checkpoints")
    config, key = policy.config, jax.random.PRNGKey(7)
    assert float(policy.obs_norm.count) > 0  # trained statistics, acted through
    returns = play(config, policy.params, policy.obs_norm, key, 5)
    assert returns.shape == (5,) and returns.dtype == np.float32
    want = jax.jit(make_evaluate(config, 5))(policy.params, key, policy.obs_norm)
    np.testing.assert_array_equal(returns, np.asarray(want))


@pytest.mark.parametrize("greedy", [True, False])
def test_record_episode_plays_the_episode_play_plays(cartpole_run, greedy):
    """The same keys as one env of `play`: the same actions and rewards
    (CartPole: 1 per step), so its length is that episode's return."""
    policy = restore_policy(cartpole_run / "checkpoints")
    config, key = policy.config, jax.random.PRNGKey(7)
    one = play(config, policy.params, policy.obs_norm, key, 1, greedy=greedy)
    states, rewards = record_episode(config, policy.params, policy.obs_norm, key, greedy=greedy)
    assert len(states) == len(rewards) == int(one[0])
    np.testing.assert_array_equal(rewards, 1.0)
    # The first state is the reset state; each next one the one step later.
    np.testing.assert_array_equal([int(s.time) for s in states], np.arange(len(states)))


def test_play_needs_the_statistics_of_a_normalising_run_and_positive_episodes(cartpole_run):
    policy = restore_policy(cartpole_run / "checkpoints")
    with pytest.raises(ValueError, match=r"config.normalize_obs is set: pass the run's observation"):
        play(policy.config, policy.params, None, jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match=r"episodes=0; allowed: an int >= 1"):
        play(policy.config, policy.params, policy.obs_norm, jax.random.PRNGKey(0), 0)


def test_a_gif_has_one_frame_per_step_of_the_episode(catch_run, tmp_path):
    policy = restore_policy(catch_run / "checkpoints")
    key = jax.random.PRNGKey(3)
    states, rewards = record_episode(policy.config, policy.params, None, key)
    assert len(states) == len(rewards) == CATCH_LENGTH
    assert rewards[:-1].tolist() == [0.0] * (CATCH_LENGTH - 1) and rewards[-1] in (-1.0, 1.0)
    path = tmp_path / "new" / "catch.gif"  # directory made
    frames = render_gif(policy.config, policy.params, None, path, key)
    assert frames == CATCH_LENGTH == _frames(path)
    with Image.open(path) as image:
        assert image.format == "GIF" and image.size[0] > 100 and image.size[1] > 100


def test_max_steps_caps_the_frames(catch_run, tmp_path):
    policy = restore_policy(catch_run / "checkpoints")
    key = jax.random.PRNGKey(3)
    full_states, full_rewards = record_episode(policy.config, policy.params, None, key)
    states, rewards = record_episode(policy.config, policy.params, None, key, max_steps=4)
    assert len(states) == 4
    np.testing.assert_array_equal(rewards, full_rewards[:4])  # the same episode's first steps
    jax.tree.map(np.testing.assert_array_equal, states[3], full_states[3])
    assert render_gif(policy.config, policy.params, None, tmp_path / "short.gif", key,
                      max_steps=4) == 4 == _frames(tmp_path / "short.gif")
    with pytest.raises(ValueError, match=r"max_steps=0; allowed: an int >= 1"):
        record_episode(policy.config, policy.params, None, key, max_steps=0)


def test_an_env_gymnax_cannot_draw_is_a_one_line_error(tmp_path):
    config, params = _tiny("DeepSea-bsuite"), None  # refused before params are used
    with pytest.raises(ValueError, match=r"env_name='DeepSea-bsuite' cannot be drawn by gymnax's "
                       r"renderer; allowed: \['Acrobot-v1', .*'Catch-bsuite'"):
        render_gif(config, params, None, tmp_path / "x.gif", jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"path='.*x.png'; allowed: a file name ending in .gif"):
        render_gif(config, params, None, tmp_path / "x.png", jax.random.PRNGKey(0))
    assert not list(tmp_path.iterdir())


def test_every_listed_env_is_one_gymnax_draws():
    """DRAWABLE names envs by gymnax's env.name; each is a registered id."""
    for name in DRAWABLE:
        env, _, _ = make_env(name)
        assert env.name == name


def test_classic_control_without_pygame_says_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame fails
    with pytest.raises(ImportError, match=r"drawing CartPole-v1 needs pygame .*: pip install pygame"):
        check_drawable("CartPole-v1")


def test_a_cartpole_gif_where_pygame_is_installed(cartpole_run, tmp_path):
    pytest.importorskip("pygame")
    policy = restore_policy(cartpole_run / "checkpoints")
    key = jax.random.PRNGKey(1)
    states, _ = record_episode(policy.config, policy.params, policy.obs_norm, key)
    path = tmp_path / "cartpole.gif"
    assert render_gif(policy.config, policy.params, policy.obs_norm, path, key) == len(states)
    assert _frames(path) == len(states)


def test_evaluate_run_summarises_the_returns_of_the_runs_policy(cartpole_run):
    got = evaluate_run(cartpole_run, episodes=5, key_seed=2)
    returns = np.asarray(got["returns"])
    assert returns.shape == (5,)
    assert got["mean"] == pytest.approx(returns.mean()) and got["std"] == pytest.approx(returns.std())
    assert (got["env_name"], got["seed_index"], got["updates_done"], got["greedy"]) == (
        "CartPole-v1", 0, 2, True)
    policy = restore_policy(cartpole_run / "checkpoints")
    play_key, _ = jax.random.split(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(returns, play(policy.config, policy.params, policy.obs_norm,
                                                play_key, 5))
    assert "gif" not in got


def test_evaluate_run_draws_a_gif(catch_run, tmp_path):
    got = evaluate_run(catch_run, episodes=3, gif=tmp_path / "eval.gif")
    assert got["gif"] == str(tmp_path / "eval.gif")
    assert got["frames"] == CATCH_LENGTH == _frames(tmp_path / "eval.gif")
    assert set(got["returns"]) <= {-1.0, 1.0} and got["greedy"] is True


def test_evaluate_run_names_a_directory_with_no_checkpoints_and_a_seed_out_of_range(
        tmp_path, cartpole_run):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/checkpoints does not exist: is "
                       rf"{tmp_path} a run directory\?"):
        evaluate_run(tmp_path)
    with pytest.raises(ValueError, match=r"must be an int in \[0, 1\) .* got 5"):
        evaluate_run(cartpole_run, seed_index=5)
