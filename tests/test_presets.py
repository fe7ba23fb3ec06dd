"""Presets: every one constructs and validates, and each env family trains a few updates."""

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.cli import default_args
from purejaxppo.envs import registered_env_names
from purejaxppo.presets import BASELINES, NOT_PRESET, PRESETS, Preset, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_constructs_and_validates(name):
    preset = PRESETS[name]
    assert isinstance(preset, Preset) and preset.env_name == name
    config = preset.config()
    assert isinstance(config, PPOConfig) and config.env_name == name
    assert preset.budget == config.total_timesteps <= 10_000_000
    assert config.num_updates >= 10, "a budget of fewer than 10 updates is no preset"
    assert len(preset.source) > 20, "every preset says where its values come from"
    assert preset.benchmark_seeds >= 3
    for field, value in preset.overrides.items():
        assert getattr(config, field) == value, field


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_constructs_and_names_its_env(name):
    baseline = BASELINES[name]
    assert name not in PRESETS and baseline.env_name in PRESETS
    config = baseline.config()
    assert config.env_name == baseline.env_name and config.total_timesteps <= 10_000_000
    assert config != PRESETS[baseline.env_name].config(), "a baseline differs from its preset"
    assert len(baseline.source) > 20 and baseline.benchmark_seeds >= 3


def test_every_gymnax_env_has_a_preset_or_a_reason():
    missing = set(registered_env_names()) - set(PRESETS) - set(NOT_PRESET)
    assert not missing, f"no preset and no stated reason for {sorted(missing)}"
    assert not set(PRESETS) & set(NOT_PRESET)
    assert all(len(reason) > 20 for reason in NOT_PRESET.values())


def test_preset_overrides_and_errors():
    config = PPOConfig.preset("Pendulum-v1", lr=3e-4, num_envs=8)
    assert config.lr == 3e-4 and config.num_envs == 8
    assert config.normalize_reward == PRESETS["Pendulum-v1"].overrides["normalize_reward"]
    with pytest.raises(ValueError, match="no preset for env_name='Pendulum-v2'.*Pendulum-v1"):
        PPOConfig.preset("Pendulum-v2")
    with pytest.raises(TypeError, match="learning_rate"):
        get_preset("CartPole-v1").config(learning_rate=1e-3)
    with pytest.raises(ValueError, match="gamma must be finite and in"):
        PPOConfig.preset("Acrobot-v1", gamma=1.5)


def test_cli_starts_from_the_envs_preset():
    assert default_args(["--env", "Pendulum-v1"]).config == PRESETS["Pendulum-v1"].config()
    assert default_args(["--env=Acrobot-v1", "--lr", "1e-3"]).config == PRESETS["Acrobot-v1"].config()
    assert default_args(["--env", "Pendulum-v1", "--no-preset"]).config == PPOConfig(env_name="Pendulum-v1")
    assert default_args([]).config == PRESETS["CartPole-v1"].config()


# One env of each family: classic control (discrete and continuous), bsuite,
# misc (with a one-hot observation), MinAtar (image observation).
@pytest.mark.parametrize(
    "name", ["Acrobot-v1", "Pendulum-v1", "Catch-bsuite", "FrozenLake-misc", "Breakout-MinAtar"]
)
def test_preset_smoke_training(name):
    preset = get_preset(name)
    config = preset.config(num_envs=4, num_steps=16, num_minibatches=2, total_timesteps=4 * 16 * 3)
    train = make_train(config)
    result = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 2))
    for metric, value in result.metrics.items():
        assert value.shape == (2, 3), metric
        if metric not in ("episode_return", "episode_length"):  # NaN until an episode ends
            assert np.all(np.isfinite(value)), metric
    obs = result.train_state.env.obs
    assert obs.shape == (2, 4, *train.env_spec.obs_shape)
    assert result.train_state.obs_norm.mean.shape == (2, *train.env_spec.obs_shape)
