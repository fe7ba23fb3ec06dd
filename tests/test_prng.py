"""`purejaxppo.fast.straight_threefry`: the straight-line threefry equals JAX's threefry, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.fast.straight_threefry import STRAIGHT_THREEFRY, is_threefry, straight, threefry2x32

KEYS = [jax.random.PRNGKey(0), jax.random.PRNGKey(12345), jnp.array([0xFFFFFFFF, 0x80000001], jnp.uint32)]


def _pair(raw):
    """The same key data as a JAX threefry key and as a straight one."""
    return jax.random.wrap_key_data(raw), jax.random.wrap_key_data(raw, impl=STRAIGHT_THREEFRY)


def _eq(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_threefry2x32_known_answers():
    """Random123's known-answer vectors for Threefry-2x32 with 20 rounds."""
    u = lambda *v: jnp.array(v, jnp.uint32)
    cases = [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for key, count, expected in cases:
        out = threefry2x32(u(key[0]), u(key[1]), u(count[0]), u(count[1]))
        assert (int(out[0][0]), int(out[1][0])) == expected
        _eq(jnp.stack(out)[:, 0], jax.extend.random.threefry_2x32(u(*key), u(*count)))


@pytest.mark.parametrize("shape", [(), (1,), (7,), (512, 4), (3, 5, 2)])
def test_bits_equal_jax_threefry(shape):
    @jax.jit
    def draws(key):  # the bits and the samplers gymnax calls, jitted as a run would
        return [
            *(jax.random.bits(key, shape, dtype) for dtype in (jnp.uint8, jnp.uint16, jnp.uint32)),
            jax.random.uniform(key, shape, minval=-0.05, maxval=0.05),
            jax.random.normal(key, shape),
            jax.random.randint(key, shape, 0, 7),
            jax.random.bernoulli(key, 0.3, shape),
        ]

    for raw in KEYS:
        ref, ours = _pair(raw)
        for a, b in zip(draws(ours), draws(ref)):
            _eq(a, b)


@pytest.mark.parametrize("raw", KEYS, ids=["seed0", "seed12345", "high-bits"])
def test_split_fold_in_and_permutation_equal_jax_threefry(raw):
    ref, ours = _pair(raw)
    for shape in [(), (2,), (5,), (3, 4)]:
        _eq(jax.random.key_data(jax.random.split(ours, shape)), jax.random.key_data(jax.random.split(ref, shape)))
    for data in (0, 1, 7, 2**31 + 5):
        _eq(jax.random.key_data(jax.random.fold_in(ours, data)), jax.random.key_data(jax.random.fold_in(ref, data)))
    _eq(jax.random.permutation(ours, 100), jax.random.permutation(ref, 100))
    _eq(jax.random.choice(ours, 10, (6,), replace=False), jax.random.choice(ref, 10, (6,), replace=False))


def test_only_draws_are_straight_line():
    """A split or fold-in of a straight key is JAX's own threefry (its
    `threefry2x32` in the lowering) and a draw is not: two straight hashes
    chained in one kernel (a draw from a split key) did not finish compiling
    within minutes on XLA CPU in jax 0.11.2 (`purejaxppo.fast.straight_threefry`)."""
    key = straight(jax.random.PRNGKey(0))
    lowered = lambda f: jax.jit(f).lower(key).as_text()
    assert "@threefry2x32" not in lowered(lambda k: jax.random.bits(k, (4,)))
    assert "@threefry2x32" in lowered(lambda k: jax.random.split(k, 4))
    assert "@threefry2x32" in lowered(lambda k: jax.random.fold_in(k, 3))


def test_seed_equals_jax_threefry():
    for seed in (0, 1, 2**31 - 1, -3):
        _eq(
            jax.random.key_data(jax.random.key(seed, impl=STRAIGHT_THREEFRY)),
            jax.random.key_data(jax.random.key(seed, impl="threefry2x32")),
        )


def test_vmapped_draws_equal_jax_threefry():
    """Batched keys, as a vmapped env reset draws them."""
    raw = jax.random.key_data(jax.random.split(jax.random.key(3), 513))
    draw = jax.jit(jax.vmap(lambda k: jax.random.uniform(k, (4,))))
    _eq(draw(jax.random.wrap_key_data(raw, impl=STRAIGHT_THREEFRY)), draw(jax.random.wrap_key_data(raw)))


def test_straight_converts_threefry_keys_only():
    raw = jax.random.PRNGKey(0)
    typed = jax.random.key(0)
    assert is_threefry(raw) and is_threefry(typed)
    for key in (raw, typed, jax.random.split(typed, 3)):
        out = straight(key)
        assert jax.random.key_impl(out) == STRAIGHT_THREEFRY
        _eq(jax.random.key_data(out), jax.random.key_data(key))
        assert straight(out) is out  # already straight
    rbg = jax.random.key(0, impl="rbg")
    assert not is_threefry(rbg) and straight(rbg) is rbg
    floats = jnp.zeros((2,), jnp.float32)
    assert straight(floats) is floats


def test_straight_leaves_keys_when_threefry_is_not_partitionable():
    """JAX's other threefry layout draws other bits: keys stay JAX's."""
    key = jax.random.key(0)
    with jax.threefry_partitionable(False):
        assert straight(key) is key


@pytest.mark.skipif(not hasattr(jax, "enable_x64"), reason="this JAX has no jax.enable_x64")
def test_64_bit_draws_equal_jax_threefry():
    with jax.enable_x64(True):
        ref, ours = _pair(jax.random.key_data(jax.random.key(3)))
        for shape in [(), (5, 3)]:
            _eq(jax.random.bits(ours, shape, jnp.uint64), jax.random.bits(ref, shape, jnp.uint64))
        _eq(jax.random.uniform(ours, (4,), jnp.float64), jax.random.uniform(ref, (4,), jnp.float64))


@pytest.mark.parametrize("default", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_is_threefry_under_each_default_prng(default_prng_impl, default):
    """Typed keys are judged by their own implementation, whatever the
    default; raw uint32 keys are threefry only while threefry is JAX's
    default (`is_threefry`), also inside a trace."""
    default_prng_impl(default)
    typed = {impl: jax.random.key(3, impl=impl) for impl in ("threefry2x32", "rbg", "unsafe_rbg")}
    assert is_threefry(typed["threefry2x32"]) and is_threefry(jax.random.split(typed["threefry2x32"], (2, 3)))
    for impl in ("rbg", "unsafe_rbg"):
        assert not is_threefry(typed[impl]) and not is_threefry(jax.random.split(typed[impl], 4)), impl
    assert not is_threefry(jax.random.key(3, impl=STRAIGHT_THREEFRY))  # not JAX's threefry2x32
    assert is_threefry(jax.random.key(3)) == (default == "threefry2x32")  # the default's typed key

    raw_default = jax.random.PRNGKey(3)  # uint32[2] under threefry, uint32[4] under the rbgs
    assert raw_default.shape == ((2,) if default == "threefry2x32" else (4,))
    raw_keys = [raw_default, jax.random.split(raw_default, 5), jax.random.key_data(typed[default])]
    raw_is_threefry = default == "threefry2x32"
    if not raw_is_threefry:  # raw words are not threefry's under another default, whatever their shape
        raw_keys.append(jax.random.key_data(typed["threefry2x32"]))  # uint32[2]
    for raw in raw_keys:
        assert raw.dtype == jnp.uint32
        assert is_threefry(raw) == raw_is_threefry, (raw.shape, default)
        traced = []
        jax.jit(lambda k: traced.append(is_threefry(k)) or k)(raw)
        assert traced == [raw_is_threefry]
    for not_a_key in (jnp.zeros((2,), jnp.float32), jnp.zeros((2,), jnp.int32), jnp.zeros((4,), jnp.uint8)):
        assert not is_threefry(not_a_key)


def test_straight_leaves_rbg_keys_and_their_draws_as_they_are(default_prng_impl):
    """Raw uint32[4] keys under the rbg default and typed rbg keys pass
    through `straight` unchanged (wrapped as threefry, their four words
    would not even fit), so what is drawn from them is rbg's."""
    default_prng_impl("rbg")
    raw = jax.random.PRNGKey(5)
    batched = jax.random.split(raw, 3)
    typed = jax.random.key(5, impl="rbg")
    for key in (raw, batched, typed):
        assert straight(key) is key
    expected = jax.random.bits(raw, (6,), jnp.uint32)
    _eq(jax.jit(lambda k: jax.random.bits(straight(k), (6,), jnp.uint32))(raw), expected)
    # Under the rbg default, a threefry key still converts (typed keys carry their impl).
    threefry = jax.random.key(5, impl="threefry2x32")
    assert jax.random.key_impl(straight(threefry)) == STRAIGHT_THREEFRY
