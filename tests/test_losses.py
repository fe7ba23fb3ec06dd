"""The clipped surrogate against the project's spec tables, and the PPO loss."""

import csv

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SPEC_DIRS, spec_path
from purejaxppo import PPOConfig
from purejaxppo.distributions import Categorical
from purejaxppo.losses import (
    LossStatic,
    Minibatch,
    approx_kl,
    clipped_surrogate,
    kl_estimate,
    ppo_loss,
    value_loss,
)

EPS = 0.2


def enable_x64():
    """float64 inside a block (jax.enable_x64 on new jax, experimental on old)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as ctx  # jax < 0.8

    return ctx()


def _rows(name):
    with open(spec_path(name)) as f:
        lines = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_vendored_spec_matches_shared():
    shared, vendored = SPEC_DIRS
    if not shared.exists():
        pytest.skip("../shared/spec not present")
    for path in vendored.glob("*.csv"):
        assert path.read_text() == (shared / path.name).read_text(), path.name


def test_clip_objective_table_exact():
    rows = _rows("clip_objective_tables.csv")
    assert len(rows) == 15
    a = np.array([float(r["advantage"]) for r in rows], np.float32)
    r = np.array([float(r["ratio"]) for r in rows], np.float32)
    got = np.asarray(clipped_surrogate(jnp.asarray(r), jnp.asarray(a), EPS))
    expected = np.array([float(row["l_clip"]) for row in rows], np.float32)
    np.testing.assert_array_equal(got, expected)
    # The intermediate columns, and which term the min picks.
    clipped_ratio = np.asarray(jnp.clip(jnp.asarray(r), 1 - EPS, 1 + EPS))
    np.testing.assert_array_equal(
        clipped_ratio, np.array([float(x["clipped_ratio"]) for x in rows], np.float32)
    )
    for row, l_clip, cr in zip(rows, got, clipped_ratio):
        ra = np.float32(float(row["ratio"])) * np.float32(float(row["advantage"]))
        ca = cr * np.float32(float(row["advantage"]))
        assert ra == np.float32(float(row["r_times_a"]))
        assert ca == np.float32(float(row["clipped_times_a"]))
        if row["clipped"] == "yes":
            assert ca < ra and l_clip == ca
        elif row["clipped"] == "boundary":
            assert cr in (np.float32(1 - EPS), np.float32(1 + EPS)) and ca == ra and l_clip == ra
        else:
            assert l_clip == ra


def test_clip_objective_gradients_exact():
    rows = _rows("clip_objective_gradients.csv")
    assert len(rows) == 12
    grad = jax.vmap(jax.grad(clipped_surrogate), in_axes=(0, 0, None))
    a = jnp.array([float(r["advantage"]) for r in rows])
    r = jnp.array([float(r["ratio"]) for r in rows])
    got = np.asarray(grad(r, a, EPS))
    expected = np.array([float(row["dl_dr"]) for row in rows], np.float32)
    np.testing.assert_array_equal(got, expected)


def test_clip_asymmetry_never_caps_harmful_move():
    # A < 0 and r far above 1 + eps: the loss keeps growing, gradient A.
    r = jnp.array([1.5, 3.0, 10.0])
    obj = clipped_surrogate(r, -1.0, EPS)
    np.testing.assert_allclose(obj, -r)
    g = jax.vmap(jax.grad(clipped_surrogate), in_axes=(0, None, None))(r, -1.0, EPS)
    np.testing.assert_array_equal(g, -1.0)


def test_clipped_surrogate_broadcasts():
    r = jnp.linspace(0.5, 1.5, 6).reshape(2, 3)
    a = jnp.array([1.0, -1.0, 2.0])
    assert clipped_surrogate(r, a, EPS).shape == (2, 3)


def test_kl_estimator_nonnegative_and_matches_true_kl():
    key = jax.random.PRNGKey(0)
    p = Categorical(logits=jnp.array([0.3, -0.2, 1.0]))
    q = Categorical(logits=jnp.array([0.1, 0.0, 0.8]))
    a = jax.random.categorical(key, p.logits, shape=(200_000,))
    log_ratio = q.log_prob(a) - p.log_prob(a)
    assert float(jnp.min(kl_estimate(log_ratio))) >= 0.0
    np.testing.assert_allclose(approx_kl(log_ratio), p.kl(q), rtol=0.05)


def test_value_loss_clipping():
    v = jnp.array([2.0])
    old = jnp.array([0.0])
    ret = jnp.array([3.0])
    assert float(value_loss(v, old, ret, 0.2, False)) == pytest.approx(0.5)
    # clipped prediction 0.2 is further from 3.0 than 2.0: the max picks it.
    assert float(value_loss(v, old, ret, 0.2, True)) == pytest.approx(0.5 * 2.8**2)


def _linear_apply(params, obs):
    logits = obs @ params["w"]
    return Categorical(logits=logits), obs @ params["v"]


def _batch(key, b=32, d=3, k=4):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    return Minibatch(
        obs=jax.random.normal(k1, (b, d)),
        actions=jax.random.randint(k2, (b,), 0, k),
        log_probs=-jnp.abs(jax.random.normal(k3, (b,))) - 1.0,
        values=jax.random.normal(k4, (b,)),
        advantages=jax.random.normal(k5, (b,)),
        returns=jax.random.normal(k5, (b,)) + 1.0,
    )


@pytest.mark.parametrize("objective", ["clip", "kl_penalty", "pg"])
@pytest.mark.parametrize("clip_vloss", [False, True])
def test_ppo_loss_gradient_matches_finite_differences(objective, clip_vloss):
    hp = PPOConfig(kl_coef=0.3, algorithm="ppo_penalty").hyperparams()  # kl_coef for every objective
    static = LossStatic(norm_adv=True, clip_vloss=clip_vloss, policy_objective=objective)
    with enable_x64():
        key = jax.random.PRNGKey(1)
        params = {
            "w": jax.random.normal(key, (3, 4), jnp.float64),
            "v": jax.random.normal(jax.random.PRNGKey(2), (3,), jnp.float64),
        }
        batch = jax.tree.map(
            lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x,
            _batch(jax.random.PRNGKey(3)),
        )
        hp64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), hp)
        # Compiled once, rather than 30 evaluations dispatched op by op.
        loss = jax.jit(lambda p: ppo_loss(p, _linear_apply, batch, hp64, static)[0])
        g = jax.jit(jax.grad(loss))(params)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        h = 1e-6
        fd = np.array([
            (loss(unravel(flat.at[i].add(h))) - loss(unravel(flat.at[i].add(-h)))) / (2 * h)
            for i in range(flat.size)
        ])
        np.testing.assert_allclose(jax.flatten_util.ravel_pytree(g)[0], fd, rtol=1e-5, atol=1e-7)


def test_ppo_loss_diagnostics_count_saturated_samples():
    # Build a minibatch whose ratios are known: old log-probs shifted from the
    # current ones by chosen log-ratios.
    params = {"w": jnp.zeros((1, 2)), "v": jnp.zeros((1,))}
    obs = jnp.ones((4, 1))
    actions = jnp.zeros((4,), jnp.int32)
    current = jnp.log(0.5)
    ratios = jnp.array([1.5, 0.5, 1.5, 1.0])
    advantages = jnp.array([1.0, -1.0, -1.0, 1.0])
    batch = Minibatch(obs, actions, current - jnp.log(ratios), jnp.zeros(4), advantages, jnp.zeros(4))
    static = LossStatic(norm_adv=False, clip_vloss=False, policy_objective="clip")
    _, d = ppo_loss(params, _linear_apply, batch, PPOConfig().hyperparams(), static)
    assert float(d["clip_fraction"]) == pytest.approx(0.75)
    assert float(d["clip_fraction_pos_adv"]) == pytest.approx(0.25)  # sample 0
    assert float(d["clip_fraction_neg_adv"]) == pytest.approx(0.25)  # sample 1
    expected_obj = np.mean([1.2, -0.8, -1.5, 1.0])
    assert float(d["policy_loss"]) == pytest.approx(-expected_obj, rel=1e-6)


def test_reference_policy_kl_penalty():
    static = LossStatic(norm_adv=True, clip_vloss=False, policy_objective="clip")
    hp = PPOConfig(reference_kl=True, reference_kl_coef=0.7).hyperparams()
    batch = _batch(jax.random.PRNGKey(0))
    params = {"w": jax.random.normal(jax.random.PRNGKey(1), (3, 4)), "v": jnp.zeros((3,))}
    base, _ = ppo_loss(params, _linear_apply, batch, hp, static)
    same, d_same = ppo_loss(params, _linear_apply, batch, hp, static, reference_params=params)
    assert float(d_same["reference_kl"]) == pytest.approx(0.0, abs=1e-7)
    assert float(same) == pytest.approx(float(base), rel=1e-6)
    ref = {"w": jnp.zeros((3, 4)), "v": jnp.zeros((3,))}  # uniform reference policy
    loss, d = ppo_loss(params, _linear_apply, batch, hp, static, reference_params=ref)
    expected_kl = jnp.mean(Categorical(jnp.zeros((32, 4))).kl(Categorical(batch.obs @ params["w"])))
    np.testing.assert_allclose(d["reference_kl"], expected_kl, rtol=1e-5)
    np.testing.assert_allclose(loss, base + 0.7 * expected_kl, rtol=1e-5)
    # No gradient flows into the reference parameters.
    g = jax.grad(lambda r: ppo_loss(params, _linear_apply, batch, hp, static, reference_params=r)[0])(ref)
    assert float(jnp.abs(g["w"]).sum()) == 0.0


@pytest.mark.parametrize("objective", ["clip", "kl_penalty", "pg"])
def test_ppo_loss_and_diagnostics_against_numpy(objective):
    """The whole loss and every diagnostic of `ppo_loss`, recomputed in NumPy
    from the same minibatch: advantages centred and scaled, the objective
    (clip, PPO-Penalty with +beta's sign, or log pi * A), the clipped value
    loss with its 1/2 and vf_coef, the entropy bonus's sign, the (r - 1) -
    log r KL estimate and the clip fractions on the normalised advantages."""
    hp = PPOConfig(vf_coef=0.7, ent_coef=0.3, kl_coef=0.4, clip_eps=0.2,
                   algorithm="ppo_penalty").hyperparams()  # kl_coef read by kl_penalty only
    static = LossStatic(norm_adv=True, clip_vloss=True, policy_objective=objective)
    params = {"w": jax.random.normal(jax.random.PRNGKey(1), (3, 4)), "v": jax.random.normal(jax.random.PRNGKey(2), (3,))}
    batch = _batch(jax.random.PRNGKey(3), b=64)
    batch = batch.replace(advantages=batch.advantages * 2.0 + 0.7)  # a mean and scale to remove
    loss, d = ppo_loss(params, _linear_apply, batch, hp, static)

    f64 = lambda x: np.asarray(x, np.float64)
    logits = f64(batch.obs) @ f64(params["w"])
    logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    logp = logp_all[np.arange(64), np.asarray(batch.actions)]
    values = f64(batch.obs) @ f64(params["v"])
    log_ratio = logp - f64(batch.log_probs)
    r = np.exp(log_ratio)
    adv = f64(batch.advantages)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    kl = (r - 1) - log_ratio
    objective_value = {
        "clip": np.minimum(r * adv, np.clip(r, 0.8, 1.2) * adv),
        "kl_penalty": r * adv - 0.4 * kl,
        "pg": logp * adv,
    }[objective]
    old_v, ret = f64(batch.values), f64(batch.returns)
    clipped_v = old_v + np.clip(values - old_v, -0.2, 0.2)
    v_loss = 0.5 * np.mean(np.maximum((values - ret) ** 2, (clipped_v - ret) ** 2))
    entropy = np.mean(-(np.exp(logp_all) * logp_all).sum(-1))
    expected = {
        "policy_loss": -objective_value.mean(),
        "value_loss": v_loss,
        "entropy": entropy,
        "approx_kl": kl.mean(),
        "clip_fraction": np.mean(np.abs(r - 1) > 0.2),
        "clip_fraction_pos_adv": np.mean((adv > 0) & (r > 1.2)),
        "clip_fraction_neg_adv": np.mean((adv < 0) & (r < 0.8)),
    }
    expected["loss"] = expected["policy_loss"] + 0.7 * v_loss - 0.3 * entropy
    assert 0 < expected["clip_fraction_pos_adv"] and 0 < expected["clip_fraction_neg_adv"]
    for name, want in expected.items():
        np.testing.assert_allclose(float(d[name]), want, rtol=2e-5, atol=1e-6, err_msg=name)
    assert float(loss) == pytest.approx(expected["loss"], rel=2e-5)
