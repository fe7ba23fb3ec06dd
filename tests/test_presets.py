"""Presets: every one constructs and validates, and each env family trains a few updates."""

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train, preset_config
from purejaxppo.cli import default_args
from purejaxppo.envs import registered_env_names
from purejaxppo.presets import PUREJAXRL_MINATAR, BASELINES, NOT_PRESET, PRESETS, Preset, get_preset

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


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
    config = preset_config("Pendulum-v1", lr=3e-4, num_envs=8)
    assert config.lr == 3e-4 and config.num_envs == 8
    assert config.normalize_reward == PRESETS["Pendulum-v1"].overrides["normalize_reward"]
    with pytest.raises(ValueError, match="no preset for env_name='Pendulum-v2'.*Pendulum-v1"):
        preset_config("Pendulum-v2")
    with pytest.raises(TypeError, match="learning_rate"):
        get_preset("CartPole-v1").config(learning_rate=1e-3)
    with pytest.raises(ValueError, match="gamma must be finite and in"):
        preset_config("Acrobot-v1", gamma=1.5)


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


def _returns_table():
    """{label: (seeds, budget, target)} from the returns table
    (benchmarks/results/returns-cpu.md, which the README links)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "returns-cpu.md").read_text()
    table = text.split("| env | seeds | budget |")[1].split("\n\n")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        target = None if cells[6] == "—" else float(cells[6].split()[0])
        rows[cells[0]] = (int(cells[1]), int(cells[2].replace(",", "")), target)
    return rows


def test_presets_match_the_returns_table():
    """A preset's budget, seed count and target are those of its row in the
    returns table (benchmarks/results/returns-cpu.md, which the README links)."""
    rows = _returns_table()
    # benchmarks/pbt.py's rows (PBT against a grid, from an env's preset) are experiments, not presets.
    experiments = {name for name in rows if name.endswith((" PBT", " grid-best"))}
    assert {name.rsplit(" ", 1)[0] for name in experiments} <= set(PRESETS)
    rows = {name: row for name, row in rows.items() if name not in experiments}
    assert set(rows) == set(PRESETS) | set(BASELINES)
    for label, preset in {**PRESETS, **BASELINES}.items():
        assert rows[label] == (preset.benchmark_seeds, preset.budget, preset.target), label


_BSUITE = dict(num_envs=8, num_steps=32, update_epochs=4, num_minibatches=4, lr=5e-4, anneal_lr=False,
               max_grad_norm=0.5, activation="relu", hidden_sizes=(64, 64), total_timesteps=150_000)
_UNTUNED_CONTINUOUS = dict(num_envs=16, num_steps=128, update_epochs=10, num_minibatches=16, lr=1e-3,
                           normalize_obs=True, normalize_reward=True, total_timesteps=200_000)
_MINATAR = dict(num_envs=64, num_steps=128, update_epochs=4, num_minibatches=8, lr=5e-3, anneal_lr=True,
                activation="relu", hidden_sizes=(64, 64), torso="mlp", total_timesteps=5_000_000)
_GRID = dict(num_envs=16, num_steps=32, update_epochs=4, num_minibatches=4, lr=2.5e-4, anneal_lr=True,
             activation="relu", hidden_sizes=(64, 64), normalize_obs=True)
# The values each preset's `source` states, written out from those texts.
_STATED = {
    "Acrobot-v1": dict(num_envs=16, num_steps=32, update_epochs=4, num_minibatches=4, lr=5e-4,
                       anneal_lr=False, max_grad_norm=1.0, activation="relu", total_timesteps=2_000_000),
    "MountainCar-v0": dict(normalize_obs=True, normalize_reward=True, num_envs=16, num_steps=16,
                           gae_lambda=0.98, gamma=0.99, update_epochs=4, ent_coef=0.0, lr=3e-4,
                           anneal_lr=False, minibatch_size=64, activation="tanh", hidden_sizes=(64, 64),
                           clip_vloss=False, max_grad_norm=0.5, total_timesteps=1_000_000),
    "Pendulum-v1": dict(update_epochs=10, lr=1e-3, ent_coef=0.0, normalize_obs=True, normalize_reward=True,
                        num_envs=16, num_steps=128, num_minibatches=16),
    "MountainCarContinuous-v0": dict(gamma=0.9999, normalize_obs=True, normalize_reward=True, num_envs=16,
                                     num_steps=256, update_epochs=10, num_minibatches=16, lr=3e-4,
                                     anneal_lr=False, ent_coef=0.01, activation="tanh",
                                     hidden_sizes=(64, 64), total_timesteps=1_000_000),
    "Catch-bsuite": dict(num_envs=16, num_steps=32, update_epochs=4, num_minibatches=4, lr=5e-4,
                         max_grad_norm=1.0, activation="relu", total_timesteps=100_000, anneal_lr=True,
                         ent_coef=0.0),
    "FourRooms-misc": dict(num_envs=16, num_steps=32, update_epochs=4, num_minibatches=4, lr=5e-4,
                           anneal_lr=False, max_grad_norm=1.0, activation="relu", total_timesteps=200_000),
    **{env: _BSUITE for env in ("DeepSea-bsuite", "UmbrellaChain-bsuite",
                                "DiscountingChain-bsuite", "SimpleBandit-bsuite", "BernoulliBandit-misc",
                                "GaussianBandit-misc", "FrozenLake-misc")},
    "MemoryChain-bsuite": dict(_BSUITE, recurrent="gru", recurrent_size=128, recurrent_core="shared"),
    "MetaMaze-misc": dict(recurrent="gru", recurrent_size=128, recurrent_core="shared", num_envs=64,
                          num_steps=64, update_epochs=4, num_minibatches=4, lr=5e-4, anneal_lr=False,
                          activation="relu", hidden_sizes=(64, 64), normalize_obs=True,
                          total_timesteps=10_000_000),
    **{env: _UNTUNED_CONTINUOUS for env in ("PointRobot-misc", "Reacher-misc", "Swimmer-misc")},
    **{env: _MINATAR for env in ("Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar")},
    "SpaceInvaders-MinAtar": dict(_MINATAR, hidden_sizes=(256, 256)),
    "Asterix-MinAtar": dict(_MINATAR, hidden_sizes=(256, 256), lr=2.5e-3),
    # Other suites (purejaxppo.adapters), tuned here: the values each source states.
    "navix/Navix-Empty-8x8-v0": dict(_GRID, env_kwargs=(("penalty_coeff", 0.9), ("max_steps", 256)),
                                     total_timesteps=200_000),
    "xminigrid/MiniGrid-DoorKey-5x5": dict(_GRID, total_timesteps=300_000),
    "jumanji/Snake-v1": dict(num_envs=32, num_steps=64, update_epochs=4, num_minibatches=4, lr=5e-4,
                             anneal_lr=True, activation="relu", hidden_sizes=(64, 64), normalize_obs=True,
                             env_kwargs=(("num_cols", 6), ("num_rows", 6), ("time_limit", 500)),
                             total_timesteps=2_000_000),
    "craftax/Craftax-Classic-Symbolic-v1": dict(num_envs=64, num_steps=64, update_epochs=4, num_minibatches=8,
                                                lr=2e-4, anneal_lr=True, gamma=0.99, gae_lambda=0.8, ent_coef=0.01,
                                                max_grad_norm=1.0, activation="tanh", hidden_sizes=(256, 256),
                                                env_params=(("max_steps_in_episode", 1000),),
                                                total_timesteps=100_000),
    "brax/inverted_pendulum": dict(num_envs=16, num_steps=128, update_epochs=10, num_minibatches=16, lr=1e-3,
                                   anneal_lr=True, gamma=0.95, ent_coef=0.0, normalize_obs=True,
                                   normalize_reward=True, total_timesteps=300_000),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_hold_the_values_their_sources_state(name):
    if name == "CartPole-v1":  # "The library defaults", at its 5e5-step budget
        assert PRESETS[name].config() == PPOConfig(total_timesteps=500_000)
        return
    config = PRESETS[name].config()
    for field, value in _STATED[name].items():
        assert getattr(config, field) == value, (name, field)


def test_the_cnn_baseline_is_breakouts_preset_with_the_cnn():
    assert BASELINES["Breakout-MinAtar+cnn"].config() == PRESETS["Breakout-MinAtar"].config(torso="cnn")


def test_purejaxrls_minatar_settings_are_each_games_preset_or_baseline():
    """The returns table compares every MinAtar preset with PureJaxRL's
    settings: a preset that departs from them has a `+purejaxrl` baseline
    holding them; the others hold them themselves."""
    assert dict(PUREJAXRL_MINATAR) == _MINATAR
    for env in ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar"):
        preset = PRESETS[env].config()
        holds = {field: getattr(preset, field) for field in _MINATAR} == _MINATAR
        assert holds != (f"{env}+purejaxrl" in BASELINES), env
        if not holds:
            config = BASELINES[f"{env}+purejaxrl"].config()
            assert {field: getattr(config, field) for field in _MINATAR} == _MINATAR, env


def test_unknown_preset_suggests_close_names_and_lists_all():
    with pytest.raises(ValueError, match=r"^no preset for env_name='Acrobot-v2'\. Did you mean 'Acrobot-v1'( or [^?]*)?\? "
                                         r"Presets exist for: CartPole-v1, Acrobot-v1, .*, Seaquest-MinAtar, navix/.*, brax/inverted_pendulum\.$"):
        get_preset("Acrobot-v2")
    with pytest.raises(ValueError, match=r"^no preset for env_name='zzz'\. Presets exist for: CartPole-v1"):
        get_preset("zzz")
