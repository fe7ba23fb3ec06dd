"""JAX's default PRNG, Threefry-2x32, written out as straight-line code.

Plain JAX equivalent: JAX's own threefry keys. The bits, splits and
fold-ins are equal element for element (``tests/test_prng.py``), so a run
gives bitwise the same result either way.

Gain: compile time. CartPole's reset vmapped over a rollout's 513 keys
compiled in 0.07-0.10 s straight against 0.44-0.59 s rolled; a whole
CartPole run's XLA compile fell from 3.99 to 3.38 s (median of 6 pairs of
fresh processes; benchmarks/NOTES.md). Runtime unchanged.

Every random draw in a run (the update's one draw, the network's init, and
the env's resets and transitions under gymnax) is JAX's partitionable
Threefry-2x32: the hash of a key and each element's index. On CPU, JAX
lowers that hash as a rolled loop, five iterations of four rounds whose
rotation amounts are loop state. XLA compiles each draw to a while loop
whose body LLVM unrolls slowly. On XLA's one-thread CPU pool, a CartPole
reset vmapped over a rollout's 513 keys, u32[513, 4], took 0.3-0.5 s of
LLVM time per kernel, a quarter of all the LLVM time of a CartPole run
(benchmarks/NOTES.md).

`STRAIGHT_THREEFRY` is the same hash as a JAX PRNG implementation
(`jax.extend.random.define_prng_impl`) that lowers it the way JAX does on
GPU: twenty rounds of add, rotate by a constant and xor, elementwise code
that XLA fuses into the kernels using the bits and compiles in tens of
milliseconds, on any backend. Its bits, splits and fold-ins equal JAX's
threefry's, element for element (``tests/test_prng.py``), so a run gives
bitwise the same result either way.

Only the draws (``random_bits``) are straight-line; splits and fold-ins are
JAX's own threefry. A key made by a split is hashed again by the draw that
uses it, and with both hashes straight-line XLA fuses the two into one
kernel. XLA CPU in jax 0.11.2 did not finish compiling such a kernel
within minutes (a CartPole reset vmapped over keys split from one key, busy
in LLVM's loop vectorizer; jax 0.10.2 compiles it in 0.3 s;
benchmarks/NOTES.md). JAX's split is a loop on CPU, whose
output XLA computes once, so a kernel holds one hash at most.

`straight` views a threefry key (raw ``uint32[..., 2]`` or typed) as a key
of this implementation and leaves any other key (``rbg``, say) as it is.
The library applies it where a draw has one consumer: the keys `VecEnv`
hands to the env, and the network's init draw (`networks.init_params`).
The update's draw of random words (`distributions.random_words`) stays
JAX's loop, whose output XLA computes once: fused into each of its
consumers, the hash would be recomputed by each. What a run stores
(``TrainState.rng``) keeps the caller's kind of key.
"""

from __future__ import annotations

import math

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # Threefish's key-schedule constant


def _rotate_left(x: jax.Array, d: int) -> jax.Array:
    return lax.shift_left(x, np.uint32(d)) | lax.shift_right_logical(x, np.uint32(32 - d))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), as JAX's
    ``threefry2x32_p``: key words ``k1, k2`` (uint32, broadcast against the
    counts), count words ``x1, x2`` (uint32, one shape); returns the two
    output words, each of the counts' shape.

    Five groups of four rounds ``x1 += x2; x2 = rotl(x2, r) ^ x1``, the
    rotations alternating (13, 15, 26, 6) and (17, 29, 16, 24); after group
    i the key schedule adds ``(ks[i+1], ks[i+2] + i + 1)`` (indices mod 3),
    ``ks = (k1, k2, k1 ^ k2 ^ 0x1BD11BDA)``.
    """
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    y1, y2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            y1 = y1 + y2
            y2 = _rotate_left(y2, r) ^ y1
        y1 = y1 + ks[(i + 1) % 3]
        y2 = y2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return y1, y2


def _index_words(shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """The row-major index of each element of ``shape`` as 64 bits, in two
    uint32 arrays (high, low): JAX's ``iota_2x32_shape``."""
    size = math.prod(shape)
    if size >= 1 << 32:  # the high word would be nonzero
        raise NotImplementedError(f"straight threefry draws of 2**32 elements or more (shape {shape})")
    return jnp.zeros(shape, np.uint32), lax.iota(np.uint32, size).reshape(shape)


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    """As JAX's partitionable ``threefry_random_bits`` for one key (2,)."""
    if bit_width not in (8, 16, 32, 64):
        raise TypeError(f"bit_width must be 8, 16, 32 or 64, got {bit_width}")
    hi, lo = _index_words(tuple(shape))
    b1, b2 = threefry2x32(key[0], key[1], hi, lo)
    dtype = np.dtype(f"uint{bit_width}")
    if bit_width == 64:
        return lax.shift_left(b1.astype(dtype), dtype.type(32)) | b2.astype(dtype)
    bits = b1 ^ b2
    return bits if bit_width == 32 else bits.astype(dtype)


def _jax_threefry(key: jax.Array) -> jax.Array:
    return jax.random.wrap_key_data(key, impl="threefry2x32")


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """JAX's own threefry split (the partitionable one: key i is the hash of
    index i), not the straight hash: see `STRAIGHT_THREEFRY`."""
    return jax.random.key_data(jax.random.split(_jax_threefry(key), tuple(shape)))


def _fold_in(key: jax.Array, data: jax.Array) -> jax.Array:
    """JAX's own threefry fold-in (the hash of the count words (0, data)),
    not the straight hash: see `STRAIGHT_THREEFRY`."""
    return jax.random.key_data(jax.random.fold_in(_jax_threefry(key), data))


def _seed(seed: jax.Array) -> jax.Array:
    """As JAX's threefry seed: the high and low 32 bits of the integer seed."""
    return jax.random.key_data(jax.random.key(seed, impl="threefry2x32"))


STRAIGHT_THREEFRY = jax.extend.random.define_prng_impl(
    key_shape=(2,),
    seed=_seed,
    split=_split,
    random_bits=_random_bits,
    fold_in=_fold_in,
    name="purejaxppo_threefry2x32_straight",
    tag="pfy",
)
"""JAX's threefry (partitionable): draws lowered as straight-line code on every
backend; splits and fold-ins are JAX's own."""


def is_threefry(key: jax.Array) -> bool:
    """Whether ``key`` is a JAX threefry key: typed with the ``threefry2x32``
    implementation, or raw uint32 while that is JAX's default PRNG.
    Decided from the dtype and JAX's config, at trace time."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return str(key.dtype) == "key<fry>"  # JAX's tag for threefry2x32
    return key.dtype == jnp.uint32 and jax.config.jax_default_prng_impl == "threefry2x32"


def straight(key: jax.Array) -> jax.Array:
    """``key`` (any batch shape) as a `STRAIGHT_THREEFRY` key where it is a
    threefry key and JAX's threefry is partitionable (its default), whose
    bits `STRAIGHT_THREEFRY` reproduces; otherwise ``key`` unchanged.

    Every draw from the returned key gives the bits the original key would.
    """
    if not (is_threefry(key) and jax.config.jax_threefry_partitionable):
        return key
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    return jax.random.wrap_key_data(jax.random.key_data(key) if typed else key, impl=STRAIGHT_THREEFRY)

