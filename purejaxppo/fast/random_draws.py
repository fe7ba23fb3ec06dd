"""All of an update's randomness from one draw of random words.

Plain JAX equivalent: split the key for each consumer (``jax.random.split``)
and draw each kind of noise with its own call (``jax.random.gumbel``,
``jax.random.normal``, one key per env and step). Each such call is a
threefry kernel that XLA compiles apart (0.1-0.4 s of LLVM time each on
CPU); one flat ``jax.random.bits`` call is one kernel. `random_words` draws
it at an odd length where that compiles faster, sliced to the same words.
The draws are exact transforms of the bits (`open_unit_interval`,
`action_noise`), tested against their laws in ``tests/test_fast.py`` and
``tests/test_networks.py``.

Gain: compile time. CartPole's defaults compiled in 3.6 s against 4.0 s
with per-consumer draws (one draw for the rollout), and the update's single
draw took two more threefry kernels off; the odd lengths took about 0.5 s of
compile CPU off (benchmarks/NOTES.md, "Random draws and compile time").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

ODD_DRAW_MAX = 1 << 16
"""Random draws of up to this many elements are made at an odd length (`random_words`)."""


def odd_draw_length(n: int) -> int:
    """The length to draw ``n`` random elements at: ``n + 1`` when ``n`` is
    even and at most `ODD_DRAW_MAX`, else ``n``.

    Why: on CPU, with XLA's default thread pool, XLA compiles JAX's
    threefry loop 3-6x faster for an odd length (two kernels of ~20 ms of
    LLVM time each for a u32[3125] draw, against 60-100 ms for u32[3124]),
    and runs it 2-5x slower, not vectorised (benchmarks/NOTES.md). Small draws, made once per update, take the faster compile; large
    ones keep the fast loop. (The env's own draws go through
    `purejaxppo.fast.straight_threefry.straight` keys instead, which have no loop.)
    """
    return n + 1 if n % 2 == 0 and n <= ODD_DRAW_MAX else n


def random_words(key: jax.Array, n: int) -> jax.Array:
    """``n`` random uint32 words from ``key``, drawn at `odd_draw_length`
    and sliced: the same words as ``jax.random.bits(key, (n,), jnp.uint32)``
    under JAX's default partitionable threefry, where element i of a draw
    depends on i and the key only (tests/test_networks.py).

    The draw stays JAX's threefry loop, whose output XLA materialises
    once: through `purejaxppo.fast.straight_threefry.straight` the hash would be fused into
    each consumer of the words and recomputed there (a reset key's two
    words for every element of the reset state drawn from it; the
    env-only rate of CartPole fell by a third; benchmarks/NOTES.md).
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


def key_words(key: jax.Array) -> int:
    """uint32 words of one PRNG key like ``key`` (2 for threefry)."""
    return jax.random.key_data(key).shape[-1]


def keys_from_words(words: jax.Array, like: jax.Array) -> jax.Array:
    """PRNG keys of the same kind as ``like`` from random uint32 ``words``
    (..., `key_words`): typed keys stay typed, raw uint32 keys stay raw.
    Random words are what `jax.random.split` makes keys of, too."""
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(words, impl=jax.random.key_impl(like))
    return words
