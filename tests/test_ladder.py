"""The policy-gradient ladder's pieces against independent NumPy computations:
Monte Carlo returns and their completeness mask, weighted losses, the
conjugate gradient, TRPO's natural-gradient step with the Fisher matrix
built explicitly, the clip objective's early stop and PPO-Penalty's
adaptive beta."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.advantages import monte_carlo_returns
from purejaxppo.distributions import Categorical
from purejaxppo.losses import LossStatic, Minibatch, normalize, ppo_loss, sample_weights
from purejaxppo.trpo import conjugate_gradient, trpo_step
from test_losses import enable_x64

pytestmark = pytest.mark.usefixtures("quick_compiles")


def _episodes(key, t=40, n=5):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    rewards = np.asarray(jax.random.normal(k1, (t, n)))
    terminated = np.asarray(jax.random.uniform(k2, (t, n)) < 0.08)
    truncated = np.asarray(jax.random.uniform(k3, (t, n)) < 0.05) & ~terminated
    values = np.asarray(jax.random.normal(k4, (t, n)))
    # V(s_{t+1}) inside an episode; V(final observation) where one ends.
    next_values = np.array(jax.random.normal(k5, (t, n)))
    inside = ~(terminated | truncated)[:-1]
    next_values[:-1][inside] = values[1:][inside]
    return rewards, terminated, truncated, values, next_values


@pytest.mark.parametrize("baseline", [False, True])
def test_monte_carlo_returns_against_a_numpy_loop(baseline):
    rewards, terminated, truncated, values, next_values = _episodes(jax.random.PRNGKey(0))
    done = terminated | truncated
    gamma = 0.9
    got, complete = monte_carlo_returns(
        jnp.asarray(rewards), jnp.asarray(terminated), jnp.asarray(done), gamma,
        jnp.asarray(values) if baseline else None, jnp.asarray(next_values) if baseline else None)
    t, n = rewards.shape
    expected = np.zeros((t, n))
    expected_complete = np.zeros((t, n), bool)
    for env in range(n):
        g, ends = 0.0, False
        for step in reversed(range(t)):
            if done[step, env]:  # the episode ends here: its return starts afresh
                g = 0.0
                if baseline and truncated[step, env]:
                    g = next_values[step, env]  # V(final observation) stands for the rest
                ends = True
            g = rewards[step, env] + gamma * g
            expected[step, env] = g
            expected_complete[step, env] = ends
    assert done.any(axis=0).all() and not expected_complete.all()  # the cases occur
    np.testing.assert_array_equal(np.asarray(complete), expected_complete)
    np.testing.assert_allclose(np.asarray(got)[expected_complete], expected[expected_complete],
                               rtol=1e-5, atol=1e-5)


def _linear_apply(params, obs):
    return Categorical(logits=obs @ params["w"]), obs @ params["v"]


def _batch(key, b=48, d=3, k=4):
    k1, k2, k3, k4, k5, k6 = jax.random.split(key, 6)
    return Minibatch(
        obs=jax.random.normal(k1, (b, d)),
        actions=jax.random.randint(k2, (b,), 0, k),
        log_probs=-jnp.abs(jax.random.normal(k3, (b,))) - 1.0,
        values=jax.random.normal(k4, (b,)),
        advantages=jax.random.normal(k5, (b,)) * 2.0 + 0.5,
        returns=jax.random.normal(k6, (b,)) + 1.0,
    )


def test_weighted_loss_is_the_loss_of_the_masked_in_samples():
    """A REINFORCE minibatch with weights: its loss and gradient are those of
    the samples masked in alone (advantages normalised over them only)."""
    batch = _batch(jax.random.PRNGKey(1))
    mask = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (48,)) < 0.6)
    params = {"w": jax.random.normal(jax.random.PRNGKey(3), (3, 4)),
              "v": jax.random.normal(jax.random.PRNGKey(4), (3,))}
    hp = PPOConfig().hyperparams()
    static = LossStatic(norm_adv=True, clip_vloss=False, policy_objective="pg")
    weights = sample_weights(jnp.asarray(mask))
    np.testing.assert_allclose(float(jnp.mean(weights)), 1.0, rtol=1e-6)
    loss = lambda p, b: ppo_loss(p, _linear_apply, b, hp, static)[0]
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    weighted = batch.replace(weights=weights)
    subset = jax.tree.map(lambda x: x[np.flatnonzero(mask)], batch)
    (l_weighted, g_weighted), (l_subset, g_subset) = value_and_grad(params, weighted), value_and_grad(params, subset)
    np.testing.assert_allclose(l_weighted, l_subset, rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(g_weighted[name], g_subset[name], rtol=1e-4, atol=1e-6)
    x = np.asarray(batch.advantages, np.float64)
    expected = (x - x[mask].mean()) / (x[mask].std() + 1e-8)
    np.testing.assert_allclose(np.asarray(normalize(batch.advantages, weights=weights))[mask],
                               expected[mask], rtol=1e-4, atol=1e-5)
    assert float(jnp.sum(sample_weights(jnp.zeros(5, bool)))) == 0.0  # none masked in: no NaN


def test_conjugate_gradient_solves_a_positive_definite_system():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    matrix = a @ a.T + 0.5 * np.eye(6)
    b = rng.normal(size=6)
    with enable_x64():
        x = conjugate_gradient(lambda v: jnp.asarray(matrix) @ v, jnp.asarray(b), iters=6)
        np.testing.assert_allclose(np.asarray(x), np.linalg.solve(matrix, b), rtol=1e-8)
        # Fewer iterations than the dimension: an approximation, not the solution.
        x2 = conjugate_gradient(lambda v: jnp.asarray(matrix) @ v, jnp.asarray(b), iters=2)
        assert not np.allclose(np.asarray(x2), np.linalg.solve(matrix, b), rtol=1e-3)


def test_trpo_step_is_the_natural_gradient_of_an_explicit_fisher_matrix():
    """For a linear softmax policy, logits = s W, the Fisher matrix of the
    mean KL at W_old is E_s[(s s^T) kron (diag(p) - p p^T)]: built here
    in NumPy, with the surrogate's gradient E[A s (onehot(a) - p)], the
    step must be c^j * sqrt(2 delta / x^T F x) * x with x = F^-1 g,
    keep the KL under delta and improve the surrogate; the critic must not
    move."""
    d, k, delta, damping = 3, 4, 0.01, 0.1
    with enable_x64():
        batch = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x,
                             _batch(jax.random.PRNGKey(5), d=d, k=k))
        params = {"w": 0.3 * jax.random.normal(jax.random.PRNGKey(6), (d, k), jnp.float64),
                  "v": jax.random.normal(jax.random.PRNGKey(7), (d,), jnp.float64)}
        # The rollout's own policy: log pi_old at the batch's actions.
        batch = batch.replace(log_probs=_linear_apply(params, batch.obs)[0].log_prob(batch.actions))
        hp = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64),
                          PPOConfig(algorithm="trpo", target_kl=delta, ent_coef=0.0).hyperparams())
        new, diagnostics = jax.jit(lambda p: trpo_step(
            p, _linear_apply, batch, hp, norm_adv=True, cg_iters=d * k, damping=damping))(params)

    s = np.asarray(batch.obs)
    w = np.asarray(params["w"])
    logits = s @ w
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a = np.asarray(batch.advantages)
    a = (a - a.mean()) / (a.std() + 1e-8)
    onehot = np.eye(k)[np.asarray(batch.actions)]
    g = np.einsum("b,bi,ba->ia", a, s, onehot - p).reshape(-1) / len(a)
    fisher = np.zeros((d * k, d * k))
    for si, pi in zip(s, p):
        fisher += np.kron(np.outer(si, si), np.diag(pi) - np.outer(pi, pi))
    fisher /= len(s)
    damped = fisher + damping * np.eye(d * k)
    x = np.linalg.solve(damped, g)
    full_step = np.sqrt(2 * delta / (x @ damped @ x)) * x

    taken = (np.asarray(new["w"]) - w).reshape(-1)
    np.testing.assert_array_equal(np.asarray(new["v"]), np.asarray(params["v"]))
    fraction = taken @ full_step / (full_step @ full_step)
    assert any(np.isclose(fraction, 0.8**j, rtol=1e-6) for j in range(10)), fraction
    np.testing.assert_allclose(taken, fraction * full_step, rtol=1e-6, atol=1e-10)
    assert float(diagnostics["gradient_steps"]) == 1.0

    new_logits = s @ np.asarray(new["w"])
    new_p = np.exp(new_logits - new_logits.max(-1, keepdims=True))
    new_p /= new_p.sum(-1, keepdims=True)
    kl = np.mean(np.sum(p * (np.log(p) - np.log(new_p)), -1))
    assert 0 < kl <= delta
    np.testing.assert_allclose(float(diagnostics["approx_kl"]), kl, rtol=1e-8)
    ratio = new_p[np.arange(len(a)), np.asarray(batch.actions)] / p[np.arange(len(a)), np.asarray(batch.actions)]
    assert np.mean(ratio * a) > np.mean(a)  # the surrogate improved on r = 1


@pytest.fixture(scope="module")
def short_run():
    """A few CartPole updates of every variant below (small networks)."""
    base = PPOConfig(total_timesteps=4 * 32 * 6, num_envs=4, num_steps=32, hidden_sizes=(16,),
                     update_epochs=2, num_minibatches=2)

    def run(**changes):
        return jax.jit(make_train(base.replace(**changes)))(jax.random.PRNGKey(0)).metrics

    return run


def test_target_kl_stops_the_clip_objective_epochs(short_run):
    free = short_run()
    assert (np.asarray(free["gradient_steps"]) == 4).all()
    # A target no step can stay under: the first step (KL 0, the rollout's
    # own policy) is taken, the next minibatch's KL is past it.
    stopped = short_run(target_kl=1e-12)
    np.testing.assert_array_equal(np.asarray(stopped["gradient_steps"]), 1)
    # A target never reached: the same run as without one.
    loose = short_run(target_kl=1e3)
    for name in ("episode_return", "policy_loss", "value_loss", "approx_kl", "gradient_steps"):
        np.testing.assert_array_equal(np.asarray(loose[name]), np.asarray(free[name]), err_msg=name)


def test_ppo_penalty_adapts_beta_as_schulman_et_al(short_run):
    config = PPOConfig(total_timesteps=4 * 32 * 6, num_envs=4, num_steps=32, hidden_sizes=(16,),
                       update_epochs=2, num_minibatches=2, algorithm="ppo_penalty", kl_coef=0.5,
                       target_kl=0.01)
    # Two targets in one compiled call: one the KL always stays under by far
    # (beta halves after every update), one it always exceeds (beta doubles).
    hp = jax.tree.map(lambda x: jnp.stack([x, x]), config.hyperparams())
    hp = hp.replace(target_kl=jnp.array([1e3, 1e-12], jnp.float32))
    train = jax.vmap(make_train(config), in_axes=(None, 0))
    low, high = np.asarray(jax.jit(train)(jax.random.PRNGKey(0), hp).metrics["kl_coef"])
    np.testing.assert_allclose(low, 0.5 * 0.5 ** np.arange(len(low)), rtol=1e-6)
    np.testing.assert_allclose(high, 0.5 * 2.0 ** np.arange(len(high)), rtol=1e-6)
    # Without a target beta stays.
    fixed = np.asarray(short_run(algorithm="ppo_penalty", kl_coef=0.5)["kl_coef"])
    np.testing.assert_array_equal(fixed, np.float32(0.5))


LEARNS = {  # rung -> (total_timesteps, the final return each of 2 seeds must pass)
    "reinforce": (60_000, 100.0),
    "reinforce_baseline": (100_000, 100.0),
    "a2c": (60_000, 100.0),
    "trpo": (60_000, 100.0),
    "ppo_penalty": (60_000, 100.0),
    # ppo_clip: tests/test_learning.py trains the CartPole defaults to 475.
}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", list(LEARNS))
def test_every_rung_learns_cartpole(algorithm):
    """Each rung's `ladder_config`, trained briefly on CartPole-v1 (random
    play returns ~22): the final returns of 2 seeds must clear the bar."""
    from purejaxppo.evaluation import final_return
    from purejaxppo.presets import ladder_config

    steps, bar = LEARNS[algorithm]
    config = ladder_config(algorithm, "CartPole-v1", total_timesteps=steps, num_envs=4)
    result = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.PRNGKey(0), 2))
    finals = np.asarray(final_return(result.metrics))
    assert np.all(finals > bar), (algorithm, finals)


def test_ladder_example_writes_its_table_and_plot(tmp_path):
    """``examples/policy_gradient_ladder.py``, one rung at a tiny budget."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/ as a namespace package
    from examples.policy_gradient_ladder import main

    out = tmp_path / "ladder.png"
    rows = main(["--envs", "CartPole-v1", "--rungs", "a2c", "--seeds", "2",
                 "--total-timesteps", "8192", "--out", str(out)])
    assert [r["algorithm"] for r in rows] == ["a2c"]
    assert rows[0]["returns"].shape == (2, 2) and rows[0]["gradient_steps"] == 1.0
    table = out.with_suffix(".md").read_text()
    assert "| CartPole-v1 | actor-critic (A2C) | " in table and "2 seeds per rung" in table
    assert out.stat().st_size > 10_000


def test_weights_and_trpo_over_device_shares_are_those_of_the_union():
    """Split into 4 equal shares along a mapped axis (the collectives a run
    split over devices uses): sample weights, weighted normalisation and
    TRPO's step are those of the whole batch."""
    d, axis = 4, "shares"
    batch = _batch(jax.random.PRNGKey(8))
    mask = jnp.asarray(np.arange(48) % 5 != 0) & (jnp.arange(48) < 40)  # uneven across shares
    shares = lambda x: x.reshape((d, x.shape[0] // d) + x.shape[1:])
    union = lambda x: x.reshape((-1,) + x.shape[2:])
    over_shares = jax.jit(jax.vmap(lambda m: sample_weights(m, axis), axis_name=axis))(shares(mask))
    np.testing.assert_allclose(union(over_shares), sample_weights(mask), rtol=1e-6)
    w = sample_weights(mask)
    normalized = jax.jit(jax.vmap(lambda x, w: normalize(x, axis_name=axis, weights=w), axis_name=axis))(
        shares(batch.advantages), shares(w))
    np.testing.assert_allclose(union(normalized), normalize(batch.advantages, weights=w), rtol=1e-4, atol=1e-5)

    params = {"w": 0.3 * jax.random.normal(jax.random.PRNGKey(9), (3, 4)),
              "v": jax.random.normal(jax.random.PRNGKey(10), (3,))}
    batch = batch.replace(log_probs=_linear_apply(params, batch.obs)[0].log_prob(batch.actions))
    hp = PPOConfig(algorithm="trpo", target_kl=0.01).hyperparams()
    whole, _ = jax.jit(lambda b: trpo_step(params, _linear_apply, b, hp, norm_adv=True))(batch)
    split, diagnostics = jax.jit(jax.vmap(lambda b: trpo_step(params, _linear_apply, b, hp, norm_adv=True,
                                                              axis_name=axis), axis_name=axis))(jax.tree.map(shares, batch))
    for share in range(d):  # every share takes the union's step
        np.testing.assert_allclose(split["w"][share], whole["w"], rtol=1e-4, atol=1e-6)
    assert float(diagnostics["gradient_steps"][0]) == 1.0
    assert not np.allclose(whole["w"], params["w"])
