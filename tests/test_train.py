"""make_train: shapes, purity, determinism, vmap over seeds and hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import METRIC_NAMES, PPOConfig, TrainResult, make_train

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


def test_result_structure_and_metric_shapes(tiny_config):
    result = jax.jit(make_train(tiny_config))(jax.random.PRNGKey(0))
    assert isinstance(result, TrainResult)
    assert set(result.metrics) == set(METRIC_NAMES)
    for name, value in result.metrics.items():
        assert value.shape == (tiny_config.num_updates,), name
    state = result.train_state
    assert int(state.update_step) == tiny_config.num_updates
    assert state.env.obs.shape == (tiny_config.num_envs, 4)
    for name in METRIC_NAMES:
        if name not in ("episode_return", "episode_length", "explained_variance"):
            assert np.isfinite(result.metrics[name]).all(), name


def test_same_key_same_metrics_and_one_compile(tiny_config):
    train = jax.jit(make_train(tiny_config))
    a = train(jax.random.PRNGKey(3))
    b = train(jax.random.PRNGKey(3))
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
    c = train(jax.random.PRNGKey(4))
    assert not np.array_equal(a.metrics["policy_loss"], c.metrics["policy_loss"])
    assert train._cache_size() == 1


def test_vmap_over_seeds_matches_per_seed_runs(tiny_config):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    train = make_train(tiny_config)
    many = jax.jit(jax.vmap(train))(keys)
    for name in METRIC_NAMES:
        assert many.metrics[name].shape == (3, tiny_config.num_updates)
    single = jax.jit(train)
    for i in range(3):
        one = single(keys[i])
        for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm", "episodes_finished"):
            np.testing.assert_allclose(many.metrics[name][i, 0], one.metrics[name][0], rtol=2e-4, atol=1e-6, err_msg=name)


def test_learning_rate_anneals_linearly_to_zero(tiny_config):
    res = jax.jit(make_train(tiny_config))(jax.random.PRNGKey(0))
    lr = np.asarray(res.metrics["learning_rate"])
    steps = tiny_config.update_epochs * tiny_config.num_minibatches
    expected = tiny_config.lr * (1 - np.arange(tiny_config.num_updates) * steps / tiny_config.num_gradient_steps)
    np.testing.assert_allclose(lr, expected, rtol=1e-5)
    flat = jax.jit(make_train(tiny_config.replace(anneal_lr=False)))(jax.random.PRNGKey(0))
    np.testing.assert_allclose(flat.metrics["learning_rate"], tiny_config.lr, rtol=1e-6)


def test_episode_metrics_report_finished_episodes():
    # 5-step time limit: every env finishes an episode every 5 steps.
    config = PPOConfig(env_params={"max_steps_in_episode": 5}, num_envs=2, num_steps=10,
                       total_timesteps=40, num_minibatches=1, update_epochs=1)
    res = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    ep_len = np.asarray(res.metrics["episode_length"])
    assert np.all(ep_len <= 5) and np.all(ep_len >= 1)
    np.testing.assert_array_equal(res.metrics["episode_return"], ep_len)  # CartPole: reward 1 per step
    assert np.all(np.asarray(res.metrics["episodes_finished"]) >= 4)


def test_episode_return_is_nan_until_an_episode_finishes():
    config = PPOConfig(num_envs=2, num_steps=4, total_timesteps=8, num_minibatches=1)
    res = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    assert np.isnan(res.metrics["episode_return"][0])  # 4 steps: no CartPole episode ends
    assert int(res.metrics["episodes_finished"][0]) == 0


@pytest.mark.parametrize("env_name", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_continuous_actions_stored_unclipped_but_env_sees_clipped(env_name):
    config = PPOConfig(env_name=env_name, num_envs=2, num_steps=8, total_timesteps=16,
                       num_minibatches=1, ent_coef=0.0)
    train = make_train(config)
    state = jax.jit(train.init)(jax.random.PRNGKey(0))
    # Push the policy mean far outside the bounds.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 100.0 if "policy_head" in jax.tree_util.keystr(p) and "bias" in jax.tree_util.keystr(p) else x,
        state.params,
    )
    from purejaxppo.rollout import RolloutRandomness, collect_rollout
    from purejaxppo.envs import VecEnv, make_env
    env, env_params, spec = make_env(env_name)
    vec = VecEnv(env, env_params, spec, 2)
    policy = lambda p, o: train.network.apply(p, o, method=train.network.policy)
    _, traj = collect_rollout(policy, params, vec, state.env, RolloutRandomness.draw(jax.random.PRNGKey(1), vec, 8), 8)
    assert float(jnp.min(traj.actions)) > spec.action_high[0]  # stored unclipped
    assert np.isfinite(np.asarray(traj.log_probs)).all()
    # the env stepped with the clipped action: same transition as stepping with high
    out = vec.step(jax.random.PRNGKey(2), state.env.env_state, jnp.full((2, 1), 50.0))
    ref = vec.step(jax.random.PRNGKey(2), state.env.env_state, jnp.full((2, 1), spec.action_high[0]))
    np.testing.assert_array_equal(out.obs, ref.obs)
    np.testing.assert_array_equal(out.reward, ref.reward)


# Acrobot, Catch and FrozenLake train through their presets in tests/test_presets.py;
# here the library defaults: Breakout's CNN torso, Reacher, DeepSea's own reset.
@pytest.mark.parametrize("env_name", ["Breakout-MinAtar", "Reacher-misc", "DeepSea-bsuite"])
def test_other_env_families_run(env_name):
    config = PPOConfig(env_name=env_name, num_envs=2, num_steps=16, total_timesteps=64,
                       num_minibatches=2, update_epochs=1, hidden_sizes=(16,))
    res = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    assert res.metrics["policy_loss"].shape == (2,)
    assert np.isfinite(res.metrics["value_loss"]).all()


@pytest.fixture(scope="module")
def pretrained():
    """A briefly trained CartPole policy and its observation statistics."""
    config = PPOConfig(total_timesteps=4 * 32 * 6, num_steps=32, update_epochs=2, num_minibatches=2,
                       hidden_sizes=(16,), normalize_obs=True)
    state = jax.jit(make_train(config))(jax.random.PRNGKey(7)).train_state
    return config, state.params, state.obs_norm


def test_training_starts_from_given_params(pretrained):
    config, params, obs_norm = pretrained
    train = make_train(config)
    state = jax.jit(train.init)(jax.random.PRNGKey(0), None, params, obs_norm)
    for got, given in zip(jax.tree.leaves((state.params, state.obs_norm)), jax.tree.leaves((params, obs_norm))):
        np.testing.assert_array_equal(got, given)
    assert state.reference_params is None  # kept only with reference_kl
    fresh = jax.jit(train.init)(jax.random.PRNGKey(0))
    assert not np.array_equal(fresh.params["params"]["policy_head"]["kernel"],
                              params["params"]["policy_head"]["kernel"])
    # Parameters of another network are refused before anything runs.
    other = make_train(config.replace(hidden_sizes=(32,)))
    with pytest.raises(ValueError, match="params do not fit this config's network for CartPole-v1"):
        other.init(jax.random.PRNGKey(0), params=params)
    with pytest.raises(ValueError, match="obs_norm do not fit"):
        make_train(config.replace(env_name="Acrobot-v1")).init(jax.random.PRNGKey(0), obs_norm=obs_norm)


def test_reference_kl_holds_the_policy_near_the_one_it_started_from(pretrained):
    """Fine-tuning with reference_kl: the reference stays the given policy, the
    penalty's KL is reported, and a larger coefficient keeps the policy
    closer to it. The KL at the end is measured independently, over the
    1,024 states of a rollout of the final policy, after a fine-tuning long
    and fast enough that an unpenalised policy moves away (a KL of 0.03-0.05
    against 0.0006-0.0016 with the penalty, over six pretraining and
    fine-tuning seeds in a scratch run of this loop)."""
    from purejaxppo.envs import VecEnv, make_env
    from purejaxppo.rollout import RolloutRandomness, EnvCarry, EpisodeStats, collect_rollout

    config, params, obs_norm = pretrained
    finals = {}
    for coef in (1e-4, 3.0):
        tuned = config.replace(reference_kl=True, reference_kl_coef=coef, total_timesteps=4 * 32 * 24,
                               lr=3e-3, ent_coef=0.0)
        train = make_train(tuned)
        result = jax.jit(train)(jax.random.PRNGKey(1), None, params, obs_norm)
        # The reference stays the given policy: its parameters, and the
        # observation statistics it acts through.
        for got, given in zip(jax.tree.leaves((result.train_state.reference_params, result.train_state.obs_norm)),
                              jax.tree.leaves((params, obs_norm))):
            np.testing.assert_array_equal(got, given)
        kl = np.asarray(result.metrics["reference_kl"])
        assert kl.shape == (tuned.num_updates,) and (kl >= 0).all() and kl[-1] > 0
        net = train.network
        normalize = lambda o: result.train_state.obs_norm.normalize(o, tuned.obs_clip)
        env, env_params, spec = make_env(tuned.env_name)
        vec = VecEnv(env, env_params, spec, 16)
        obs, env_state = vec.reset(jax.random.PRNGKey(2))
        _, traj = jax.jit(lambda p: collect_rollout(
            lambda p, o: net.apply(p, normalize(o), method=net.policy), p, vec,
            EnvCarry(env_state, obs, EpisodeStats.zeros(16)), RolloutRandomness.draw(jax.random.PRNGKey(3), vec, 64), 64,
        ))(result.train_state.params)
        states = normalize(traj.obs.reshape(-1, *spec.obs_shape))
        ref_dist, _ = net.apply(params, states)
        dist, _ = net.apply(result.train_state.params, states)
        finals[coef] = float(jnp.mean(ref_dist.kl(dist)))
    assert finals[3.0] < 0.25 * finals[1e-4], finals
    tuned = make_train(config.replace(reference_kl=True, reference_kl_coef=0.1))
    with pytest.raises(ValueError, match=r"reference_kl=True .* train\(rng, params=\.\.\.\)"):
        tuned.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"normalize_obs=True.*obs_norm=\.\.\."):
        tuned.init(jax.random.PRNGKey(0), params=params)


def test_init_starts_envs_in_independent_gymnax_reset_states():
    """`init` takes its envs' start states from the draw an update makes (the
    reset states of a first step): gymnax's CartPole reset law, U(-0.05, 0.05)
    for each state variable, independent across envs and seeds."""
    from scipy import stats

    train = make_train(PPOConfig(num_envs=4, num_steps=8, total_timesteps=4 * 8 * 2))
    states = jax.jit(jax.vmap(train.init))(jax.random.split(jax.random.PRNGKey(0), 500))
    obs, env_state = states.env.obs, states.env.env_state
    components = [env_state.x, env_state.x_dot, env_state.theta, env_state.theta_dot]
    np.testing.assert_array_equal(obs, np.stack(components, axis=-1))
    assert (np.asarray(env_state.time) == 0).all()
    values = np.asarray(obs).reshape(-1, 4)
    assert len(np.unique(values, axis=0)) == len(values)  # no env or seed repeats another
    for column in values.T:
        assert stats.kstest(column, stats.uniform(-0.05, 0.1).cdf).pvalue > 1e-3
    # Independent components and envs: correlations near 0 (|r| < 5 sigma).
    corr = np.corrcoef(np.asarray(obs).reshape(500, 16).T)
    off_diagonal = corr[~np.eye(16, dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 / np.sqrt(500)


def test_an_update_draws_its_randomness_in_one_call():
    """One `random_bits` per update besides the env's own reset draws: each
    draw is a threefry kernel that XLA compiles apart (benchmarks/NOTES.md)."""
    from purejaxppo.envs import VecEnv, make_env

    def count_draws(fn, *args):
        return str(jax.make_jaxpr(fn)(*args)).count("random_bits")

    config = PPOConfig(num_envs=4, num_steps=8, total_timesteps=4 * 8 * 2)
    train = make_train(config)
    env, params, spec = make_env(config.env_name)
    vec = VecEnv(env, params, spec, config.num_envs)
    env_draws = count_draws(vec.draw_resets, jax.random.split(jax.random.PRNGKey(0), 32).reshape(8, 4, 2))
    state = train.init(jax.random.PRNGKey(0))
    assert count_draws(train.update, state) == 1 + env_draws


@pytest.mark.parametrize("env_name", ["CartPole-v1", "FrozenLake-misc"])
def test_straight_threefry_keys_change_no_bit_of_a_run(env_name, monkeypatch):
    """`purejaxppo.fast.straight_threefry.straight` keys only change how XLA compiles the
    draws: a run with JAX's own threefry keys everywhere is bitwise equal."""
    import purejaxppo.envs
    import purejaxppo.fast.orthogonal_init

    config = PPOConfig(env_name=env_name, num_envs=4, num_steps=8, total_timesteps=4 * 8 * 2, num_minibatches=2)
    key = jax.random.PRNGKey(3)
    loops = lambda lowered: lowered.as_text().count("stablehlo.while")
    ours = jax.jit(make_train(config)).lower(key)  # traced here, before the patch
    for module in (purejaxppo.envs, purejaxppo.fast.orthogonal_init):
        monkeypatch.setattr(module, "straight", lambda k: k)
    plain = jax.jit(make_train(config)).lower(key)
    assert loops(plain) > loops(ours)  # JAX's threefry loops are back
    ours, plain = ours.compile()(key), plain.compile()(key)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(a, b)


def test_update_feeds_gae_the_normalised_truncation_bootstrap_and_scaled_rewards(monkeypatch):
    """What `update` hands the PPO epochs, recomputed in NumPy from its
    rollout: observations normalised by the statistics frozen before the
    rollout, rewards scaled by the running std of the discounted return
    (this rollout's returns merged in first), and GAE per env that stops at
    a termination (no bootstrap) and at a truncation (bootstrapped from
    V of the normalised final observation). GAE, the critic pass and the
    normalisers are tested alone elsewhere; this checks the wiring, where a
    truncation passed as a termination, a raw final observation or scaled
    rewards left unused would each go unseen."""
    import purejaxppo.train as train_module

    seen = {}
    collect, ppo_update = train_module.collect_rollout, train_module.ppo_update

    def recording_collect(*args, **kwargs):
        carry, traj = collect(*args, **kwargs)
        seen["traj"] = traj
        return carry, traj

    def recording_update(params, opt_state, tx, apply_fn, batch, *args, **kwargs):
        seen["batch"] = batch
        return ppo_update(params, opt_state, tx, apply_fn, batch, *args, **kwargs)

    monkeypatch.setattr(train_module, "collect_rollout", recording_collect)
    monkeypatch.setattr(train_module, "ppo_update", recording_update)
    gamma, lam, T, N = 0.9, 0.8, 40, 3
    config = PPOConfig(env_name="CartPole-v1", env_params={"max_steps_in_episode": 15}, num_envs=N,
                       num_steps=T, total_timesteps=N * T * 4, update_epochs=2, num_minibatches=2,
                       hidden_sizes=(8,), normalize_obs=True, normalize_reward=True,
                       gamma=gamma, gae_lambda=lam)
    train = make_train(config)
    hp = config.hyperparams()
    before, _ = train.update(train.init(jax.random.PRNGKey(0)), hp)  # statistics away from their start
    after, _ = train.update(before, hp)
    traj, batch = jax.tree.map(np.asarray, seen["traj"]), jax.tree.map(np.asarray, seen["batch"])
    term, trunc = traj.terminated.astype(bool), traj.truncated.astype(bool)
    assert term.any() and (trunc & ~term).any()  # a step both ends as a termination (no bootstrap)

    stats = jax.tree.map(np.asarray, before.obs_norm)
    norm = lambda obs: np.clip((obs - stats.mean) / np.sqrt(stats.var + 1e-8), -10.0, 10.0)
    net = train.network
    value = lambda obs: np.asarray(net.apply(before.params, jnp.asarray(obs, jnp.float32), method=net.value))
    np.testing.assert_allclose(batch.obs.reshape(T, N, 4), norm(traj.obs), rtol=1e-5, atol=1e-6)
    assert float(after.obs_norm.count) == float(before.obs_norm.count) + T * N

    # Rewards over the running std of each env's discounted return.
    ret = np.asarray(before.reward_scaler.discounted_return, np.float64).copy()
    returns = []
    for t in range(T):
        ret = gamma * ret + traj.rewards[t]
        returns.append(ret.copy())
        ret = np.where(term[t] | trunc[t], 0.0, ret)
    returns = np.array(returns)
    old = jax.tree.map(float, before.reward_scaler.return_stats)
    total = old.count + returns.size
    delta = returns.mean() - old.mean
    var = (old.var * old.count + returns.var() * returns.size + delta**2 * old.count * returns.size / total) / total
    rewards = np.clip(traj.rewards / np.sqrt(var + 1e-8), -10.0, 10.0)

    values, final_values = value(norm(traj.obs)), value(norm(traj.final_obs))
    advantages = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            if term[t, n]:
                delta, running = rewards[t, n] - values[t, n], 0.0
            elif trunc[t, n] or t == T - 1:  # bootstrap from the step's own final observation
                delta, running = rewards[t, n] + gamma * final_values[t, n] - values[t, n], 0.0
            else:
                delta = rewards[t, n] + gamma * values[t + 1, n] - values[t, n]
            running = delta + gamma * lam * running
            advantages[t, n] = running
    np.testing.assert_allclose(batch.values.reshape(T, N), values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch.advantages.reshape(T, N), advantages, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batch.returns.reshape(T, N), advantages + values, rtol=1e-4, atol=1e-5)
