"""Advantages and returns, cut at episode boundaries: GAE, and the Monte Carlo
returns of REINFORCE."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """GAE(lambda) advantages and value targets by a reverse `lax.scan`.

    All inputs are time-major, shape (T, N)::

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},   A_T = 0
        returns = A + values

    Args:
        rewards: r_t, the reward of step t.
        values: V(s_t), the critic at the observation the action was taken in.
        next_values: V of the observation step t ended in *before* any
            automatic reset (gymnax's ``final_observation``); it is V(s_{t+1})
            inside an episode and the bootstrap value at a time-limit
            truncation.
        terminated: a true end at step t: no bootstrap.
        done: ``terminated | truncated``: the trace stops at either boundary,
            so no advantage flows from one episode into the previous one.
        gamma, gae_lambda: scalars (may be traced).

    Returns:
        ``(advantages, returns)``, both (T, N) float32.
    """
    chex.assert_rank(rewards, 2)
    chex.assert_equal_shape([rewards, values, next_values, terminated, done])
    not_terminated = 1.0 - terminated.astype(jnp.float32)
    not_done = 1.0 - done.astype(jnp.float32)
    deltas = rewards + gamma * not_terminated * next_values - values
    decay = gamma * gae_lambda * not_done

    def step(next_advantage, inputs):
        delta_t, decay_t = inputs
        advantage = delta_t + decay_t * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        step, jnp.zeros_like(rewards[0]), (deltas, decay), reverse=True
    )
    returns = advantages + values
    chex.assert_equal_shape([advantages, returns, rewards])
    return advantages, returns


def monte_carlo_returns(
    rewards: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: jax.Array | float,
    values: jax.Array | None = None,
    next_values: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Discounted returns-to-go of each step's episode, and which are complete.

    All inputs are time-major, shape (T, N)::

        G_t = r_t + gamma * (1 - done_t) * G_{t+1}        (+ bootstrap, below)

    the return REINFORCE weighs ``log pi(a_t|s_t)`` with. It is GAE with
    lambda = 1 (`gae`): with a critic (``values`` and ``next_values`` given)
    a time-limit truncation bootstraps from V(final observation) as there
    and ``G - V`` is the advantage; without one (REINFORCE with no
    baseline) nothing bootstraps and a truncation ends the return like a
    termination. A step's return is *complete* when its episode ends
    (terminated or truncated) inside the rollout; the steps after an env's
    last episode end have only a part of their return and must be left out
    of a Monte Carlo estimate.

    Returns:
        ``(returns, complete)``: (T, N) float32 and (T, N) bool, complete_t
        = any(done[t:]) per env.
    """
    chex.assert_rank(rewards, 2)
    if values is None:
        values = next_values = jnp.zeros_like(rewards)
    advantages, returns = gae(rewards, values, next_values, terminated, done, gamma, 1.0)
    # A step is complete iff a done occurs at it or after it in its env.
    complete = jnp.flip(jnp.cumsum(jnp.flip(done.astype(jnp.int32), 0), axis=0), 0) > 0
    return returns, complete
