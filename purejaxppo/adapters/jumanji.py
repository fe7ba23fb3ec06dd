"""Jumanji (InstaDeep's JAX env suite) on purejaxppo's env protocol.

``make("Snake-v1")`` wraps ``jumanji.make(id)``; the ids are Jumanji's
registered names (``sorted(jumanji.registered_environments())``, e.g.
``"Snake-v1"``, ``"Game2048-v1"``, ``"Maze-v0"``). Written against jumanji
1.1.

* **Stepping and auto-reset.** ``step_env`` calls the Jumanji env's
  ``step``, which does not reset (Jumanji's ``AutoResetWrapper`` is not
  used), so gymnax's ``step`` does the automatic reset and puts the
  observation the episode ended in into ``info["final_observation"]``.
* **Termination vs truncation.** Jumanji ends an episode with a ``LAST``
  time step; its ``discount`` is 0 at a true end and non-zero at a
  truncation. Most Jumanji envs also end with discount 0 when their own
  ``time_limit`` is reached: that step is reported as a truncation. So
  ``terminated`` is a ``LAST`` step whose discount is 0 (all agents' discounts,
  for multi-agent envs) before the env's ``time_limit`` is reached, and
  ``truncated`` (`is_truncated`) is any other ``LAST`` step or ``state.time >=
  params.max_steps_in_episode``, where ``state.time`` counts the steps since
  the reset. ``max_steps_in_episode`` defaults to the Jumanji env's
  ``time_limit`` (set it with ``env_kwargs={"time_limit": ...}``, which the
  envs that have one take), or to `DEFAULT_MAX_STEPS` for envs without one
  (Game2048, Sudoku, Knapsack, TSP, ...), a cap this adapter adds. A
  smaller value in the params cuts episodes earlier; a larger one is capped
  by the Jumanji env's own ``time_limit``. A true end on the very step the
  env's ``time_limit`` is reached is reported as a truncation too (Jumanji's
  time step does not tell the two apart there).
* **Observation.** Jumanji's structured observation (a NamedTuple or
  dataclass of grids, positions, action masks, step counts...) flattened to
  one float32 vector: every array leaf, in the order ``jax.tree.leaves``
  gives (the observation's declared field order), raveled and concatenated;
  booleans become 0/1 and integers their value. The ``Box`` is unbounded.
  The action mask, where the env has one, is part of that vector.
* **Actions.** A ``DiscreteArray(n)`` action spec is ``Discrete(n)``. A
  ``MultiDiscreteArray`` whose product of sizes is at most
  `MAX_JOINT_ACTIONS` is flattened to one ``Discrete`` over the product:
  action ``a`` is decoded in row-major order (the first component varies
  slowest, as ``numpy.unravel_index``). Other action specs (a continuous
  ``BoundedArray``, a larger product) are a ``ValueError``. The policy is not
  masked: an invalid action goes to the env's own ``step``, which does what
  that env does with one (Maze-v0 and Game2048-v1: nothing happens and the
  step counts; Snake-v1: a move into a wall or into the snake's body ends
  the episode, a termination).
* **Reward.** Jumanji's reward as float32; a vector reward (one per agent,
  e.g. LevelBasedForaging-v0) is summed.
* **State.** `JumanjiState`: the Jumanji env's state, ``time`` and whether
  the step that led to it was a Jumanji truncation. Jumanji envs draw their
  randomness from the key kept in their own state, split from the reset key;
  the step key gymnax passes is not used.

``make``'s keywords go to the Jumanji env's constructor (``time_limit``,
``num_rows``, ``board_size`` and the like). Keywords the constructor does
not take build its default generator's class instead, for the envs that
take a ``generator``: ``make("Maze-v0", num_rows=5, num_cols=5)`` is
``Maze(generator=RandomGenerator(num_rows=5, num_cols=5))``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from purejaxppo.adapters import check_id, import_suite

DEFAULT_MAX_STEPS = 10_000
"""``max_steps_in_episode`` of a Jumanji env that has no ``time_limit`` of its own."""

MAX_JOINT_ACTIONS = 10_000
"""The largest product of a ``MultiDiscreteArray``'s sizes flattened to one ``Discrete``."""


def _import_jumanji():
    return import_suite("jumanji", "jumanji")


def registered_ids() -> list[str]:
    """Every env id Jumanji can make, sorted."""
    return sorted(_import_jumanji().registered_environments())


def make(env_id: str, **kwargs: Any):
    """``(env, env_params)`` for Jumanji's ``env_id`` (e.g. ``"Snake-v1"``).

    ``kwargs`` go to the Jumanji env's constructor; those it does not take
    build its default generator's class (module docstring). An id Jumanji
    does not register, a keyword neither takes, or an action spec that is
    neither a ``DiscreteArray`` nor a small ``MultiDiscreteArray`` is a
    ``ValueError``.
    """
    jumanji = _import_jumanji()
    check_id("jumanji", env_id, sorted(jumanji.registered_environments()))
    suite_env = _build(jumanji, env_id, kwargs)
    env = _env_class()(suite_env, env_id)
    return env, env.default_params


def _build(jumanji, env_id: str, kwargs: dict):
    """``jumanji.make(env_id, ...)``, with the keywords its constructor does
    not take given to its default generator's class."""
    if not kwargs:
        return jumanji.make(env_id)
    default = jumanji.make(env_id)
    accepted = _keywords(type(default).__init__)
    rest = {k: v for k, v in kwargs.items() if k not in accepted}
    direct = {k: v for k, v in kwargs.items() if k in accepted}
    if rest:
        generator = getattr(default, "generator", None)
        gen_accepted = _keywords(type(generator).__init__) if generator is not None else set()
        unknown = sorted(set(rest) - gen_accepted)
        if "generator" not in accepted or generator is None or unknown or "generator" in direct:
            allowed = sorted(accepted - {"self", "viewer"})
            if "generator" in accepted and generator is not None and "generator" not in direct:
                allowed += [f"{k} (for {type(generator).__name__})"
                            for k in sorted(gen_accepted - {"self"})]
            raise ValueError(f"env_kwargs {sorted(unknown or rest)} for jumanji/{env_id}: not "
                             f"keywords of {type(default).__name__}; allowed: "
                             f"{', '.join(allowed) or 'none'}")
        direct["generator"] = type(generator)(**rest)
    return jumanji.make(env_id, **direct)


def _keywords(function) -> set[str]:
    return set(inspect.signature(function).parameters) - {"self", "args", "kwargs"}


@functools.cache
def _env_class():
    """The adapter's classes, built on first use (importing gymnax starts JAX)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import struct
    from gymnax.environments import spaces
    from gymnax.environments.environment import Environment
    from jumanji import specs
    from jumanji.types import StepType

    @struct.dataclass
    class JumanjiParams:
        max_steps_in_episode: int = DEFAULT_MAX_STEPS

    @struct.dataclass
    class JumanjiState:
        inner: Any  # the Jumanji env's own state
        time: jax.Array  # steps since the reset (int32)
        suite_truncated: jax.Array  # the step to this state was a Jumanji truncation (bool)

    class JumanjiEnv(Environment):
        """A Jumanji env with gymnax's API (see `purejaxppo.adapters.jumanji`)."""

        def __init__(self, suite_env, env_id: str):
            self.suite_env = suite_env
            self.env_id = env_id
            limit = getattr(suite_env, "time_limit", None)
            self.suite_time_limit = int(limit) if isinstance(limit, (int, np.integer)) else None
            spec = suite_env.action_spec
            multi = isinstance(spec, specs.MultiDiscreteArray)
            if not (multi or isinstance(spec, specs.DiscreteArray)):
                raise ValueError(
                    f"jumanji/{env_id} has a {type(spec).__name__} action spec (shape "
                    f"{tuple(spec.shape)}, {np.dtype(spec.dtype).name}); allowed: a DiscreteArray "
                    "or a MultiDiscreteArray (purejaxppo's adapter maps those to Discrete)")
            sizes = np.asarray(spec.num_values).ravel()
            self._num_actions = int(np.prod(sizes, dtype=np.int64))
            self._action_sizes = tuple(int(n) for n in sizes) if multi else None
            if multi and self._num_actions > MAX_JOINT_ACTIONS:
                raise ValueError(
                    f"jumanji/{env_id} has a MultiDiscreteArray action spec of sizes "
                    f"{sizes.tolist()}, {self._num_actions:,} joint actions; allowed: a "
                    f"DiscreteArray, or a MultiDiscreteArray of at most {MAX_JOINT_ACTIONS:,} "
                    "joint actions (flattened to one Discrete)")
            self._action_spec = spec
            shapes = jax.eval_shape(lambda key: self._obs(suite_env.reset(key)[1]),
                                    jax.random.PRNGKey(0))
            self._obs_size = int(shapes.shape[0])

        @property
        def name(self) -> str:
            return f"jumanji/{self.env_id}"

        @property
        def default_params(self):
            return JumanjiParams(max_steps_in_episode=self.suite_time_limit or DEFAULT_MAX_STEPS)

        @property
        def num_actions(self) -> int:
            return self._num_actions

        @staticmethod
        def _obs(timestep):
            leaves = jax.tree.leaves(timestep.observation)
            return jnp.concatenate([jnp.ravel(jnp.asarray(x)).astype(jnp.float32) for x in leaves])

        def decode_action(self, action):
            """The Jumanji action for a flat ``Discrete`` action."""
            action = jnp.asarray(action, jnp.int32)
            if self._action_sizes is None:
                return action.astype(self._action_spec.dtype)
            digits = []
            for n in reversed(self._action_sizes):
                digits.append(action % n)
                action = action // n
            joint = jnp.stack(digits[::-1]).reshape(self._action_spec.shape)
            return joint.astype(self._action_spec.dtype)

        def reset_env(self, key, params):
            inner, timestep = self.suite_env.reset(key)
            state = JumanjiState(inner=inner, time=jnp.zeros((), jnp.int32),
                                 suite_truncated=jnp.zeros((), bool))
            return self._obs(timestep), state

        def step_env(self, key, state, action, params):
            del key  # Jumanji draws its randomness from the key in its own state
            inner, timestep = self.suite_env.step(state.inner, self.decode_action(action))
            time = state.time + 1
            last = timestep.step_type == StepType.LAST
            terminated = last & jnp.all(jnp.asarray(timestep.discount) == 0)
            if self.suite_time_limit is not None:  # its time limit is a truncation
                terminated = terminated & (time < self.suite_time_limit)
            new_state = JumanjiState(inner=inner, time=time, suite_truncated=last & ~terminated)
            reward = jnp.sum(jnp.asarray(timestep.reward, jnp.float32))
            return self._obs(timestep), new_state, reward, terminated, {}

        def is_truncated(self, state, params):
            return state.suite_truncated | (state.time >= params.max_steps_in_episode)

        def observation_space(self, params):
            return spaces.Box(-jnp.inf, jnp.inf, (self._obs_size,), jnp.float32)

        def action_space(self, params):
            return spaces.Discrete(self._num_actions)

    return JumanjiEnv
