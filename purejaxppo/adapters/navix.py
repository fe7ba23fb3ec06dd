"""navix (MiniGrid in JAX) on purejaxppo's env protocol.

``make("Navix-Empty-5x5-v0")`` wraps ``navix.make(id)``; the ids are navix's
registered names (``sorted(navix.registry())``; navix 4 registers more
MiniGrid tasks than navix 0.7). Works with navix 0.7 and 4, whose
``Environment._step`` and ``Timestep`` are the same.

* **Stepping and auto-reset.** ``step_env`` calls navix's non-resetting
  ``Environment._step``; navix's own ``step`` (which resets one call after an
  episode ends) is never called, so gymnax's ``step`` does the automatic
  reset and puts the observation the episode ended in into
  ``info["final_observation"]``.
* **Termination vs truncation.** ``terminated`` is navix's
  ``StepType.TERMINATION`` (a true end, the task's ``termination_fn``: the
  goal reached, lava, a ball hit and the like). ``truncated`` is the time
  limit, ``state.time >= params.max_steps_in_episode``, where ``state.time`` is navix's
  ``Timestep.t`` (steps since the reset). ``max_steps_in_episode`` defaults
  to the navix env's ``max_steps``, so at the default it ends episodes where
  navix marks ``StepType.TRUNCATION``; a smaller value in the params cuts
  them earlier. navix's default ``max_steps`` differs between versions:
  100 for every env in navix 0.7, the env's own (mostly ``4 * height *
  width``, MiniGrid's) in navix 4; pass ``max_steps=...`` to
  ``make`` (``env_kwargs``) to fix it.
* **Observation.** ``observation="symbolic"`` (the default): navix's
  fully observed MiniGrid encoding, an ``(H, W, 3)`` grid of (object type,
  colour, state/direction) per cell, walls included; or
  ``"symbolic_first_person"`` (the agent's egocentric 7x7 view, MiniGrid's
  partial observation), ``"categorical"`` (``(H, W)`` entity tags) or
  ``"categorical_first_person"``. Returned as float32, flattened to one
  vector (an MLP's input); ``image=True`` keeps it as an ``(H, W, C)`` image
  (``C = 1`` for the categorical ones) for ``torso="cnn"``. The bounds of
  the ``Box`` are navix's observation space's.
* **State.** ``NavixState``: the leaves of navix's ``Timestep`` (flattened:
  navix's events compare as arrays, so its objects do not compare as
  Python values; ``env.timestep(state)`` rebuilds it) and ``time``. navix's
  rendering cache (RGB tiles of the whole grid, used only by its RGB
  observations) is replaced by an empty array after each reset, which keeps
  the carried state small; the env's own randomness comes from the key
  navix keeps in its state, split from the reset key.
* **Actions.** ``Discrete(len(action_set))``: MiniGrid's seven actions
  (turn left, turn right, forward, pick up, drop, toggle, done).
* **Reward.** navix's: 1 on reaching the goal, 0 otherwise. MiniGrid's
  ``1 - 0.9 * steps / max_steps`` is ``penalty_coeff=0.9`` (the field navix
  0.7 spells ``penality_coeff``; `make` takes ``penalty_coeff`` for both).

Extra keywords of `make` go to ``navix.make`` (``gamma``, ``penalty_coeff``
and the like).
"""

from __future__ import annotations

import functools
from typing import Any

from purejaxppo.adapters import check_id, import_suite

OBSERVATIONS = ("symbolic", "symbolic_first_person", "categorical", "categorical_first_person")
"""The navix observation functions `make` takes (``observation=``)."""


def _import_navix():
    return import_suite("navix", "navix")


def registered_ids() -> list[str]:
    """Every env id navix can make, sorted."""
    return sorted(_import_navix().registry())


def make(env_id: str, *, observation: str = "symbolic", image: bool = False,
         max_steps: int | None = None, **navix_kwargs: Any):
    """``(env, env_params)`` for navix's ``env_id`` (e.g. ``"Navix-Empty-5x5-v0"``).

    ``observation``: one of `OBSERVATIONS`; ``image``: keep it as an
    ``(H, W, C)`` image instead of a flat vector; ``max_steps``: navix's
    time limit (the default params' ``max_steps_in_episode``), navix's own
    default where None. Other keywords go to ``navix.make``. An id navix
    does not register, or an unknown ``observation``, is a ``ValueError``.
    """
    navix = _import_navix()
    check_id("navix", env_id, sorted(navix.registry()))
    if observation not in OBSERVATIONS:
        raise ValueError(f"observation={observation!r} for navix/{env_id}; allowed: "
                         f"{', '.join(map(repr, OBSERVATIONS))}")
    if max_steps is not None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps={max_steps!r} for navix/{env_id}; allowed: an int >= 1")
        navix_kwargs["max_steps"] = max_steps
    if "penalty_coeff" in navix_kwargs:  # navix 0.7 spells the field penality_coeff
        fields = navix.Environment.__dataclass_fields__
        if "penalty_coeff" not in fields and "penality_coeff" in fields:
            navix_kwargs["penality_coeff"] = navix_kwargs.pop("penalty_coeff")
    observation_fn = getattr(navix.observations, observation)
    nx_env = navix.make(env_id, observation_fn=observation_fn, **navix_kwargs)
    env = _env_class()(nx_env, env_id, observation, bool(image))
    return env, env.default_params


@functools.cache
def _env_class():
    """The adapter's classes, built on first use (importing gymnax starts JAX)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import struct
    from gymnax.environments import spaces
    from gymnax.environments.environment import Environment
    from navix.environments.environment import StepType
    from navix.rendering.cache import RenderingCache

    @struct.dataclass
    class NavixParams:
        max_steps_in_episode: int = 100

    @struct.dataclass
    class NavixState:
        leaves: tuple  # navix's Timestep, flattened (`NavixEnv.timestep` rebuilds it)
        time: jax.Array

    class NavixEnv(Environment):
        """A navix env with gymnax's API (see `purejaxppo.adapters.navix`)."""

        def __init__(self, nx_env, env_id: str, observation: str, image: bool):
            self.nx_env = nx_env
            self.env_id = env_id
            self.observation = observation
            self.image = image
            self._nx_obs_shape = tuple(int(d) for d in nx_env.observation_space.shape)
            shapes = jax.eval_shape(lambda key: self._normalize(nx_env.reset(key)),
                                    jax.random.PRNGKey(0))
            self._treedef = jax.tree.structure(shapes)

        @property
        def name(self) -> str:
            return f"navix/{self.env_id}"

        @property
        def default_params(self):
            return NavixParams(max_steps_in_episode=int(self.nx_env.max_steps))

        @property
        def num_actions(self) -> int:
            return len(self.nx_env.action_set)

        def _obs_shape(self) -> tuple[int, ...]:
            shape = self._nx_obs_shape
            if not self.image:
                return (int(np.prod(shape)),)
            return shape if len(shape) == 3 else shape + (1,)

        def _obs(self, timestep):
            return jnp.asarray(timestep.observation, jnp.float32).reshape(self._obs_shape())

        @staticmethod
        def _normalize(timestep):
            """The same dtypes after a reset and a step; the rendering cache emptied."""
            return timestep.replace(
                t=jnp.asarray(timestep.t, jnp.int32),
                action=jnp.asarray(timestep.action, jnp.int32),
                reward=jnp.asarray(timestep.reward, jnp.float32),
                step_type=jnp.asarray(timestep.step_type, jnp.int32),
                state=timestep.state.replace(
                    cache=RenderingCache(patches=jnp.zeros((0,), jnp.uint8))),
                info={k: jnp.asarray(v, jnp.float32) for k, v in timestep.info.items()},
            )

        def _wrap(self, timestep):
            leaves, treedef = jax.tree.flatten(self._normalize(timestep))
            if treedef != self._treedef:
                raise ValueError(f"navix/{self.env_id}: a step's Timestep differs in structure "
                                 f"from the reset's: {treedef} vs {self._treedef}")
            return NavixState(leaves=tuple(leaves), time=jnp.asarray(timestep.t, jnp.int32))

        def timestep(self, state):
            """navix's ``Timestep`` held in ``state`` (a `NavixState`)."""
            return jax.tree.unflatten(self._treedef, list(state.leaves))

        def reset_env(self, key, params):
            timestep = self.nx_env.reset(key)
            return self._obs(timestep), self._wrap(timestep)

        def step_env(self, key, state, action, params):
            del key  # navix draws its randomness from the key in its state
            timestep = self.nx_env._step(self.timestep(state), jnp.asarray(action, jnp.int32))
            terminated = timestep.step_type == StepType.TERMINATION
            reward = jnp.asarray(timestep.reward, jnp.float32)
            return self._obs(timestep), self._wrap(timestep), reward, terminated, {}

        def is_truncated(self, state, params):
            return state.time >= params.max_steps_in_episode

        def is_terminated(self, state, params):
            return self.timestep(state).step_type == StepType.TERMINATION

        def observation_space(self, params):
            space = self.nx_env.observation_space
            low = float(np.min(np.asarray(space.minimum)))
            high = float(np.max(np.asarray(space.maximum)))
            return spaces.Box(low, high, self._obs_shape(), jnp.float32)

        def action_space(self, params):
            return spaces.Discrete(self.num_actions)

    NavixEnv.Params = NavixParams
    NavixEnv.State = NavixState
    return NavixEnv
