"""Checkpoints: the whole train state saved and restored, and a run resumed
from one equal, bit for bit, to the same run uninterrupted."""

import os

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import METRIC_NAMES, PPOConfig, make_train
from purejaxppo.normalization import RunningMeanStd
from purejaxppo.checkpoint import (
    config_from_json,
    config_to_json,
    latest_step,
    restore_checkpoint,
    restore_policy,
    save_checkpoint,
    seal_checkpoint,
    train_with_checkpoints,
)

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode

# Observation and reward statistics and an annealed learning rate, so that a
# part of the state left out of a checkpoint changes what a resumed run does.
CONFIG = PPOConfig(
    env_name="CartPole-v1",
    total_timesteps=4 * 16 * 7,
    num_envs=4,
    num_steps=16,
    update_epochs=2,
    num_minibatches=2,
    hidden_sizes=(16,),
    normalize_obs=True,
    normalize_reward=True,
)


class Interrupted(Exception):
    pass


def stop_after(updates):
    def callback(done, metrics):
        if done >= updates:
            raise Interrupted
    return callback


def key_data(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for path, x, y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(key_data(x)), np.asarray(key_data(y))
        assert x.dtype == y.dtype, (jax.tree_util.keystr(path[0]), x.dtype, y.dtype)
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path[0]))


@pytest.fixture(scope="module")
def train():
    return make_train(CONFIG)


@pytest.fixture(scope="module")
def seeds_run(train, tmp_path_factory):
    """3 seeds (typed keys) in chunks of 3 updates, uninterrupted, every checkpoint kept."""
    keys = jax.random.split(jax.random.key(1), 3)
    directory = tmp_path_factory.mktemp("seeds")
    return keys, directory, train_with_checkpoints(train, keys, directory, every=3, max_to_keep=None)


def test_an_interrupted_run_resumes_to_the_same_bits(train, seeds_run, tmp_path):
    keys, _, whole = seeds_run
    with pytest.raises(Interrupted):
        train_with_checkpoints(train, keys, tmp_path, every=2, callback=stop_after(4))
    assert latest_step(tmp_path) == 4
    # Resumed with another chunk length: the results depend on neither.
    resumed = train_with_checkpoints(train, keys, tmp_path, every=3)
    assert resumed.resumed_from == 4
    assert_trees_equal(resumed.result, whole.result)
    assert set(resumed.result.metrics) == set(METRIC_NAMES)
    assert resumed.result.metrics["policy_loss"].shape == (3, CONFIG.num_updates)


def test_the_callback_gets_each_chunks_metrics(train, seeds_run, tmp_path):
    keys, _, whole = seeds_run
    got = []
    train_with_checkpoints(train, keys, tmp_path, every=3, callback=lambda done, m: got.append((done, m)))
    assert [done for done, _ in got] == [3, 6, 7]
    for name, value in whole.result.metrics.items():
        chunks = np.concatenate([metrics[name] for _, metrics in got], axis=-1)
        assert chunks.dtype == np.asarray(value).dtype, name
        np.testing.assert_array_equal(chunks, np.asarray(value), err_msg=name)


def test_every_part_of_the_state_is_saved(train, seeds_run):
    """The checkpoint after 3 updates, restored, continues exactly as the run did;
    and a state missing any one of its parts would not (checked per part)."""
    keys, directory, whole = seeds_run
    ckpt = restore_checkpoint(directory, CONFIG, step=3)
    assert ckpt.updates_done == 3 and int(ckpt.state.update_step[0]) == 3
    assert_trees_equal(ckpt.rng, keys)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(ckpt.metrics[name], np.asarray(whole.result.metrics[name])[:, :3])
    run = jax.jit(jax.vmap(lambda s: train.run_updates(s, CONFIG.num_updates - 3)))
    state, metrics = run(ckpt.state)
    assert_trees_equal(state, whole.result.train_state)
    np.testing.assert_array_equal(metrics["value_loss"], np.asarray(whole.result.metrics["value_loss"])[:, 3:])
    # Placed as the restored state is, so that every call below is one program.
    fresh = jax.device_put(jax.jit(jax.vmap(train.init))(keys), jax.devices()[0])
    for part in ("params", "opt_state", "env", "obs_norm", "reward_scaler", "rng", "update_step"):
        partial = ckpt.state.replace(**{part: getattr(fresh, part)})
        _, other = run(partial)
        assert any(not np.array_equal(other[k], metrics[k], equal_nan=True) for k in metrics), part


def test_the_run_is_the_train_function(train, tmp_path):
    """Without interruption, the chunked run computes what jax.jit(train) does."""
    key = jax.random.PRNGKey(0)
    run = train_with_checkpoints(train, key, tmp_path, every=CONFIG.num_updates)
    assert run.resumed_from is None and run.compile_s > 0 and run.run_s > 0
    whole = jax.jit(train)(key)
    for name in METRIC_NAMES:
        np.testing.assert_allclose(run.result.metrics[name], whole.metrics[name], rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    np.testing.assert_allclose(ravel_pytree(run.result.train_state.params)[0],
                               ravel_pytree(whole.train_state.params)[0], rtol=1e-5, atol=1e-7)
    # A finished run's directory gives the result back without training.
    again = train_with_checkpoints(train, key, tmp_path, every=3)
    assert again.resumed_from == CONFIG.num_updates and again.compile_s == 0
    assert_trees_equal(again.result, run.result)


def test_checkpoints_kept_and_restored_whole(train, seeds_run, tmp_path):
    keys, directory, whole = seeds_run
    assert sorted(int(p) for p in os.listdir(directory) if p.isdigit()) == [3, 6, 7]
    latest = restore_checkpoint(directory)  # the saved config, taken as it is
    assert latest.updates_done == CONFIG.num_updates and latest.config == CONFIG
    assert_trees_equal(latest.state, whole.result.train_state)
    np.testing.assert_array_equal(latest.hparams.lr, np.float32(CONFIG.lr))
    # max_to_keep: only the newest are kept.
    train_with_checkpoints(train, keys, tmp_path, every=3, max_to_keep=2)
    assert sorted(int(p) for p in os.listdir(tmp_path) if p.isdigit()) == [6, 7]



def test_save_and_restore_by_hand(train, tmp_path):
    """save_checkpoint of a state stepped by hand, restored onto a device of choice."""
    key = jax.random.PRNGKey(5)
    state = jax.jit(train.init)(key)
    state, metrics = jax.jit(lambda s: train.run_updates(s, 2))(state)
    assert save_checkpoint(tmp_path, CONFIG, state, metrics, CONFIG.hyperparams(), key) == 2
    device = jax.devices()[-1]
    ckpt = restore_checkpoint(tmp_path, CONFIG, sharding=jax.sharding.SingleDeviceSharding(device))
    assert_trees_equal(ckpt.state, state)
    assert ckpt.state.params["params"]["policy_head"]["kernel"].devices() == {device}
    with pytest.raises(FileNotFoundError, match="step 3"):
        restore_checkpoint(tmp_path, step=3)
    # One run per directory, in order: an earlier step, another config or key is refused unwritten.
    earlier, _ = jax.jit(lambda s: train.run_updates(s, 1))(jax.jit(train.init)(key))
    with pytest.raises(ValueError, match=r"step 1 is not after the latest checkpoint .*, step 2"):
        save_checkpoint(tmp_path, CONFIG, earlier, {"loss": np.zeros(1)}, CONFIG.hyperparams(), key)
    later, more = jax.jit(lambda s: train.run_updates(s, 1))(state)
    more = {name: np.concatenate([metrics[name], more[name]]) for name in metrics}
    with pytest.raises(ValueError, match=r"checkpoint .*/2 is of another config: lr=0.001"):
        save_checkpoint(tmp_path, CONFIG.replace(lr=1e-3), later, more, CONFIG.hyperparams(), key)
    with pytest.raises(ValueError, match=r"checkpoint .*/2 holds a run started from another key"):
        save_checkpoint(tmp_path, CONFIG, later, more, CONFIG.hyperparams(), jax.random.PRNGKey(6))
    assert latest_step(tmp_path) == 2 and sorted(os.listdir(tmp_path)) == ["2"]
    assert save_checkpoint(tmp_path, CONFIG, later, more, CONFIG.hyperparams(), key) == 3
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        restore_checkpoint(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
    assert latest_step(tmp_path / "absent") is None


def test_a_directory_of_another_run_is_refused(train, seeds_run):
    keys, directory, _ = seeds_run
    with pytest.raises(ValueError, match=r"another config: num_envs=8 \(saved: 4\)"):
        train_with_checkpoints(make_train(CONFIG.replace(num_envs=8)), keys, directory, every=3)
    with pytest.raises(ValueError, match="another config: .*lr=0.001"):
        restore_checkpoint(directory, CONFIG.replace(lr=1e-3))
    with pytest.raises(ValueError, match="started from another key"):
        train_with_checkpoints(train, jax.random.split(jax.random.key(2), 3), directory, every=3)
    hp = CONFIG.hyperparams().replace(ent_coef=jnp.float32(0.0))
    with pytest.raises(ValueError, match="hparams.ent_coef"):
        train_with_checkpoints(train, keys, directory, every=3, hparams=hp)


def test_bad_arguments_are_named(train, tmp_path):
    key = jax.random.PRNGKey(0)
    for every in (0, 2.5, True):
        with pytest.raises(ValueError, match="every must be an int >= 1"):
            train_with_checkpoints(train, key, tmp_path, every=every)
    with pytest.raises(ValueError, match="max_to_keep"):
        train_with_checkpoints(train, key, tmp_path, every=2, max_to_keep=0)
    with pytest.raises(TypeError, match="rng must be a PRNG key"):
        train_with_checkpoints(train, jnp.zeros(2, jnp.float32), tmp_path, every=2)
    hp = CONFIG.hyperparams().replace(lr=jnp.ones((2, 2), jnp.float32))
    with pytest.raises(ValueError, match="hparams leaves"):
        train_with_checkpoints(train, key, tmp_path, every=2, hparams=hp)
    assert latest_step(tmp_path) is None  # nothing was written


def test_config_json_round_trip():
    config = PPOConfig(env_name="Pendulum-v1", env_params={"max_steps_in_episode": np.int32(100)},
                       hidden_sizes=(32, 32), grad_chunk_size=None, normalize_obs=True)
    back = config_from_json(config_to_json(config))
    assert back == config and back.env_params == (("max_steps_in_episode", 100),)
    assert type(back.env_params[0][1]) is int


def test_what_a_checkpoint_cannot_hold_is_refused_when_saved(train, tmp_path):
    key = jax.random.PRNGKey(0)
    state = jax.jit(train.init)(key)
    with pytest.raises(ValueError, match="at least one update"):
        save_checkpoint(tmp_path, CONFIG, state, {}, CONFIG.hyperparams(), key)
    # A sweep from one key: its state is batched, the key is not.
    swept = jax.tree.map(lambda x: jnp.stack([x, x]), state)
    with pytest.raises(ValueError, match=r"batch axes \(2,\) are not the key's \(\).*broadcast_to"):
        save_checkpoint(tmp_path, CONFIG, swept, {"loss": np.zeros((2, 0))}, CONFIG.hyperparams(), key)
    assert latest_step(tmp_path) is None


def test_a_fine_tuning_run_keeps_its_reference_policy(tmp_path):
    """reference_kl: the reference parameters are part of the state, so a
    resumed fine-tuning run penalises the KL to the same policy."""
    config = CONFIG.replace(reference_kl=True, reference_kl_coef=0.5, total_timesteps=4 * 16 * 4)
    train = make_train(config)
    key = jax.random.PRNGKey(3)
    pretrained = train.random_params(jax.random.PRNGKey(9))
    stats = RunningMeanStd.create((4,)).replace(count=jnp.float32(100.0))
    whole = train_with_checkpoints(train, key, tmp_path / "whole", every=4, params=pretrained, obs_norm=stats)
    with pytest.raises(Interrupted):
        train_with_checkpoints(train, key, tmp_path / "cut", every=2, params=pretrained, obs_norm=stats,
                               callback=stop_after(2))
    other = train.random_params(jax.random.PRNGKey(10))
    with pytest.raises(ValueError, match="started from other params"):
        train_with_checkpoints(train, key, tmp_path / "cut", every=2, params=other)
    resumed = train_with_checkpoints(train, key, tmp_path / "cut", every=np.int64(2))  # no params needed now
    assert resumed.resumed_from == 2
    assert_trees_equal(resumed.result, whole.result)
    assert_trees_equal(restore_checkpoint(tmp_path / "cut").state.reference_params, pretrained)
    # Resumed without them, the run still records what it started from.
    again = train_with_checkpoints(train, key, tmp_path / "cut", every=2, params=pretrained, obs_norm=stats)
    assert again.resumed_from == config.num_updates
    assert "reference_kl" in resumed.result.metrics


def test_one_seeds_policy_is_read_back_to_start_another_run(train, seeds_run):
    """restore_policy: seed i's parameters and statistics, with no batch axis,
    at the latest or a given step; a seed out of range and a run that would
    drop the policy's observation normalisation are refused by name."""
    keys, directory, whole = seeds_run
    state = whole.result.train_state
    tune = CONFIG.replace(reference_kl=True, reference_kl_coef=0.1)
    for seed in range(3):
        policy = restore_policy(directory, tune, seed=seed)
        assert (policy.updates_done, policy.seed, policy.config) == (CONFIG.num_updates, seed, CONFIG)
        assert_trees_equal(policy.params, jax.tree.map(lambda x: x[seed], state.params))
        assert_trees_equal(policy.obs_norm, jax.tree.map(lambda x: x[seed], state.obs_norm))
        assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves((policy.params, policy.obs_norm)))
    earlier = restore_policy(directory, seed=np.int64(2), step=3)
    assert earlier.updates_done == 3
    assert_trees_equal(earlier.params, jax.tree.map(lambda x: x[2], restore_checkpoint(directory, step=3).state.params))
    # The policy starts a fine-tuning run as the reference (the run's own init checks the network).
    started = make_train(tune).init(jax.random.PRNGKey(0), None, policy.params, policy.obs_norm)
    assert_trees_equal(started.reference_params, policy.params)
    assert_trees_equal(started.obs_norm, policy.obs_norm)
    for bad in (3, -1, 1.0, True):
        with pytest.raises(ValueError, match=r"seed \(the command line's --init-seed\) must be an int in \[0, 3\)"):
            restore_policy(directory, seed=bad)
    with pytest.raises(ValueError, match="trained on normalised observations"):
        restore_policy(directory, CONFIG.replace(normalize_obs=False))
    # The parameters would fit a relu network, which computes another policy with them.
    with pytest.raises(ValueError, match=r"activation='tanh'; the run starting from it has activation='relu'"):
        restore_policy(directory, CONFIG.replace(activation="relu"))
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 4"):
        restore_policy(directory, step=4)


def _one_update_saved(train, directory, key):
    """A run of ``key`` one update in, saved to ``directory``; its state."""
    state, metrics = jax.jit(lambda s: train.run_updates(s, 1))(jax.jit(train.init)(key))
    assert save_checkpoint(directory, CONFIG, state, metrics, CONFIG.hyperparams(), key) == 1
    return state


@pytest.mark.parametrize("kind", ["rbg", "unsafe_rbg", "raw rbg"])
def test_a_run_from_an_rbg_key_is_restored_with_its_keys_impl(train, tmp_path, kind, default_prng_impl):
    """A run started from a non-default PRNG key (typed rbg or unsafe_rbg, or
    raw uint32[4] words under JAX's rbg default): the checkpoint gives back
    the starting key and the state's keys with their own implementation and
    data, and the restored key draws what the saved one does."""
    if kind == "raw rbg":
        default_prng_impl("rbg")
        key = jax.random.PRNGKey(4)
        assert key.shape == (4,) and key.dtype == jnp.uint32
    else:
        key = jax.random.key(4, impl=kind)
    state = _one_update_saved(train, tmp_path, key)
    ckpt = restore_checkpoint(tmp_path, CONFIG, rng=key)

    def same_key(restored, saved):
        assert restored.dtype == saved.dtype and restored.shape == saved.shape, (restored.dtype, saved.dtype)
        if jax.dtypes.issubdtype(saved.dtype, jax.dtypes.prng_key):
            assert str(jax.random.key_impl(restored)) == str(jax.random.key_impl(saved)) == kind
        np.testing.assert_array_equal(key_data(restored), key_data(saved))

    same_key(ckpt.rng, key)
    same_key(ckpt.state.rng, state.rng)
    assert not np.array_equal(key_data(state.rng), key_data(key))  # the run's key moved on
    keys = [(p, x) for p, x in jax.tree_util.tree_leaves_with_path(state)
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
    restored = dict(jax.tree_util.tree_leaves_with_path(ckpt.state))
    for path, saved in keys:
        same_key(restored[path], saved)
    assert_trees_equal(ckpt.state, state)
    # The restored key draws and splits as the saved one does (rbg and
    # unsafe_rbg keys of the same words split differently).
    draws = jax.jit(lambda k: (jax.random.bits(k, (8,), jnp.uint32), key_data(jax.random.split(k, 3)),
                               key_data(jax.random.fold_in(k, 7))))
    for a, b in zip(draws(ckpt.state.rng), draws(state.rng)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("saved_under, restored_under", [("rbg", "threefry2x32"), ("rbg", "unsafe_rbg")])
def test_a_raw_key_run_is_restored_only_under_its_default_prng(train, tmp_path, saved_under, restored_under,
                                                               default_prng_impl):
    """Raw key words mean JAX's default PRNG of the time, so the checkpoint
    records that default. Restored under another default, the same words are
    another PRNG's (rbg and unsafe_rbg both take 4 words: the run would go on
    silently with other draws) or no key at all (threefry takes 2): a
    `ValueError` names both defaults, before anything is read."""
    default_prng_impl(saved_under)
    key = jax.random.PRNGKey(4)
    state = _one_update_saved(train, tmp_path, key)
    default_prng_impl(restored_under)
    for kwargs in ({}, {"rng": key}):
        with pytest.raises(ValueError, match=f"jax_default_prng_impl='{saved_under}'.*now '{restored_under}'"):
            restore_checkpoint(tmp_path, CONFIG, **kwargs)
    default_prng_impl(saved_under)
    assert_trees_equal(restore_checkpoint(tmp_path, CONFIG, rng=key).state, state)


def test_a_checkpoint_written_before_the_default_prng_was_recorded_is_read(train, tmp_path):
    """A raw-key checkpoint whose record has no ``default_impl`` (written by an
    earlier version) restores, and resumes its own key, as before."""
    import json

    key = jax.random.PRNGKey(3)
    state = _one_update_saved(train, tmp_path, key)
    record_file = tmp_path / "1" / "run" / "metadata"
    record = json.loads(record_file.read_text())
    assert record["rng"].pop("default_impl") == jax.config.jax_default_prng_impl
    record_file.write_text(json.dumps(record))
    seal_checkpoint(tmp_path, 1)  # the edited record's checksums, as if written so
    assert_trees_equal(restore_checkpoint(tmp_path, CONFIG, rng=key).state, state)
    with pytest.raises(ValueError, match="another key"):
        restore_checkpoint(tmp_path, CONFIG, rng=jax.random.PRNGKey(4))
