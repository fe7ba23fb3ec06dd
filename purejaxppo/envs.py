"""Environments: gymnax construction, space descriptions and vectorised stepping.

Built on the gymnax >= 1.0 step API, which returns six values::

    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

with automatic reset: when ``terminated | truncated``, ``obs`` is already the
first observation of the next episode and ``info["final_observation"]`` is the
observation the finished episode ended in. A time-limit truncation is *not* a
termination: the return is bootstrapped from ``V(final_observation)``.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purejaxppo.fast.lazy_gymnax import import_gymnax
from purejaxppo.fast.straight_threefry import straight


def registered_env_names() -> list[str]:
    """All environment ids gymnax can make (built-in and registered)."""
    return list(import_gymnax().registered_envs)


@struct.dataclass
class EnvSpec:
    """Static description of an environment's spaces (all fields are static).

    Attributes:
        obs_shape: shape of one observation.
        discrete: whether the action space is ``Discrete``.
        action_dim: number of actions (discrete) or action dimensions (Box).
        action_low, action_high: bounds of a Box action space, as tuples of
            length ``action_dim``; empty for discrete spaces.
        obs_num_categories: for a ``Discrete(n)`` observation space, ``n``:
            observations are then one-hot encoded to shape ``(n,)`` (0 for
            Box observation spaces, which pass through as float32).
        obs_features: the features of a flat Box observation that are
            kept (``obs_shape`` is then ``(len(obs_features),)``), or None
            for all of them.
    """

    obs_shape: tuple[int, ...] = struct.field(pytree_node=False)
    discrete: bool = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    action_low: tuple[float, ...] = struct.field(pytree_node=False, default=())
    action_high: tuple[float, ...] = struct.field(pytree_node=False, default=())
    obs_num_categories: int = struct.field(pytree_node=False, default=0)
    obs_features: tuple[int, ...] | None = struct.field(pytree_node=False, default=None)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one action: ``()`` for discrete, ``(action_dim,)`` for Box."""
        return () if self.discrete else (self.action_dim,)


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _field_kind(params: Any, name: str, default: Any) -> str:
    """"b", "i" or "f": the kind of an ``EnvParams`` scalar field, from its
    annotation where it names one (a float field may default to an int),
    else from its default."""
    import dataclasses

    annotation = {f.name: f.type for f in dataclasses.fields(params)}.get(name)
    annotation = getattr(annotation, "__name__", annotation)
    if annotation in ("bool", "int", "float"):
        return annotation[0]
    kind = np.asarray(default).dtype.kind
    return {"b": "b", "i": "i", "u": "i"}.get(kind, "f")


def make_env(
    env_name: str,
    env_kwargs: tuple[tuple[str, Any], ...] = (),
    env_params: tuple[tuple[str, Any], ...] = (),
    obs_features: tuple[int, ...] | None = None,
):
    """Construct a gymnax environment; return ``(env, env_params, spec)``.

    ``env_kwargs`` go to the env's constructor; ``env_params`` replace fields
    of its default ``EnvParams``. A keyword the constructor refuses, an
    unknown field, and a value not of its scalar field's kind (a number, or
    a bool) are each a ``ValueError`` naming it. ``obs_features`` keeps only
    those features of a flat Box observation (`EnvSpec.obs_features`); an
    index out of range, or an observation that is not a flat Box, is a
    ``ValueError``.
    """
    import dataclasses

    gymnax = import_gymnax()
    from gymnax.environments import spaces

    try:
        env, default_params = gymnax.make(env_name, **dict(env_kwargs))
    except TypeError as error:  # a keyword the constructor does not take
        if not env_kwargs:
            raise
        raise ValueError(f"env_kwargs {dict(env_kwargs)} for {env_name!r}: {error}") from None
    overrides = dict(env_params)
    known = {f.name for f in dataclasses.fields(default_params)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"env_params has unknown field(s) {unknown} for {env_name!r}; "
            f"allowed: {sorted(known)}"
        )
    steps = overrides.get("max_steps_in_episode")
    if steps is not None and not (isinstance(steps, (int, np.integer)) and not isinstance(steps, bool) and steps >= 1):
        raise ValueError(
            f"env_params max_steps_in_episode={steps!r} for {env_name!r}; allowed: an int >= 1"
        )
    for name, value in overrides.items():  # a scalar field takes a value of its kind
        default = getattr(default_params, name)
        if np.ndim(default) != 0 or not isinstance(default, (int, float, np.generic, np.ndarray, jax.Array)):
            continue
        kind = _field_kind(default_params, name, default)
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if kind == "b":
            ok, allowed = isinstance(value, (bool, np.bool_)), "a bool"
        elif kind == "i":  # an int32 inside the compiled run
            ok = (number and bool(np.isfinite(float(value))) and float(value).is_integer()
                  and _INT32_MIN <= value <= _INT32_MAX)
            allowed = f"an int in [{_INT32_MIN:,}, {_INT32_MAX:,}] (int32)"
        else:
            ok, allowed = number and bool(np.isfinite(float(value))), "a finite number"
        if not ok:
            raise ValueError(f"env_params {name}={value!r} for {env_name!r}; allowed: {allowed} "
                             f"(the default is {np.asarray(default).item()!r})")
        if kind == "i" and isinstance(value, float):
            overrides[name] = int(value)
    env_params = default_params.replace(**overrides)
    obs_space = env.observation_space(env_params)
    act_space = env.action_space(env_params)
    if isinstance(obs_space, spaces.Discrete):  # e.g. FrozenLake: one-hot encoded
        categories = int(obs_space.n)
        obs_shape = (categories,)
    elif isinstance(obs_space, spaces.Box):
        categories = 0
        obs_shape = tuple(int(d) for d in np.shape(np.zeros(obs_space.shape)))
    else:
        raise ValueError(
            f"env_name={env_name!r} has a {type(obs_space).__name__} observation "
            "space; purejaxppo supports Box and Discrete observation spaces"
        )
    if obs_features is not None:
        if categories or len(obs_shape) != 1:
            raise ValueError(
                f"obs_features={obs_features} for {env_name!r}, whose observations are "
                f"{'Discrete' if categories else f'of shape {obs_shape}'}; allowed: "
                "obs_features=None, or an env with flat (1-D) Box observations"
            )
        if max(obs_features) >= obs_shape[0]:
            raise ValueError(
                f"obs_features={obs_features} for {env_name!r}, whose observations have "
                f"{obs_shape[0]} features; allowed: indices in [0, {obs_shape[0] - 1}]"
            )
        obs_shape = (len(obs_features),)
    if isinstance(act_space, spaces.Discrete):
        spec = EnvSpec(obs_shape=obs_shape, discrete=True, action_dim=int(act_space.n),
                       obs_num_categories=categories, obs_features=obs_features)
    elif isinstance(act_space, spaces.Box):
        shape = tuple(act_space.shape) or (1,)
        if len(shape) != 1:
            raise ValueError(
                f"env_name={env_name!r} has a Box action space of shape {shape}; "
                "purejaxppo supports flat (1-D) Box action spaces"
            )
        dim = shape[0]
        low = np.broadcast_to(np.asarray(act_space.low, np.float32), (dim,))
        high = np.broadcast_to(np.asarray(act_space.high, np.float32), (dim,))
        spec = EnvSpec(
            obs_shape=obs_shape,
            discrete=False,
            action_dim=int(dim),
            action_low=tuple(float(x) for x in low),
            action_high=tuple(float(x) for x in high),
            obs_num_categories=categories,
            obs_features=obs_features,
        )
    else:
        raise ValueError(
            f"env_name={env_name!r} has a {type(act_space).__name__} action space; "
            "purejaxppo supports Discrete and Box action spaces"
        )
    return env, env_params, spec


@struct.dataclass
class VecStep:
    """One step of ``num_envs`` environments (leading axis ``num_envs``)."""

    obs: jax.Array  # observation after auto-reset, (N, *obs_shape)
    env_state: Any
    reward: jax.Array  # (N,)
    terminated: jax.Array  # (N,) bool: a true end, no bootstrap
    truncated: jax.Array  # (N,) bool: a time limit, bootstrap from final_obs
    final_obs: jax.Array  # (N, *obs_shape): the observation before auto-reset


class VecEnv:
    """A gymnax env vmapped over ``num_envs`` copies, with float32 observations.

    Static (hashable by identity); holds no arrays, so closing over it in a
    jitted function adds nothing to the graph but the env's own maths.

    Auto-reset, fast path: gymnax's ``step`` draws a fresh reset state on
    every step (a key split and a reset, thrown away unless the episode
    ended). For envs that use gymnax's own ``step`` (all built-ins but
    DeepSea), `draw_resets` computes the reset states of a whole rollout in
    one batched call before the loop, and `step_with_keys` selects them where
    an episode ends: the same transition distribution, with no random-number
    generation left inside the sequential loop except the env's own.

    Keys reach the env as `purejaxppo.fast.straight_threefry.straight` keys: JAX's threefry
    keys give the env the same bits, through a hash XLA compiles several
    times faster on CPU.
    """

    def __init__(self, env, env_params, spec: EnvSpec, num_envs: int):
        from gymnax.environments.environment import Environment

        self.env = env
        self.env_params = env_params
        self.spec = spec
        self.num_envs = num_envs
        self.presampled_resets = isinstance(env, Environment) and type(env).step is Environment.step

    def truncation_period(self) -> int | None:
        """The fewest steps between two time-limit truncations of one env,
        known before tracing, or None where it is not.

        gymnax truncates where ``state.time >= params.max_steps_in_episode``
        (`Environment.is_truncated`), and ``time`` counts the steps since the
        episode's reset: a limit L truncates one env at most once in any
        ``ceil(L)`` consecutive steps (every step if that is <= 1;
        tests/test_envs.py checks every built-in env with this auto-reset).
        Known only for gymnax's built-in envs (whose ``time`` is checked to
        count so; an env registered from elsewhere may count otherwise),
        with that auto-reset (`step_with_keys` with ``resets``), gymnax's own
        ``is_truncated``, and a finite Python or NumPy number as
        ``max_steps_in_episode`` (BernoulliBandit's is a float: it is
        compared as float32, so the period is taken from the float32 value).
        `purejaxppo.rollout.critic_values` uses it to skip the final
        observations whose value it already has.
        """
        from gymnax.environments.environment import Environment

        limit = getattr(self.env_params, "max_steps_in_episode", None)
        if (
            not self.presampled_resets
            or not type(self.env).__module__.startswith("gymnax.environments.")
            or type(self.env).is_truncated is not Environment.is_truncated
            or not isinstance(limit, (int, float, np.integer, np.floating))
            or isinstance(limit, bool)
            or not math.isfinite(limit)
        ):
            return None
        if isinstance(limit, (float, np.floating)):
            limit = float(np.float32(limit))  # what `time >= limit` compares against
        return max(1, math.ceil(limit))

    def reset(self, key: jax.Array):
        """Reset all envs; return ``(obs (N, *obs_shape) float32, env_state)``."""
        keys = straight(jax.random.split(key, self.num_envs))
        obs, state = jax.vmap(self.env.reset, in_axes=(0, None))(keys, self.env_params)
        obs = self.encode_obs(obs)
        chex.assert_shape(obs, (self.num_envs, *self.spec.obs_shape))
        return obs, state

    def draw_resets(self, keys: jax.Array):
        """Reset states for keys of shape (T, N): ``(obs (T, N, ...), state)``,
        or None where the env's own ``step`` must do its resets."""
        if not self.presampled_resets:
            return None
        keys = straight(keys)
        lead = keys.shape[:2]
        flat_keys = keys.reshape((-1,) + keys.shape[2:])
        obs, state = jax.vmap(self.env.reset_env, in_axes=(0, None))(flat_keys, self.env_params)
        unflatten = lambda x: x.reshape(lead + x.shape[1:])
        return self.encode_obs(unflatten(obs)), jax.tree.map(unflatten, state)

    def encode_obs(self, obs: jax.Array) -> jax.Array:
        """Raw env observations to the network's input: float32, one-hot
        over the last axis for a ``Discrete`` observation space, and only
        the `EnvSpec.obs_features` where those are given."""
        if self.spec.obs_num_categories:
            return jax.nn.one_hot(obs.astype(jnp.int32), self.spec.obs_num_categories)
        if self.spec.obs_features is not None:
            obs = obs[..., jnp.asarray(self.spec.obs_features)]
        return obs.astype(jnp.float32)

    def step(self, key: jax.Array, env_state, action: jax.Array) -> VecStep:
        """Step all envs with ``action`` (N, *action_shape); auto-resets."""
        return self.step_with_keys(jax.random.split(key, self.num_envs), env_state, action)

    def step_with_keys(self, keys: jax.Array, env_state, action: jax.Array, resets=None) -> VecStep:
        """`step` with one PRNG key per env already drawn (``keys``: N keys).

        ``resets``: this step's slice of `draw_resets` (obs (N, ...), state);
        where given, envs that finish take these as their reset states.
        """
        chex.assert_shape(action, (self.num_envs, *self.spec.action_shape))
        keys = straight(keys)
        if self.spec.discrete:
            env_action = action
        else:
            low = jnp.asarray(self.spec.action_low, jnp.float32)
            high = jnp.asarray(self.spec.action_high, jnp.float32)
            env_action = jnp.clip(action, low, high)
        if resets is None:
            obs, state, reward, terminated, truncated, info = jax.vmap(
                self.env.step, in_axes=(0, 0, 0, None)
            )(keys, env_state, env_action, self.env_params)
            obs, final_obs = self.encode_obs(obs), self.encode_obs(info["final_observation"])
        else:
            final_obs, state_st, reward, terminated, truncated = jax.vmap(
                self._step_no_reset, in_axes=(0, 0, 0, None)
            )(keys, env_state, env_action, self.env_params)
            done = jnp.logical_or(terminated, truncated)
            reset_obs, reset_state = resets
            pick = lambda re, st: jnp.where(done.reshape(done.shape + (1,) * (st.ndim - 1)), re, st)
            state = jax.tree.map(pick, reset_state, state_st)
            final_obs = self.encode_obs(final_obs)
            obs = pick(reset_obs, final_obs)
        out = VecStep(
            obs=obs,
            env_state=state,
            reward=jnp.reshape(reward, (self.num_envs,)).astype(jnp.float32),
            terminated=jnp.reshape(terminated, (self.num_envs,)).astype(bool),
            truncated=jnp.reshape(truncated, (self.num_envs,)).astype(bool),
            final_obs=final_obs,
        )
        chex.assert_shape([out.obs, out.final_obs], (self.num_envs, *self.spec.obs_shape))
        return out

    def _step_no_reset(self, key, state, action, params):
        """gymnax's ``Environment.step`` without its auto-reset (one env)."""
        obs, state, reward, terminated, _ = self.env.step_env(key, state, action, params)
        truncated = self.env.is_truncated(state, params)
        return obs, state, reward, terminated, truncated
