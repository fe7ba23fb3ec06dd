"""Every invalid config fails before tracing, naming the field, value and what is allowed."""

import re

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train


def test_defaults_are_the_classic_control_settings():
    c = PPOConfig()
    assert (c.num_envs, c.num_steps, c.update_epochs, c.num_minibatches) == (4, 128, 4, 4)
    assert (c.lr, c.anneal_lr, c.gamma, c.gae_lambda, c.clip_eps) == (2.5e-4, True, 0.99, 0.95, 0.2)
    assert (c.ent_coef, c.vf_coef, c.max_grad_norm) == (0.01, 0.5, 0.5)
    assert (c.hidden_sizes, c.activation) == ((64, 64), "tanh")
    assert c.clip_vloss and c.norm_adv
    assert (c.batch_size, c.minibatch_size, c.num_updates) == (512, 128, 976)


def test_replace_and_frozen():
    c = PPOConfig().replace(lr=1e-3, num_envs=8)
    assert c.lr == 1e-3 and c.batch_size == 8 * 128
    with pytest.raises(Exception):
        c.lr = 1.0
    with pytest.raises(TypeError, match="no field"):
        c.replace(learning_rate=1e-3)


def test_dict_and_list_spellings_are_normalised():
    c = PPOConfig(env_params={"max_steps_in_episode": 50}, hidden_sizes=[32])
    assert c.env_params == (("max_steps_in_episode", 50),) and c.hidden_sizes == (32,)
    hash(c)


def test_numpy_scalars_are_accepted_as_python_numbers():
    """A sweep's values often come out of NumPy arrays."""
    import numpy as np

    c = PPOConfig(num_envs=np.int64(8), lr=np.float32(1e-3), gamma=np.float64(0.95),
                  norm_adv=np.bool_(False), hidden_sizes=(np.int32(32), 16))
    assert (c.num_envs, c.gamma, c.norm_adv, c.hidden_sizes) == (8, 0.95, False, (32, 16))
    assert type(c.num_envs) is int and type(c.lr) is float and type(c.hidden_sizes[0]) is int
    assert c.lr == pytest.approx(1e-3)
    hash(c)
    with pytest.raises(TypeError, match="num_envs must be an int, got 8.0"):
        PPOConfig(num_envs=np.float32(8))


def test_one_sample_minibatches_with_advantage_normalisation():
    with pytest.raises(ValueError, match=r"minibatch_size=batch_size/num_minibatches=64/64=1 with norm_adv=True"):
        PPOConfig(num_envs=1, num_steps=64, num_minibatches=64)
    assert PPOConfig(num_envs=1, num_steps=64, num_minibatches=64, norm_adv=False).minibatch_size == 1
    assert PPOConfig(num_envs=1, num_steps=64, num_minibatches=32).minibatch_size == 2


def test_reference_kl_and_its_coefficient_go_together():
    with pytest.raises(ValueError, match=r"reference_kl=True with reference_kl_coef=0.0.*allowed: reference_kl_coef > 0"):
        PPOConfig(reference_kl=True)
    with pytest.raises(ValueError, match=r"reference_kl_coef=0.1 has no effect with reference_kl=False"):
        PPOConfig(reference_kl_coef=0.1)
    with pytest.raises(ValueError, match=r"reference_kl_coef must be finite and in \[0, inf\), got -1.0"):
        PPOConfig(reference_kl=True, reference_kl_coef=-1.0)
    assert PPOConfig(reference_kl=True, reference_kl_coef=0.1).hyperparams().reference_kl_coef == np.float32(0.1)


def test_kl_coefficient_without_the_kl_penalty_objective_is_refused():
    with pytest.raises(ValueError, match=r"kl_coef=0.5 has no effect with algorithm='ppo_clip'; "
                                         r"allowed: algorithm='ppo_penalty'"):
        PPOConfig(kl_coef=0.5)
    assert PPOConfig(kl_coef=0.5, algorithm="ppo_penalty").kl_coef == 0.5


def test_kl_penalty_needs_a_positive_coefficient():
    with pytest.raises(ValueError, match=r"algorithm='ppo_penalty' with kl_coef=0.0.*allowed: kl_coef > 0"):
        PPOConfig(algorithm="ppo_penalty")
    assert PPOConfig(algorithm="ppo_penalty", kl_coef=0.3).kl_coef == 0.3


@pytest.mark.parametrize("algorithm", ["a2c", "reinforce_baseline", "reinforce"])
def test_one_step_algorithms_need_one_epoch_of_one_minibatch(algorithm):
    with pytest.raises(ValueError, match=rf"algorithm='{algorithm}' with update_epochs=4, num_minibatches=4: "
                                         r".*allowed: update_epochs=1, num_minibatches=1"):
        PPOConfig(algorithm=algorithm)
    with pytest.raises(ValueError, match=rf"target_kl=0.01 has no effect with algorithm='{algorithm}'"):
        PPOConfig(algorithm=algorithm, update_epochs=1, num_minibatches=1, target_kl=0.01)
    assert PPOConfig(algorithm=algorithm, update_epochs=1, num_minibatches=1).algorithm == algorithm


def test_trpo_needs_a_trust_region_and_its_own_critic():
    with pytest.raises(ValueError, match=r"algorithm='trpo' with target_kl=0.0 .*allowed: target_kl > 0"):
        PPOConfig(algorithm="trpo")
    with pytest.raises(ValueError, match=r"target_kl must be finite and in \[0, inf\), got -0.01"):
        PPOConfig(algorithm="trpo", target_kl=-0.01)
    with pytest.raises(ValueError, match=r"algorithm='trpo' with recurrent_core='shared'.*"
                                         r"allowed: recurrent_core='separate'"):
        PPOConfig(algorithm="trpo", target_kl=0.01, recurrent="gru", num_minibatches=2)
    with pytest.raises(ValueError, match=r"algorithm='trpo' with reference_kl=True.*allowed: reference_kl=False"):
        PPOConfig(algorithm="trpo", target_kl=0.01, reference_kl=True, reference_kl_coef=0.1)
    config = PPOConfig(algorithm="trpo", target_kl=0.01)
    assert config.hyperparams().target_kl == np.float32(0.01)


def test_unknown_env_suggests_close_names():
    from purejaxppo.envs import check_env_name

    with pytest.raises(ValueError, match=r"env_name='CartPole-v2'.*Did you mean 'CartPole-v1'"):
        check_env_name("CartPole-v2")
    with pytest.raises(ValueError, match="Allowed: .*Pendulum-v1.*'module:function'"):
        make_train(PPOConfig(env_name="zzz"))  # before anything is traced
    with pytest.raises(ValueError, match="not of the form 'module:function'"):
        check_env_name("my envs:make")
    with pytest.raises(ValueError, match="env_name must name an env"):
        PPOConfig(env_name="")
    check_env_name("navix/Navix-Empty-5x5-v0")  # an adapter's: its suite says whether it exists


@pytest.mark.parametrize("field", ["total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_sizes(field, value):
    with pytest.raises(ValueError, match=rf"{field} must be a positive int, got {value}"):
        PPOConfig(**{field: value})


@pytest.mark.parametrize("field", ["num_envs", "total_timesteps"])
def test_sizes_must_be_ints(field):
    with pytest.raises(TypeError, match=rf"{field} must be an int, got 4.0"):
        PPOConfig(**{field: 4.0})
    with pytest.raises(TypeError, match=rf"{field} must be an int"):
        PPOConfig(**{field: True})


def test_batch_must_split_into_minibatches():
    with pytest.raises(ValueError, match=r"num_minibatches=3 must divide batch_size=num_envs\*num_steps=4\*128=512"):
        PPOConfig(num_minibatches=3)


def test_fewer_timesteps_than_one_update():
    with pytest.raises(ValueError, match=r"total_timesteps=100 is fewer than one update's batch_size=.*512"):
        PPOConfig(total_timesteps=100)


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("gamma", 1.5, "[0, 1]"),
        ("gamma", -0.1, "[0, 1]"),
        ("gae_lambda", 1.01, "[0, 1]"),
        ("clip_eps", 0.0, "(0, inf)"),
        ("lr", 0.0, "(0, inf)"),
        ("lr", float("nan"), "(0, inf)"),
        ("ent_coef", -0.01, "[0, inf)"),
        ("vf_coef", -1.0, "[0, inf)"),
        ("max_grad_norm", 0.0, "(0, inf)"),
        ("max_grad_norm", float("inf"), "(0, inf)"),
        ("kl_coef", -1.0, "[0, inf)"),
    ],
)
def test_coefficients_and_probabilities_out_of_range(field, value, allowed):
    with pytest.raises(ValueError, match=rf"{field} must be finite and in {re.escape(allowed)}, got {value}"):
        PPOConfig(**{field: value})


def test_numbers_must_be_numbers():
    with pytest.raises(TypeError, match="lr must be a float, got '3e-4'"):
        PPOConfig(lr="3e-4")
    with pytest.raises(TypeError, match="anneal_lr must be a bool, got 'yes'"):
        PPOConfig(anneal_lr="yes")


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"activation='sigmoidal' is unknown; allowed: tanh, relu"):
        PPOConfig(activation="sigmoidal")


def test_bad_network_sizes():
    with pytest.raises(ValueError, match="hidden_sizes must be a non-empty tuple of positive ints"):
        PPOConfig(hidden_sizes=())
    with pytest.raises(ValueError, match="hidden_sizes"):
        PPOConfig(hidden_sizes=(64, 0))
    with pytest.raises(TypeError, match="hidden_sizes must be a tuple of ints"):
        PPOConfig(hidden_sizes=(64.0,))


def test_unknown_algorithm():
    with pytest.raises(ValueError, match=r"algorithm='sac' is unknown; allowed: ppo_clip, ppo_penalty, "
                                         r"trpo, a2c, reinforce_baseline, reinforce"):
        PPOConfig(algorithm="sac")


def test_unknown_env_param_fails_in_make_train_before_tracing():
    config = PPOConfig(env_params={"max_step": 10})
    with pytest.raises(ValueError, match=r"env_params has unknown field\(s\) \['max_step'\].*max_steps_in_episode"):
        make_train(config)


@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_episode_limit_must_be_a_positive_int(steps):
    # 0 would give 1-step training episodes and an evaluation of 0 steps.
    with pytest.raises(ValueError, match=rf"max_steps_in_episode={steps} for 'CartPole-v1'; allowed: an int >= 1"):
        make_train(PPOConfig(env_params={"max_steps_in_episode": steps}))
    assert make_train(PPOConfig(env_params={"max_steps_in_episode": 1})).config.env_params == (("max_steps_in_episode", 1),)


def test_env_param_values_must_be_of_the_fields_kind():
    with pytest.raises(ValueError, match=r"env_params gravity='x' for 'CartPole-v1'; allowed: a finite number \(the default is 9.8"):
        make_train(PPOConfig(env_params={"gravity": "x"}))
    with pytest.raises(ValueError, match=r"env_params gravity=True .* allowed: a finite number"):
        make_train(PPOConfig(env_params={"gravity": True}))
    for bad in (float("nan"), float("inf"), -float("inf")):  # episodes that never end, NaN params
        with pytest.raises(ValueError, match=r"env_params gravity=-?(nan|inf) .* allowed: a finite number"):
            make_train(PPOConfig(env_params={"gravity": bad}))
    # An int field is an int32 inside the run: a value past it, or not whole, is refused.
    with pytest.raises(ValueError, match=r"max_steps_in_episode=2147483648 for 'CartPole-v1'; allowed: an int in .*\(int32\)"):
        make_train(PPOConfig(env_params={"max_steps_in_episode": 2**31}))
    assert make_train(PPOConfig(env_params={"max_steps_in_episode": 2**31 - 1})).config.env_params
    with pytest.raises(ValueError, match=r"env_params dense_reward=1 for 'PointRobot-misc'; allowed: a bool"):
        make_train(PPOConfig(env_name="PointRobot-misc", env_params={"dense_reward": 1}))
    assert make_train(PPOConfig(env_params={"gravity": 9})).config.env_params == (("gravity", 9),)


def test_budgets_beyond_the_int32_counters_are_refused():
    # The update and gradient-step counters are int32 in the compiled run.
    limit = (2**31 - 1) // 16 * 512  # 16 gradient steps per 512-step update
    assert PPOConfig(total_timesteps=limit).num_gradient_steps <= 2**31 - 1
    with pytest.raises(ValueError, match=r"total_timesteps=68719476736 makes 134,217,728 updates .* "
                                         r"allowed: total_timesteps <= 68,719,476,224"):
        PPOConfig(total_timesteps=limit + 512)
    with pytest.raises(ValueError, match=r"lr must be finite and in \(0, inf\), got an int of 401 digits"):
        PPOConfig(lr=10**400)


def test_make_train_rejects_non_config():
    with pytest.raises(TypeError, match="config must be a PPOConfig"):
        make_train({"env_name": "CartPole-v1"})


def test_hyperparams_are_a_traced_pytree():
    hp = PPOConfig(lr=1e-3).hyperparams()
    leaves = jax.tree.leaves(hp)
    assert len(leaves) == 12 and all(x.shape == () for x in leaves)
    assert float(hp.lr) == pytest.approx(1e-3)


def test_grad_chunk_size_must_divide_the_minibatch():
    big = dict(num_envs=2048, num_steps=128)  # minibatch 65,536
    with pytest.raises(ValueError, match=re.escape("grad_chunk_size=1000 must be None or a positive divisor of minibatch_size=65536; allowed: None or one of [64, 128, 256, 512, 1024, 2048, 4096, 8192]")):
        PPOConfig(**big, grad_chunk_size=1000)
    with pytest.raises(ValueError, match="grad_chunk_size=0"):
        PPOConfig(**big, grad_chunk_size=0)
    with pytest.raises(TypeError, match="grad_chunk_size must be an int or None, got 4096.0"):
        PPOConfig(**big, grad_chunk_size=4096.0)
    assert PPOConfig(**big, grad_chunk_size=4096).num_grad_chunks("gpu") == 16


def test_automatic_grad_chunks_split_large_cpu_minibatches_only():
    assert PPOConfig().num_grad_chunks("cpu") == 1  # 128 samples
    big = PPOConfig(num_envs=2048, num_steps=128)  # 65,536 samples
    assert big.num_grad_chunks("cpu") == 8
    assert big.num_grad_chunks("gpu") == big.num_grad_chunks("tpu") == 1
    assert PPOConfig(num_envs=2000, num_steps=128).num_grad_chunks("cpu") == 8  # chunks of 8,000
    # 2 * 8209 (a prime): no divisor in [1024, 8192], so one pass.
    assert PPOConfig(num_envs=2 * 8209, num_steps=4, num_minibatches=4, total_timesteps=10**6).num_grad_chunks("cpu") == 1


def test_hyperparams_validate_checks_a_sweeps_values():
    import jax.numpy as jnp

    hp = PPOConfig().hyperparams()
    assert hp.validate() is hp
    sweep = hp.replace(gamma=jnp.array([0.9, 1.5, 0.99]))
    with pytest.raises(ValueError, match=re.escape("hyperparams.gamma[1] = 1.5; allowed: finite values in [0, 1]")):
        sweep.validate()
    with pytest.raises(ValueError, match=re.escape("hyperparams.clip_eps = -0.2; allowed: finite values in (0, inf)")):
        hp.replace(clip_eps=jnp.float32(-0.2)).validate()
    with pytest.raises(ValueError, match=r"hyperparams.lr = nan"):
        hp.replace(lr=jnp.float32(jnp.nan)).validate()
    with pytest.raises(TypeError, match="needs concrete values"):
        jax.jit(lambda h: h.validate())(hp)


# ---------------------------------------------------------------- boundaries
# The intervals the PPOConfig docstring promises, at their edges: an inclusive
# end is accepted, an exclusive one refused, with the field, the value and the
# interval named.
@pytest.mark.parametrize("field, value", [
    ("gamma", 0.0), ("gamma", 1.0), ("gae_lambda", 0.0), ("gae_lambda", 1.0),
    ("ent_coef", 0.0), ("vf_coef", 0.0), ("obs_clip", 1e-6), ("reward_clip", 1e-6),
])
def test_inclusive_ends_of_the_allowed_intervals_are_accepted(field, value):
    assert getattr(PPOConfig(**{field: value}), field) == value


@pytest.mark.parametrize("field, value, allowed", [
    ("obs_clip", 0.0, "(0, inf)"), ("obs_clip", -1.0, "(0, inf)"),
    ("reward_clip", 0.0, "(0, inf)"), ("reward_clip", -1.0, "(0, inf)"),
    ("reward_clip", float("inf"), "(0, inf)"), ("gamma", 1.0000001, "[0, 1]"),
])
def test_clip_ranges_and_edges_are_refused(field, value, allowed):
    with pytest.raises(ValueError, match=rf"^{field} must be finite and in {re.escape(allowed)}, got {value}$"):
        PPOConfig(**{field: value})


@pytest.mark.parametrize("field", ["anneal_lr", "norm_adv", "clip_vloss", "reference_kl",
                                   "normalize_obs", "normalize_reward"])
def test_every_toggle_must_be_a_bool(field):
    with pytest.raises(TypeError, match=rf"^{field} must be a bool, got 1 \(int\)$"):
        PPOConfig(**{field: 1})


@pytest.mark.parametrize("field", ["lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef",
                                   "max_grad_norm", "kl_coef", "reference_kl_coef", "obs_clip",
                                   "reward_clip"])
def test_every_number_must_be_a_number_not_a_bool(field):
    # A bool is an int to Python; True silently meaning 1.0 is refused.
    with pytest.raises(TypeError, match=rf"^{field} must be a float, got True \(bool\)$"):
        PPOConfig(**{field: True})


@pytest.mark.parametrize("field, value", [("total_timesteps", 0), ("num_steps", -3),
                                          ("update_epochs", 0), ("num_minibatches", -1)])
def test_non_positive_size_message_is_exact(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be a positive int, got {value}$"):
        PPOConfig(**{field: value})


def test_structured_fields_are_type_checked():
    with pytest.raises(TypeError, match=r"^env_name must be a str, got 5$"):
        PPOConfig(env_name=5)
    with pytest.raises(TypeError, match=r"hidden_sizes must be a tuple of ints, got \(64, True\)"):
        PPOConfig(hidden_sizes=(64, True))
    for name in ("env_kwargs", "env_params"):
        for bad in ((("a", 1, 2),), (("a",),), ((1, 2),), "a=1"):
            with pytest.raises(TypeError, match=rf"{name} must be a dict or a tuple of \(name, value\) pairs"):
                PPOConfig(**{name: bad})


@pytest.mark.parametrize("bad", [(), (16, 0), (-1,), (16, True), (8.0,)])
def test_bad_cnn_channels(bad):
    with pytest.raises(ValueError, match=re.escape(f"cnn_channels must be a non-empty tuple of positive ints, got {bad!r}")):
        PPOConfig(cnn_channels=bad)


def test_numpy_and_list_cnn_channels_are_normalised():
    c = PPOConfig(cnn_channels=[np.int32(8), np.int64(4)])
    assert c.cnn_channels == (8, 4) and all(type(x) is int for x in c.cnn_channels)
    hash(c)


def test_unknown_torso():
    with pytest.raises(ValueError, match=r"^torso='resnet' is unknown; allowed: auto, mlp, cnn$"):
        PPOConfig(torso="resnet")
    assert PPOConfig(torso="cnn").torso == "cnn"


def test_minibatch_divisor_hint_lists_the_counts_up_to_64_that_work():
    with pytest.raises(ValueError, match=re.escape("divisors of 512 that work: [1, 2, 4, 8, 16, 32, 64]")):
        PPOConfig(num_minibatches=3)
    # A batch of 64 or fewer: every divisor, itself included (with norm_adv off,
    # one-sample minibatches are allowed).
    with pytest.raises(ValueError, match=re.escape("divisors of 48 that work: [1, 2, 3, 4, 6, 8, 12, 16, 24, 48]")):
        PPOConfig(num_envs=3, num_steps=16, num_minibatches=5, total_timesteps=480, norm_adv=False)
    assert PPOConfig(num_envs=3, num_steps=16, num_minibatches=48, total_timesteps=480, norm_adv=False).minibatch_size == 1
    # With norm_adv (the default) a minibatch needs 2 samples: 48 is not offered,
    # and every value offered is accepted.
    message = "divisors of 48 that work: [1, 2, 3, 4, 6, 8, 12, 16, 24]"
    with pytest.raises(ValueError, match=re.escape(message)):
        PPOConfig(num_envs=3, num_steps=16, num_minibatches=5, total_timesteps=480)
    for count in (1, 2, 3, 4, 6, 8, 12, 16, 24):
        assert PPOConfig(num_envs=3, num_steps=16, num_minibatches=count, total_timesteps=480).minibatch_size >= 2


def test_mapping_order_does_not_change_the_config():
    """Dicts are stored as sorted pairs, so configs compare (and key caches)
    by content, whatever order the mapping was written in."""
    a = PPOConfig(env_params={"max_steps_in_episode": 50, "gravity": 9.8})
    b = PPOConfig(env_params={"gravity": 9.8, "max_steps_in_episode": 50})
    assert a == b and hash(a) == hash(b)
    assert a.env_params == (("gravity", 9.8), ("max_steps_in_episode", 50))
    assert PPOConfig(env_kwargs={"b": 1, "a": 2}).env_kwargs == (("a", 2), ("b", 1))


def test_budget_edges():
    # Exactly one update's batch is a run of one update.
    assert PPOConfig(total_timesteps=512).num_updates == 1
    with pytest.raises(ValueError, match=r"total_timesteps=511 is fewer than one update's batch_size=num_envs\*num_steps=512; "
                                         r"allowed: total_timesteps >= 512$"):
        PPOConfig(total_timesteps=511)
    # 2**31 - 1 gradient steps fit the int32 counters; one more does not.
    one = dict(num_envs=1, num_steps=1, num_minibatches=1, update_epochs=1, norm_adv=False)
    assert PPOConfig(**one, total_timesteps=2**31 - 1).num_gradient_steps == 2**31 - 1
    with pytest.raises(ValueError, match=r"allowed: total_timesteps <= 2,147,483,647 "):
        PPOConfig(**one, total_timesteps=2**31)


def test_automatic_grad_chunks_accept_a_chunk_of_exactly_1024():
    # 1024 * 8209 (a prime): the largest divisor <= 8192 is 1024, which is
    # "at least 1,024 samples", so the minibatch is split in 8209 chunks.
    c = PPOConfig(num_envs=8209, num_steps=1024, num_minibatches=1, total_timesteps=8209 * 1024)
    assert c.num_grad_chunks("cpu") == 8209 and c.num_grad_chunks("gpu") == 1


def test_hyperparams_validate_names_the_first_bad_index():
    import jax.numpy as jnp

    hp = PPOConfig().hyperparams().replace(ent_coef=jnp.array([[0.0, -1.0], [0.1, -2.0]]))
    with pytest.raises(ValueError, match=re.escape("hyperparams.ent_coef[0, 1] = -1; allowed: finite values in [0, inf)")):
        hp.validate()


def test_recurrent_fields_are_checked():
    from purejaxppo.config import PPOConfig as C

    assert C(recurrent="gru").recurrent_size == 128
    with pytest.raises(ValueError, match=r"recurrent='lstm' is unknown; allowed: None or 'gru'"):
        C(recurrent="lstm")
    with pytest.raises(ValueError, match=r"recurrent_size=0; allowed: an int in \[1, 65536\]"):
        C(recurrent="gru", recurrent_size=0)
    with pytest.raises(ValueError, match="recurrent_core='both' is unknown; allowed: shared, separate"):
        C(recurrent="gru", recurrent_core="both")
    # Minibatches of whole env sequences: num_minibatches must divide num_envs.
    with pytest.raises(ValueError, match=r"num_minibatches=8 with recurrent='gru' must divide num_envs=4.*"
                                         r"allowed: one of \[1, 2, 4\]"):
        C(recurrent="gru", num_envs=4, num_minibatches=8)
    assert C(num_envs=4, num_minibatches=8).recurrent is None  # fine without a GRU
    with pytest.raises(ValueError, match="reference_kl=True with recurrent='gru'"):
        C(recurrent="gru", reference_kl=True, reference_kl_coef=0.1)
    with pytest.raises(ValueError, match="grad_chunk_size=64 with recurrent='gru' must be a multiple of "
                                         "num_steps=128"):
        C(recurrent="gru", grad_chunk_size=64)
    assert C(recurrent="gru", num_envs=8, grad_chunk_size=128).num_grad_chunks("cpu") == 2
    big = C(recurrent="gru", num_envs=1024, num_minibatches=4)  # no automatic chunks of sequences
    assert big.num_grad_chunks("cpu") == 1 and big.replace(recurrent=None).num_grad_chunks("cpu") > 1


@pytest.mark.parametrize("bad", [(), (0, 0), (-1,), (1.0,), (True,)])
def test_obs_features_must_be_distinct_indices(bad):
    with pytest.raises(ValueError, match="obs_features=.*; allowed: None"):
        PPOConfig(obs_features=bad)


def test_obs_features_are_checked_against_the_env_before_tracing():
    from purejaxppo import make_train

    assert PPOConfig(obs_features=[0, np.int64(2)]).obs_features == (0, 2)
    with pytest.raises(ValueError, match=r"observations have 4 features; allowed: indices in \[0, 3\]"):
        make_train(PPOConfig(obs_features=(0, 4)))
    with pytest.raises(ValueError, match=r"of shape \(10, 10, 4\); allowed: obs_features=None"):
        make_train(PPOConfig(env_name="Breakout-MinAtar", obs_features=(0,)))
