"""Action distributions: a categorical and a diagonal Gaussian, as pytrees.

Sums, log-softmax and gathers over the action axis go through
`purejaxppo.fast.small_axis` (plain ``jnp`` for a wide axis). Each offers ``mode()``, ``sample(key)``, ``sample_from_noise(noise)``, ``log_prob(action)``, ``entropy()`` and
``kl(other)`` (KL(self || other)), batched over any leading axes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from purejaxppo.fast.small_axis import log_softmax, sum_last, take_last

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class Categorical:
    """Categorical over the last axis of ``logits`` (..., num_actions)."""

    logits: jax.Array

    @property
    def log_probs(self) -> jax.Array:
        """Normalised log-probabilities, (..., num_actions)."""
        return log_softmax(self.logits)

    def mode(self) -> jax.Array:
        """The most likely action (greedy), shape ``logits.shape[:-1]``."""
        return jnp.argmax(self.logits, axis=-1)

    def sample(self, key: jax.Array) -> jax.Array:
        """Integer actions, shape ``logits.shape[:-1]``."""
        return self.sample_from_noise(jax.random.gumbel(key, self.logits.shape))

    def sample_from_noise(self, noise: jax.Array) -> jax.Array:
        """Gumbel-max sampling: argmax(logits + g), g ~ Gumbel(0, 1) of logits' shape.

        Lets a caller draw the noise for many steps in one batched call.
        """
        return jnp.argmax(self.logits + noise, axis=-1)

    def log_prob(self, action: jax.Array) -> jax.Array:
        """log pi(action), shape ``action.shape``."""
        action = action.astype(jnp.int32)
        log_probs = self.log_probs
        shape = jnp.broadcast_shapes(action.shape, log_probs.shape[:-1])
        log_probs = jnp.broadcast_to(log_probs, shape + log_probs.shape[-1:])
        action = jnp.broadcast_to(action, shape)
        return take_last(log_probs, action)

    def entropy(self) -> jax.Array:
        """H = -sum_a p(a) log p(a), shape ``logits.shape[:-1]``."""
        logp = self.log_probs
        return -sum_last(jnp.exp(logp) * logp)

    def kl(self, other: "Categorical") -> jax.Array:
        """KL(self || other) = sum_a p(a) (log p(a) - log q(a))."""
        logp, logq = self.log_probs, other.log_probs
        return sum_last(jnp.exp(logp) * (logp - logq))


@struct.dataclass
class DiagGaussian:
    """Independent Gaussians over the last axis: mean (..., d), log_std (..., d)."""

    mean: jax.Array
    log_std: jax.Array

    def mode(self) -> jax.Array:
        """The mean action, shape ``mean.shape``."""
        return self.mean

    def sample(self, key: jax.Array) -> jax.Array:
        """Unclipped actions, shape ``mean.shape``."""
        return self.sample_from_noise(jax.random.normal(key, self.mean.shape, self.mean.dtype))

    def sample_from_noise(self, noise: jax.Array) -> jax.Array:
        """mean + std * z for standard normal ``noise`` z of ``mean``'s shape."""
        return self.mean + jnp.exp(self.log_std) * noise

    def log_prob(self, action: jax.Array) -> jax.Array:
        """sum_i log N(a_i; mu_i, sigma_i), shape ``mean.shape[:-1]``."""
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * _LOG_2PI, axis=-1)

    def entropy(self) -> jax.Array:
        """sum_i (0.5 log(2 pi e) + log sigma_i), shape ``mean.shape[:-1]``."""
        ent = 0.5 * (_LOG_2PI + 1.0) + self.log_std
        return jnp.sum(jnp.broadcast_to(ent, self.mean.shape), axis=-1)

    def kl(self, other: "DiagGaussian") -> jax.Array:
        """KL(self || other), summed over dimensions."""
        var_ratio = jnp.exp(2.0 * (self.log_std - other.log_std))
        mean_term = ((self.mean - other.mean) * jnp.exp(-other.log_std)) ** 2
        per_dim = 0.5 * (var_ratio + mean_term - 1.0) - (self.log_std - other.log_std)
        return jnp.sum(jnp.broadcast_to(per_dim, self.mean.shape), axis=-1)
