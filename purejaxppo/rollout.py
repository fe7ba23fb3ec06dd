"""Rollout collection: ``num_steps`` steps of ``num_envs`` envs by `lax.scan`.

Only the actor runs inside the sequential scan (it must, to pick actions).
The critic is evaluated afterwards on the whole (T, N) batch at once, on both
the observations the actions were taken in and the observations each step
ended in (gymnax's ``final_observation``, before any auto-reset) where those
are not already among the former: one large batched pass instead of T small
ones, and the bootstrap value of a time-limit truncation comes out of it for
free (`critic_values`).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

from purejaxppo.envs import VecEnv
from purejaxppo.fast.packed_carry import packed_scan, packs
from purejaxppo.fast.random_draws import action_noise, key_words, keys_from_words, random_words
from purejaxppo.fast.reduced_critic import reduced_critic_values, truncation_windows


@struct.dataclass
class EpisodeStats:
    """Per-env episode bookkeeping on the raw (unscaled) reward, shape (N,)."""

    running_return: jax.Array  # return of the episode in progress
    running_length: jax.Array  # length of the episode in progress
    last_return: jax.Array  # return of the most recently finished episode
    last_length: jax.Array  # its length
    num_finished: jax.Array  # episodes finished so far (int32)

    @classmethod
    def zeros(cls, num_envs: int) -> "EpisodeStats":
        f = jnp.zeros((num_envs,), jnp.float32)
        i = jnp.zeros((num_envs,), jnp.int32)
        return cls(f, i, f, i, i)

    def record(self, reward: jax.Array, done: jax.Array) -> "EpisodeStats":
        """Add one step's reward; close the episodes where ``done``."""
        ret = self.running_return + reward
        length = self.running_length + 1
        return EpisodeStats(
            running_return=jnp.where(done, 0.0, ret),
            running_length=jnp.where(done, 0, length),
            last_return=jnp.where(done, ret, self.last_return),
            last_length=jnp.where(done, length, self.last_length),
            num_finished=self.num_finished + done.astype(jnp.int32),
        )

    def summary(self, axis_name: str | None = None) -> dict[str, jax.Array]:
        """Mean return and length of each env's most recently finished episode.

        Envs with no finished episode yet are left out of the mean; while no
        env has finished one, both are NaN (there is nothing to report).
        With ``axis_name``, over the envs of every member of that mapped axis
        (devices each holding a share of the envs).
        """
        total = lambda x: x if axis_name is None else jax.lax.psum(x, axis_name)
        has = self.num_finished > 0
        count = total(jnp.sum(has))
        mean = lambda x: jnp.where(
            count > 0, total(jnp.sum(jnp.where(has, x, 0.0))) / jnp.maximum(count, 1), jnp.nan
        )
        return {
            "episode_return": mean(self.last_return),
            "episode_length": mean(self.last_length.astype(jnp.float32)),
        }


@struct.dataclass
class EnvCarry:
    """What the env loop carries from one rollout to the next."""

    env_state: Any
    obs: jax.Array  # (N, *obs_shape), the observation to act on next
    episode_stats: EpisodeStats
    # A recurrent policy's state before acting on ``obs`` (N, cores, H),
    # already zeroed where ``obs`` starts an episode; None for a feed-forward one.
    hidden: jax.Array | None = None


@struct.dataclass
class Trajectory:
    """A rollout, time-major: every field has leading axes (T, N)."""

    obs: jax.Array  # s_t, the observation acted on
    actions: jax.Array  # a_t, unclipped (what the policy sampled and scores)
    log_probs: jax.Array  # log pi_old(a_t | s_t)
    rewards: jax.Array  # r_t (raw env reward)
    terminated: jax.Array  # true end at t: no bootstrap
    truncated: jax.Array  # time limit at t: bootstrap from final_obs
    final_obs: jax.Array  # the observation step t ended in, before auto-reset
    # A recurrent policy's state after acting on s_t (T, N, cores, H), before
    # any reset: what the values of s_t and final_obs[t] are read from.
    hidden: jax.Array | None = None

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated


@struct.dataclass
class RolloutRandomness:
    """Everything random a rollout of T steps of N envs consumes, drawn
    before its sequential loop (leading axes (T, N) on every field).

    Attributes:
        action_noise: what `sample_from_noise` turns into actions,
            (T, N, action_dim) float32 (Gumbel for discrete actions, standard
            normal for continuous ones).
        env_keys: one PRNG key per env and step for the env's transition.
        resets: `VecEnv.draw_resets` of one key per env and step:
            ``(obs (T, N, *obs_shape), env_state)``, the state an env takes
            if its episode ends at that step; None for envs whose own
            ``step`` must reset them.
    """

    action_noise: jax.Array
    env_keys: jax.Array
    resets: Any

    @staticmethod
    def num_words(vec_env: VecEnv, num_steps: int, key: jax.Array) -> int:
        """uint32 words `from_words` takes: per env and step, the action
        noise, an env key and a reset key."""
        return num_steps * vec_env.num_envs * (vec_env.spec.action_dim + 2 * key_words(key))

    @classmethod
    def from_words(
        cls, words: jax.Array, vec_env: VecEnv, num_steps: int, like: jax.Array
    ) -> "RolloutRandomness":
        """Made of `num_words` random uint32 ``words``; keys of the kind of ``like``."""
        chex.assert_shape(words, (cls.num_words(vec_env, num_steps, like),))
        a, w = vec_env.spec.action_dim, key_words(like)
        bits = words.reshape(num_steps, vec_env.num_envs, a + 2 * w)
        return cls(
            action_noise=action_noise(bits[..., :a], vec_env.spec.discrete),
            env_keys=keys_from_words(bits[..., a : a + w], like),
            resets=vec_env.draw_resets(keys_from_words(bits[..., a + w :], like)),
        )

    @classmethod
    def draw(cls, key: jax.Array, vec_env: VecEnv, num_steps: int) -> "RolloutRandomness":
        """From one flat draw (`random_words`): one threefry kernel for XLA
        to compile (each costs 0.1-0.4 s of compile on CPU; a flat draw
        compiles faster than an N-d one; benchmarks/NOTES.md)."""
        n = cls.num_words(vec_env, num_steps, key)
        return cls.from_words(random_words(key, n), vec_env, num_steps, key)


def collect_rollout(
    policy_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    vec_env: VecEnv,
    carry: EnvCarry,
    draws: RolloutRandomness,
    num_steps: int,
) -> tuple[EnvCarry, Trajectory]:
    """Step ``vec_env`` for ``num_steps`` with actions sampled from the policy.

    Args:
        policy_fn: ``policy_fn(params, obs) -> distribution``; for a
            recurrent policy (``carry.hidden`` not None) ``policy_fn(params,
            obs, hidden) -> (hidden', distribution)``, whose state is zeroed
            after every step that ends an episode.
        params: network parameters (held fixed during the rollout).
        vec_env: the vectorised environment.
        carry: env state, current observation and episode stats.
        draws: all the rollout's randomness, drawn before its loop
            (`RolloutRandomness.draw`, or with the rest of an update's).
        num_steps: T (static).

    Returns:
        The new carry and the (T, N) `Trajectory`.
    """
    n = vec_env.num_envs
    spec = vec_env.spec
    chex.assert_shape(draws.action_noise, (num_steps, n, spec.action_dim))

    def env_step(carry: EnvCarry, step_inputs):
        step_noise, step_keys, step_resets = step_inputs
        if carry.hidden is None:
            hidden, dist = None, policy_fn(params, carry.obs)
        else:
            hidden, dist = policy_fn(params, carry.obs, carry.hidden)
        action = dist.sample_from_noise(step_noise)
        log_prob = dist.log_prob(action)
        step = vec_env.step_with_keys(step_keys, carry.env_state, action, step_resets)
        done = step.terminated | step.truncated
        transition = Trajectory(
            obs=carry.obs,
            actions=action,
            log_probs=log_prob,
            rewards=step.reward,
            terminated=step.terminated,
            truncated=step.truncated,
            final_obs=step.final_obs,
            hidden=hidden,
        )
        new_carry = EnvCarry(
            env_state=step.env_state,
            obs=step.obs,
            episode_stats=carry.episode_stats.record(step.reward, done),
            hidden=None if hidden is None else reset_hidden(hidden, done),
        )
        return new_carry, transition

    inputs = (draws.action_noise, draws.env_keys, draws.resets)
    if packs(carry):  # a small carry: scanned as one array per dtype (`purejaxppo.fast.packed_carry`)
        carry, traj = packed_scan(env_step, carry, inputs)
    else:
        carry, traj = jax.lax.scan(env_step, carry, inputs)
    chex.assert_shape([traj.obs, traj.final_obs], (num_steps, n, *spec.obs_shape))
    chex.assert_shape(traj.actions, (num_steps, n, *spec.action_shape))
    chex.assert_shape(
        [traj.log_probs, traj.rewards, traj.terminated, traj.truncated], (num_steps, n)
    )
    return carry, traj


def reset_hidden(hidden: jax.Array, start: jax.Array) -> jax.Array:
    """``hidden`` (N, ...) zeroed where ``start`` (N,): an episode begins."""
    return jnp.where(start.reshape(start.shape + (1,) * (hidden.ndim - start.ndim)), 0.0, hidden)


def episode_starts(done: jax.Array) -> jax.Array:
    """(T, N): whether each step of a rollout acts on an episode's first
    observation inside it (after ``done`` at the step before); the first
    step is False, its carried state having been zeroed already."""
    return jnp.concatenate([jnp.zeros_like(done[:1]), done[:-1]], axis=0)


def critic_values(
    value_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    traj: Trajectory,
    truncation_period: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(values, next_values)``, both (T, N), from one batched critic pass.

    ``values[t] = V(obs[t])``; ``next_values[t] = V(final_obs[t])``: the value
    of the observation step t ended in, before any auto-reset. Inside an
    episode that is V(s_{t+1}); at a time-limit truncation it is the bootstrap
    value of the cut-off episode (never the value of the reset observation);
    at a termination GAE masks it out.

    ``truncation_period``: P such that no env truncates twice in P
    consecutive steps, known before tracing (`VecEnv.truncation_period`).
    With it the pass skips the final observations whose value it already
    has (`purejaxppo.fast.reduced_critic`): where step t did not end an
    episode, ``final_obs[t]`` is ``obs[t + 1]``, so ``next_values[t] =
    values[t + 1]``; where it terminated GAE masks the value out. The
    advantages and returns are the full pass's. A period longer than the
    envs' true one would give some truncations the reset observation's
    value; `VecEnv.truncation_period` claims one only where it is checked.
    None, or a period too short to save anything: every final observation
    is evaluated.
    """
    num_steps = traj.rewards.shape[0]
    width, windows = truncation_windows(num_steps, truncation_period)
    if windows:
        return reduced_critic_values(value_fn, params, traj, width, windows)
    both = jnp.concatenate([traj.obs, traj.final_obs], axis=0)
    values, next_values = jnp.split(value_fn(params, both), [num_steps], axis=0)
    chex.assert_equal_shape([values, next_values, traj.rewards])
    return values, next_values


def recurrent_critic_values(
    hidden_value_fn: Callable[[Any, jax.Array], jax.Array],
    bootstrap_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    params: Any,
    traj: Trajectory,
) -> tuple[jax.Array, jax.Array]:
    """``(values, next_values)``, both (T, N), of a recurrent policy's rollout.

    ``values[t]`` is read from the hidden state after acting on s_t
    (``hidden_value_fn(params, traj.hidden)``). ``next_values[t]`` is the
    value of ``final_obs[t]`` seen one more step into the same episode, from
    that hidden state and never a reset one (``bootstrap_fn(params,
    traj.hidden, traj.final_obs)``): inside an episode it is V(s_{t+1}), at
    a time-limit truncation the bootstrap value the cut-off episode's next
    observation would have had. Both are one batched pass over (T, N), with
    no loop over time.
    """
    values = hidden_value_fn(params, traj.hidden)
    next_values = bootstrap_fn(params, traj.hidden, traj.final_obs)
    chex.assert_equal_shape([values, next_values, traj.rewards])
    return values, next_values
