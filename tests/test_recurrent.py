"""The recurrent policy: its GRU against NumPy and flax, the rollout replayed
from its stored hidden state, and a recurrent run through vmap, traced
hyperparameters, normalisation, checkpoints and evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.envs import VecEnv, make_env
from purejaxppo.evaluation import make_evaluate
from purejaxppo.fast.orthogonal_init import init_params
from purejaxppo.losses import LossStatic, Minibatch, ppo_loss
from purejaxppo.networks import GRU, gru_cell, make_network
from purejaxppo.rollout import (
    EnvCarry,
    EpisodeStats,
    RolloutRandomness,
    collect_rollout,
    episode_starts,
    recurrent_critic_values,
)

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


def numpy_gru(params, h0, x, starts):
    """A GRU over (T, B, F) inputs in float64 NumPy, one gate at a time,
    zeroing the state before step t where ``starts[t]``."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    size = h0.shape[-1]
    w = {g: p["kernel"][:, i * size:(i + 1) * size] for i, g in enumerate("rzn")}
    b = {g: p["bias"][i * size:(i + 1) * size] for i, g in enumerate("rzn")}
    u = {g: p["recurrent_kernel"][:, i * size:(i + 1) * size] for i, g in enumerate("rzn")}
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
    h, out = np.asarray(h0, np.float64), []
    for t in range(x.shape[0]):
        h = np.where(starts[t][:, None], 0.0, h)
        r = sigmoid(x[t] @ w["r"] + b["r"] + h @ u["r"])
        z = sigmoid(x[t] @ w["z"] + b["z"] + h @ u["z"])
        n = np.tanh(x[t] @ w["n"] + b["n"] + r * (h @ u["n"] + p["recurrent_bias"]))
        h = (1.0 - z) * n + z * h
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("transposed_grad", [False, True])
def test_gru_unrolled_with_resets_equals_numpy(transposed_grad):
    T, B, F, H = 7, 3, 5, 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(T, B, F)).astype(np.float32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    starts = rng.random((T, B)) < 0.3
    starts[0, 0] = starts[4, 1] = True
    gru = GRU(H, transposed_grad)
    params = gru.init(jax.random.PRNGKey(0), h0, x, starts)["params"]
    # Random biases too, so that a bias in the wrong gate shows.
    params = {k: v + 0.3 * rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    got = np.asarray(gru.apply({"params": params}, h0, x, starts))
    np.testing.assert_allclose(got, numpy_gru(params, h0, x, starts), rtol=1e-5, atol=1e-6)
    # The resets matter: without them the states differ.
    assert not np.allclose(gru.apply({"params": params}, h0, x, None), got, atol=1e-3)


def test_gru_cell_is_flax_gru_cell():
    """`gru_cell` with the gates concatenated is `flax.linen.GRUCell` with
    the same twelve weights."""
    import flax.linen as nn

    B, F, H = 4, 3, 5
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, F)).astype(np.float32)
    h = rng.normal(size=(B, H)).astype(np.float32)
    cell = nn.GRUCell(H)
    flax_params = cell.init(jax.random.PRNGKey(0), h, x)["params"]
    flax_params = jax.tree.map(lambda v: v + 0.3 * rng.normal(size=v.shape).astype(np.float32), flax_params)
    expected, _ = cell.apply({"params": flax_params}, h, x)
    gi = x @ np.concatenate([flax_params[f"i{g}"]["kernel"] for g in "rzn"], -1) + np.concatenate(
        [flax_params[f"i{g}"]["bias"] for g in "rzn"])
    kernel = np.concatenate([flax_params[f"h{g}"]["kernel"] for g in "rzn"], -1)
    got = gru_cell(jnp.asarray(h), jnp.asarray(gi), jnp.asarray(kernel), flax_params["hn"]["bias"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_one_draw_init_of_a_gru_network():
    """`init_params` gives the recurrent network `network.init`'s parameter
    tree; each gate's block of a recurrent kernel is orthogonal, the GRU's
    input kernel orthonormal (gain 1), its biases 0."""
    _, _, spec = make_env("CartPole-v1")
    net = make_network(spec, (8,), "tanh", recurrent="gru", recurrent_size=6, recurrent_core="separate")
    inputs = (jnp.zeros((1, 1, 4)), jnp.zeros((1, 1), bool), net.initial_hidden(1))
    params = init_params(net, jax.random.PRNGKey(0), *inputs)
    reference = net.init(jax.random.PRNGKey(0), *inputs)
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference)
    for core in ("grus_0", "grus_1"):
        gru = params["params"][core]
        for g in range(3):
            block = np.asarray(gru["recurrent_kernel"][:, 6 * g:6 * (g + 1)])
            np.testing.assert_allclose(block.T @ block, np.eye(6), atol=1e-5)
        kernel = np.asarray(gru["kernel"])  # (8, 18): orthonormal rows
        np.testing.assert_allclose(kernel @ kernel.T, np.eye(8), atol=1e-5)
        assert not np.any(gru["bias"]) and not np.any(gru["recurrent_bias"])
    # The two cores' recurrent kernels are drawn apart.
    assert not np.allclose(params["params"]["grus_0"]["recurrent_kernel"],
                           params["params"]["grus_1"]["recurrent_kernel"])


@pytest.fixture(scope="module", params=["shared", "separate"])
def replayed(request):
    """A rollout of 8 CartPole envs with a 14-step time limit (terminations
    and truncations inside it), from a hidden state carried over from an
    earlier rollout, and its replay from that stored state."""
    env, env_params, spec = make_env("CartPole-v1", env_params=(("max_steps_in_episode", 14),))
    N, T = 8, 40
    vec_env = VecEnv(env, env_params, spec, N)
    net = make_network(spec, (16,), "tanh", recurrent="gru", recurrent_size=8,
                       recurrent_core=request.param)
    params = init_params(net, jax.random.PRNGKey(0), jnp.zeros((1, 1, 4)), jnp.zeros((1, 1), bool),
                         net.initial_hidden(1))
    policy = lambda p, obs, hidden: net.apply(p, obs, hidden, method=net.step)
    rollout = jax.jit(collect_rollout, static_argnums=(0, 2, 5))
    obs, env_state = vec_env.reset(jax.random.PRNGKey(1))
    carry = EnvCarry(env_state, obs, EpisodeStats.zeros(N), net.initial_hidden(N))
    carry, _ = rollout(policy, params, vec_env, carry, RolloutRandomness.draw(jax.random.PRNGKey(2), vec_env, 5), 5)
    stored = carry.hidden
    _, traj = rollout(policy, params, vec_env, carry, RolloutRandomness.draw(jax.random.PRNGKey(3), vec_env, T), T)
    seq = lambda x: jnp.swapaxes(x, 0, 1)
    replay = jax.jit(lambda h0, starts: net.apply(params, seq(traj.obs), seq(starts), h0))
    values, next_values = recurrent_critic_values(
        lambda p, h: net.apply(p, h, method=net.hidden_values),
        lambda p, h, o: net.apply(p, h, o, method=net.bootstrap_values), params, traj)
    return dict(net=net, params=params, traj=traj, stored=stored, replay=replay, values=values,
                next_values=next_values, N=N, T=T, cores=1 if request.param == "shared" else 2)


def test_replay_from_the_stored_state_reproduces_the_rollout(replayed):
    r = replayed
    traj, seq = r["traj"], lambda x: jnp.swapaxes(x, 0, 1)
    assert bool(traj.terminated.any()) and bool(traj.truncated.any())
    assert float(jnp.abs(r["stored"]).max()) > 0.01  # a state carried over, not zeros
    dist, values = r["replay"](r["stored"], episode_starts(traj.done))
    assert (dist.logits.shape, values.shape) == ((r["N"], r["T"], 2), (r["N"], r["T"]))
    np.testing.assert_allclose(dist.log_prob(seq(traj.actions)), seq(traj.log_probs), rtol=0, atol=1e-6)
    np.testing.assert_allclose(values, seq(r["values"]), rtol=0, atol=1e-6)
    # Replayed from zeros, or without the episode starts, it is another policy.
    wrong_start, _ = r["replay"](jnp.zeros_like(r["stored"]), episode_starts(traj.done))
    no_resets, _ = r["replay"](r["stored"], jnp.zeros_like(traj.done))
    for wrong in (wrong_start, no_resets):
        assert float(jnp.abs(wrong.log_prob(seq(traj.actions)) - seq(traj.log_probs)).max()) > 1e-4


def test_bootstrap_values_continue_the_episode(replayed):
    """Inside an episode the next value is V(s_{t+1}); at a truncation it is
    the value of the final observation one GRU step after h_t, never from
    a reset state."""
    r = replayed
    traj, net, params = r["traj"], r["net"], r["params"]
    values, next_values = np.asarray(r["values"]), np.asarray(r["next_values"])
    inside = ~np.asarray(traj.done[:-1])
    np.testing.assert_allclose(next_values[:-1][inside], values[1:][inside], rtol=0, atol=1e-6)
    t, n = map(int, np.argwhere(np.asarray(traj.truncated))[0])
    after, _ = net.apply(params, traj.final_obs[t], traj.hidden[t], method=net.step)
    expected = net.apply(params, after, method=net.hidden_values)
    np.testing.assert_allclose(next_values[t, n], expected[n], rtol=0, atol=1e-6)
    from_reset, _ = net.apply(params, traj.final_obs[t], jnp.zeros_like(traj.hidden[t]), method=net.step)
    assert abs(float(net.apply(params, from_reset, method=net.hidden_values)[n]) - next_values[t, n]) > 1e-5


def test_stage_shapes_and_a_wrong_hidden_state_fails_at_trace_time(replayed):
    r = replayed
    N, T, cores = r["N"], r["T"], r["cores"]
    traj = r["traj"]
    assert traj.hidden.shape == (T, N, cores, 8) and r["stored"].shape == (N, cores, 8)
    seq = lambda x: jnp.swapaxes(x, 0, 1)
    batch = Minibatch(obs=seq(traj.obs), actions=seq(traj.actions), log_probs=seq(traj.log_probs),
                      values=seq(r["values"]), advantages=seq(traj.rewards), returns=seq(traj.rewards),
                      starts=seq(episode_starts(traj.done)), hidden=r["stored"])
    apply = lambda p, *a: r["net"].apply(p, *a)
    static = LossStatic(norm_adv=True, clip_vloss=True, policy_objective="clip")
    hp = PPOConfig().hyperparams()
    loss, _ = jax.eval_shape(lambda b: ppo_loss(r["params"], apply, b, hp, static), batch)
    assert loss.shape == ()
    with pytest.raises(AssertionError):  # a flat (B,) log-prob in a sequence batch
        jax.eval_shape(lambda b: ppo_loss(r["params"], apply, b, hp, static),
                       batch.replace(log_probs=batch.log_probs.reshape(-1)))
    with pytest.raises((TypeError, ValueError)):  # a hidden state of another width
        jax.eval_shape(lambda b: ppo_loss(r["params"], apply, b, hp, static),
                       batch.replace(hidden=jnp.zeros((N, cores, 9))))


RECURRENT = PPOConfig(env_name="CartPole-v1", total_timesteps=4 * 16 * 4, num_envs=4, num_steps=16,
                      update_epochs=2, num_minibatches=2, hidden_sizes=(16,), recurrent="gru",
                      recurrent_size=16, recurrent_core="separate", normalize_obs=True,
                      normalize_reward=True)


def test_a_recurrent_run_over_seeds_and_swept_hyperparameters():
    """One compiled call: 2 seeds x 2 learning rates, observation and reward
    normalisation; each run's hidden state is its own, the metrics finite,
    and the first epoch's first minibatch replays the rollout (approx_kl
    small, not a replay from the wrong state)."""
    train = make_train(RECURRENT)
    hp = RECURRENT.hyperparams()
    hps = jax.tree.map(lambda v: jnp.stack([v, v]), hp).replace(lr=jnp.array([2.5e-4, 1e-3]))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    result = jax.jit(jax.vmap(train))(keys, hps)
    state, metrics = result.train_state, result.metrics
    assert state.env.hidden.shape == (2, 4, 2, 16)
    assert not np.allclose(state.env.hidden[0], state.env.hidden[1])
    assert np.all(np.asarray(metrics["nonfinite"]) == 0)
    for name in ("loss", "value_loss", "approx_kl", "entropy"):
        assert np.all(np.isfinite(metrics[name])), name
    assert float(np.max(metrics["approx_kl"])) < 0.05
    assert float(state.obs_norm.count[0]) == RECURRENT.total_timesteps


def test_a_recurrent_run_resumes_from_a_checkpoint_to_the_same_bits(tmp_path):
    from purejaxppo.checkpoint import train_with_checkpoints

    train = make_train(RECURRENT)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    whole = train_with_checkpoints(train, keys, tmp_path / "whole", every=2)

    class Stop(Exception):
        pass

    def stop(done, metrics):
        raise Stop

    with pytest.raises(Stop):
        train_with_checkpoints(train, keys, tmp_path / "cut", every=2, callback=stop)
    resumed = train_with_checkpoints(train, keys, tmp_path / "cut", every=2)
    assert resumed.resumed_from == 2
    for x, y in zip(jax.tree.leaves(whole.result), jax.tree.leaves(resumed.result)):
        x, y = (jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key) else v
                for v in (x, y))
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert whole.result.train_state.env.hidden.shape == (2, 4, 2, 16)


def test_evaluation_carries_and_resets_the_hidden_state():
    """A greedy recurrent policy's evaluation equals a Python loop over
    steps that carries the GRU state and zeroes it at each episode's end."""
    config = RECURRENT.replace(normalize_obs=False, normalize_reward=False,
                               env_params={"max_steps_in_episode": 6})
    net = make_network(make_env("CartPole-v1")[2], (16,), "tanh", recurrent="gru", recurrent_size=16,
                       recurrent_core="separate")
    params = make_train(config).random_params(jax.random.PRNGKey(4))
    returns = make_evaluate(config, num_episodes=3)(params, jax.random.PRNGKey(5))
    # The same steps by hand: evaluate's keys and its envs.
    env, env_params, spec = make_env("CartPole-v1", env_params=(("max_steps_in_episode", 6),))
    vec_env = VecEnv(env, env_params, spec, 3)
    reset_key, rng = jax.random.split(jax.random.PRNGKey(5))
    obs, env_state = vec_env.reset(reset_key)
    hidden, total, active = net.initial_hidden(3), np.zeros(3), np.ones(3, bool)
    for key in jax.random.split(rng, 6):
        _, env_key = jax.random.split(key)
        hidden, dist = net.apply(params, obs, hidden, method=net.step)
        out = vec_env.step(env_key, env_state, dist.mode())
        total += np.where(active, out.reward, 0.0)
        active &= ~np.asarray(out.terminated | out.truncated)
        hidden = jnp.where((out.terminated | out.truncated)[:, None, None], 0.0, hidden)
        obs, env_state = out.obs, out.env_state
    np.testing.assert_allclose(returns, total, rtol=1e-6)


def test_memory_estimate_counts_the_gru_and_refuses_an_oversized_one():
    from purejaxppo.memory import estimate_memory

    feedforward = estimate_memory(make_train(PPOConfig()))
    gru = estimate_memory(make_train(PPOConfig(recurrent="gru")))
    # 512 steps of a 128-unit state in the rollout, and the GRU's activations.
    assert gru.rollout - feedforward.rollout == 4 * 128 * 512
    assert gru.update > feedforward.update and gru.state > feedforward.state
    with pytest.raises(ValueError, match=r"with recurrent_size=30000 makes a 30000 x 90000 \(GRU\) weight"):
        estimate_memory(make_train(PPOConfig(recurrent="gru", recurrent_size=30000)))
