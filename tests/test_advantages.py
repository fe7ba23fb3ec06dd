"""GAE against an independent NumPy loop; the truncation bootstrap end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.advantages import gae
from purejaxppo.distributions import Categorical
from purejaxppo.envs import VecEnv, make_env
from purejaxppo.fast.reduced_critic import critic_rows
from purejaxppo.rollout import EnvCarry, EpisodeStats, RolloutRandomness, collect_rollout, critic_values


def numpy_gae(rewards, values, obs_next_values, bootstrap_values, terminated, truncated, gamma, lam):
    """Per-env, episode-by-episode reference written without the (T, N) trick.

    obs_next_values[t] is V(s_{t+1}) *after* any auto-reset (what a naive
    implementation would use); bootstrap_values[t] is V(final_observation_t).
    """
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            if terminated[t, n]:
                target = rewards[t, n]
                running = 0.0
            elif truncated[t, n]:
                target = rewards[t, n] + gamma * bootstrap_values[t, n]
                running = 0.0
            else:
                # Inside an episode V(s_{t+1}) is the next step's value,
                # except at the last step of the rollout.
                nxt = values[t + 1, n] if t + 1 < T else obs_next_values[t, n]
                target = rewards[t, n] + gamma * nxt
            delta = target - values[t, n]
            running = delta + gamma * lam * running
            adv[t, n] = running
    return adv, adv + values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_numpy_with_terminations_and_truncations(seed):
    rng = np.random.default_rng(seed)
    T, N, gamma, lam = 37, 5, 0.97, 0.9
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    values = rng.normal(size=(T, N)).astype(np.float32)
    last_value = rng.normal(size=(N,)).astype(np.float32)
    terminated = rng.random((T, N)) < 0.1
    truncated = (rng.random((T, N)) < 0.1) & ~terminated
    bootstrap = rng.normal(size=(T, N)).astype(np.float32)
    # next_values as the library builds them: V(final_obs_t), which equals
    # V(s_{t+1}) inside an episode and the bootstrap value at a truncation.
    next_values = np.concatenate([values[1:], last_value[None]], axis=0)
    next_values = np.where(truncated, bootstrap, next_values)
    next_values = np.where(terminated, rng.normal(size=(T, N)), next_values).astype(np.float32)

    adv, ret = gae(
        jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(next_values),
        jnp.asarray(terminated), jnp.asarray(terminated | truncated), gamma, lam,
    )
    obs_next = np.concatenate([values[1:], last_value[None]], axis=0)
    ref_adv, ref_ret = numpy_gae(rewards, values, obs_next, bootstrap, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_lambda_one_no_boundaries_is_discounted_return():
    T = 6
    rewards = jnp.arange(1.0, T + 1)[:, None]
    values = jnp.zeros((T, 1))
    next_values = jnp.zeros((T, 1)).at[-1].set(10.0)
    zeros = jnp.zeros((T, 1), bool)
    adv, ret = gae(rewards, values, next_values, zeros, zeros, 0.5, 1.0)
    expected = [sum(0.5**k * r for k, r in enumerate(list(range(t + 1, T + 1)) + [0])) for t in range(T)]
    expected = np.array(expected) + 10.0 * 0.5 ** (T - np.arange(T))
    np.testing.assert_allclose(ret[:, 0], expected, rtol=1e-6)


def test_truncation_bootstraps_from_final_observation():
    # CartPole with a 5-step time limit: every episode is cut by truncation.
    env, params, spec = make_env("CartPole-v1", env_params=(("max_steps_in_episode", 5),))
    vec = VecEnv(env, params, spec, num_envs=3)
    obs, state = vec.reset(jax.random.PRNGKey(0))
    carry = EnvCarry(state, obs, EpisodeStats.zeros(3))
    policy = lambda p, o: Categorical(logits=jnp.zeros(o.shape[:-1] + (2,)))
    _, traj = collect_rollout(policy, None, vec, carry, RolloutRandomness.draw(jax.random.PRNGKey(1), vec, 12), 12)
    trunc = np.asarray(traj.truncated)
    assert trunc.any()
    t, n = np.argwhere(trunc & ~np.asarray(traj.terminated))[0]
    assert t + 1 < 12
    # The final observation is the pre-reset one, not the next (reset) observation.
    assert not np.allclose(traj.final_obs[t, n], traj.obs[t + 1, n])
    # A critic that reads its input: next_values must come from final_obs.
    value_fn = lambda p, o: o.sum(-1)
    values, next_values = critic_values(value_fn, None, traj)
    np.testing.assert_allclose(next_values[t, n], traj.final_obs[t, n].sum(), rtol=1e-6)
    np.testing.assert_allclose(values[t + 1, n], traj.obs[t + 1, n].sum(), rtol=1e-6)
    adv, _ = gae(traj.rewards, values, next_values, traj.terminated, traj.done, 0.9, 0.95)
    expected = traj.rewards[t, n] + 0.9 * traj.final_obs[t, n].sum() - traj.obs[t, n].sum()
    np.testing.assert_allclose(adv[t, n], expected, rtol=1e-5)
    # Inside an episode final_obs is exactly the next observation.
    inside = ~np.asarray(traj.done)[:-1]
    np.testing.assert_array_equal(np.asarray(traj.final_obs)[:-1][inside], np.asarray(traj.obs)[1:][inside])


def _truncating_rollout(num_envs=3, num_steps=12, limit=5, seed=1):
    env, params, spec = make_env("CartPole-v1", env_params=(("max_steps_in_episode", limit),))
    vec = VecEnv(env, params, spec, num_envs=num_envs)
    obs, state = vec.reset(jax.random.PRNGKey(0))
    carry = EnvCarry(state, obs, EpisodeStats.zeros(num_envs))
    policy = lambda p, o: Categorical(logits=jnp.zeros(o.shape[:-1] + (2,)))
    _, traj = collect_rollout(policy, None, vec, carry, RolloutRandomness.draw(jax.random.PRNGKey(seed), vec, num_steps), num_steps)
    return vec, traj


@pytest.mark.parametrize("limit,num_steps", [(5, 12), (3, 12), (11, 12), (500, 12), (2, 9), (15, 40)])
def test_reduced_critic_pass_equals_the_full_one(limit, num_steps):
    """With the envs' truncation period, the critic skips the final
    observations it already has the value of (obs[t + 1]) and reads only the
    last step's and one per window of the period and env: the same next
    values wherever GAE reads them, so the same advantages and returns."""
    vec, traj = _truncating_rollout(limit=limit, num_steps=num_steps)
    period = vec.truncation_period()
    assert period == limit
    truncated, terminated = np.asarray(traj.truncated), np.asarray(traj.terminated)
    assert (truncated[:-1].sum() > 0) == (limit < num_steps)
    if num_steps == 40:  # random CartPole episodes end in ~20 steps
        assert terminated[:-1].any()
    w = jax.random.normal(jax.random.PRNGKey(7), (4,))
    rows = []

    def value_fn(p, o):  # reads every input; records how many observations it got
        rows.append(int(np.prod(o.shape[:-1])))
        return jnp.tanh(o @ w)

    full = critic_values(value_fn, None, traj)
    reduced = critic_values(value_fn, None, traj, period)
    windows = -(-(num_steps - 1) // min(limit, num_steps - 1))
    assert rows == [2 * num_steps * 3, (num_steps + 1 + windows) * 3]
    assert [critic_rows(num_steps), critic_rows(num_steps, period)] == [r // 3 for r in rows]
    np.testing.assert_allclose(reduced[0], full[0], rtol=1e-6, atol=1e-7)
    # At a terminated step the reduced pass holds the reset observation's
    # value, which GAE masks; everywhere else the final observation's.
    read = ~terminated
    np.testing.assert_allclose(np.asarray(reduced[1])[read], np.asarray(full[1])[read], rtol=1e-6, atol=1e-7)
    args = (traj.rewards, traj.terminated, traj.done, 0.99, 0.95)
    for a, b in zip(gae(args[0], *reduced, *args[1:]), gae(args[0], *full, *args[1:])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if (truncated[:-1].sum(axis=0) > 1).any():
        # A period longer than the envs' puts two truncations of an env in
        # one window: one loses its bootstrap, and the comparison catches it.
        long = critic_values(value_fn, None, traj, 2 * limit)
        assert not np.allclose(gae(args[0], *long, *args[1:])[0], gae(args[0], *full, *args[1:])[0],
                               rtol=1e-5, atol=1e-6)


def test_reduced_critic_pass_under_jit_and_vmap():
    vec, traj = _truncating_rollout(limit=3, num_steps=10)
    period = vec.truncation_period()
    trajs = jax.tree.map(lambda x: jnp.stack([x, x[:, ::-1]]), traj)  # two "seeds"
    value_fn = lambda p, o: o.sum(-1) * p
    full = jax.vmap(lambda t: critic_values(value_fn, 2.0, t))(trajs)
    reduced = jax.jit(jax.vmap(lambda t: critic_values(value_fn, 2.0, t, period)))(trajs)
    for a, b in zip(reduced, full):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_make_train_runs_the_reduced_critic_pass(monkeypatch):
    """`make_train` hands the critic the envs' truncation period (the pass
    falls back to the full one without it)."""
    import purejaxppo.train as train_module
    from purejaxppo import PPOConfig, make_train

    seen = []

    def recording(value_fn, params, traj, truncation_period=None):
        seen.append(truncation_period)
        return critic_values(value_fn, params, traj, truncation_period)

    monkeypatch.setattr(train_module, "critic_values", recording)
    train = make_train(PPOConfig(env_name="CartPole-v1", total_timesteps=512))
    jax.eval_shape(train, jax.random.PRNGKey(0))
    assert seen == [500]
