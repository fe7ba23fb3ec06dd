"""Each speed trick of `purejaxppo.fast` against its plain JAX equivalent.

The other tricks are tested beside the code that uses them: the shuffle
(`tests/test_update.py`), random draws, the transposed-gradient matmul,
im2col and the orthogonal init (`tests/test_networks.py`), the straight-line
threefry (`tests/test_prng.py`), the reduced critic pass
(`tests/test_advantages.py`), the deferred gymnax imports (`tests/test_envs.py`).
Here: the packed carry, the small-axis reductions, and that every module
names its plain equivalent and what earns its place.
"""

import importlib
import math
import pkgutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purejaxppo.fast as fast
from purejaxppo import PPOConfig, make_train
from purejaxppo.envs import VecEnv, make_env
from purejaxppo.fast import packed_carry
from purejaxppo.fast.packed_carry import PACK_MAX_SIZE, pack_leaves, packs, unpack_leaves
from purejaxppo.fast.small_axis import SMALL_AXIS, log_softmax, sum_last, take_last
from purejaxppo.rollout import EnvCarry, RolloutRandomness, collect_rollout

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


def assert_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        if jnp.issubdtype(x.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("lead", [(3,), (5, 3)])
def test_pack_leaves_groups_by_dtype_in_tree_order_and_unpacks_exactly(lead):
    rng = np.random.default_rng(0)
    tree = {
        "a": jnp.asarray(rng.normal(size=lead), jnp.float32),
        "b": jnp.asarray(rng.integers(0, 9, size=lead + (2,)), jnp.int32),
        "c": (jnp.asarray(rng.normal(size=lead + (3, 2)), jnp.float32),
              jnp.asarray(rng.random(lead + (4,)) > 0.5)),
        "d": jnp.asarray(rng.integers(0, 9, size=lead), jnp.int32),
    }
    arrays, layout = pack_leaves(tree, len(lead))
    assert {name: x.shape for name, x in arrays.items()} == {
        "float32": lead + (7,), "int32": lead + (3,), "bool": lead + (4,)}
    # float32: a, then c[0] flattened; int32: b, then d.
    np.testing.assert_array_equal(arrays["float32"][..., 0], tree["a"])
    np.testing.assert_array_equal(arrays["float32"][..., 1:], tree["c"][0].reshape(lead + (6,)))
    np.testing.assert_array_equal(arrays["int32"][..., 2], tree["d"])
    hash(layout)  # static: a scan carry's structure
    assert_same(unpack_leaves(arrays, layout), tree)
    # Under jit, the same.
    assert_same(jax.jit(lambda t: unpack_leaves(*pack_leaves(t, len(lead))))(tree), tree)


@pytest.mark.parametrize("env_name", ["CartPole-v1", "Breakout-MinAtar", "DeepSea-bsuite"])
def test_a_rollout_is_the_same_with_a_packed_carry(env_name, monkeypatch):
    """Bool, int and float env state (MinAtar), and an env that does its own
    resets (DeepSea): the trajectory and the carry with every carry packed
    (`PACK_MAX_SIZE` above any) and with packing off. Integers and booleans
    bitwise; floats to 1e-6 relative, as XLA may fuse the two programs'
    float arithmetic differently (jax 0.11 does, by 3e-7)."""
    config = PPOConfig(env_name=env_name, num_envs=3, num_steps=8, total_timesteps=24,
                       num_minibatches=1, hidden_sizes=(8,), cnn_channels=(4,))
    train = make_train(config)
    state = jax.jit(train.init)(jax.random.PRNGKey(0))
    env, env_params, spec = make_env(env_name)
    vec = VecEnv(env, env_params, spec, 3)
    policy = lambda p, o: train.network.apply(p, o, method=train.network.policy)
    rollout = lambda c, k: collect_rollout(policy, state.params, vec, c, RolloutRandomness.draw(k, vec, 40), 40)
    monkeypatch.setattr(packed_carry, "PACK_MAX_SIZE", 10**9)
    assert packed_carry.packs(state.env)
    packed, traj_packed = jax.jit(rollout)(state.env, jax.random.PRNGKey(1))
    monkeypatch.setattr(packed_carry, "PACK_MAX_SIZE", -1)
    assert not packed_carry.packs(state.env)
    carry, traj = jax.jit(rollout)(state.env, jax.random.PRNGKey(1))
    assert isinstance(carry, EnvCarry) and isinstance(packed, EnvCarry)
    assert_close(traj_packed, traj)
    assert_close(packed, carry)
    assert int(carry.episode_stats.num_finished.sum()) > 0 or env_name == "Breakout-MinAtar"


@pytest.mark.parametrize("env_name, num_envs, packed", [
    ("CartPole-v1", 4, True),            # 4 x (5 state + 4 obs + 5 statistics) = 56 elements
    ("CartPole-v1", 16, False),          # 224
    ("Breakout-MinAtar", 1, False),      # 400 observation elements alone
])
def test_only_small_carries_are_packed(env_name, num_envs, packed):
    """`packs`: the carry's elements against `PACK_MAX_SIZE`, per seed under vmap."""
    config = PPOConfig(env_name=env_name, num_envs=num_envs, num_steps=8,
                       total_timesteps=num_envs * 8, num_minibatches=1)
    init = make_train(config).init  # traced for shapes only (jax.eval_shape): nothing runs
    carry = jax.eval_shape(init, jax.random.PRNGKey(0)).env
    size = sum(math.prod(x.shape) for x in jax.tree.leaves(carry))
    assert packs(carry) == packed == (size <= PACK_MAX_SIZE)
    per_seed = []  # what packs decides inside a vmap over 8 seeds
    jax.eval_shape(jax.vmap(lambda k: per_seed.append(packs(init(k).env))), jax.random.split(jax.random.PRNGKey(0), 8))
    assert per_seed == [packed]


def test_a_carry_of_exactly_the_limit_is_packed():
    at_limit = {"a": jnp.zeros((PACK_MAX_SIZE - 8,)), "b": jnp.zeros((2, 4), jnp.int32)}
    assert packs(at_limit)
    assert not packs({**at_limit, "c": jnp.zeros((1,))})


def test_every_fast_module_names_its_plain_equivalent_and_its_gain():
    """A trick earns its place in `purejaxppo.fast` with a plain JAX
    equivalent (tested equal) and a measured gain, both in its docstring."""
    names = [m.name for m in pkgutil.iter_modules(fast.__path__)]
    assert len(names) >= 10
    for name in names:
        doc = importlib.import_module(f"purejaxppo.fast.{name}").__doc__ or ""
        assert "Plain" in doc and ("Gain" in doc or "Why it stays" in doc), name


@pytest.mark.parametrize("k", [2, 3, SMALL_AXIS, SMALL_AXIS + 1])
def test_small_axis_reductions_equal_jnp_with_gradients(k):
    rng = np.random.default_rng(k)
    x = jnp.asarray(rng.normal(size=(5, 7, k)), jnp.float32)
    index = jnp.asarray(rng.integers(0, k, size=(5, 7)))
    pairs = [
        (sum_last, lambda v: jnp.sum(v, axis=-1)),
        (log_softmax, lambda v: jax.nn.log_softmax(v, axis=-1)),
        (lambda v: take_last(v, index), lambda v: jnp.take_along_axis(v, index[..., None], -1)[..., 0]),
    ]
    for fast_fn, plain_fn in pairs:
        np.testing.assert_allclose(fast_fn(x), plain_fn(x), rtol=1e-6, atol=1e-6)
        w = jnp.asarray(rng.normal(size=plain_fn(x).shape), jnp.float32)
        grad = lambda f: jax.grad(lambda v: jnp.sum(w * f(v)))(x)
        np.testing.assert_allclose(grad(fast_fn), grad(plain_fn), rtol=1e-5, atol=1e-6)


def test_gru_sequence_equals_the_plain_scan_with_gradients():
    """`gru_sequence`'s hand-written backward pass: the plain scan's values
    and gradients (h0, input projections, kernel, bias), resets included."""
    from purejaxppo.networks import GRU  # fast_backward: through `gru_sequence`

    T, B, F, H = 9, 3, 4, 5
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(T, B, F)), jnp.float32)
    h0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    starts = jnp.asarray(rng.random((T, B)) < 0.3).at[0, 0].set(True)
    weights = jnp.asarray(rng.normal(size=(T, B, H)), jnp.float32)
    fast, plain = GRU(H), GRU(H, fast_backward=False)
    params = fast.init(jax.random.PRNGKey(0), h0, x, starts)
    params = jax.tree.map(lambda v: v + 0.3 * jnp.asarray(rng.normal(size=v.shape), jnp.float32), params)
    loss = lambda net: lambda p, h, inputs: jnp.sum(weights * jnp.tanh(net.apply(p, h, inputs, starts)))
    for argnums in (0, 1, 2):
        got = jax.grad(loss(fast), argnums)(params, h0, x)
        want = jax.grad(loss(plain), argnums)(params, h0, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.apply(params, h0, x, starts), plain.apply(params, h0, x, starts),
                               rtol=1e-6, atol=1e-7)
    # Under vmap (seeds), the same.
    batched = jax.vmap(jax.grad(loss(fast)), in_axes=(None, 0, None))(params, jnp.stack([h0, -h0]), x)
    np.testing.assert_allclose(batched["params"]["recurrent_kernel"][1],
                               jax.grad(loss(plain))(params, -h0, x)["params"]["recurrent_kernel"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [1, 5, 8, 13])
def test_chunked_vmap_equals_vmap(size):
    """The chunked batching gives vmap's outputs, for a batch that is not a
    multiple of the chunk and with an unbatched argument, nested too."""
    from purejaxppo.fast.chunked_vmap import chunked_vmap

    def fn(key, scale):
        x = jax.random.normal(key, (3,))
        return {"x": jnp.sin(x) * scale, "n": jnp.argmax(x)}

    keys = jax.random.split(jax.random.PRNGKey(0), size)
    chunked = chunked_vmap(fn, 4)
    plain = jax.vmap(fn, in_axes=(0, None))(keys, 2.0)
    for got in (jax.vmap(chunked, in_axes=(0, None))(keys, 2.0),
                jax.jit(jax.vmap(chunked, in_axes=(0, None)))(keys, 2.0)):
        chex.assert_trees_all_close(got, plain, rtol=1e-6)
    nested = jax.vmap(jax.vmap(chunked, in_axes=(0, None)), in_axes=(0, None))(keys.reshape(size, 1, -1), 2.0)
    chex.assert_trees_all_close(jax.tree.map(lambda v: v[:, 0], nested), plain, rtol=1e-6)
    assert chunked(keys[0], 2.0)["x"].shape == (3,)
    with pytest.raises(ValueError, match="chunk=0; allowed: an int >= 1"):
        chunked_vmap(fn, 0)
