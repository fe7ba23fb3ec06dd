"""Action distributions: a categorical and a diagonal Gaussian, as pytrees.

Each offers ``mode()``, ``sample(key)``, ``sample_from_noise(noise)``, ``log_prob(action)``, ``entropy()`` and
``kl(other)`` (KL(self || other)), batched over any leading axes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import struct

_LOG_2PI = math.log(2.0 * math.pi)

SMALL_AXIS = 8
"""Action axes up to this size are reduced by unrolled elementwise ops."""


def _columns(x: jax.Array) -> list[jax.Array]:
    return [x[..., i] for i in range(x.shape[-1])]


def sum_last(x: jax.Array) -> jax.Array:
    """``jnp.sum(x, axis=-1)``; for a last axis of at most `SMALL_AXIS`, as a
    chain of elementwise adds of its columns.

    XLA on CPU runs a reduction over a 2-wide axis of an (8192, 2) array, and
    the reduction that is its gradient, many times slower than the
    elementwise fusion this becomes (benchmarks/NOTES.md, session 5). The
    gradient of a column slice is elementwise too.
    """
    if x.shape[-1] > SMALL_AXIS:
        return jnp.sum(x, axis=-1)
    return functools.reduce(jnp.add, _columns(x))


def log_softmax(logits: jax.Array) -> jax.Array:
    """``jax.nn.log_softmax`` over the last axis, by `sum_last`'s rule:
    log p_i = l_i - m - log sum_j exp(l_j - m), m = max_j l_j (held constant
    under differentiation, as the result does not depend on it)."""
    if logits.shape[-1] > SMALL_AXIS:
        return jax.nn.log_softmax(logits, axis=-1)
    cols = _columns(logits)
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, cols))
    lse = m + jnp.log(functools.reduce(jnp.add, [jnp.exp(c - m) for c in cols]))
    # Stacked columns, not `logits - lse[..., None]`: the gradient of that
    # broadcast would be a reduction over the action axis again.
    return jnp.stack([c - lse for c in cols], axis=-1)


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
        if log_probs.shape[-1] > SMALL_AXIS:
            return jnp.take_along_axis(log_probs, action[..., None], axis=-1)[..., 0]
        # A select per action: elementwise, forward and backward (a gather's
        # gradient is a scatter).
        cols = _columns(log_probs)
        return functools.reduce(
            lambda out, i: jnp.where(action == i, cols[i], out), range(1, len(cols)), cols[0]
        )

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


ODD_DRAW_MAX = 1 << 16
"""Random draws of up to this many elements are made at an odd length (`random_words`)."""


def odd_draw_length(n: int) -> int:
    """The length to draw ``n`` random elements at: ``n + 1`` when ``n`` is
    even and at most `ODD_DRAW_MAX`, else ``n``.

    Why: on CPU, with XLA's default thread pool, XLA compiles JAX's
    threefry loop 3-6x faster for an odd length (two kernels of ~20 ms of
    LLVM time each for a u32[3125] draw, against 60-100 ms for u32[3124]),
    and runs it 2-5x slower, not vectorised (benchmarks/NOTES.md, session
    7). Small draws, made once per update, take the faster compile; large
    ones keep the fast loop. (The env's own draws go through
    `purejaxppo.prng.straight` keys instead, which have no loop.)
    """
    return n + 1 if n % 2 == 0 and n <= ODD_DRAW_MAX else n


def random_words(key: jax.Array, n: int) -> jax.Array:
    """``n`` random uint32 words from ``key``, drawn at `odd_draw_length`
    and sliced: the same words as ``jax.random.bits(key, (n,), jnp.uint32)``
    under JAX's default partitionable threefry, where element i of a draw
    depends on i and the key only (tests/test_networks.py).

    The draw stays JAX's threefry loop, whose output XLA materialises
    once: through `purejaxppo.prng.straight` the hash would be fused into
    each consumer of the words and recomputed there (a reset key's two
    words for every element of the reset state drawn from it; the
    env-only rate of CartPole fell by a third; NOTES, session 14).
    """
    return jax.random.bits(key, (odd_draw_length(n),), jnp.uint32)[:n]


def open_unit_interval(bits: jax.Array) -> jax.Array:
    """uint32 random bits to float32 uniform on the open interval (0, 1).

    Keeps the top 23 bits b and returns (b + 0.5) / 2**23, exactly
    representable: 2**23 equally likely values, symmetric about 1/2, never 0
    or 1 (so log(u) and log(1 - u) are finite).
    """
    return ((bits >> 9).astype(jnp.float32) + 0.5) * (2.0**-23)


def action_noise(bits: jax.Array, discrete: bool) -> jax.Array:
    """The noise `sample_from_noise` turns into actions, from uint32 ``bits``
    of the batch shape, whose last axis is the number of actions (discrete:
    standard Gumbel, -log(-log u)) or the action dimension (continuous:
    standard normal, sqrt(2) * erfinv(2u - 1)); u is `open_unit_interval`.

    Taking bits lets the rollout draw its action noise, env keys and reset
    keys in one random-bits call (one threefry kernel to compile).
    """
    if discrete:
        return -jnp.log(-jnp.log(open_unit_interval(bits)))
    return normal_from_bits(bits)


def normal_from_bits(bits: jax.Array) -> jax.Array:
    """uint32 random bits to standard normal float32: sqrt(2) * erfinv(2u - 1)
    with u = `open_unit_interval` (inverse-CDF sampling; |z| < 5.3)."""
    return math.sqrt(2.0) * jax.lax.erf_inv(2.0 * open_unit_interval(bits) - 1.0)
