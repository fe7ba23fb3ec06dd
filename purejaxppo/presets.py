"""Presets: a tuned `PPOConfig` for every gymnax environment PPO can learn.

    from purejaxppo import PPOConfig
    config = PPOConfig.preset("Pendulum-v1")                 # the tuned config
    config = PPOConfig.preset("Pendulum-v1", lr=3e-4)        # ... with overrides

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


_LIST: tuple[Preset, ...] = (
    _preset(
        "CartPole-v1",
        "The library defaults, which are PureJaxRL's ppo.py settings (4 envs x 128 steps, "
        "4 epochs x 4 minibatches, lr 2.5e-4 annealed, tanh 64x64).",
        target=475.0,
        total_timesteps=500_000,
    ),
)

PRESETS: Mapping[str, Preset] = MappingProxyType({p.env_name: p for p in _LIST})
"""Every preset, by environment id."""


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
