"""VecEnv: the pre-drawn-reset fast path is gymnax's own step, exactly."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.envs import VecEnv, make_env

pytestmark = pytest.mark.usefixtures("quick_compiles")  # each env compiles its own graphs


@pytest.mark.parametrize(
    "env_name", ["CartPole-v1", "Pendulum-v1", "Breakout-MinAtar", "Catch-bsuite", "FrozenLake-misc"]
)
def test_fast_path_equals_gymnax_step(env_name):
    env, params, spec = make_env(env_name, env_params=(("max_steps_in_episode", 3),))
    n = 5
    vec = VecEnv(env, params, spec, n)
    assert vec.presampled_resets
    _, state = vec.reset(jax.random.PRNGKey(0))
    resets_seen = 0
    for t in range(7):  # several auto-resets (time limit 3)
        keys = jax.random.split(jax.random.PRNGKey(100 + t), n)
        if spec.discrete:
            action = jax.random.randint(jax.random.PRNGKey(t), (n,), 0, spec.action_dim)
        else:
            action = jax.random.normal(jax.random.PRNGKey(t), (n, spec.action_dim)) * 3
        # gymnax's step splits each key into (step key, reset key).
        split = jax.vmap(jax.random.split)(keys)
        reset_obs, reset_state = vec.draw_resets(split[None, :, 1])
        fast = vec.step_with_keys(split[:, 0], state, action, (reset_obs[0], jax.tree.map(lambda x: x[0], reset_state)))
        ref = vec.step_with_keys(keys, state, action)  # env.step: gymnax's own auto-reset
        for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(ref)):
            if jnp.issubdtype(a.dtype, jnp.floating):  # the two paths compile apart: 1-ulp FMA differences
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(a, b)
        state = ref.env_state
        resets_seen += int(np.sum(np.asarray(ref.truncated | ref.terminated)))
    assert resets_seen >= n


@pytest.mark.parametrize("lead", [(2, 4), (3, 3)])
def test_draw_resets_are_each_keys_reset(lead):
    env, params, spec = make_env("CartPole-v1")
    vec = VecEnv(env, params, spec, lead[1])
    keys = jax.random.split(jax.random.PRNGKey(3), lead[0] * lead[1]).reshape(lead + (2,))
    obs, state = vec.draw_resets(keys)
    assert obs.shape == lead + spec.obs_shape
    for t in range(lead[0]):
        for i in range(lead[1]):
            ref_obs, ref_state = env.reset_env(keys[t, i], params)
            np.testing.assert_array_equal(obs[t, i], ref_obs)
            for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[t, i], state)), jax.tree.leaves(ref_state)):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "env_name", ["FourRooms-misc", "FrozenLake-misc", "GaussianBandit-misc", "Asterix-MinAtar"]
)
def test_vec_env_draws_what_gymnax_draws_from_the_same_keys(env_name):
    """`VecEnv` hands the env `purejaxppo.fast.straight_threefry.straight` keys; the env's
    random resets and transitions must be those of JAX's own threefry keys."""
    env, params, spec = make_env(env_name)
    n = 3
    vec = VecEnv(env, params, spec, n)
    actions = jax.vmap(env.action_space(params).sample)(jax.random.split(jax.random.PRNGKey(9), n))

    def ours(key):
        obs, state = vec.reset(key)
        step = vec.step(jax.random.fold_in(key, 1), state, actions.reshape((n, *spec.action_shape)))
        return obs, step.obs, step.final_obs, step.reward

    def gymnax_own(key):
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, n), params)
        keys = jax.random.split(jax.random.fold_in(key, 1), n)
        obs2, _, reward, _, _, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, actions, params)
        return tuple(map(vec.encode_obs, (obs, obs2, info["final_observation"]))) + (reward,)

    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        for a, b in zip(jax.jit(ours)(key), jax.jit(gymnax_own)(key)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)  # jitted apart: 1-ulp FMA differences


@pytest.mark.parametrize("typed", [False, True])
def test_reset_draws_compile_without_a_threefry_loop(typed):
    """JAX lowers threefry as a loop on CPU, which XLA compiles slowly;
    the straight keys `VecEnv` hands the env lower to none."""
    env, params, spec = make_env("CartPole-v1")
    vec = VecEnv(env, params, spec, 4)
    key = jax.random.key(0) if typed else jax.random.PRNGKey(0)
    keys = jax.random.split(key, 8).reshape((2, 4) + key.shape)
    lowered = jax.jit(vec.draw_resets).lower(keys).as_text()
    assert "stablehlo.while" not in lowered
    plain = jax.jit(lambda k: jax.vmap(env.reset_env, in_axes=(0, None))(k.reshape((8,) + key.shape), params))
    assert "stablehlo.while" in plain.lower(keys).as_text()  # what the test guards against


def test_envs_with_their_own_step_use_it():
    env, params, spec = make_env("DeepSea-bsuite")
    vec = VecEnv(env, params, spec, 2)
    assert not vec.presampled_resets and vec.draw_resets(jnp.zeros((3, 2, 2), jnp.uint32)) is None


def test_discrete_observations_are_one_hot():
    """FrozenLake's observation is a cell index: the network sees it one-hot."""
    env, params, spec = make_env("FrozenLake-misc")
    n_cells = int(env.observation_space(params).n)
    assert spec.obs_shape == (n_cells,) and spec.obs_num_categories == n_cells
    vec = VecEnv(env, params, spec, 3)
    obs, state = vec.reset(jax.random.PRNGKey(0))
    raw_obs, _ = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(0), 3), params)
    np.testing.assert_array_equal(np.argmax(obs, axis=-1), raw_obs)
    step = vec.step(jax.random.PRNGKey(1), state, jnp.array([0, 1, 2]))
    for o in (obs, step.obs, step.final_obs):
        assert o.dtype == jnp.float32 and o.shape == (3, n_cells)
        np.testing.assert_array_equal(o.sum(-1), 1.0)


@pytest.mark.parametrize("typed", [False, True])
def test_draw_resets_under_vmap_equal_each_seeds_draw(typed):
    # Under jax.vmap (seeds), each seed's reset states are its own draw's.
    env, params, spec = make_env("CartPole-v1")
    vec = VecEnv(env, params, spec, 4)
    seeds = jax.random.split(jax.random.key(5) if typed else jax.random.PRNGKey(5), 6)
    draw = lambda k: vec.draw_resets(jax.random.split(k, 8).reshape((2, 4) + k.shape))
    batched = jax.jit(jax.vmap(draw))(seeds)
    nested = jax.jit(jax.vmap(jax.vmap(draw)))(seeds.reshape((2, 3) + seeds.shape[1:]))
    for s in range(6):
        for a, b, c in zip(jax.tree.leaves(draw(seeds[s])), jax.tree.leaves(batched),
                           jax.tree.leaves(nested)):
            np.testing.assert_array_equal(b[s], a)
            np.testing.assert_array_equal(c[s // 3, s % 3], a)


_DEFERRED_IMPORTS_SCRIPT = r"""
import sys
import matplotlib
matplotlib.use("Agg")
pyplot_first = sys.argv[1] == "pyplot-first"
if pyplot_first:
    import matplotlib.pyplot  # imported before gymnax: used as it is
import jax
from purejaxppo.envs import make_env
from purejaxppo.fast.lazy_gymnax import GYMNAX_RENDER_MODULES, import_gymnax

env, params, _ = make_env("Catch-bsuite")  # imports gymnax
assert "gymnax" in sys.modules and import_gymnax() is sys.modules["gymnax"]
assert GYMNAX_RENDER_MODULES == ("matplotlib.pyplot", "seaborn")
# Not imported: seaborn (with scipy.stats and pandas), and pyplot unless it came first.
for name in ("seaborn", "scipy.stats", "pandas") + (() if pyplot_first else ("matplotlib.pyplot",)):
    assert name not in sys.modules, name
from gymnax.environments.bsuite import catch
from gymnax.environments.misc import pong
assert type(pong.sns).__name__ == "_DeferredModule"
if pyplot_first:
    assert catch.plt is sys.modules["matplotlib.pyplot"] and pong.plt is catch.plt
else:
    assert type(catch.plt).__name__ == "_DeferredModule"
# gymnax's renderers work: the first read imports the real module.
fig, ax = env.render(env.reset(jax.random.key(0), params)[1], params)
import matplotlib.pyplot as plt
assert type(plt).__name__ == "module" and type(fig) is plt.Figure
assert catch.plt.subplots is plt.subplots
palette = pong.sns.color_palette
import seaborn
assert sys.modules["seaborn"] is seaborn and type(seaborn).__name__ == "module"
assert palette is seaborn.color_palette and pong.sns.husl_palette is seaborn.husl_palette
print("OK")
"""


@pytest.mark.parametrize("order", ["plain", "pyplot-first"])
def test_gymnax_plotting_imports_are_deferred_until_used(order):
    """`import_gymnax` keeps seaborn and pyplot (~2 s of imports) out of a
    process until gymnax renders; one imported before gymnax is used as it is."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _DEFERRED_IMPORTS_SCRIPT, order],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


_ALL_BUT_MNIST = [name for name in __import__("gymnax").registered_envs if name != "MNISTBandit-bsuite"]


@pytest.mark.parametrize("env_name", _ALL_BUT_MNIST)  # MNIST's bandit downloads its data
def test_truncation_period_holds_in_every_rollout(env_name):
    """`VecEnv.truncation_period` (what lets the critic skip final
    observations) holds for every built-in env it is claimed for: with a
    time limit of 3, no env truncates twice within 3 steps, whatever the
    episode's phase at the rollout's start."""
    from purejaxppo.distributions import Categorical, DiagGaussian
    from purejaxppo.rollout import RolloutRandomness, EnvCarry, EpisodeStats, collect_rollout

    env, params, spec = make_env(env_name)
    if not hasattr(params, "max_steps_in_episode"):
        assert VecEnv(env, params, spec, 2).truncation_period() is None
        return
    limit = params.max_steps_in_episode
    if isinstance(limit, int):  # BernoulliBandit's is a float (100.0), which config refuses to set
        limit = 3
        env, params, spec = make_env(env_name, env_params=(("max_steps_in_episode", limit),))
    n, num_steps = 4, 13
    vec = VecEnv(env, params, spec, n)
    period = vec.truncation_period()
    if not vec.presampled_resets:  # DeepSea: its own step and auto-reset
        assert period is None
        return
    assert period == math.ceil(limit)
    if spec.discrete:
        policy = lambda p, o: Categorical(logits=jnp.zeros(o.shape[:-len(spec.obs_shape)] + (spec.action_dim,)))
    else:
        zeros = lambda o: jnp.zeros(o.shape[:-len(spec.obs_shape)] + (spec.action_dim,))
        policy = lambda p, o: DiagGaussian(mean=zeros(o), log_std=zeros(o))
    obs, state = jax.jit(vec.reset)(jax.random.PRNGKey(0))
    carry = EnvCarry(state, obs, EpisodeStats.zeros(n))
    rollout = jax.jit(lambda c, k: collect_rollout(policy, None, vec, c, RolloutRandomness.draw(k, vec, num_steps), num_steps))
    carry, _ = rollout(carry, jax.random.PRNGKey(1))  # start mid-episode
    _, traj = rollout(carry, jax.random.PRNGKey(2))
    truncated = np.asarray(traj.truncated)
    gaps = [np.diff(np.flatnonzero(truncated[:, i])) for i in range(n)]
    assert all((g >= period).all() for g in gaps), gaps
    if limit == 3 and not np.asarray(traj.terminated).any():
        # With no episode ended early, the period is tight: every third step.
        assert all((g == 3).all() and len(g) >= 3 for g in gaps), gaps


def test_truncation_period_only_where_it_is_known():
    from gymnax.environments.classic_control.cartpole import CartPole

    env, params, spec = make_env("CartPole-v1")
    assert VecEnv(env, params, spec, 2).truncation_period() == 500
    # gymnax compares time >= limit in float32: a float limit counts as its float32 value.
    assert VecEnv(env, params.replace(max_steps_in_episode=3.0000001), spec, 2).truncation_period() == 3
    assert VecEnv(env, params.replace(max_steps_in_episode=2.5), spec, 2).truncation_period() == 3
    assert VecEnv(env, params.replace(max_steps_in_episode=0), spec, 2).truncation_period() == 1
    for limit in (float("inf"), float("nan"), True, jnp.asarray(500)):
        assert VecEnv(env, params.replace(max_steps_in_episode=limit), spec, 2).truncation_period() is None

    class OwnTruncation(CartPole):  # another time limit than gymnax's
        def is_truncated(self, state, params):
            return state.time >= 2 * params.max_steps_in_episode

    class ElsewhereCartPole(CartPole):  # an env from outside gymnax may count time otherwise
        pass

    for cls in (OwnTruncation, ElsewhereCartPole):
        assert VecEnv(cls(), params, spec, 2).truncation_period() is None


def test_float_time_limit_truncates_every_period():
    """A float limit, as BernoulliBandit's: the period holds in a rollout."""
    from purejaxppo.distributions import Categorical
    from purejaxppo.rollout import RolloutRandomness, EnvCarry, EpisodeStats, collect_rollout

    env, params, spec = make_env("CartPole-v1")
    vec = VecEnv(env, params.replace(max_steps_in_episode=3.0), spec, 3)
    assert vec.truncation_period() == 3
    obs, state = vec.reset(jax.random.PRNGKey(0))
    policy = lambda p, o: Categorical(logits=jnp.zeros(o.shape[:-1] + (2,)))
    _, traj = collect_rollout(policy, None, vec, EnvCarry(state, obs, EpisodeStats.zeros(3)),
                              RolloutRandomness.draw(jax.random.PRNGKey(1), vec, 10), 10)
    truncated = np.asarray(traj.truncated)
    assert truncated.any()
    for i in range(3):
        assert (np.diff(np.flatnonzero(truncated[:, i])) >= 3).all()


def test_obs_features_keep_those_features_everywhere():
    """Reset, step and final observations all keep only the chosen features,
    in the order given: the full observations' columns."""
    env, params, full_spec = make_env("CartPole-v1", env_params=(("max_steps_in_episode", 3),))
    _, _, spec = make_env("CartPole-v1", env_params=(("max_steps_in_episode", 3),), obs_features=(2, 0))
    assert full_spec.obs_shape == (4,) and spec.obs_shape == (2,)
    full, part = VecEnv(env, params, full_spec, 3), VecEnv(env, params, spec, 3)
    key = jax.random.PRNGKey(0)
    obs_full, state = full.reset(key)
    obs_part, _ = part.reset(key)
    np.testing.assert_array_equal(obs_part, obs_full[:, [2, 0]])
    for t in range(3):
        action = jnp.array([t % 2] * 3)
        a, b = full.step(key, state, action), part.step(key, state, action)
        np.testing.assert_array_equal(b.obs, a.obs[:, [2, 0]])
        np.testing.assert_array_equal(b.final_obs, a.final_obs[:, [2, 0]])
        state = a.env_state
    assert bool(a.truncated.all())  # the last step ended the episodes: final_obs differs from obs
