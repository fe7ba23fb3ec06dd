"""Evaluation: play whole episodes with a trained policy, and summarise runs."""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.config import PPOConfig
from purejaxppo.envs import VecEnv, make_env
from purejaxppo.networks import make_network
from purejaxppo.normalization import RunningMeanStd
from purejaxppo.rollout import reset_hidden


class Acting(NamedTuple):
    """How a trained policy plays (`make_acting`).

    Attributes:
        vec_env: the ``num_envs`` envs it plays.
        max_steps: the env params' ``max_steps_in_episode`` (None where they have none).
        act: ``act(params, normalize, obs, memory, env_state, key) ->
            (VecStep, memory)``: one env step after the policy's action, the
            greedy one or a sample, on ``normalize(obs)``.
        memory: the policy's memory at the episodes' start: None for a
            feed-forward policy, the zero GRU state (num_envs, cores, H)
            for a recurrent one; ``act`` carries it and zeroes it where an
            episode ends.
    """

    vec_env: VecEnv
    max_steps: int | None
    act: Callable
    memory: jax.Array | None


def make_acting(config: PPOConfig, num_envs: int, deterministic: bool = True, *,
                env: Any = None, env_params: Any = None) -> Acting:
    """How a trained policy plays ``num_envs`` envs (an `Acting`), the
    greedy action (``deterministic``) or a sampled one. `make_evaluate` and
    `purejaxppo.render` both play through it. ``env`` and ``env_params``:
    an env object, as `purejaxppo.train.make_train` takes one. ``max_steps``
    is the params' ``max_steps_in_episode`` (None where they have none)."""
    env, env_params, spec = make_env(config.env_name, config.env_kwargs, config.env_params,
                                     config.obs_features, env=env, params=env_params)
    vec_env = VecEnv(env, env_params, spec, num_envs)
    network = make_network(spec, config.hidden_sizes, config.activation, config.torso, config.cnn_channels,
                           recurrent=config.recurrent, recurrent_size=config.recurrent_size,
                           recurrent_core=config.recurrent_core)
    recurrent = config.recurrent is not None

    def act(params: Any, normalize, obs: jax.Array, memory, env_state: Any, key: jax.Array):
        act_key, env_key = jax.random.split(key)
        if recurrent:
            memory, dist = network.apply(params, normalize(obs), memory, method=network.step)
        else:
            dist = network.apply(params, normalize(obs), method=network.policy)
        action = dist.mode() if deterministic else dist.sample(act_key)
        out = vec_env.step(env_key, env_state, action)
        if recurrent:
            memory = reset_hidden(memory, out.terminated | out.truncated)
        return out, memory

    memory = network.initial_hidden(num_envs) if recurrent else None
    limit = getattr(env_params, "max_steps_in_episode", None)
    return Acting(vec_env, None if limit is None else int(np.asarray(limit)), act, memory)


def observation_normalizer(config: PPOConfig, obs_norm: RunningMeanStd | None, obs_clip=None):
    """What the policy's observations go through: ``obs_norm``'s
    normalisation clipped at ``obs_clip`` (default ``config.obs_clip``) with
    ``config.normalize_obs``, where ``obs_norm`` is then required; else the
    identity."""
    if not config.normalize_obs:
        return lambda obs: obs
    if obs_norm is None:
        raise ValueError(
            "config.normalize_obs is set: pass the run's observation statistics "
            "(train_state.obs_norm, or restore_policy(...).obs_norm)"
        )
    clip = config.obs_clip if obs_clip is None else obs_clip
    return lambda obs: obs_norm.normalize(obs, clip)


def make_evaluate(config: PPOConfig, num_episodes: int = 16, deterministic: bool = True, *,
                  env: Any = None, env_params: Any = None, max_steps: int | None = None):
    """Build ``evaluate(params, rng, obs_norm=None, obs_clip=None) -> returns (num_episodes,)``.

    Plays ``num_episodes`` episodes in parallel envs, each to its first end
    (termination or time limit), with the greedy action (``deterministic``)
    or a sampled one, and returns each episode's undiscounted return. Pure
    and jittable. With ``config.normalize_obs`` the policy acts on
    observations normalised by ``obs_norm``, the `RunningMeanStd` of the
    trained `TrainState` (``train_state.obs_norm``); it is then required,
    and ``obs_clip`` (default ``config.obs_clip``) clips them as training
    did: pass the run's own value when ``obs_clip`` was a swept `HyperParams`
    field. ``env`` and ``env_params``: an env object, as `make_train` takes
    one. Each episode is played for at most ``max_steps`` steps (default:
    the env params' ``max_steps_in_episode``, required where they have none).
    """
    if not isinstance(num_episodes, int) or num_episodes <= 0:
        raise ValueError(f"num_episodes must be a positive int, got {num_episodes!r}")
    vec_env, limit, act, memory = make_acting(config, num_episodes, deterministic,
                                              env=env, env_params=env_params)
    if max_steps is None and limit is None:
        raise ValueError(f"max_steps=None for {config.env_name!r}, whose params have no "
                         "max_steps_in_episode; allowed: an int >= 1, the longest episode to play")
    max_steps = limit if max_steps is None else max_steps
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps <= 0:
        raise ValueError(f"max_steps={max_steps!r}; allowed: an int >= 1, the longest episode to play")

    def evaluate(
        params: Any, rng: jax.Array, obs_norm: RunningMeanStd | None = None, obs_clip=None
    ) -> jax.Array:
        normalize = observation_normalizer(config, obs_norm, obs_clip)
        reset_key, rng = jax.random.split(rng)
        obs, env_state = vec_env.reset(reset_key)

        def step(carry, key):
            obs, memory, env_state, returns, active = carry
            out, memory = act(params, normalize, obs, memory, env_state, key)
            returns = returns + jnp.where(active, out.reward, 0.0)
            active = active & ~(out.terminated | out.truncated)
            return (out.obs, memory, out.env_state, returns, active), None

        init = (obs, memory, env_state, jnp.zeros((num_episodes,)), jnp.ones((num_episodes,), bool))
        (_, _, _, returns, _), _ = jax.lax.scan(step, init, jax.random.split(rng, max_steps))
        return returns

    return evaluate


def final_return(metrics: dict[str, Any], window: int = 10) -> np.ndarray:
    """Mean ``episode_return`` over the last ``window`` updates (ignoring NaN;
    NaN if no episode finished in the window).

    Works on (num_updates,) and (seeds, num_updates) metrics alike; returns a
    scalar or one value per seed.
    """
    window_returns = np.asarray(metrics["episode_return"])[..., -window:]
    with warnings.catch_warnings():  # all-NaN windows: no episode finished yet
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(window_returns, axis=-1)
