"""Presets: a tuned `PPOConfig` for every gymnax environment PPO can learn.

    from purejaxppo import preset_config
    config = preset_config("Pendulum-v1")                 # the tuned config
    config = preset_config("Pendulum-v1", lr=3e-4)        # ... with overrides

    python -m purejaxppo --env Pendulum-v1                   # the same, from the shell

Each `Preset` records where its values come from (``source``): a named
reference configuration, or tuning done here with the sweep that chose the
values. ``total_timesteps`` of a preset is its step budget: the budget at
which ``benchmarks/returns.py`` measures it (see the README's returns table).
"""

from __future__ import annotations

import dataclasses
import difflib
from types import MappingProxyType
from typing import Any, Mapping

from purejaxppo.config import PPOConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named, sourced set of `PPOConfig` values for one environment.

    Attributes:
        env_name: the gymnax environment id.
        overrides: `PPOConfig` fields that differ from the library defaults,
            ``total_timesteps`` (the step budget) included.
        source: where the values come from.
        target: the final return (IQM over seeds) the preset should reach at
            its budget, or None where there is no published reference.
        benchmark_seeds: seeds trained by ``benchmarks/returns.py`` (at least
            3; 8 or more where the env steps fast enough on 2 CPU cores).
    """

    env_name: str
    overrides: Mapping[str, Any]
    source: str
    target: float | None = None
    benchmark_seeds: int = 8

    def config(self, **overrides: Any) -> PPOConfig:
        """The preset's `PPOConfig`, with ``overrides`` applied (and validated)."""
        return PPOConfig(**{"env_name": self.env_name, **self.overrides, **overrides})

    @property
    def budget(self) -> int:
        """Environment steps of the preset's run (its ``total_timesteps``)."""
        return self.config().total_timesteps


def _preset(env_name: str, source: str, target: float | None = None,
            benchmark_seeds: int = 8, **overrides: Any) -> Preset:
    return Preset(env_name, MappingProxyType(overrides), source, target, benchmark_seeds)


# Shared settings, named once. Sources:
#   gymnax-blines: RobertTLange/gymnax-blines, agents/<env>/ppo.yaml (PPO with
#     separate ReLU actor and critic, clipped values, Adam eps 1e-5).
#   PureJaxRL MinAtar: luchris429/purejaxrl, examples/brax_minatar.ipynb
#     ("briefly tuned to do well on Gymnax's MinAtar environments").
_BLINES_SMALL = dict(num_envs=8, num_steps=32, update_epochs=4, num_minibatches=4, lr=5e-4,
                     anneal_lr=False, max_grad_norm=0.5, activation="relu")
_BLINES_16 = dict(num_envs=16, num_steps=32, lr=5e-4, anneal_lr=False, max_grad_norm=1.0,
                  activation="relu")
_PUREJAXRL_MINATAR = dict(num_envs=64, num_steps=128, update_epochs=4, num_minibatches=8, lr=5e-3,
                          anneal_lr=True, activation="relu", hidden_sizes=(64, 64), torso="mlp")
PUREJAXRL_MINATAR: Mapping[str, Any] = MappingProxyType(dict(_PUREJAXRL_MINATAR, total_timesteps=5_000_000))
"""PureJaxRL's MinAtar settings at the presets' 5e6-step budget: the MinAtar
presets' starting point, and the baseline the returns table compares them with
(rows ``<env>+purejaxrl`` where a preset departs from these settings)."""
_PENDULUM = dict(num_envs=16, num_steps=128, update_epochs=10, num_minibatches=16, lr=1e-3,
                 gamma=0.95, ent_coef=0.0, normalize_obs=True, normalize_reward=True)
_META_MAZE = dict(num_envs=64, num_steps=64, update_epochs=4, num_minibatches=4, lr=5e-4,
                  anneal_lr=False, activation="relu", normalize_obs=True, total_timesteps=10_000_000)
_BSUITE_SOURCE = ("gymnax-blines agents/{env}/ppo.yaml: 8 envs x 32 steps, 4 epochs x 4 "
                  "minibatches, lr 5e-4 constant, max_grad_norm 0.5, ReLU 64x64, 1.5e5 steps.")
_MINATAR_SOURCE = ("PureJaxRL's MinAtar settings (examples/brax_minatar.ipynb): lr 5e-3 annealed, "
                   "64 envs x 128 steps, 4 epochs x 8 minibatches, ReLU 64x64 MLP on the flattened "
                   "observation; budget 5e6 steps (PureJaxRL trains 1e7). The CNN torso was not "
                   "measured at this budget: on 2 CPU cores it runs ~5x slower per step.")

_LIST: tuple[Preset, ...] = (
    # ------------------------------------------------------------ classic control
    _preset(
        "CartPole-v1",
        "The library defaults, which are PureJaxRL's ppo.py settings (4 envs x 128 steps, "
        "4 epochs x 4 minibatches, lr 2.5e-4 annealed, tanh 64x64).",
        target=475.0,
        total_timesteps=500_000,
    ),
    _preset(
        "Acrobot-v1",
        "gymnax-blines agents/Acrobot-v1/ppo.yaml (16 envs x 32 steps, 4 x 4, lr 5e-4 constant, "
        "max_grad_norm 1.0, ReLU) at 2e6 steps instead of its 5e5: IQM -75.0 over 8 seeds "
        "(-74.0 in the returns table); at 5e5 it was -83.6, "
        "at 1e6 the median was -79.7, and annealing the lr or a tanh/normalised variant "
        "did not do better (benchmarks/TUNING.md).",
        target=-80.0,
        **_BLINES_16, total_timesteps=2_000_000,
    ),
    _preset(
        "MountainCar-v0",
        "Stable-Baselines3 zoo hyperparams/ppo.yml MountainCar-v0 (normalised observations and "
        "rewards, 16 envs x 16 steps, gae_lambda 0.98, gamma 0.99, 4 epochs, no entropy bonus, "
        "1e6 steps) with SB3's defaults for the rest (lr 3e-4 constant, minibatches of 64 "
        "samples, tanh 64x64, no value clipping, max_grad_norm 0.5): IQM -115.1 over 8 seeds. "
        "gymnax-blines' values (64 epochs, lr 5e-3 decayed with warm-up, which this library "
        "does not express) never reached the goal here (-200; benchmarks/TUNING.md).",
        target=-118.0,
        num_envs=16, num_steps=16, update_epochs=4, num_minibatches=4, lr=3e-4,
        anneal_lr=False, gae_lambda=0.98, ent_coef=0.0, clip_vloss=False,
        normalize_obs=True, normalize_reward=True, total_timesteps=1_000_000,
    ),
    _preset(
        "Pendulum-v1",
        "Tuned here (benchmarks/TUNING.md), from the Stable-Baselines3 zoo's Pendulum settings "
        "(10 epochs, lr 1e-3, no entropy bonus, normalised observations and rewards) on 16 "
        "envs x 128 steps, 16 minibatches.",
        target=-150.0,
        total_timesteps=1_000_000, **_PENDULUM,
    ),
    _preset(
        "MountainCarContinuous-v0",
        "Tuned here (benchmarks/TUNING.md): gamma 0.9999 and normalised observations and "
        "rewards (as the Stable-Baselines3 zoo's setting), 16 envs x 256 steps, 10 epochs x 16 "
        "minibatches, lr 3e-4 constant, entropy 0.01, tanh 64x64, 1e6 steps. All 8 seeds reach "
        "the goal (return ~96), and 8 of 8 again with other keys (--seed 1). gymnax-blines' "
        "config (32 envs x 16 steps, lr 5e-4, ReLU) stood still on all 8 seeds; the same "
        "values with ReLU and max_grad_norm 1.0 reached the goal on 2 of 8.",
        target=90.0,
        num_envs=16, num_steps=256, update_epochs=10, num_minibatches=16, lr=3e-4,
        anneal_lr=False, gamma=0.9999, ent_coef=0.01, normalize_obs=True, normalize_reward=True,
        total_timesteps=1_000_000,
    ),
    # ---------------------------------------------------------------------- bsuite
    _preset(
        "Catch-bsuite",
        "gymnax-blines agents/Catch-bsuite/ppo.yaml (16 envs x 32 steps, 4 x 4, lr 5e-4, "
        "max_grad_norm 1.0, ReLU, 1e5 steps), with the lr annealed to 0 and no entropy bonus: "
        "the stochastic policy's return IQM rises from 0.997 to 1.0 (8 seeds, "
        "benchmarks/TUNING.md).",
        target=1.0,
        **{**_BLINES_16, "anneal_lr": True}, ent_coef=0.0, total_timesteps=100_000,
    ),
    *(
        _preset(env, _BSUITE_SOURCE.format(env=env), total_timesteps=150_000, **_BLINES_SMALL)
        for env in ("DeepSea-bsuite", "UmbrellaChain-bsuite", "DiscountingChain-bsuite")
    ),
    _preset(
        "MemoryChain-bsuite",
        _BSUITE_SOURCE.format(env="MemoryChain-bsuite") + " With a GRU of 128 units (shared "
        "core) after the torso: the query comes steps after the context, which a feed-forward "
        "policy cannot remember (it stays at chance, the MemoryChain-bsuite+feedforward row).",
        target=0.9,
        total_timesteps=150_000, recurrent="gru", **_BLINES_SMALL,
    ),
    _preset(
        "SimpleBandit-bsuite",
        "gymnax-blines has no PPO config for it: its bsuite settings (8 envs x 32 steps, 4 x 4, "
        "lr 5e-4 constant, ReLU, 1.5e5 steps).",
        total_timesteps=150_000, **_BLINES_SMALL,
    ),
    # ------------------------------------------------------------------------ misc
    _preset(
        "FourRooms-misc",
        "gymnax-blines agents/FourRooms-misc/ppo.yaml (16 envs x 32 steps, 4 x 4, lr 5e-4 "
        "constant, max_grad_norm 1.0, ReLU, 2e5 steps), on the default (non-visual) observation.",
        target=0.9,
        **_BLINES_16, total_timesteps=200_000,
    ),
    *(
        _preset(env, "gymnax-blines has no PPO config for it: its bsuite settings (8 envs x "
                "32 steps, 4 x 4, lr 5e-4 constant, ReLU, 1.5e5 steps). A meta-learning task: "
                "a feed-forward policy sees one step of history only.",
                total_timesteps=150_000, **_BLINES_SMALL)
        for env in ("BernoulliBandit-misc", "GaussianBandit-misc")
    ),
    _preset(
        "MetaMaze-misc",
        "Tuned here (docs/recurrent.md): a GRU of 128 units (shared core), 64 envs x 64 steps, "
        "4 epochs x 4 minibatches, lr 5e-4 constant, ReLU 64x64, normalised observations (the "
        "observation holds the raw step count, up to 200), 1e7 steps: IQM 84.6 over 8 seeds, "
        "against 55.3 for the same settings without the GRU (the MetaMaze-misc+feedforward row). "
        "At 3e6 steps the two tied (52.7 and 53.4); observation normalisation alone lifts a "
        "feed-forward policy from ~5 to ~50.",
        **{**_META_MAZE, "recurrent": "gru"},
    ),
    _preset(
        "FrozenLake-misc",
        "Not in gymnax-blines: its bsuite settings (8 envs x 32 steps, 4 x 4, lr 5e-4 constant, "
        "ReLU, 1.5e5 steps), on the one-hot cell observation.",
        total_timesteps=150_000, **_BLINES_SMALL,
    ),
    *(
        _preset(env, "Not in gymnax-blines; untuned: the Pendulum-v1 preset's settings "
                "(16 envs x 128 steps, 10 epochs x 16 minibatches, lr 1e-3, observation and "
                "reward normalisation), 2e5 steps. What PPO reaches with them is reported, "
                "with no target.",
                total_timesteps=200_000, **{k: v for k, v in _PENDULUM.items() if k != "gamma"})
        for env in ("PointRobot-misc", "Reacher-misc", "Swimmer-misc")
    ),
    # --------------------------------------------------------------------- MinAtar
    *(
        _preset(env, _MINATAR_SOURCE, benchmark_seeds=4, total_timesteps=5_000_000,
                **_PUREJAXRL_MINATAR)
        for env in ("Breakout-MinAtar", "Freeway-MinAtar")
    ),
    _preset(
        "SpaceInvaders-MinAtar",
        "Tuned here (benchmarks/TUNING.md): PureJaxRL's MinAtar settings with a ReLU 256x256 MLP "
        "(lr 5e-3 annealed, 64 envs x 128 steps, 4 epochs x 8 minibatches, the flattened "
        "observation), 5e6 steps.",
        benchmark_seeds=4, total_timesteps=5_000_000,
        **{**_PUREJAXRL_MINATAR, "hidden_sizes": (256, 256)},
    ),
    _preset(
        "Asterix-MinAtar",
        "Tuned here (benchmarks/TUNING.md): PureJaxRL's MinAtar settings with a ReLU 256x256 MLP "
        "and lr 2.5e-3 annealed (64 envs x 128 steps, 4 epochs x 8 minibatches, the flattened "
        "observation), 5e6 steps.",
        benchmark_seeds=4, total_timesteps=5_000_000,
        **{**_PUREJAXRL_MINATAR, "hidden_sizes": (256, 256), "lr": 2.5e-3},
    ),
    _preset("Seaquest-MinAtar", _MINATAR_SOURCE, benchmark_seeds=3, total_timesteps=5_000_000,
            **_PUREJAXRL_MINATAR),
)

# ------------------------------------------------- other suites, through adapters
# (purejaxppo.adapters; each suite's package is an optional extra)
_GRID_WORLD = dict(num_envs=16, num_steps=32, update_epochs=4, num_minibatches=4, lr=2.5e-4, anneal_lr=True,
                   activation="relu", normalize_obs=True)
"""MiniGrid tasks (navix, xminigrid): tuned on navix/Navix-Empty-8x8-v0."""

_ADAPTER_LIST: tuple[Preset, ...] = (
    # --- navix
    _preset(
        "navix/Navix-Empty-8x8-v0",
        "Tuned here: 16 envs x 32 steps, 4 epochs x 4 minibatches, lr 2.5e-4 annealed, ReLU "
        "64x64, normalised observations, on the flat symbolic grid, 2e5 steps (all 8 seeds take "
        "the shortest path by ~8e4). Without observation normalisation (gymnax-blines' small-grid "
        "settings, lr 5e-4 constant or annealed) the policy fell into loops that never reach "
        "the goal and 1 of 8 seeds ended at 0, even at 5e5 steps. MiniGrid's reward "
        "(penalty_coeff=0.9: 1 - 0.9 * steps / 256, with max_steps=256 as in MiniGrid and navix "
        "4; navix 0.7's default is 100): the shortest path (11 steps) returns 0.961.",
        target=0.95, benchmark_seeds=8,
        env_kwargs=(("penalty_coeff", 0.9), ("max_steps", 256)), total_timesteps=200_000, **_GRID_WORLD,
    ),
    # --- end navix
    # --- xminigrid
    _preset(
        "xminigrid/MiniGrid-DoorKey-5x5",
        "Tuned here: the navix/Navix-Empty-8x8-v0 preset's settings (16 envs x 32 steps, 4 "
        "epochs x 4 minibatches, lr 2.5e-4 annealed, ReLU 64x64, normalised observations) on "
        "the flat 7x7x2 egocentric view, 3e5 steps: all 8 seeds return ~0.96 from ~1e5 steps on "
        "(5e5 steps gave IQM 0.964). xminigrid's (MiniGrid's) reward, 1 - 0.9 * steps / 250 at "
        "the goal; the key, the locked door and the start are placed at random.",
        target=0.95, benchmark_seeds=8,
        total_timesteps=300_000, **_GRID_WORLD,
    ),
    # --- end xminigrid
    # --- craftax
    _preset(
        "craftax/Craftax-Classic-Symbolic-v1",
        "Craftax_Baselines' ppo.py settings (MichaelTMatthews/Craftax_Baselines: lr 2e-4 "
        "annealed, 4 epochs x 8 minibatches, gamma 0.99, gae_lambda 0.8, entropy 0.01, "
        "max_grad_norm 1.0, tanh) scaled down to 2 CPU cores: 64 envs x 64 steps (there 1024 x "
        "64), separate 256x256 actor and critic MLPs (there 3 x 512), 1e5 steps (there 1e9), and "
        "a 1,000-step time limit (craftax's is 10,000) so that the greedy evaluation, a "
        "fixed-length scan that generates a world per env step, takes a minute; at this budget "
        "episodes last ~150 steps. IQM 3.35 over 3 seeds (rising from ~1.2 after 2 updates; "
        "greedy evaluation ~1.0); one seed each with lr 2e-4 and 1e-3 ended at 3.45 and 3.47. "
        "Reference: the Craftax paper (Matthews et al., ICML 2024) reports PPO on Craftax-Classic "
        "(symbolic) at ~90% of the optimal return (22 achievements) after 1e9 steps; there is no "
        "published number at 1e5 steps, hence no target. Training runs at ~1,000-2,000 env "
        "steps/s on 2 shared cores, bound by the world generation of gymnax's auto-reset.",
        benchmark_seeds=3,
        num_envs=64, num_steps=64, update_epochs=4, num_minibatches=8, lr=2e-4, anneal_lr=True,
        gamma=0.99, gae_lambda=0.8, ent_coef=0.01, max_grad_norm=1.0, activation="tanh",
        hidden_sizes=(256, 256), env_params=(("max_steps_in_episode", 1000),),
        total_timesteps=100_000,
    ),
    # --- end craftax
    # --- jumanji
    _preset(
        "jumanji/Snake-v1",
        "Tuned here on a 6x6 board (env_kwargs num_rows=6, num_cols=6, time_limit=500; Jumanji's "
        "default is 12x12 with a 4000-step limit): 32 envs x 64 steps, 4 epochs x 4 minibatches, "
        "lr 5e-4 annealed, ReLU 64x64 MLP on the flattened observation, normalised observations, "
        "2e6 steps: IQM 31.8 [31.2, 32.8] fruits over 8 seeds (greedy 34.3) of the 35 a 6x6 "
        "board holds (a random policy eats ~0.1), in episodes of ~200 steps, well inside the "
        "limit. No published reference to target. On 12x12 the same settings "
        "reached only ~2 fruits in 1e6 steps, and on a random 5x5 Maze-v0 the MLP did not learn "
        "(its success rate fell from 0.3 to 0.2).",
        benchmark_seeds=8,
        env_kwargs=(("num_cols", 6), ("num_rows", 6), ("time_limit", 500)), num_envs=32, num_steps=64,
        update_epochs=4, num_minibatches=4, lr=5e-4, anneal_lr=True, activation="relu",
        normalize_obs=True, total_timesteps=2_000_000,
    ),
    # --- end jumanji
    # --- brax
    _preset(
        "brax/inverted_pendulum",
        "The Pendulum-v1 preset's settings, untuned (16 envs x 128 steps, 10 epochs x 16 "
        "minibatches, lr 1e-3 annealed, gamma 0.95, no entropy bonus, normalised observations "
        "and rewards), on Brax's default 'generalized' pipeline with 1000-step episodes, 3e5 "
        "steps: each of 8 seeds balances the pole for the whole episode (return 1000) by ~1.3e5 "
        "steps, and the IQM at 3e5 is 1000. Target: Gymnasium's InvertedPendulum reward "
        "threshold (950).",
        target=950.0, benchmark_seeds=8,
        total_timesteps=300_000, **_PENDULUM,
    ),
    # --- end brax
)

PRESETS: Mapping[str, Preset] = MappingProxyType({p.env_name: p for p in _LIST + _ADAPTER_LIST})
"""Every preset, by environment id."""

_MASKED_CARTPOLE = dict(obs_features=(0, 2), num_envs=16, lr=1e-3, total_timesteps=2_000_000)
_MASKED_CARTPOLE_SOURCE = (
    "A partially observed CartPole: only the cart position and the pole angle "
    "(obs_features=(0, 2)), no velocities. The library defaults with 16 envs, lr 1e-3 annealed "
    "and 2e6 steps, tuned here (docs/recurrent.md); ")

BASELINES: Mapping[str, Preset] = MappingProxyType({
    "MemoryChain-bsuite+feedforward": _preset(
        "MemoryChain-bsuite",
        "A comparison: the MemoryChain-bsuite preset without its GRU (a feed-forward policy).",
        total_timesteps=150_000, **_BLINES_SMALL,
    ),
    "MetaMaze-misc+feedforward": _preset(
        "MetaMaze-misc",
        "A comparison: the MetaMaze-misc preset without its GRU (a feed-forward policy).",
        **_META_MAZE,
    ),
    "CartPole-v1+position-angle+gru": _preset(
        "CartPole-v1", _MASKED_CARTPOLE_SOURCE + "a GRU of 128 units (shared core).",
        target=450.0, recurrent="gru", **_MASKED_CARTPOLE,
    ),
    "CartPole-v1+position-angle": _preset(
        "CartPole-v1", _MASKED_CARTPOLE_SOURCE + "a feed-forward policy, for comparison.",
        **_MASKED_CARTPOLE,
    ),
    # PureJaxRL's settings, where a MinAtar preset departs from them.
    "SpaceInvaders-MinAtar+purejaxrl": _preset(
        "SpaceInvaders-MinAtar", "A comparison, not a preset: " + _MINATAR_SOURCE,
        benchmark_seeds=3, **PUREJAXRL_MINATAR),
    "Asterix-MinAtar+purejaxrl": _preset(
        "Asterix-MinAtar", "A comparison, not a preset: " + _MINATAR_SOURCE,
        benchmark_seeds=4, **PUREJAXRL_MINATAR),
    "Breakout-MinAtar+cnn": _preset(
        "Breakout-MinAtar",
        "A comparison, not a preset: PureJaxRL's MinAtar settings with the CNN torso (one 3x3 "
        "convolution of 16 channels, then the ReLU 64x64 MLP) in place of the MLP on the "
        "flattened observation, at the preset's budget, to show whether the CNN helps.",
        benchmark_seeds=3, total_timesteps=5_000_000, **{**_PUREJAXRL_MINATAR, "torso": "cnn"},
    ),
})
"""Labelled variants of presets that ``benchmarks/returns.py`` runs and plots
beside them (``--presets Breakout-MinAtar+cnn``); not reachable by env name."""

NOT_PRESET: Mapping[str, str] = MappingProxyType({
    "MNISTBandit-bsuite": "gymnax downloads MNIST when it constructs this env; it cannot be "
                          "made offline, so nothing here could be measured.",
    "Pong-misc": "not tuned: its 30x40x3 image observation needs the CNN torso, which runs too "
                 "slowly on the 2-core CPU this project is measured on to sweep or benchmark.",
})
"""Registered gymnax environments without a preset, and why (use ``PPOConfig(env_name=...)``)."""


def get_preset(env_name: str) -> Preset:
    """The `Preset` for ``env_name``; a ``ValueError`` naming the choices if none."""
    if env_name not in PRESETS:
        close = difflib.get_close_matches(env_name, list(PRESETS), n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"no preset for env_name={env_name!r}.{hint} Presets exist for: "
            f"{', '.join(PRESETS)}."
        )
    return PRESETS[env_name]


def preset_config(env_name: str, **overrides: Any) -> PPOConfig:
    """``get_preset(env_name).config(**overrides)``."""
    return get_preset(env_name).config(**overrides)


# ------------------------------------------------------ the policy-gradient ladder
LADDER = ("reinforce", "reinforce_baseline", "a2c", "trpo", "ppo_penalty", "ppo_clip")
"""The rungs of the policy-gradient ladder, bottom to top (docs/algorithm.md)."""

_LADDER_ROLLOUT = dict(num_envs=8, num_steps=512, total_timesteps=500_000)
_ONE_STEP = dict(update_epochs=1, num_minibatches=1)
_LADDER_RUNGS: Mapping[str, dict[str, Any]] = MappingProxyType({
    # No critic and no baseline of any kind: the raw returns, not normalised.
    "reinforce": dict(algorithm="reinforce", lr=1e-2, norm_adv=False, **_ONE_STEP),
    "reinforce_baseline": dict(algorithm="reinforce_baseline", lr=1e-2, **_ONE_STEP),
    "a2c": dict(algorithm="a2c", lr=1e-2, **_ONE_STEP),
    "trpo": dict(algorithm="trpo", target_kl=0.01, lr=1e-3),
    "ppo_penalty": dict(algorithm="ppo_penalty", kl_coef=1.0, target_kl=0.01, lr=1e-3),
    "ppo_clip": dict(algorithm="ppo_clip", lr=1e-3),
})


def ladder_config(algorithm: str, env_name: str = "CartPole-v1", **overrides: Any) -> PPOConfig:
    """The config of one rung of the policy-gradient ladder on ``env_name``.

    Every rung collects the same rollouts, 8 envs x 512 steps (long enough
    for REINFORCE to see whole episodes of the classic-control tasks), for
    5e5 steps, with the same 64x64 tanh networks and annealed Adam; they
    differ in what they learn from a rollout: one gradient step of the
    policy gradient (REINFORCE, with or without a learned baseline, and
    the actor-critic with GAE, each at lr 1e-2), one natural-gradient step
    in a KL trust region of 0.01 (TRPO), or 4 epochs x 4 minibatches of
    steps at lr 1e-3 on the KL-penalised or the clipped surrogate (PPO).
    The learning rates were chosen on CartPole-v1 (benchmarks/TUNING.md).
    ``overrides`` replace any field.
    """
    if algorithm not in _LADDER_RUNGS:
        raise ValueError(f"algorithm={algorithm!r} is not a rung of the ladder; allowed: {', '.join(LADDER)}")
    return PPOConfig(env_name=env_name, **{**_LADDER_ROLLOUT, **_LADDER_RUNGS[algorithm], **overrides})
