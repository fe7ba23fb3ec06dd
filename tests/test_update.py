"""The per-epoch shuffle: valid, independent permutations as uniform as a
uniform shuffle's by every test here (tests that do reject a weakened
shuffle), and minibatches that follow them; the optimizer, and `ppo_update`
against a hand-written loop of epochs and minibatches."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from purejaxppo.losses import Minibatch
from purejaxppo.fast.shuffle import FEISTEL_ROUNDS, permutations_from_round_keys, random_permutations, shuffle_keys
from purejaxppo.update import minibatch_indices, take_minibatch

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode

# Chi-square critical values at p = 0.001 (a correct shuffle fails 1 time in 1000 keys;
# the keys below are fixed, so the tests are deterministic).
CHI2_CRIT_P001 = {5: 20.515, 7: 24.322}


@pytest.mark.parametrize("size", [1, 7, 512, 4096, 5000, 2**17 + 1])
def test_rows_are_permutations_and_differ(size):
    perms = np.asarray(random_permutations(jax.random.PRNGKey(0), 4, size))
    assert perms.shape == (4, size) and perms.dtype == np.int32
    for row in perms:
        np.testing.assert_array_equal(np.sort(row), np.arange(size))
    if size > 4:
        assert len({tuple(r) for r in perms}) == 4  # each epoch gets its own shuffle


def test_every_ordering_is_equally_likely():
    draws = np.asarray(random_permutations(jax.random.PRNGKey(1), 12_000, 3))
    orderings = list(itertools.permutations(range(3)))
    counts = np.array([np.sum(np.all(draws == o, axis=1)) for o in orderings])
    assert counts.sum() == 12_000
    expected = 12_000 / 6
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < CHI2_CRIT_P001[5], counts


def test_each_index_lands_uniformly_on_each_position():
    n, draws = 8, 8_000
    perms = np.asarray(random_permutations(jax.random.PRNGKey(2), draws, n))
    expected = draws / n
    for index in range(n):
        positions = np.argmax(perms == index, axis=1)
        counts = np.bincount(positions, minlength=n)
        chi2 = np.sum((counts - expected) ** 2 / expected)
        assert chi2 < CHI2_CRIT_P001[7], (index, counts)


def _chi2_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(np.sum((counts - expected) ** 2 / expected))


def _position_statistics(rounds: int) -> dict[str, float]:
    """Chi-square statistics (63 dof each) of where 10 structured indices land
    in 2,000 shuffles of 4,096 (a power of two: the bijection alone, no
    cycle-walking): the position's high 6 bits, its low 6 bits, and the worst
    of 9 pairs' position differences mod 64."""
    n, draws = 4096, 2000
    indices = np.array([0, 1, 2, 63, 64, 65, 2047, 2048, 2049, 4095])
    perms = np.asarray(random_permutations(jax.random.PRNGKey(5), draws, n, rounds=rounds))
    positions = np.argsort(perms, axis=1)[:, indices]
    differences = [(positions[:, j] - positions[:, 0]) % 64 for j in range(1, len(indices))]
    return {
        "high": _chi2_uniform(np.bincount((positions // 64).ravel(), minlength=64)),
        "low": _chi2_uniform(np.bincount((positions % 64).ravel(), minlength=64)),
        "pairs": max(_chi2_uniform(np.bincount(d, minlength=64)) for d in differences),
    }


# p = 1e-4 for the single statistics, 1e-4 / 9 for the worst of 9 pairs.
_CRITICAL = {
    "high": stats.chi2.ppf(1 - 1e-4, 63),
    "low": stats.chi2.ppf(1 - 1e-4, 63),
    "pairs": stats.chi2.ppf(1 - 1e-4 / 9, 63),
}


def test_structured_indices_land_uniformly():
    """Neighbouring indices (consecutive steps of one env, or one step of
    neighbouring envs) must not keep their spacing through the shuffle."""
    statistics = _position_statistics(FEISTEL_ROUNDS)
    for name, value in statistics.items():
        assert value < _CRITICAL[name], (name, value, _CRITICAL[name])


@pytest.mark.parametrize("rounds", [1, 2])
def test_the_position_tests_reject_a_weak_bijection(rounds):
    """The power check: with 1 or 2 Feistel rounds the low bits of an index
    leak into its position, and the statistics above catch it."""
    statistics = _position_statistics(rounds)
    assert any(value > 10 * _CRITICAL[name] for name, value in statistics.items()), statistics


def test_minibatches_follow_the_permutations():
    size, m = 12, 3
    batch = Minibatch(
        obs=jnp.arange(size * 2, dtype=jnp.float32).reshape(size, 2),
        actions=jnp.arange(size),
        log_probs=jnp.arange(size, dtype=jnp.float32),
        values=jnp.arange(size, dtype=jnp.float32) * 10,
        advantages=jnp.arange(size, dtype=jnp.float32),
        returns=jnp.arange(size, dtype=jnp.float32),
    )
    perms = random_permutations(jax.random.PRNGKey(3), 2, size)
    steps = minibatch_indices(perms, m)
    assert steps.shape == (2 * m, size // m)
    for epoch in range(2):  # step epoch * m + j is minibatch j of that epoch's shuffle
        for j in range(m):
            np.testing.assert_array_equal(steps[epoch * m + j], perms[epoch, j * 4 : (j + 1) * 4])
    out = take_minibatch(batch, steps[4])
    assert out.obs.shape == (size // m, 2)
    np.testing.assert_array_equal(out.actions, steps[4])
    np.testing.assert_array_equal(out.values, np.asarray(steps[4]) * 10.0)
    np.testing.assert_array_equal(out.obs[0], batch.obs[int(steps[4, 0])])
    with pytest.raises(ValueError, match="num_minibatches=5 must divide the batch size 12"):
        minibatch_indices(perms, 5)


def _linear_apply(params, obs):
    from purejaxppo.distributions import Categorical

    return Categorical(logits=obs @ params["w"]), obs @ params["v"]


def _random_minibatch(key, size=64, dim=3, actions=4):
    k = jax.random.split(key, 5)
    return Minibatch(
        obs=jax.random.normal(k[0], (size, dim)),
        actions=jax.random.randint(k[1], (size,), 0, actions),
        log_probs=-jnp.abs(jax.random.normal(k[2], (size,))) - 1.0,
        values=jax.random.normal(k[3], (size,)),
        # Chunks with different advantage statistics: per-chunk normalisation would show.
        advantages=jax.random.normal(k[4], (size,)) * jnp.repeat(jnp.arange(1.0, 5.0), size // 4),
        returns=jax.random.normal(k[4], (size,)) + 1.0,
    )


@pytest.mark.parametrize("objective", ["clip", "kl_penalty", "pg"])
@pytest.mark.parametrize("norm_adv", [False, True])
def test_chunked_gradient_equals_the_one_pass_gradient(objective, norm_adv):
    from purejaxppo import PPOConfig
    from purejaxppo.losses import LossStatic
    from purejaxppo.update import UpdateSettings, minibatch_gradient

    hp = PPOConfig(kl_coef=0.3, algorithm="ppo_penalty").hyperparams()  # kl_coef for every objective
    static = LossStatic(norm_adv=norm_adv, clip_vloss=True, policy_objective=objective)
    params = {
        "w": jax.random.normal(jax.random.PRNGKey(1), (3, 4)),
        "v": jax.random.normal(jax.random.PRNGKey(2), (3,)),
    }
    batch = _random_minibatch(jax.random.PRNGKey(3))
    one = minibatch_gradient(params, _linear_apply, batch, hp, UpdateSettings(1, 1, static, 1))
    for chunks in (2, 4, 16):
        many = minibatch_gradient(params, _linear_apply, batch, hp, UpdateSettings(1, 1, static, chunks))
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_chunked_update_matches_the_one_pass_update():
    from purejaxppo import PPOConfig
    from purejaxppo.losses import LossStatic
    from purejaxppo.update import UpdateSettings, init_opt_state, make_optimizer, ppo_update

    hp = PPOConfig().hyperparams()
    static = LossStatic(norm_adv=True, clip_vloss=True, policy_objective="clip")
    params = {"w": jnp.zeros((3, 4)), "v": jnp.zeros((3,))}
    tx, _ = make_optimizer(hp.lr, hp.max_grad_norm, True, 100)
    batch = _random_minibatch(jax.random.PRNGKey(4), size=256)
    run = lambda chunks: ppo_update(
        params, init_opt_state(tx, params), tx, _linear_apply, batch,
        shuffle_keys(jax.random.PRNGKey(5), 3), hp, UpdateSettings(3, 2, static, chunks),
    )
    one, many = run(1), run(8)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_minibatch_gradient_rejects_uneven_chunks():
    from purejaxppo import PPOConfig
    from purejaxppo.losses import LossStatic
    from purejaxppo.update import UpdateSettings, minibatch_gradient

    static = LossStatic(norm_adv=True, clip_vloss=True, policy_objective="clip")
    params = {"w": jnp.zeros((3, 4)), "v": jnp.zeros((3,))}
    with pytest.raises(ValueError, match="num_grad_chunks=5 must divide the minibatch size 64"):
        minibatch_gradient(params, _linear_apply, _random_minibatch(jax.random.PRNGKey(0)),
                           PPOConfig().hyperparams(), UpdateSettings(1, 1, static, 5))


def _numpy_clip_adam_update(g, m, v, k, rate, max_norm):
    """One step of `make_optimizer`'s transform in NumPy: the gradient ``g``
    scaled to global norm <= ``max_norm``, then Adam (b1 0.9, b2 0.999, eps
    1e-5) at ``rate``, the step's learning rate; ``k`` counts earlier steps.
    Returns ``(update, m, v)``."""
    clipped = g * min(1.0, max_norm / np.linalg.norm(g))
    m, v = 0.9 * m + 0.1 * clipped, 0.999 * v + 0.001 * clipped**2
    m_hat, v_hat = m / (1 - 0.9 ** (k + 1)), v / (1 - 0.999 ** (k + 1))
    return -rate * m_hat / (np.sqrt(v_hat) + 1e-5), m, v


@pytest.mark.parametrize("anneal_lr", [True, False])
def test_optimizer_is_global_norm_clipping_then_adam(anneal_lr):
    """`make_optimizer` against a NumPy reference: the whole gradient scaled
    to norm <= max_grad_norm (not each element clipped), then Adam with
    eps = 1e-5 (not optax's 1e-8: the first gradient is small enough for
    eps to matter), at a rate falling linearly from lr to 0 over the run's
    gradient steps with ``anneal_lr``, constant without."""
    from purejaxppo.update import make_optimizer

    lr, max_norm, steps = 0.1, 0.5, 5
    tx, schedule = make_optimizer(lr, max_norm, anneal_lr, steps)
    base = np.array([3.0, 4.0, 0.0, -1e-3])
    grads = [s * base for s in (2e-6, 0.05, 2.0, -1.0, 0.3)]  # global norms 1e-5 to 10
    state = tx.init(jnp.zeros(4))
    m = v = np.zeros(4)
    for k, g in enumerate(grads):
        rate = lr * (1 - k / steps) if anneal_lr else lr
        expected, m, v = _numpy_clip_adam_update(g, m, v, k, rate, max_norm)
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state)
        np.testing.assert_allclose(np.asarray(updates), expected, rtol=2e-5, atol=1e-9, err_msg=f"step {k}")
        assert float(schedule(k)) == pytest.approx(rate)


def _mix32_reference(x: int) -> int:
    """MurmurHash3's 32-bit finaliser on a Python int."""
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _permutation_reference(round_keys, size: int) -> np.ndarray:
    """`permutations_from_round_keys` for one row of round keys, written from
    its docstring in plain Python: a Feistel network on [0, 2**bits) (bits >=
    8), high part ``bits // 2`` bits, even rounds xor the high part with the
    hashed low part, odd rounds the reverse, cycle-walked into range(size)."""
    bits = max(8, (size - 1).bit_length())
    low_bits = bits - bits // 2
    high_mask, low_mask = (1 << (bits // 2)) - 1, (1 << low_bits) - 1

    def bijection(x):
        high, low = x >> low_bits, x & low_mask
        for i, k in enumerate(int(k) for k in round_keys):
            if i % 2 == 0:
                high ^= _mix32_reference(low ^ k) & high_mask
            else:
                low ^= _mix32_reference(high ^ k) & low_mask
        return (high << low_bits) | low

    out = []
    for i in range(size):
        y = bijection(i)
        while y >= size:
            y = bijection(y)
        out.append(y)
    return np.array(out)


def _mlp_apply(params, obs):
    from purejaxppo.distributions import Categorical

    hidden = jnp.tanh(obs @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return Categorical(logits=hidden @ params["pi"]), hidden @ params["v"]


@pytest.mark.parametrize("key_form, num_chunks, with_reference", [
    ("prng_key", 1, False),
    ("round_keys", 2, True),
])
def test_ppo_update_against_a_hand_written_loop(key_form, num_chunks, with_reference):
    """`ppo_update` against a plain Python loop: epoch e shuffles the batch
    with its own permutation (rebuilt here from the same round keys, the
    ``e``-th row of the update's draw), minibatch m takes that
    permutation's m-th slice, each step's gradient is `jax.grad` of
    `ppo_loss` on the unraveled parameters, then global-norm clipping and
    Adam in NumPy at the linearly annealed rate. The final parameters, the
    Adam state and every diagnostic, each the mean over all epochs *
    minibatches steps (``grad_norm`` the norm before clipping), must agree.
    A shuffle reused across epochs, diagnostics of the last step only, or
    ``grad_norm`` after the clip each fail here; max_grad_norm is chosen so
    that some steps are clipped and some are not."""
    from jax.flatten_util import ravel_pytree

    from purejaxppo import PPOConfig
    from purejaxppo.losses import LossStatic, ppo_loss
    from purejaxppo.update import UpdateSettings, init_opt_state, make_optimizer, ppo_update

    epochs, minibatches, size = 3, 4, 48  # size < 256: the permutations cycle-walk
    total_steps = 2 * epochs * minibatches  # the lr anneals, to half at the end of this update
    hp = PPOConfig(lr=0.01, max_grad_norm=0.6, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01,
                   reference_kl=with_reference, reference_kl_coef=0.5 if with_reference else 0.0).hyperparams()
    static = LossStatic(norm_adv=True, clip_vloss=True, policy_objective="clip")
    keys = jax.random.split(jax.random.PRNGKey(11), 5)
    params = {
        "hidden": {"kernel": jax.random.normal(keys[0], (3, 5)) * 0.7, "bias": jax.random.normal(keys[1], (5,)) * 0.1},
        "pi": jax.random.normal(keys[2], (5, 4)) * 0.5,
        "v": jax.random.normal(keys[3], (5,)) * 0.5,
    }
    reference = jax.tree.map(lambda x: x * 0.5, params) if with_reference else None
    batch = _random_minibatch(keys[4], size=size)
    tx, _ = make_optimizer(hp.lr, hp.max_grad_norm, True, total_steps)

    rounds = FEISTEL_ROUNDS
    if key_form == "prng_key":
        key = jax.random.PRNGKey(7)
        round_keys = np.asarray(jax.random.bits(key, (epochs * rounds,), jnp.uint32)).reshape(epochs, rounds)
        np.testing.assert_array_equal(shuffle_keys(key, epochs), round_keys)
    else:
        round_keys = np.random.default_rng(0).integers(0, 2**32, (epochs, rounds), dtype=np.uint32)
        key = jnp.asarray(round_keys)
    got_params, got_state, got = jax.jit(
        lambda p, k: ppo_update(p, init_opt_state(tx, p), tx, _mlp_apply, batch, k, hp,
                                UpdateSettings(epochs, minibatches, static, num_chunks),
                                reference_params=reference)
    )(params, jnp.asarray(round_keys))

    perms = [_permutation_reference(row, size) for row in round_keys]
    for perm in perms:
        np.testing.assert_array_equal(np.sort(perm), np.arange(size))
    assert len({tuple(p) for p in perms}) == epochs
    drawn = random_permutations(key, epochs, size) if key_form == "prng_key" else \
        permutations_from_round_keys(key, size)
    np.testing.assert_array_equal(drawn, np.stack(perms))  # the shuffles alone, before the loop

    grad_fn = jax.jit(jax.grad(
        lambda p, mb: ppo_loss(p, _mlp_apply, mb, hp, static, reference_params=reference), has_aux=True
    ))
    flat, unravel = ravel_pytree(params)
    flat = np.asarray(flat, np.float64)
    m = v = np.zeros_like(flat)
    step_diagnostics, norms = [], []
    n = size // minibatches
    for e in range(epochs):
        for j in range(minibatches):
            k = e * minibatches + j
            idx = perms[e][j * n : (j + 1) * n]
            minibatch = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[idx]), batch)
            grads, diagnostics = grad_fn(unravel(jnp.asarray(flat, jnp.float32)), minibatch)
            g = np.asarray(ravel_pytree(grads)[0], np.float64)
            norms.append(np.linalg.norm(g))
            step_diagnostics.append({**diagnostics, "grad_norm": norms[-1]})
            rate = float(hp.lr) * (1 - k / total_steps)
            update, m, v = _numpy_clip_adam_update(g, m, v, k, rate, float(hp.max_grad_norm))
            flat = flat + update
    assert min(norms) < float(hp.max_grad_norm) < max(norms), norms  # both sides of the clip

    np.testing.assert_allclose(ravel_pytree(got_params)[0], flat, rtol=1e-5, atol=1e-5)
    adam_state = got_state[1][0]
    assert int(adam_state.count) == epochs * minibatches
    np.testing.assert_allclose(adam_state.mu, m, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(adam_state.nu, v, rtol=1e-4, atol=1e-9)
    expected_names = {"loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                      "clip_fraction_pos_adv", "clip_fraction_neg_adv", "grad_norm"}
    assert set(got) == expected_names | {"gradient_steps"} | ({"reference_kl"} if with_reference else set())
    assert float(got.pop("gradient_steps")) == epochs * minibatches
    for name, value in got.items():
        per_step = np.array([float(d[name]) for d in step_diagnostics])
        assert np.ptp(per_step) > 0, name  # a last-step or first-step value would differ from the mean
        np.testing.assert_allclose(float(value), per_step.mean(), rtol=2e-5, atol=1e-6, err_msg=name)


def test_ppo_update_refuses_round_keys_of_another_width():
    """Round keys given as (update_epochs, r) with r != FEISTEL_ROUNDS are an
    error at trace time: fewer rounds shuffle measurably worse (the chi-square
    tests above reject 1 and 2), so they are not taken silently."""
    from purejaxppo import PPOConfig
    from purejaxppo.losses import LossStatic
    from purejaxppo.update import UpdateSettings, init_opt_state, make_optimizer, ppo_update

    hp = PPOConfig().hyperparams()
    static = LossStatic(norm_adv=True, clip_vloss=True, policy_objective="clip")
    params = {"hidden": {"kernel": jnp.ones((3, 5)) * 0.1, "bias": jnp.zeros(5)},
              "pi": jnp.ones((5, 4)) * 0.1, "v": jnp.ones(5) * 0.1}
    tx, _ = make_optimizer(hp.lr, hp.max_grad_norm, False, 8)
    batch = _random_minibatch(jax.random.PRNGKey(0), size=16)
    run = lambda key: ppo_update(params, init_opt_state(tx, params), tx, _mlp_apply, batch, key,
                                 hp, UpdateSettings(2, 2, static))
    jax.eval_shape(run, jnp.zeros((2, FEISTEL_ROUNDS), jnp.uint32))  # the right width traces
    for width in (2, FEISTEL_ROUNDS + 1):
        with pytest.raises(AssertionError, match="shape"):
            jax.eval_shape(run, jnp.zeros((2, width), jnp.uint32))
