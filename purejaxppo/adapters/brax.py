"""Brax: continuous-control physics environments (``env_name="brax/<id>"``).

``make(id, **env_kwargs)`` builds Brax's registered environment ``id``
(``brax.envs.get_environment(id, **env_kwargs)``: "inverted_pendulum",
"inverted_double_pendulum", "hopper", "ant", ...) and wraps the raw env,
without Brax's training wrappers. ``env_kwargs`` go to the env's
constructor; ``backend`` picks the physics pipeline: "generalized" (Brax's
default for its registered envs), "positional", "spring" or "mjx"
(MuJoCo XLA).

* Observation: the env's observation vector, float32 of shape
  ``(observation_size,)`` (a Brax env with dict observations has its leaves
  flattened and concatenated in key order). The observation space is an
  unbounded ``Box``.
* Action: ``Box(-1, 1, (action_size,))``; the env scales it to its
  actuators' control range.
* Reward: the env's reward, float32.
* Termination and truncation: ``terminated`` is Brax's ``done`` (the pole
  fell, the hopper became unhealthy, ...). The raw env has no time limit;
  the adapter counts the steps of an episode in ``state.time`` and
  truncates at ``params.max_steps_in_episode`` (1000 by default, the
  episode length Brax trains with), as Brax's ``EpisodeWrapper`` does.
* Automatic reset: gymnax's ``step`` resets a finished episode (Brax's own
  ``AutoResetWrapper`` is not used) and puts the observation the episode
  ended in into ``info["final_observation"]``.

The env state is `BraxEnvState`: Brax's ``State`` (its leaves kept in the
dtypes the reset gives them, so the state has one structure every step)
and the step counter ``time``.
"""

from __future__ import annotations

import functools
from typing import Any

from purejaxppo.adapters import import_suite


def _import_brax_envs():
    return import_suite("brax.envs", "brax")


def registered_ids() -> list[str]:
    """Brax's registered environment ids (``brax.envs.get_environment``'s names)."""
    envs = _import_brax_envs()
    return sorted(getattr(envs, "_envs", {}))


def make(env_id: str, **env_kwargs: Any):
    """``(env, env_params)`` for Brax's registered env ``env_id``, built with
    ``env_kwargs`` (e.g. ``backend="mjx"``)."""
    import warnings

    envs = _import_brax_envs()
    ids = registered_ids()
    if env_id not in ids:
        raise ValueError(f"brax has no environment {env_id!r}; allowed: {', '.join(ids)} "
                         "(brax.envs.get_environment's names)")
    with warnings.catch_warnings():  # Brax's notice that MJX is its maintained successor
        warnings.filterwarnings("ignore", message=".*not actively being maintained", category=UserWarning)
        brax_env = envs.get_environment(env_id, **env_kwargs)
    env = _env_class()[0](env_id, brax_env)
    return env, env.default_params


@functools.cache
def _env_class():
    """The adapter's classes, built on first use (gymnax and flax start JAX)."""
    import jax
    import jax.numpy as jnp
    from flax import struct

    from purejaxppo.fast.lazy_gymnax import import_gymnax

    import_gymnax()
    from gymnax.environments import spaces
    from gymnax.environments.environment import Environment

    @struct.dataclass
    class BraxEnvParams:
        max_steps_in_episode: int = 1000

    @struct.dataclass
    class BraxEnvState:
        brax_state: Any
        time: jax.Array

    def flat_obs(obs) -> jax.Array:
        if isinstance(obs, dict):
            return jnp.concatenate([jnp.ravel(obs[k]) for k in sorted(obs)]).astype(jnp.float32)
        return jnp.asarray(obs, jnp.float32)

    def keep_dtypes(new, old):
        """``new`` (Brax's state after a step) with each leaf in the dtype of
        ``old``'s (a step may return a Python float where reset gave float32)."""
        return jax.tree.map(lambda n, o: jnp.asarray(n, jnp.result_type(o)), new, old)

    class BraxEnv(Environment):
        """A raw Brax env on gymnax's API (see the module docstring)."""

        def __init__(self, env_id: str, brax_env):
            super().__init__()
            self.env_id = env_id
            self.brax_env = brax_env
            shapes = jax.eval_shape(brax_env.reset, jax.random.PRNGKey(0))
            self._obs_size = int(jax.eval_shape(flat_obs, shapes.obs).shape[0])
            self._action_size = int(brax_env.action_size)

        @property
        def name(self) -> str:
            return f"brax/{self.env_id}"

        @property
        def default_params(self) -> BraxEnvParams:
            return BraxEnvParams()

        @property
        def num_actions(self) -> int:
            return self._action_size

        def reset_env(self, key, params):
            brax_state = self.brax_env.reset(key)
            brax_state = brax_state.replace(reward=jnp.asarray(brax_state.reward, jnp.float32),
                                            done=jnp.asarray(brax_state.done, jnp.float32))
            state = BraxEnvState(brax_state=brax_state, time=jnp.zeros((), jnp.int32))
            return flat_obs(brax_state.obs), state

        def step_env(self, key, state, action, params):
            del key  # Brax's step is deterministic
            action = jnp.reshape(action, (self._action_size,)).astype(jnp.float32)
            brax_state = keep_dtypes(self.brax_env.step(state.brax_state, action), state.brax_state)
            new_state = BraxEnvState(brax_state=brax_state, time=state.time + 1)
            terminated = brax_state.done > 0.5
            return flat_obs(brax_state.obs), new_state, brax_state.reward, terminated, {}

        def is_truncated(self, state, params):
            return state.time >= params.max_steps_in_episode

        def observation_space(self, params):
            return spaces.Box(-jnp.inf, jnp.inf, (self._obs_size,), jnp.float32)

        def action_space(self, params):
            return spaces.Box(-1.0, 1.0, (self._action_size,), jnp.float32)

    return BraxEnv, BraxEnvParams, BraxEnvState


def __getattr__(name: str):
    if name in ("BraxEnv", "BraxEnvParams", "BraxEnvState"):
        return _env_class()[("BraxEnv", "BraxEnvParams", "BraxEnvState").index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
