"""Shuffles as keyed Feistel-network bijections: a permutation with no sort.

Plain JAX equivalent: ``jax.random.permutation(key, size)`` per epoch, which
sorts random keys. The permutations differ (another random stream), the law
does not: `tests/test_fast.py` checks with chi-square tests that orderings,
positions and neighbouring indices come out as from a uniform shuffle.

Gain: on a 2-core CPU, the 4 epochs' permutations of 262,144 samples (the
2048 envs x 128 steps benchmark case) took 388 ms by a sort on 64-bit random
keys and 3.6 ms this way, of an update of about 1.2 s (benchmarks/NOTES.md).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from purejaxppo.fast.random_draws import random_words

FEISTEL_ROUNDS = 12
_MIN_DOMAIN_BITS = 8


def _mix32(x: jax.Array) -> jax.Array:
    """A 32-bit avalanche hash (the MurmurHash3 finaliser), uint32 -> uint32."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def feistel_bijection(x: jax.Array, round_keys: jax.Array, bits: int) -> jax.Array:
    """A keyed bijection of ``[0, 2**bits)`` (uint32 in, uint32 out, elementwise).

    ``x`` is split into a high part H (``bits // 2`` bits) and a low part L;
    round i replaces H by ``H ^ f(L ^ k_i)`` (even i) or L by ``L ^ f(H ^ k_i)``
    (odd i), where f is `_mix32` cut to the part's width and k_i =
    ``round_keys[i]``. Each round is its own inverse given the other part, so
    the composition is a bijection for any keys: a (generalised) Feistel
    network.
    """
    high_bits = bits // 2
    low_bits = bits - high_bits
    high_mask = jnp.uint32((1 << high_bits) - 1)
    low_mask = jnp.uint32((1 << low_bits) - 1)
    high, low = x >> low_bits, x & low_mask
    for i in range(round_keys.shape[0]):
        if i % 2 == 0:
            high = high ^ (_mix32(low ^ round_keys[i]) & high_mask)
        else:
            low = low ^ (_mix32(high ^ round_keys[i]) & low_mask)
    return (high << low_bits) | low


def random_permutations(
    key: jax.Array, num: int, size: int, rounds: int = FEISTEL_ROUNDS
) -> jax.Array:
    """``num`` independent pseudo-random permutations of ``range(size)``.

    Row r maps i to a keyed `feistel_bijection` of ``[0, 2**k)``, the
    smallest power of two >= ``size`` (and >= 256), cycle-walked into
    ``range(size)``: while the image is >= ``size``, apply the bijection
    again (Black and Rogaway, "Ciphers with arbitrary finite domains",
    2002). The first image inside the range is the first in-range point on
    i's cycle, so the result is a permutation; for a uniformly random
    bijection it would be uniform. Each row has its own round keys from
    ``key``. With ``size`` a power of two (>= 256) no walking happens; else,
    for ``size`` >= 128, at least half the domain is in range, so walks are
    short (a smaller size still has the 256-point domain: size 7 walks about
    37 steps on average, a cost only small batches pay).

    It costs a few elementwise integer passes over the indices and no sort.
    A sort on 64-bit random keys, the previous method, took ~95 ms per
    permutation of 262,144 indices on the project's CPU; this takes
    under 1 ms (benchmarks/NOTES.md, "The shuffle"). Like every PRNG-keyed shuffle,
    including `jax.random.permutation`, it reaches only a tiny subset of
    the ``size!`` orderings. `tests/test_update.py` checks with chi-square
    tests that orderings, positions and neighbouring indices come out as
    from a uniform shuffle, and that the same tests reject 1 or 2 rounds.

    Returns:
        int32 array (num, size); row i is a permutation.
    """
    return permutations_from_round_keys(shuffle_keys(key, num, rounds), size)


def permutations_from_round_keys(round_keys: jax.Array, size: int) -> jax.Array:
    """`random_permutations` with its round keys given: uint32 (num, rounds),
    random words, one row per permutation. Returns int32 (num, size)."""
    if size < 1 or size > 2**31:
        raise ValueError(f"size must be in [1, 2**31], got {size}")
    chex.assert_rank(round_keys, 2)
    chex.assert_type(round_keys, jnp.uint32)
    bits = max(_MIN_DOMAIN_BITS, (size - 1).bit_length())
    indices = jax.lax.iota(jnp.uint32, size)

    def one(keys):
        step = lambda y: feistel_bijection(y, keys, bits)
        if size == 1 << bits:  # the domain is the range: no walking (and no loop to compile)
            return step(indices).astype(jnp.int32)
        outside = lambda y: y >= size
        y = jax.lax.while_loop(
            lambda y: jnp.any(outside(y)),
            lambda y: jnp.where(outside(y), step(y), y),
            step(indices),
        )
        return y.astype(jnp.int32)

    return jax.vmap(one)(round_keys)


def shuffle_keys(key: jax.Array, num: int, rounds: int = FEISTEL_ROUNDS) -> jax.Array:
    """The round keys of ``num`` shuffles drawn from ``key``: uint32 (num,
    rounds), what `random_permutations` draws and `purejaxppo.update.ppo_update`
    takes."""
    return random_words(key, num * rounds).reshape(num, rounds)
