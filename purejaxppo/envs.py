"""Environments: construction (gymnax, adapters, a user's own), space descriptions and vectorised stepping.

Built on the gymnax >= 1.0 step API, which returns six values::

    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

with automatic reset: when ``terminated | truncated``, ``obs`` is already the
first observation of the next episode and ``info["final_observation"]`` is the
observation the finished episode ended in. A time-limit truncation is *not* a
termination: the return is bootstrapped from ``V(final_observation)``.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
import sys
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


ADAPTERS = ("navix", "xminigrid", "craftax", "jumanji", "brax")
"""The suites with an adapter in `purejaxppo.adapters`: ``env_name="<suite>/<id>"``."""


def env_source(env_name: str) -> str:
    """Where ``env_name`` names an env from: ``"entry_point"`` for
    ``"module:function"`` (a user's own, `load_env`), ``"adapter"`` for
    ``"<suite>/<id>"`` with a suite of `ADAPTERS`, else ``"gymnax"``."""
    if ":" in env_name:
        return "entry_point"
    if env_name.split("/", 1)[0] in ADAPTERS and "/" in env_name:
        return "adapter"
    return "gymnax"


def check_env_name(env_name: str) -> None:
    """Raise a ``ValueError`` unless ``env_name`` can name an env: a
    registered gymnax id, ``"<suite>/<id>"`` for a suite of `ADAPTERS`, or
    ``"module:function"``. Imports nothing (nor gymnax, whose import starts
    JAX): whether the module or the suite's id exists is `load_env`'s to say."""
    from purejaxppo.config import known_env_names

    source = env_source(env_name)
    if source == "entry_point":
        if not _ENTRY_POINT.fullmatch(env_name):
            raise ValueError(
                f"env_name={env_name!r} is not of the form 'module:function' (a dotted module "
                "path, a colon, a dotted attribute), e.g. 'my_envs:make_env'")
        return
    if source == "adapter":
        if not env_name.split("/", 1)[1]:
            raise ValueError(f"env_name={env_name!r} names no env of the {env_name[:-1]} suite; "
                             f"allowed: '{env_name}<id>'")
        return
    names = known_env_names()
    if env_name not in names:
        close = difflib.get_close_matches(env_name, names, n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"env_name={env_name!r} is not a registered gymnax environment.{hint} "
            f"Allowed: {', '.join(names)}; or '<suite>/<id>' with a suite of "
            f"{', '.join(ADAPTERS)}; or 'module:function' for your own env (docs/environments.md)."
        )


_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def load_env(env_name: str, env_kwargs: dict | None = None):
    """The env ``env_name`` names, and its default params: ``(env, params)``.

    * a gymnax id: ``gymnax.make(env_name, **env_kwargs)``;
    * ``"<suite>/<id>"``: ``purejaxppo.adapters.<suite>.make(id, **env_kwargs)``
      (docs/environments.md; the suite's package is an optional extra);
    * ``"module:function"``: imports ``module`` (from the working directory
      or an installed package) and calls ``function(**env_kwargs)``, which
      returns ``(env, env_params)`` or an env whose ``default_params`` are
      used. An attribute that is an env already is taken as it is.

    A module that cannot be imported, a missing attribute, a keyword the
    constructor refuses or a missing extra is a ``ValueError`` (or
    ``ImportError``) naming it.
    """
    check_env_name(env_name)
    kwargs = dict(env_kwargs or {})
    source = env_source(env_name)
    if source == "gymnax":
        from purejaxppo.config import _check_downloaded

        _check_downloaded(env_name)
        make = lambda: import_gymnax().make(env_name, **kwargs)
    elif source == "adapter":
        suite, name = env_name.split("/", 1)
        adapter = importlib.import_module(f"purejaxppo.adapters.{suite}")
        make = lambda: adapter.make(name, **kwargs)
    else:
        target = _import_entry_point(env_name)
        if not callable(target) or hasattr(target, "step"):
            if kwargs:
                raise ValueError(f"env_kwargs {kwargs} for {env_name!r}: it names an env object, "
                                 "not a function to call with them")
            make = lambda: target
        else:
            make = lambda: target(**kwargs)
    try:
        made = make()
    except TypeError as error:  # a keyword the constructor does not take
        if not kwargs:
            raise
        raise ValueError(f"env_kwargs {kwargs} for {env_name!r}: {error}") from None
    if isinstance(made, tuple) and len(made) == 2:
        return made
    if isinstance(made, tuple):
        raise ValueError(f"env_name={env_name!r} returned a tuple of {len(made)} values; "
                         "allowed: (env, env_params) or an env")
    return made, _default_params(made, env_name)


def _import_entry_point(env_name: str):
    module_name, attr = env_name.split(":", 1)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a module beside the command, as `python -m` finds one
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"env_name={env_name!r}: cannot import module {module_name!r} ({error}); "
                         "allowed: a module in the working directory or an installed package") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"env_name={env_name!r}: module {module_name!r} has no attribute "
                             f"{attr!r}; it should name a function returning (env, env_params) or an env")
        target = getattr(target, part)
    return target


def _default_params(env: Any, label: str):
    params = getattr(env, "default_params", None)
    if params is None:
        raise ValueError(f"the env for {label!r} ({type(env).__name__}) has no default_params; "
                         "give its params (make_train(config, env=..., env_params=...)), or return "
                         "(env, env_params) from the function")
    return params


def make_env(
    env_name: str,
    env_kwargs: tuple[tuple[str, Any], ...] = (),
    env_params: tuple[tuple[str, Any], ...] = (),
    obs_features: tuple[int, ...] | None = None,
    *,
    env: Any = None,
    params: Any = None,
):
    """Construct the environment; return ``(env, env_params, spec)``.

    The env is `load_env`'s for ``env_name`` and ``env_kwargs`` (keywords
    of its constructor), or ``env`` as given, whose ``params`` default to
    its ``default_params`` (``env_name`` is then only its label, and
    ``env_kwargs`` must be empty). ``env_params`` replace fields of those
    params. An unknown field, and a value not of its scalar field's kind
    (a number, or a bool) are each a ``ValueError`` naming it.
    ``obs_features`` keeps only those features of a flat Box observation
    (`EnvSpec.obs_features`); an index out of range, or an observation that
    is not a flat Box, is a ``ValueError``.
    """
    if env is None:
        if params is not None:
            raise ValueError("env_params (a params object) is given without env; allowed: "
                             "both, or neither (config.env_name names the env)")
        env, default_params = load_env(env_name, dict(env_kwargs))
    else:
        if env_kwargs:
            raise ValueError(f"config.env_kwargs={dict(env_kwargs)} with an env object given: "
                             "construct the env with them yourself; allowed: env_kwargs=()")
        default_params = _default_params(env, env_name) if params is None else params
    env_params = _override_params(env_name, default_params, dict(env_params))
    return env, env_params, env_spec(env, env_params, env_name, obs_features)


def _override_params(env_name: str, default_params: Any, overrides: dict):
    """``default_params`` with the fields in ``overrides`` replaced, each checked."""
    import dataclasses

    if not overrides:
        return default_params
    if not dataclasses.is_dataclass(default_params):
        raise ValueError(f"env_params {overrides} for {env_name!r}, whose params "
                         f"({type(default_params).__name__}) are not a dataclass; allowed: none")
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
    return default_params.replace(**overrides)


def env_spec(env: Any, env_params: Any, env_name: str = "the env",
             obs_features: tuple[int, ...] | None = None) -> EnvSpec:
    """The `EnvSpec` of ``env``'s spaces under ``env_params``: a ``Box`` or
    ``Discrete`` observation space, a ``Discrete`` or flat ``Box`` action
    space (gymnax's ``spaces``, or any with the same attributes); anything
    else is a ``ValueError`` naming the env."""
    try:
        obs_space = env.observation_space(env_params)
        act_space = env.action_space(env_params)
    except AttributeError as error:
        raise ValueError(f"{env_name!r} lacks a space method ({error}); an env must provide "
                         "observation_space(params) and action_space(params) (docs/environments.md)") from None
    if _is_discrete(obs_space):  # e.g. FrozenLake: one-hot encoded
        categories = int(obs_space.n)
        obs_shape = (categories,)
    elif _is_box(obs_space):
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
    if _is_discrete(act_space):
        return EnvSpec(obs_shape=obs_shape, discrete=True, action_dim=int(act_space.n),
                       obs_num_categories=categories, obs_features=obs_features)
    if _is_box(act_space):
        shape = tuple(act_space.shape) or (1,)
        if len(shape) != 1:
            raise ValueError(
                f"env_name={env_name!r} has a Box action space of shape {shape}; "
                "purejaxppo supports flat (1-D) Box action spaces"
            )
        dim = shape[0]
        low = np.broadcast_to(np.asarray(act_space.low, np.float32), (dim,))
        high = np.broadcast_to(np.asarray(act_space.high, np.float32), (dim,))
        return EnvSpec(
            obs_shape=obs_shape,
            discrete=False,
            action_dim=int(dim),
            action_low=tuple(float(x) for x in low),
            action_high=tuple(float(x) for x in high),
            obs_num_categories=categories,
            obs_features=obs_features,
        )
    raise ValueError(
        f"env_name={env_name!r} has a {type(act_space).__name__} action space; "
        "purejaxppo supports Discrete and Box action spaces"
    )


def _is_discrete(space: Any) -> bool:
    from gymnax.environments import spaces

    return isinstance(space, spaces.Discrete) or (
        hasattr(space, "n") and not hasattr(space, "low") and type(space).__name__ == "Discrete")


def _is_box(space: Any) -> bool:
    from gymnax.environments import spaces

    return isinstance(space, spaces.Box) or (
        all(hasattr(space, a) for a in ("low", "high", "shape")) and type(space).__name__ == "Box")


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

        Any other env with this auto-reset may declare its period: a method
        ``truncation_period(params) -> int | None`` (docs/environments.md),
        taken as it is (an int >= 1, or None for unknown).
        """
        from gymnax.environments.environment import Environment

        declared = getattr(self.env, "truncation_period", None)
        if callable(declared):
            if not self.presampled_resets:
                return None
            period = declared(self.env_params)
            if period is not None and (isinstance(period, bool) or not isinstance(period, (int, np.integer))
                                       or period < 1):
                raise ValueError(f"{type(self.env).__name__}.truncation_period(params) returned "
                                 f"{period!r}; allowed: an int >= 1, or None")
            return None if period is None else int(period)
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


def check_env(env: Any, env_params: Any = None, *, num_envs: int = 4, num_steps: int = 64,
              seed: int = 0) -> list[str]:
    """Check that ``env`` keeps the protocol purejaxppo trains on
    (docs/environments.md); return one sentence per violation, ``[]`` if none.

    Builds the `EnvSpec` from its spaces, then, under `jax.jit` and
    `jax.vmap` over ``num_envs`` copies, resets them and steps them
    ``num_steps`` times with random actions of the action space. Checked:
    ``reset(key, params) -> (obs, state)``; ``step(key, state, action,
    params)`` returns six values ``(obs, state, reward, terminated,
    truncated, info)`` with ``info["final_observation"]``; each observation
    has the observation space's shape (a Box's, or a scalar for Discrete),
    is finite (and a category of a Discrete space); reward, terminated and
    truncated are one number per env (the flags boolean); the state keeps
    its structure, shapes and dtypes from step to step; where an episode
    did not end, ``info["final_observation"]`` is ``obs``; the same key gives
    the same step (a pure function). ``env_params`` default to
    ``env.default_params``.
    """
    label = type(env).__name__
    if env_params is None:
        env_params = getattr(env, "default_params", None)
        if env_params is None:
            return [f"{label} has no default_params: give env_params, or define default_params"]
    missing = [m for m in ("reset", "step", "observation_space", "action_space")
               if not callable(getattr(env, m, None))]
    if missing:
        return [f"{label} lacks {', '.join(missing)}: an env provides reset(key, params), "
                "step(key, state, action, params), observation_space(params) and action_space(params)"]
    try:
        spec = env_spec(env, env_params, label)
    except ValueError as error:
        return [str(error)]
    problems: list[str] = []
    raw_obs_shape = () if spec.obs_num_categories else spec.obs_shape
    act_space = env.action_space(env_params)

    def random_action(key):
        if spec.discrete:
            return jax.random.randint(key, (), 0, spec.action_dim)
        low = jnp.asarray(spec.action_low, jnp.float32).reshape(np.shape(act_space.low) or (1,))
        high = jnp.asarray(spec.action_high, jnp.float32).reshape(low.shape)
        low, high = jnp.maximum(low, -1.0), jnp.minimum(high, 1.0)  # inside infinite bounds too
        return jax.random.uniform(key, low.shape, minval=low, maxval=high).reshape(
            tuple(act_space.shape))

    keys = jax.random.split(jax.random.PRNGKey(seed), num_envs)
    try:
        obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, env_params)
    except Exception as error:  # noqa: BLE001 - reported, not raised
        return [f"{label}.reset(key, params) failed under jit and vmap: {type(error).__name__}: {error}"]

    def step_once(key, state, action):
        out = env.step(key, state, action, env_params)
        if not isinstance(out, tuple) or len(out) != 6:
            raise _ProtocolError(
                f"{label}.step returned {len(out) if isinstance(out, tuple) else type(out).__name__} "
                "values; the protocol (gymnax >= 1.0) returns six: obs, state, reward, terminated, "
                "truncated, info")
        obs, new_state, reward, terminated, truncated, info = out
        if not isinstance(info, dict) or "final_observation" not in info:
            raise _ProtocolError(f"{label}.step's info lacks 'final_observation', the observation an "
                                 "episode ended in before the automatic reset")
        return obs, new_state, reward, terminated, truncated, info["final_observation"]

    vstep = jax.jit(jax.vmap(step_once))

    def observation_problems(obs, where):
        found = []
        if tuple(np.shape(obs)[1:]) != raw_obs_shape:
            found.append(f"{where} has shape {tuple(np.shape(obs)[1:])} per env; the observation "
                         f"space says {raw_obs_shape}")
            return found
        values = np.asarray(obs, np.float64)
        if not np.all(np.isfinite(values)):
            found.append(f"{where} holds NaN or infinite values")
        if spec.obs_num_categories and np.any((values < 0) | (values >= spec.obs_num_categories)):
            found.append(f"{where} is outside Discrete({spec.obs_num_categories})")
        return found

    problems += observation_problems(obs, "reset's observation")
    structure = jax.tree.structure(state)
    # Compared as lists of leaves: a state's own dataclasses may define __eq__.
    leaf_types = lambda tree: [(np.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(tree)]
    shapes = leaf_types(state)
    state_problem = (f"{label}'s step changes the state's structure, shapes or dtypes from reset's "
                     "(a jax.lax.scan over steps, and the automatic reset, need the same)")
    if callable(getattr(env, "step_env", None)):  # gymnax's: its step selects between two states
        try:
            stepped = jax.eval_shape(jax.vmap(lambda k, s, a: env.step_env(k, s, a, env_params)[1]), keys,
                                     state, jax.vmap(random_action)(keys))
        except Exception:  # noqa: BLE001 - step below reports it
            stepped = state
        if jax.tree.structure(stepped) != structure or leaf_types(stepped) != shapes:
            return problems + [state_problem.replace("step changes", "step_env changes")]
    key = jax.random.PRNGKey(seed + 1)
    episodes_ended = 0
    for t in range(num_steps):
        key, act_key, step_key = jax.random.split(key, 3)
        actions = jax.vmap(random_action)(jax.random.split(act_key, num_envs))
        step_keys = jax.random.split(step_key, num_envs)
        try:
            out = vstep(step_keys, state, actions)
        except _ProtocolError as error:
            return problems + [str(error)]
        except Exception as error:  # noqa: BLE001 - reported, not raised
            return problems + [f"{label}.step(key, state, action, params) failed under jit and vmap: "
                               f"{type(error).__name__}: {error}"]
        new_obs, new_state, reward, terminated, truncated, final_obs = out
        found = observation_problems(new_obs, f"step {t}'s observation")
        found += observation_problems(final_obs, f"step {t}'s info['final_observation']")
        for name, value in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
            if np.shape(value) != (num_envs,):
                found.append(f"step {t}'s {name} has shape {np.shape(value)[1:]} per env; the "
                             "protocol gives one number per env (shape ())")
        if np.shape(reward) == (num_envs,) and not np.all(np.isfinite(np.asarray(reward, np.float64))):
            found.append(f"step {t}'s reward holds NaN or infinite values")
        for name, value in (("terminated", terminated), ("truncated", truncated)):
            if jnp.result_type(value) != jnp.bool_:
                found.append(f"step {t}'s {name} is {jnp.result_type(value)}; the protocol's flags are bool")
        if jax.tree.structure(new_state) != structure or leaf_types(new_state) != shapes:
            found.append(state_problem)
        if not found and np.shape(new_obs) == np.shape(final_obs):
            done = np.asarray(terminated) | np.asarray(truncated)
            episodes_ended += int(done.sum())
            same = np.all(np.isclose(np.asarray(new_obs, np.float64), np.asarray(final_obs, np.float64),
                                     rtol=1e-5, atol=1e-6), axis=tuple(range(1, np.ndim(new_obs))))
            if np.any(~done & ~same):
                found.append(f"step {t}: info['final_observation'] differs from obs in an episode "
                             "that did not end; it must be obs there (the observation before any reset)")
        if t == 0 and not found:
            again = vstep(step_keys, state, actions)
            if not all(np.array_equal(np.asarray(a), np.asarray(b))
                       for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(again))):
                found.append(f"{label}.step gave two results for the same key, state and action; "
                             "it must be a pure function of them")
        if found:
            return problems + found
        state = new_state
    return problems


class _ProtocolError(Exception):
    """An env's output that breaks the protocol, found while tracing."""
