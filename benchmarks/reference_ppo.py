"""The baseline of the speed targets: PureJaxRL's PPO, rebuilt for gymnax >= 1.0.

The project states each speed target beside the figure of PureJaxRL's
single-file ``ppo.py`` on this machine class (compile 5.5 s, 118k steps/s
for CartPole defaults, 185k over 8 seeds, 159k at 2048 x 128). Figures
like these move with this shared machine by up to 3x from one day
to the next, so the targets can be read
only against a baseline timed beside ours, in the same minutes. This module
is that baseline. ``python benchmarks/versus_reference.py`` times it against
``purejaxppo``.

PureJaxRL's file itself no longer runs: it unpacks the five values of the
old gymnax ``step``. This is the same algorithm and, where speed is decided,
the same computation graph, written here against the six-value API:

* gymnax's own ``FlattenObservationWrapper`` and ``LogWrapper`` (gymnax
  1.0 ships both, in ``gymnax.wrappers.purerl``) and its ``step``, which resets a
  finished episode itself (a reset drawn and discarded on every step);
* every random draw inside the loops: per rollout step, one key split for
  the action and ``num_envs`` keys for the envs' steps;
  per epoch, ``jax.random.permutation`` of the whole batch, transitions
  and env infos included;
* a Flax actor-critic: two tanh layers of 64 per head, orthogonal
  initialisation (``sqrt(2)``, 0.01 for the logits, 1.0 for the value);
  a categorical policy from the logits;
* GAE by a reverse ``lax.scan`` with ``done = terminated or truncated``
  (no bootstrap at truncation), value clipping, the advantage normalised
  per minibatch, ``optax.chain(clip_by_global_norm, adam)`` with a
  linearly annealed learning rate (``eps=1e-5``), a Flax ``TrainState``;
* the metrics: every step's env info, stacked over the whole run.

Two differences from the original, neither in the graph's size: the
categorical is written out (``log_softmax``; PureJaxRL used distrax, which
computes the same ``log_softmax`` and samples with the same
``jax.random.categorical``), and gymnax >= 1.0 adds ``final_observation``
to the env info, which the shuffle then permutes too (4 floats more per
transition on CartPole).

The hyperparameters are ``purejaxppo``'s defaults (which are PureJaxRL's
for CartPole). Discrete action spaces only: the targets are CartPole's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal
from flax.training.train_state import TrainState
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    """PureJaxRL's ``ppo.py`` settings, named as in ``purejaxppo.PPOConfig``."""

    env_name: str = "CartPole-v1"
    total_timesteps: int = 500_000
    num_envs: int = 4
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    anneal_lr: bool = True

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.num_steps // self.num_envs

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.num_steps // self.num_minibatches


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs (2 x 64, tanh); returns (logits, value)."""

    action_dim: int

    @nn.compact
    def __call__(self, x):
        def torso(h):
            for _ in range(2):
                h = nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(h)
                h = nn.tanh(h)
            return h

        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(torso(x))
        value = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(torso(x))
        return logits, jnp.squeeze(value, axis=-1)


def _log_prob(logits, action):
    return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]


def _entropy(logits):
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    info: Any


def make_train(config: ReferenceConfig):
    """``train(rng) -> {"runner_state": ..., "metrics": env infos}``, one pure function."""
    env, env_params = gymnax.make(config.env_name)
    env = LogWrapper(FlattenObservationWrapper(env))
    n_act = env.action_space(env_params).n
    obs_shape = env.observation_space(env_params).shape

    def linear_schedule(count):
        frac = 1.0 - (count // (config.num_minibatches * config.update_epochs)) / config.num_updates
        return config.lr * frac

    def train(rng):
        network = ActorCritic(n_act)
        rng, init_rng = jax.random.split(rng)
        params = network.init(init_rng, jnp.zeros(obs_shape))
        lr = linear_schedule if config.anneal_lr else config.lr
        tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))
        train_state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)

        rng, reset_rng = jax.random.split(rng)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_rng, config.num_envs), env_params)

        def update_step(runner_state, _):
            def env_step(runner_state, _):
                train_state, env_state, last_obs, rng = runner_state
                rng, act_rng = jax.random.split(rng)
                logits, value = network.apply(train_state.params, last_obs)
                action = jax.random.categorical(act_rng, logits)
                log_prob = _log_prob(logits, action)
                rng, step_rng = jax.random.split(rng)
                obs, env_state, reward, terminated, truncated, info = jax.vmap(
                    env.step, in_axes=(0, 0, 0, None))(
                    jax.random.split(step_rng, config.num_envs), env_state, action, env_params)
                done = jnp.logical_or(terminated, truncated)
                transition = Transition(done, action, value, reward, log_prob, last_obs, info)
                return (train_state, env_state, obs, rng), transition

            runner_state, traj = jax.lax.scan(env_step, runner_state, None, config.num_steps)
            train_state, env_state, last_obs, rng = runner_state
            _, last_val = network.apply(train_state.params, last_obs)

            def gae_step(carry, t):
                gae, next_value = carry
                delta = t.reward + config.gamma * next_value * (1 - t.done) - t.value
                gae = delta + config.gamma * config.gae_lambda * (1 - t.done) * gae
                return (gae, t.value), gae

            _, advantages = jax.lax.scan(gae_step, (jnp.zeros_like(last_val), last_val), traj,
                                         reverse=True, unroll=16)
            targets = advantages + traj.value

            def update_epoch(update_state, _):
                def update_minibatch(train_state, batch):
                    traj, advantages, targets = batch

                    def loss_fn(params):
                        logits, value = network.apply(params, traj.obs)
                        log_prob = _log_prob(logits, traj.action)
                        value_clipped = traj.value + jnp.clip(value - traj.value, -config.clip_eps,
                                                              config.clip_eps)
                        value_loss = 0.5 * jnp.maximum(jnp.square(value - targets),
                                                       jnp.square(value_clipped - targets)).mean()
                        ratio = jnp.exp(log_prob - traj.log_prob)
                        gae = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                        actor_loss = -jnp.minimum(
                            ratio * gae,
                            jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps) * gae).mean()
                        entropy = _entropy(logits).mean()
                        total = actor_loss + config.vf_coef * value_loss - config.ent_coef * entropy
                        return total, (value_loss, actor_loss, entropy)

                    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(train_state.params)
                    return train_state.apply_gradients(grads=grads), loss

                train_state, traj, advantages, targets, rng = update_state
                rng, perm_rng = jax.random.split(rng)
                batch_size = config.minibatch_size * config.num_minibatches
                permutation = jax.random.permutation(perm_rng, batch_size)
                batch = jax.tree_util.tree_map(
                    lambda x: x.reshape((batch_size,) + x.shape[2:]), (traj, advantages, targets))
                shuffled = jax.tree_util.tree_map(lambda x: jnp.take(x, permutation, axis=0), batch)
                minibatches = jax.tree_util.tree_map(
                    lambda x: x.reshape((config.num_minibatches, -1) + x.shape[1:]), shuffled)
                train_state, losses = jax.lax.scan(update_minibatch, train_state, minibatches)
                return (train_state, traj, advantages, targets, rng), losses

            update_state = (train_state, traj, advantages, targets, rng)
            update_state, _ = jax.lax.scan(update_epoch, update_state, None, config.update_epochs)
            train_state, rng = update_state[0], update_state[-1]
            return (train_state, env_state, last_obs, rng), traj.info

        rng, run_rng = jax.random.split(rng)
        runner_state = (train_state, env_state, obs, run_rng)
        runner_state, metrics = jax.lax.scan(update_step, runner_state, None, config.num_updates)
        return {"runner_state": runner_state, "metrics": metrics}

    return train


def final_return(metrics) -> jax.Array:
    """What purejaxppo's ``episode_return`` reports at the end of training:
    the mean over envs of each env's most recently finished episode's return.

    Envs that never finished an episode are left out (NaN if none did). The
    last update alone is not enough: with 4 envs x 128 steps and episodes of
    500 steps, often no episode ends in it.
    """
    done = metrics["returned_episode"]  # (num_updates, num_steps, num_envs)
    returns = metrics["returned_episode_returns"]
    done = done.reshape(-1, done.shape[-1])
    returns = returns.reshape(-1, returns.shape[-1])
    steps = jnp.arange(done.shape[0])[:, None]
    last = jnp.max(jnp.where(done, steps, -1), axis=0)  # per env: the last step an episode ended
    finished = last >= 0
    last_return = returns[jnp.maximum(last, 0), jnp.arange(done.shape[-1])]
    return jnp.sum(jnp.where(finished, last_return, 0.0)) / jnp.sum(finished)
