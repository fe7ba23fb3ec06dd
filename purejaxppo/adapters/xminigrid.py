"""XLand-MiniGrid (``xminigrid``) on purejaxppo's env protocol.

``make("MiniGrid-Empty-6x6")`` wraps ``xminigrid.make(id)``; the ids are
xminigrid's registered names (``xminigrid.registered_environments()``):
the ``MiniGrid-*`` ports of MiniGrid and the ``XLand-MiniGrid-*`` worlds.

* **Stepping and auto-reset.** ``step_env`` calls the bare environment's
  ``step`` (``xminigrid.make`` returns it without an auto-reset wrapper),
  which never resets; gymnax's ``step`` does the automatic reset and puts
  the observation the episode ended in into ``info["final_observation"]``.
* **Termination vs truncation.** ``terminated`` is xminigrid's true end:
  the goal reached, where its ``TimeStep.discount`` is 0. ``truncated`` is
  the time limit, ``state.time >= params.max_steps_in_episode``, where
  ``state.time`` is xminigrid's ``State.step_num`` (steps since the reset).
  ``max_steps_in_episode`` defaults to xminigrid's ``max_steps`` (MiniGrid's
  ``4 * height * width`` for most MiniGrid ports), so at the default it ends
  episodes where xminigrid's ``step_type`` is ``LAST`` without a zero
  discount; a smaller value in the params cuts them earlier. The reward is
  xminigrid's: ``1 - 0.9 * steps / max_steps`` at the goal, with its own
  ``max_steps`` (``make(id, max_steps=...)`` sets both).
* **Observation.** xminigrid's symbolic egocentric view: a ``(V, V, 2)``
  grid of (tile, colour) ids in front of the agent, rotated so the agent
  faces up (``V = params.view_size``, 7 for the MiniGrid ports, 5 for the
  XLand worlds). Returned as float32, flattened to one vector (an MLP's
  input); ``image=True`` keeps it as a ``(V, V, 2)`` image for
  ``torso="cnn"``. ``Box`` bounds 0 to ``max(NUM_TILES, NUM_COLORS) - 1``.
* **Params.** ``XMiniGridParams``: ``max_steps_in_episode`` and ``suite``,
  xminigrid's own ``EnvParams`` (its grid size, view size and ``max_steps``
  are static; an XLand world's ``ruleset`` is an array field).
* **State.** ``XMiniGridState``: xminigrid's ``TimeStep`` and ``time``. The
  MiniGrid ports step deterministically; a reset's randomness (a random
  start, a door's place) comes from the reset key.
* **Actions.** ``Discrete(6)``: forward, turn right, turn left, pick up,
  put down, toggle.

Extra keywords of `make` replace fields of xminigrid's ``EnvParams``
(``max_steps``, ``view_size``, an XLand world's ``ruleset``), as
``xminigrid.make(id, **kwargs)`` does (``max_steps`` is derived from the
registered grid size: give it anew with another ``height``/``width``).
"""

from __future__ import annotations

import functools
from typing import Any

from purejaxppo.adapters import check_id, import_suite


def _import_xminigrid():
    return import_suite("xminigrid", "xminigrid")


def registered_ids() -> list[str]:
    """Every env id xminigrid can make, sorted."""
    return sorted(_import_xminigrid().registered_environments())


def make(env_id: str, *, image: bool = False, **suite_params: Any):
    """``(env, env_params)`` for xminigrid's ``env_id`` (e.g. ``"MiniGrid-Empty-6x6"``).

    ``image``: keep the observation as a ``(V, V, 2)`` image instead of a
    flat vector. Other keywords replace fields of xminigrid's ``EnvParams``.
    An id xminigrid does not register is a ``ValueError``.
    """
    xminigrid = _import_xminigrid()
    check_id("xminigrid", env_id, sorted(xminigrid.registered_environments()))
    import dataclasses

    known = {f.name for f in dataclasses.fields(xminigrid.make(env_id)[1])}
    unknown = sorted(set(suite_params) - known)
    if unknown:
        raise ValueError(f"xminigrid/{env_id} has no parameter(s) {unknown}; allowed: "
                         f"{sorted(known)}, and image")
    suite_env, suite_env_params = xminigrid.make(env_id, **suite_params)
    env = _env_class()(suite_env, suite_env_params, env_id, bool(image))
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
    from xminigrid.core.constants import NUM_COLORS, NUM_TILES

    @struct.dataclass
    class XMiniGridParams:
        suite: Any = None
        max_steps_in_episode: int = 100

    @struct.dataclass
    class XMiniGridState:
        timestep: Any
        time: jax.Array

    class XMiniGridEnv(Environment):
        """An xminigrid env with gymnax's API (see `purejaxppo.adapters.xminigrid`)."""

        def __init__(self, suite_env, suite_params, env_id: str, image: bool):
            self.suite_env = suite_env
            self.suite_params = suite_params
            self.env_id = env_id
            self.image = image

        @property
        def name(self) -> str:
            return f"xminigrid/{self.env_id}"

        @property
        def default_params(self):
            """xminigrid's params, the time limit its ``max_steps``."""
            return XMiniGridParams(suite=self.suite_params,
                                   max_steps_in_episode=int(self.suite_params.max_steps))

        @property
        def num_actions(self) -> int:
            return int(self.suite_env.num_actions(self.suite_params))

        def _obs_shape(self, params) -> tuple[int, ...]:
            shape = tuple(int(d) for d in self.suite_env.observation_shape(params.suite))
            return shape if self.image else (int(np.prod(shape)),)

        def _obs(self, timestep, params):
            return jnp.asarray(timestep.observation, jnp.float32).reshape(self._obs_shape(params))

        @staticmethod
        def _wrap(timestep):
            """The same dtypes after a reset and a step."""
            timestep = timestep.replace(
                step_type=jnp.asarray(timestep.step_type, jnp.uint8),
                reward=jnp.asarray(timestep.reward, jnp.float32),
                discount=jnp.asarray(timestep.discount, jnp.float32),
                state=timestep.state.replace(step_num=jnp.asarray(timestep.state.step_num, jnp.int32)),
            )
            return XMiniGridState(timestep=timestep, time=timestep.state.step_num)

        def reset_env(self, key, params):
            timestep = self.suite_env.reset(params.suite, key)
            return self._obs(timestep, params), self._wrap(timestep)

        def step_env(self, key, state, action, params):
            del key  # the MiniGrid ports step deterministically
            timestep = self.suite_env.step(params.suite, state.timestep, jnp.asarray(action, jnp.int32))
            terminated = timestep.discount == 0
            reward = jnp.asarray(timestep.reward, jnp.float32)
            return self._obs(timestep, params), self._wrap(timestep), reward, terminated, {}

        def is_truncated(self, state, params):
            return state.time >= params.max_steps_in_episode

        def is_terminated(self, state, params):
            return state.timestep.discount == 0

        def observation_space(self, params):
            return spaces.Box(0.0, float(max(NUM_TILES, NUM_COLORS) - 1), self._obs_shape(params),
                              jnp.float32)

        def action_space(self, params):
            return spaces.Discrete(int(self.suite_env.num_actions(params.suite)))

    XMiniGridEnv.Params = XMiniGridParams
    XMiniGridEnv.State = XMiniGridState
    return XMiniGridEnv
