"""Craftax and Craftax-Classic on purejaxppo's env protocol.

``make("Craftax-Classic-Symbolic-v1")`` wraps craftax's non-resetting env of
that name (``craftax.craftax_env.make_craftax_env_from_name(id,
auto_reset=False)``); the ids are `ENV_IDS`. Written against craftax 1.6,
whose envs derive from craftax's own environment bases (not gymnax's) and
whose ``step_env`` returns five values ``(obs, state, reward, done, info)``
with ``done`` covering the time limit too.

* **Stepping and auto-reset.** ``step_env`` calls the craftax env's
  ``step_env`` (no reset inside); craftax's own resetting ``step`` is never
  called, so gymnax's ``step`` does the automatic reset and puts the
  observation the episode ended in into ``info["final_observation"]``.
  That auto-reset generates a world for every env step (purejaxppo's
  training draws a rollout's worth of them at once), and a Classic world
  costs more than a step (~0.5-1.5 ms against ~0.1 ms on one CPU core), so
  resets bound the training speed on CPU. Under `jax.vmap`, ``reset_env``
  generates its worlds in chunks of `RESET_CHUNK` (`purejaxppo.fast.chunked_vmap`): craftax's
  world generation vmapped over a thousand keys at once is ~100 times
  slower per world. The worlds are the same either way.
* **Termination vs truncation.** craftax ends an episode where
  ``state.timestep >= params.max_timesteps`` (the time limit), or at a true
  end: the player's death, and also standing in lava (Classic) or beating
  the final boss (Craftax). Here the craftax env is stepped with
  ``max_timesteps`` at the int32 maximum, so its ``done`` is a true end only:
  that is ``terminated``. ``truncated`` is the time limit, ``state.timestep
  >= params.max_steps_in_episode``, where ``state.timestep`` is craftax's
  step counter since the reset; ``max_steps_in_episode`` defaults to
  craftax's ``max_timesteps`` (10,000 for Classic, 100,000 for Craftax), so
  at the default both end the same episodes.
* **Params.** ``CraftaxClassicParams`` / ``CraftaxParams``: a flat
  ``flax.struct`` dataclass holding ``max_steps_in_episode`` and every field
  of craftax's ``EnvParams`` but ``max_timesteps`` (``day_length``,
  ``always_diamond``, the mob settings, ...), so each can be set with
  ``PPOConfig(env_params=...)``. Keywords of `make` are fields of craftax's
  ``StaticEnvParams`` (e.g. ``map_size=(32, 32)``), fixed at construction.
* **Observation.** The ``-Symbolic`` ids: craftax's symbolic observation, a
  flat float32 vector in [0, 1] (Classic: the 7x9 local map, one-hot over
  17 block types and 4 mob types, then the inventory, intrinsics, light
  level, sleep flag and facing direction: 1345 features; Craftax: 8268).
  The ``-Pixels`` ids: an ``(H, W, 3)`` float32 image in [0, 1] (Classic:
  63x63; ``torso="auto"`` picks the CNN for it).
* **Actions.** ``Discrete(17)`` (Classic) or ``Discrete(43)`` (Craftax).
* **State and achievements.** The env state is craftax's ``EnvState`` as it
  is: ``state.achievements`` is a bool vector, one entry per achievement
  (22 in Classic, 67 in Craftax, named by `achievement_names`), set once
  the achievement is unlocked in the episode. ``info["achievements"]`` of
  each step holds it for the state the step reached (before any reset), so
  at a step with ``terminated | truncated`` it is the finished episode's
  achievements. The achievement rate (the fraction of episodes that unlocked
  each achievement, craftax's headline metric, there in percent) is
  ``info["achievements"][done].mean(axis=0)`` over the ended episodes'
  steps; `achievements` reads the vector from a state.
  ``info["discount"]`` is 0 at a termination, else 1.

Reward: craftax's own, +1 for each achievement unlocked the first time in
an episode, plus 0.1 per unit of health gained (minus per unit lost).
"""

from __future__ import annotations

import functools
from typing import Any

from purejaxppo.adapters import import_suite

ENV_IDS = (
    "Craftax-Classic-Symbolic-v1",
    "Craftax-Classic-Pixels-v1",
    "Craftax-Symbolic-v1",
    "Craftax-Pixels-v1",
)
"""The craftax env ids `make` takes."""

_INT32_MAX = 2**31 - 1


def _import_craftax():
    return import_suite("craftax.craftax_env", "craftax").make_craftax_env_from_name


def _check_id(env_id: str) -> None:
    if env_id not in ENV_IDS:
        raise ValueError(f"unknown craftax env id {env_id!r}; allowed: {', '.join(ENV_IDS)}")


def make(env_id: str, **static_params: Any):
    """``(env, env_params)`` for craftax's ``env_id`` (one of `ENV_IDS`).

    Keywords are fields of the craftax env's ``StaticEnvParams`` (e.g.
    ``map_size=(32, 32)``); an unknown one is a ``TypeError`` (a
    ``ValueError`` from `purejaxppo.envs.load_env`). An id not in `ENV_IDS`
    is a ``ValueError``.
    """
    _check_id(env_id)
    inner = _import_craftax()(env_id, auto_reset=False)
    if static_params:
        inner = type(inner)(type(inner.default_static_params())(**static_params))
    env = _env_class()(env_id, inner)
    return env, env.default_params


def achievement_names(env_id: str) -> tuple[str, ...]:
    """The names of ``env_id``'s achievements, in the order of
    ``state.achievements`` (e.g. ``"collect_wood"``)."""
    _check_id(env_id)
    _import_craftax()
    if "Classic" in env_id:
        from craftax.craftax_classic.constants import Achievement
    else:
        from craftax.craftax.constants import Achievement
    return tuple(a.name.lower() for a in sorted(Achievement, key=lambda a: a.value))


def achievements(state: Any):
    """The achievements unlocked so far in ``state``'s episode: a bool array
    of shape ``(..., num_achievements)`` (any leading batch axes), in the
    order of `achievement_names`."""
    return state.achievements


@functools.cache
def _params_class(craftax_params_type: type) -> type:
    """A flax dataclass of ``max_steps_in_episode`` (defaulting to craftax's
    ``max_timesteps``) and every other field of ``craftax_params_type``."""
    import dataclasses

    from flax import struct

    fields = [f for f in dataclasses.fields(craftax_params_type) if f.name != "max_timesteps"]
    default_limit = craftax_params_type().max_timesteps
    name = ("CraftaxClassicParams" if "craftax_classic" in craftax_params_type.__module__
            else "CraftaxParams")
    namespace = {
        "__annotations__": {"max_steps_in_episode": int, **{f.name: f.type for f in fields}},
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": "Craftax's EnvParams with the time limit as max_steps_in_episode "
                   "(purejaxppo.adapters.craftax).",
        "max_steps_in_episode": default_limit,
        **{f.name: f.default for f in fields},
    }
    return struct.dataclass(type(name, (), namespace))


RESET_CHUNK = 8
"""Worlds generated together under `jax.vmap` (`purejaxppo.fast.chunked_vmap`):
craftax's world generation vmapped over many keys at once slows down per
world far beyond linear (1024 keys at once on 2 shared CPU cores: ~17
worlds/s; in chunks of 8: ~1700-2100/s), and gymnax's auto-reset generates
one world per env step."""


@functools.cache
def _env_class() -> type:
    import jax
    import jax.numpy as jnp
    from gymnax.environments import environment, spaces

    from purejaxppo.fast.chunked_vmap import chunked_vmap

    class CraftaxEnv(environment.Environment):
        """A craftax env on gymnax's protocol (`purejaxppo.adapters.craftax`)."""

        def __init__(self, env_id: str, inner: Any):
            self.env_id = env_id
            self.inner = inner
            self._craftax_params_type = type(inner.default_params)
            self._params_type = _params_class(self._craftax_params_type)

        @property
        def default_params(self):
            return self._params_type()

        def craftax_params(self, params):
            """craftax's ``EnvParams`` for ``params``, with no time limit of its own."""
            values = {name: getattr(params, name)
                      for name in self._params_type.__dataclass_fields__
                      if name != "max_steps_in_episode"}
            return self._craftax_params_type(max_timesteps=_INT32_MAX, **values)

        def reset_env(self, key, params):
            return chunked_vmap(self._reset, RESET_CHUNK)(key, params)

        def _reset(self, key, params):
            obs, state = self.inner.reset_env(key, self.craftax_params(params))
            # craftax's reset leaves some leaves weakly typed (the player's
            # direction, a Python int), its step does not: the same types
            # both ways keep a jitted step from compiling twice.
            strong = lambda x: x if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key) \
                else jnp.asarray(x, jnp.result_type(x))
            return obs, jax.tree.map(strong, state)

        def step_env(self, key, state, action, params):
            obs, state, reward, terminated, _ = self.inner.step_env(
                key, state, action, self.craftax_params(params))
            info = {"achievements": state.achievements,
                    "discount": jnp.where(terminated, 0.0, 1.0)}
            return obs, state, reward, terminated, info

        def is_terminated(self, state, params):
            return self.inner.is_terminal(state, self.craftax_params(params))

        def is_truncated(self, state, params):
            return state.timestep >= params.max_steps_in_episode

        def observation_space(self, params):
            shape = tuple(self.inner.observation_space(self.craftax_params(params)).shape)
            return spaces.Box(0.0, 1.0, shape, jnp.float32)

        def action_space(self, params=None):
            return spaces.Discrete(self.inner.num_actions)

        @property
        def num_actions(self) -> int:
            return self.inner.num_actions

        @property
        def name(self) -> str:
            return self.env_id

    return CraftaxEnv

