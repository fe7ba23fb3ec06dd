"""Population-based training: exploit copies exactly the chosen member's
state, explore stays in range and is deterministic, a population without
selection is the plain vmapped sweep bit for bit. (A checkpointed population
resumes bit for bit: tests/test_sweep.py, through the pbt command.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.config import _RANGES, HYPERPARAM_FIELDS
from purejaxppo.pbt import (
    PBTConfig,
    exploit_and_explore,
    explore,
    initial_population,
    lineage,
    make_pbt,
    member_keys,
    population_of,
    select_sources,
)
from test_checkpoint import assert_trees_equal

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode

# Normalised observations and rewards, so the statistics a member copies matter.
CONFIG = PPOConfig(env_name="CartPole-v1", total_timesteps=4 * 16 * 10, num_envs=4, num_steps=16,
                   update_epochs=1, num_minibatches=2, hidden_sizes=(8,), normalize_obs=True,
                   normalize_reward=True)
P = 4


def population(pbt):
    return initial_population(CONFIG, pbt, jax.random.PRNGKey(11))


def test_select_sources_replaces_the_bottom_from_the_top():
    scores = jnp.array([5.0, -jnp.inf, 3.0, 9.0, 1.0, 7.0])  # ranks: 1 < 4 < 2 < 0 < 5 < 3
    for seed in range(20):
        source = np.asarray(select_sources(scores, jax.random.PRNGKey(seed), 2))
        assert source[[0, 2, 3, 5]].tolist() == [0, 2, 3, 5]  # kept
        assert set(source[[1, 4]]) <= {3, 5}  # the two lowest copy one of the two highest
    drawn = {tuple(np.asarray(select_sources(scores, jax.random.PRNGKey(s), 2))[[1, 4]]) for s in range(40)}
    assert len(drawn) == 4  # each of the two draws uniformly: all four pairs occur
    assert np.asarray(select_sources(scores, jax.random.PRNGKey(0), 0)).tolist() == list(range(6))
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(select_sources(scores, key, 3), select_sources(scores, key, 3))


def test_explore_stays_in_bounds_and_is_deterministic():
    pbt = PBTConfig(population=4, explore=("lr", "gamma", "ent_coef"), resample_prob=0.3,
                    bounds=(("lr", 1e-4, 1e-2), ("gamma", 0.9, 1.0)))
    n = 4000
    hp = population_of(CONFIG.hyperparams(), n).replace(
        lr=jnp.full((n,), 9e-3), gamma=jnp.full((n,), 0.99), ent_coef=jnp.zeros((n,)),
        vf_coef=jnp.full((n,), 0.5))
    key = jax.random.PRNGKey(0)
    out = explore(hp, key, pbt)
    jax.tree.map(np.testing.assert_array_equal, out, explore(hp, key, pbt))  # same key, same values
    assert not np.array_equal(out.lr, explore(hp, jax.random.PRNGKey(1), pbt).lr)
    for name in pbt.explore:
        values = np.asarray(getattr(out, name), np.float64)
        low, high = pbt.bounds_of(name)
        assert values.min() >= np.float32(low) and values.max() <= np.float32(high), name
    out.validate()  # every value valid for its field
    lr = np.asarray(out.lr)
    perturbed = np.isclose(lr, 9e-3 * 0.8) | np.isclose(lr, 1e-2)  # x1.2 clipped to the bound
    assert 0.6 < perturbed.mean() < 0.8  # the rest (resample_prob 0.3) drawn afresh
    fresh = lr[~perturbed]
    assert (fresh < 1e-3).mean() > 0.4  # log-uniform over [1e-4, 1e-2]: half below 1e-3
    np.testing.assert_array_equal(out.vf_coef, hp.vf_coef)  # not explored: unchanged
    # resample_prob 0: exactly x0.8 or x1.2 of each value, about half each; clipped at the bounds
    exact = explore(hp, key, PBTConfig(population=4, explore=("vf_coef", "gamma"), resample_prob=0.0))
    vf = np.asarray(exact.vf_coef)
    assert set(vf.tolist()) == {float(np.float32(0.5) * np.float32(0.8)), float(np.float32(0.5) * np.float32(1.2))}
    assert 0.45 < np.mean(vf < 0.5) < 0.55
    assert set(np.asarray(exact.gamma).tolist()) == {float(np.float32(0.9)), float(np.float32(0.9999))}


def test_exploit_copies_exactly_the_chosen_members_state():
    pbt = PBTConfig(population=P, ready_every=2, quantile=0.5)
    trainer = make_pbt(CONFIG, pbt)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0), population(pbt))
    # Every member's state made distinct (fresh ones share their Adam and
    # normalisation statistics), so a copy from the wrong member shows.
    by_member = lambda tree: jax.tree.map(
        lambda x: x + jnp.arange(1, P + 1, dtype=x.dtype).reshape((P,) + (1,) * (x.ndim - 1)), tree)
    members = state.members
    state = state.replace(members=members.replace(
        opt_state=by_member(members.opt_state), obs_norm=by_member(members.obs_norm),
        reward_scaler=by_member(members.reward_scaler)))
    state = state.replace(score_sum=jnp.array([1.0, 4.0, 2.0, 3.0]), score_count=jnp.ones(P))
    new, source, scores = jax.jit(lambda s: exploit_and_explore(s, pbt))(state)
    source = np.asarray(source)
    assert source[1] == 1 and source[3] == 3 and set(source[[0, 2]]) <= {1, 3}
    np.testing.assert_array_equal(scores, [1.0, 4.0, 2.0, 3.0])
    old, members = state.members, new.members
    for i, s in enumerate(source):
        take = lambda tree, j: jax.tree.map(lambda x: np.asarray(x[j]), tree)
        for part in ("params", "opt_state", "obs_norm"):
            assert_trees_equal(take(getattr(members, part), i), take(getattr(old, part), s))
        assert_trees_equal(take(members.reward_scaler.return_stats, i), take(old.reward_scaler.return_stats, s))
        # its own envs, returns so far, key and count
        assert_trees_equal(take(members.env, i), take(old.env, i))
        assert_trees_equal(take(members.reward_scaler.discounted_return, i),
                           take(old.reward_scaler.discounted_return, i))
        assert_trees_equal(take(members.rng, i), take(old.rng, i))
        for name in HYPERPARAM_FIELDS:
            new_v, old_v = float(getattr(new.hparams, name)[i]), float(getattr(state.hparams, name)[s])
            if i == s or name not in pbt.explore:
                assert new_v == old_v, (i, name)
    assert float(jnp.sum(new.score_count)) == 0.0


def test_without_selection_a_population_is_the_plain_sweep_bit_for_bit():
    # Without normalize_obs: XLA CPU compiles the observation statistics'
    # reductions of the two programs differently (equal to float rounding).
    config = CONFIG.replace(normalize_obs=False)
    pbt = PBTConfig(population=P, ready_every=3, quantile=0.0)
    hp = population(pbt)
    key = jax.random.PRNGKey(5)
    result = jax.jit(make_pbt(config, pbt))(key, hp)
    plain = jax.jit(jax.vmap(make_train(config)))(member_keys(key, P), hp)
    assert_trees_equal(result.train_state.members, plain.train_state)
    for name, values in plain.metrics.items():
        np.testing.assert_array_equal(result.metrics[name], values, err_msg=name)
    assert np.asarray(result.metrics["parent"]).tolist() == [[m] * CONFIG.num_updates for m in range(P)]
    np.testing.assert_array_equal(result.metrics["hp_lr"], np.repeat(np.asarray(hp.lr)[:, None], 10, 1))
    scored = np.isfinite(np.asarray(result.metrics["pbt_score"]))
    assert scored.any(axis=0).tolist() == [u % 3 == 2 and u < 9 for u in range(10)]  # at each ready point


def test_lineage_reads_the_parents_backwards():
    # after update 1 member 2 copies member 0; after update 3 member 1 copies member 2
    parent = np.array([[0, 0, 0, 0, 0], [1, 1, 1, 2, 1], [2, 0, 2, 2, 2]])
    assert lineage(parent, 1).tolist() == [0, 0, 2, 2, 1]
    assert lineage(parent, 0).tolist() == [0] * 5
    with pytest.raises(ValueError, match="member"):
        lineage(parent, 3)


@pytest.mark.parametrize("fields, match", [
    (dict(population=1), "population = 1; allowed: an int >= 2"),
    (dict(ready_every=0), "ready_every = 0"),
    (dict(population=2), "quantile = 0.25 of a population of 2 replaces no member; allowed: at least 1/2"),
    (dict(quantile=0.6), "quantile = 0.6; allowed: a number in \\[0, 0.5\\]"),
    (dict(explore=("lr", "num_envs")), "explore"),
    (dict(explore=("lr",), bounds=(("lr", 0.0, 1e-2),)), "bounds for lr = \\(0, 0.01\\); allowed"),
    (dict(explore=("gamma",), bounds=(("gamma", 0.9, 1.5),)), "gamma"),
    (dict(resample_prob=2.0), "resample_prob"),
    (dict(perturb=(0.8, -1.0)), "perturb"),
])
def test_bad_pbt_settings_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        PBTConfig(**fields)


def test_default_bounds_are_valid_values():
    pbt = PBTConfig(explore=HYPERPARAM_FIELDS)  # validates every field's default bounds
    for name in HYPERPARAM_FIELDS:
        low, high = pbt.bounds_of(name)
        lo, hi = _RANGES[name][:2]
        assert lo <= low <= high <= hi and math.isfinite(high)
    with pytest.raises(ValueError, match="ready_every = 10 leaves no ready point"):
        make_pbt(CONFIG, PBTConfig(ready_every=10))
