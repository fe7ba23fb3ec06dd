"""The critic pass that evaluates only the final observations it lacks.

Plain equivalent: V over the rollout's observations and over every final
observation, 2 T observations per env (`purejaxppo.rollout.critic_values`
without a truncation period). The advantages and returns are the same
(``tests/test_advantages.py``).

Gain: where step t did not end an episode, ``final_obs[t]`` is ``obs[t +
1]``, whose value the pass already has; the critic then reads T + 1 + W
observations per env (W windows of at most one truncation each): 130 in
place of 256 for CartPole's defaults. It needs the env's truncation period,
known before tracing (`purejaxppo.envs.VecEnv.truncation_period`, gymnax's
time limits).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp


def truncation_windows(num_steps: int, truncation_period: int | None) -> tuple[int, int]:
    """(width, count) of the windows `critic_values` cuts the first T - 1
    steps into, or (0, 0) where the full pass is evaluated."""
    inside = num_steps - 1
    if truncation_period is None or inside < 1:
        return 0, 0
    width = min(truncation_period, inside)
    windows = -(-inside // width)
    return (width, windows) if windows < inside else (0, 0)


def critic_rows(num_steps: int, truncation_period: int | None = None) -> int:
    """Observations per env that `critic_values` evaluates for a rollout of
    ``num_steps``: 2 T for the full pass, T + 1 + the windows' count for the
    reduced one (129 + 1 = 130 for CartPole defaults, against 256)."""
    _, windows = truncation_windows(num_steps, truncation_period)
    return num_steps + 1 + windows if windows else 2 * num_steps


def reduced_critic_values(
    value_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    traj,
    width: int,
    windows: int,
) -> tuple[jax.Array, jax.Array]:
    """`purejaxppo.rollout.critic_values` with a truncation period: ``traj``'s
    first T - 1 steps cut into ``windows`` windows of ``width`` steps
    (`truncation_windows`), each holding at most one truncation per env."""
    num_steps, n = traj.rewards.shape
    obs_shape = traj.obs.shape[2:]
    inside = num_steps - 1  # the steps whose next observation is in the rollout
    # Each window's truncated step per env (step 0 of the window where none).
    cut = jnp.pad(traj.truncated[:-1], ((0, windows * width - inside), (0, 0)))
    cut = cut.reshape(windows, width, n)
    step = jnp.argmax(cut, axis=1) + width * jnp.arange(windows)[:, None]  # (windows, N)
    cut_obs = jnp.take_along_axis(
        traj.final_obs[:-1], step.reshape(step.shape + (1,) * len(obs_shape)), axis=0
    )
    batch = jnp.concatenate([traj.obs, traj.final_obs[-1:], cut_obs], axis=0)
    out = value_fn(params, batch)  # (T + 1 + windows, N)
    values, last, cut_values = out[:num_steps], out[num_steps], out[num_steps + 1 :]
    cut_values = jnp.repeat(cut_values, width, axis=0, total_repeat_length=windows * width)[:inside]
    next_values = jnp.concatenate(
        [jnp.where(traj.truncated[:-1], cut_values, values[1:]), last[None]], axis=0
    )
    chex.assert_equal_shape([values, next_values, traj.rewards])
    return values, next_values
