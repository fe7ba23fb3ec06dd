"""`make_train`: the whole PPO run as one pure, jittable, vmappable function.

Read top to bottom, one update is::

    rollout   T steps of N envs, actions from the current policy   (lax.scan)
    normalise observation and reward statistics (optional)       (running stats)
    critic    V on every observation and the final ones it needs   (one batched pass)
    GAE       advantages and value targets, cut at episode ends    (reverse lax.scan)
    update    K epochs x M shuffled minibatches of PPO gradient steps
    metrics   a fixed set of scalars for this update

and ``train`` scans that update ``num_updates`` times. The other rungs of
the policy-gradient ladder (``config.algorithm``, docs/algorithm.md) change
two stages: REINFORCE takes Monte Carlo returns in place of GAE (and
weighs out the steps whose episode does not end in the rollout), and TRPO
takes one natural-gradient step (`purejaxppo.trpo`) before the minibatch
steps, which then fit the critic alone. Nothing leaves the
device, nothing is recompiled, and the metrics are O(num_updates) in memory.
With ``config.recurrent`` the rollout also carries and stores the GRU state,
the critic reads the values from the stored states, and the update's
minibatches are whole env sequences replayed from the state each had at the
rollout's start (docs/recurrent.md).
The stages run under `jax.named_scope` names (``init``, ``draw``,
``rollout``, ``critic``, ``gae``, ``ppo_update``), which XLA's ``op_name``
metadata carries into profiles and HLO dumps
(``benchmarks/compile_profile.py`` groups kernels by them).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Callable, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import PartitionSpec as P

from purejaxppo.advantages import gae, monte_carlo_returns
from purejaxppo.config import PPOConfig
from purejaxppo.divergence import nonfinite_flags
from purejaxppo.envs import EnvSpec, VecEnv, make_env
from purejaxppo.fast.orthogonal_init import init_params
from purejaxppo.fast.random_draws import key_words, keys_from_words, random_words
from purejaxppo.fast.shuffle import FEISTEL_ROUNDS
from purejaxppo.fast.transposed_matmul import transposed_grad_pays
from purejaxppo.hyperparams import HyperParams
from purejaxppo.losses import LossStatic, Minibatch, approx_kl, sample_weights, union_mean_var
from purejaxppo.networks import ActorCritic, make_network
from purejaxppo.normalization import RewardScaler, RunningMeanStd
from purejaxppo.rollout import (
    EnvCarry,
    EpisodeStats,
    RolloutRandomness,
    collect_rollout,
    critic_values,
    episode_starts,
    recurrent_critic_values,
)
from purejaxppo.trpo import trpo_step
from purejaxppo.update import UpdateSettings, init_opt_state, make_optimizer, ppo_update

METRIC_NAMES = (
    "episode_return",
    "episode_length",
    "episodes_finished",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "clip_fraction_pos_adv",
    "clip_fraction_neg_adv",
    "explained_variance",
    "grad_norm",
    "learning_rate",
    "loss",
    "gradient_steps",
    "kl_coef",
    "nonfinite",
)

POLICY_OBJECTIVE = {"ppo_clip": "clip", "ppo_penalty": "kl_penalty", "trpo": "none", "a2c": "pg",
                    "reinforce_baseline": "pg", "reinforce": "pg"}
"""The minibatch loss's policy objective of each algorithm (`purejaxppo.losses`);
TRPO's minibatch steps fit the critic only."""
MONTE_CARLO = ("reinforce_baseline", "reinforce")
"""The algorithms that learn from Monte Carlo returns rather than GAE."""


@struct.dataclass
class TrainState:
    """Everything a run carries from one update to the next (a named pytree).

    Attributes:
        params: actor and critic parameters.
        opt_state: optax state (Adam moments, step count) over the raveled
            parameter vector (see `purejaxppo.update.init_opt_state`).
        env: env state, current observations, episode statistics.
        obs_norm: running mean and variance of the observations (updated
            only with ``config.normalize_obs``; the policy needs it to act).
        reward_scaler: running std of the discounted return (updated only
            with ``config.normalize_reward``).
        rng: the PRNG key for the following updates.
        update_step: updates done so far (int32).
        reference_params: the fixed reference policy's parameters (the ones
            the run started from) with ``config.reference_kl``; else None.
        kl_coef: PPO-Penalty's adaptive beta (float32) with
            ``algorithm="ppo_penalty"`` and ``target_kl`` > 0; else None.
    """

    params: Any
    opt_state: optax.OptState
    env: EnvCarry
    obs_norm: RunningMeanStd
    reward_scaler: RewardScaler
    rng: jax.Array
    update_step: jax.Array
    reference_params: Any = None
    kl_coef: jax.Array | None = None


@struct.dataclass
class TrainResult:
    """What ``train`` returns: the final state and per-update metrics.

    ``metrics[name]`` has shape (num_updates,), or (seeds, num_updates) under
    `jax.vmap`; see `METRIC_NAMES` and the README for what each one holds.
    """

    train_state: TrainState
    metrics: dict[str, jax.Array]


@struct.dataclass
class UpdateRandomness:
    """All the randomness of one update, from one `jax.random.bits` call.

    Attributes:
        next_key: the PRNG key of the following update.
        spare_key: a key no update uses (`init` draws the network from it).
        rollout: the rollout's action noise, env keys and reset states.
        shuffle_keys: uint32 (update_epochs, FEISTEL_ROUNDS), the round keys
            of each epoch's shuffle (`purejaxppo.fast.shuffle`).
    """

    next_key: jax.Array
    spare_key: jax.Array
    rollout: RolloutRandomness
    shuffle_keys: jax.Array


def explained_variance(
    predictions: jax.Array, targets: jax.Array, axis_name: str | None = None
) -> jax.Array:
    """1 - Var(targets - predictions) / Var(targets); NaN if Var(targets) == 0.

    With ``axis_name``, the variances are those of the union of the arrays
    along that mapped axis (`purejaxppo.losses.union_mean_var`).
    """
    var = jnp.var if axis_name is None else (lambda x: union_mean_var(x, axis_name)[1])

    var_targets = var(targets)
    return jnp.where(
        var_targets > 0,
        1.0 - var(targets - predictions) / jnp.where(var_targets > 0, var_targets, 1.0),
        jnp.nan,
    )


LogFn = Callable[[int, dict[str, np.ndarray]], None]
"""``log_fn(update_count, metrics)``: called on the host from inside the
compiled run every ``config.log_every`` updates and after the last, with the
updates done so far and that update's metrics (NumPy arrays of the runs'
batch shape: () for one key, (seeds,) under `jax.vmap`, (seeds, sweep)
under two)."""


def make_train(config: PPOConfig, env_devices: Any = None, log_fn: LogFn | None = None, *,
               env: Any = None, env_params: Any = None) -> Trainer:
    """Build the training function for ``config``.

    The env, network and static shapes are fixed here, in Python; nothing of
    it is traced until ``train`` is called.

    The env is the one ``config.env_name`` names (a gymnax id, an adapter's
    ``"<suite>/<id>"``, a ``"module:function"``), or ``env`` where given: any
    object with gymnax's API (docs/environments.md;
    `purejaxppo.envs.check_env` checks one), with ``env_params`` (default:
    its ``default_params``). ``config.env_name`` is then only its label.

    Returns:
        A `Trainer`, called as ``train(rng, hparams=None, params=None,
        obs_norm=None) -> TrainResult``: pure and jittable. ``rng`` is a PRNG key; ``hparams``
        a `HyperParams` pytree that defaults to ``config.hyperparams()``.
        Both may be batched with `jax.vmap` (seeds, hyperparameter sweeps)
        inside one compilation. ``params`` (e.g. a pretrained policy's
        ``result.train_state.params``) replace the random initialisation,
        and ``obs_norm`` the fresh observation statistics (pass the
        pretrained run's with ``normalize_obs``); with
        ``config.reference_kl`` the given ``params`` are also the fixed
        reference policy of the loss's KL term.
        Its fields ``init``, ``update`` and ``run_updates`` are the parts,
        for callers that step the loop themselves (`Trainer`).

    ``env_devices`` (an int D, or a sequence of D devices; default None, one
    device) splits each run's ``num_envs`` envs over D devices, data
    parallel (`jax.shard_map`): each device steps, rolls out and shuffles
    its N / D envs, and every gradient step averages the devices' gradients
    over the union of their minibatches (`purejaxppo.update.ppo_update`),
    so the parameters stay the same on every device. The maths of each
    update is that of one device's, with a minibatch drawn from each
    device's share rather than from the whole batch; running statistics and
    metrics are over all envs. The random streams differ from the
    one-device run's (each device draws its own), so results agree in
    distribution, not bit for bit (docs/devices.md). The
    state's env leaves are split over the devices, the rest replicated;
    ``train.init``, ``train.update`` and ``train.run_updates`` take and
    return such states. See `split_envs_over_devices`.

    ``log_fn`` (a `LogFn`) watches the run live: every ``config.log_every``
    updates and after the last, the compiled program hands that update's
    metrics to it on the host (a `jax.pure_callback`, one call for all runs
    of a vmapped batch; with envs over devices, from the first device only).
    The results are the same with or without it.
    """
    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}")
    if log_fn is not None and not callable(log_fn):
        raise TypeError(f"log_fn must be callable as log_fn(update_count, metrics), got {log_fn!r}")
    if log_fn is not None and config.log_every == 0:
        raise ValueError("log_fn is given but config.log_every=0 (no reports); allowed: "
                         "log_every >= 1, the updates between reports")
    if env_devices is not None:
        return split_envs_over_devices(config, env_devices, log_fn, env=env, env_params=env_params)
    return _build_train(config, log_fn=log_fn, env=env, env_params=env_params)


def _build_train(config: PPOConfig, axis_name: str | None = None, log_fn: LogFn | None = None,
                 env: Any = None, env_params: Any = None) -> Trainer:
    """`make_train`'s body. With ``axis_name``, the functions it returns run
    on one device's share of the envs (``config.num_envs`` of them) inside a
    `jax.shard_map` over that axis: the rollout's randomness is drawn per
    device, statistics, gradients and metrics are reduced across the axis."""
    given = dict(env=env, env_params=env_params)
    made_env, made_params, spec = make_env(config.env_name, config.env_kwargs, config.env_params,
                                           config.obs_features, env=env, params=env_params)
    vec_env = VecEnv(made_env, made_params, spec, config.num_envs)
    # On XLA CPU the kernels' gradients can multiply an explicit transpose,
    # a faster matmul there (`purejaxppo.networks.matmul`). The same values
    # and parameters either way; `train.network` is the plain one, which
    # forward-mode differentiation also goes through.
    plain_network = make_network(
        spec, config.hidden_sizes, config.activation, config.torso, config.cnn_channels,
        recurrent=config.recurrent, recurrent_size=config.recurrent_size,
        recurrent_core=config.recurrent_core,
    )
    recurrent = config.recurrent is not None
    network = plain_network.clone(transposed_grad=transposed_grad_pays())
    settings = UpdateSettings(
        update_epochs=config.update_epochs,
        num_minibatches=config.num_minibatches,
        loss=LossStatic(
            norm_adv=config.norm_adv,
            clip_vloss=config.clip_vloss,
            policy_objective=POLICY_OBJECTIVE[config.algorithm],
            critic=config.algorithm != "reinforce",
        ),
        # Resolved here, once: the chunking of each minibatch gradient (CPU only by default).
        num_grad_chunks=config.num_grad_chunks(jax.default_backend()),
        axis_name=axis_name,
        early_stop=config.algorithm == "ppo_clip" and config.target_kl > 0,
    )
    adaptive_kl = config.algorithm == "ppo_penalty" and config.target_kl > 0
    T, N = config.num_steps, config.num_envs

    def policy_fn(params, obs, *hidden):
        if recurrent:  # (hidden', distribution)
            return network.apply(params, obs, *hidden, method=network.step)
        return network.apply(params, obs, method=network.policy)

    def value_fn(params, obs):
        return network.apply(params, obs, method=network.value)

    def apply_fn(params, *inputs):  # (obs) or, recurrent, (obs, starts, hidden0)
        return network.apply(params, *inputs)

    def normalize_obs(obs_norm: RunningMeanStd, obs: jax.Array, hp: HyperParams) -> jax.Array:
        if not config.normalize_obs:
            return obs
        return obs_norm.normalize(obs, hp.obs_clip)

    def optimizer(hp: HyperParams):
        return make_optimizer(hp.lr, hp.max_grad_norm, config.anneal_lr, config.num_gradient_steps)

    def draw_randomness(key: jax.Array) -> UpdateRandomness:
        # One draw is one threefry kernel for XLA to compile on CPU (0.1-0.4 s
        # each), and `init` makes the same draw, whose kernels XLA can then
        # reuse (`purejaxppo.fast.random_draws`).
        w = key_words(key)
        n_rollout = RolloutRandomness.num_words(vec_env, T, key)
        n_shuffle = config.update_epochs * FEISTEL_ROUNDS
        words = random_words(key, 2 * w + n_rollout + n_shuffle)
        return UpdateRandomness(
            next_key=keys_from_words(words[:w], key),
            spare_key=keys_from_words(words[w : 2 * w], key),
            rollout=RolloutRandomness.from_words(words[2 * w : 2 * w + n_rollout], vec_env, T, key),
            shuffle_keys=words[2 * w + n_rollout :].reshape(config.update_epochs, FEISTEL_ROUNDS),
        )

    def draw_update_randomness(key: jax.Array) -> tuple[UpdateRandomness, jax.Array]:
        """An update's draws, and the key the network's initialisation takes.

        On one device: `draw_randomness` and its spare key. Under
        ``axis_name``: the next key and the network's key are drawn alike
        on every device (so the parameters start the same), and the rollout,
        the shuffles and the spare key from a key folded with the device's
        index (so each device's envs and minibatches differ)."""
        if axis_name is None:
            draws = draw_randomness(key)
            return draws, draws.spare_key
        w = key_words(key)
        words = random_words(key, 3 * w)
        next_key, net_key, device_base = (
            keys_from_words(words[i * w : (i + 1) * w], key) for i in range(3)
        )
        device_key = jax.random.fold_in(device_base, jax.lax.axis_index(axis_name))
        return draw_randomness(device_key).replace(next_key=next_key), net_key

    if recurrent:  # one sequence of one step
        dummy_inputs = (jnp.zeros((1, 1, *spec.obs_shape), jnp.float32), jnp.zeros((1, 1), bool),
                        plain_network.initial_hidden(1))
    else:
        dummy_inputs = (jnp.zeros((1, *spec.obs_shape), jnp.float32),)

    def random_params(key: jax.Array):
        return init_params(network, key, *dummy_inputs)

    def check_given(name: str, given: Any, like: Any) -> None:
        """``given`` must have the structure, shapes and dtypes of ``like``."""
        shapes = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype).name), tree)
        try:
            same = jax.tree.structure(given) == jax.tree.structure(like) and shapes(given) == shapes(like)
        except (AttributeError, TypeError):
            same = False
        if not same:
            raise ValueError(
                f"{name} do not fit this config's network for {config.env_name}: given "
                f"{jax.tree.map(lambda x: getattr(x, 'shape', x), given)}, expected "
                f"{jax.tree.map(lambda x: x.shape, like)}"
            )

    @jax.named_scope("init")
    def init(
        rng: jax.Array,
        hp: HyperParams | None = None,
        params: Any = None,
        obs_norm: RunningMeanStd | None = None,
    ) -> TrainState:
        hp = config.hyperparams() if hp is None else hp
        if config.reference_kl and params is None:
            raise ValueError(
                "reference_kl=True fine-tunes a given policy and keeps it as the reference: "
                "pass its parameters, train(rng, params=...) (or train.init(rng, params=...))"
            )
        if config.reference_kl and config.normalize_obs and obs_norm is None:
            raise ValueError(
                "reference_kl=True with normalize_obs=True: the reference policy acts on "
                "observations normalised by its own run's statistics; pass them, "
                "train(rng, params=..., obs_norm=...)"
            )
        # The same draw as an update's. The envs start in the reset states it
        # holds for the first step (gymnax's reset, as `VecEnv.reset` makes),
        # the network comes from its spare key.
        draws, net_key = draw_update_randomness(rng)
        if draws.rollout.resets is not None:
            obs, env_state = jax.tree.map(lambda x: x[0], draws.rollout.resets)
        else:
            if axis_name is None:
                net_key, env_key = jax.random.split(draws.spare_key)
            else:
                env_key = draws.spare_key  # this device's
            obs, env_state = vec_env.reset(env_key)
        if params is None:
            params = random_params(net_key)
        else:
            check_given("params", params, jax.eval_shape(random_params, net_key))
        if obs_norm is None:
            obs_norm = RunningMeanStd.create(spec.obs_shape)
        else:
            check_given("obs_norm", obs_norm, RunningMeanStd.create(spec.obs_shape))
        tx, _ = optimizer(hp)
        return TrainState(
            params=params,
            opt_state=init_opt_state(tx, params),
            env=EnvCarry(env_state=env_state, obs=obs, episode_stats=EpisodeStats.zeros(N),
                         hidden=plain_network.initial_hidden(N) if recurrent else None),
            obs_norm=obs_norm,
            reward_scaler=RewardScaler.create(N),
            rng=draws.next_key,
            update_step=jnp.zeros((), jnp.int32),
            reference_params=params if config.reference_kl else None,
            kl_coef=jnp.asarray(hp.kl_coef, jnp.float32) if adaptive_kl else None,
        )

    def update(state: TrainState, hp: HyperParams | None = None):
        hp = config.hyperparams() if hp is None else hp
        tx, lr_schedule = optimizer(hp)
        with jax.named_scope("draw"):
            draws, _ = draw_update_randomness(state.rng)

        # 1. Rollout: T steps of N envs with the current policy, acting on
        #    observations normalised by the statistics frozen for this rollout.
        normalize = lambda obs: normalize_obs(state.obs_norm, obs, hp)
        with jax.named_scope("rollout"):
            env_carry, traj = collect_rollout(
                lambda params, obs, *hidden: policy_fn(params, normalize(obs), *hidden),
                state.params, vec_env, state.env, draws.rollout, T,
            )
        obs_norm, reward_scaler = state.obs_norm, state.reward_scaler
        if config.normalize_obs and not config.reference_kl:
            # Raw obs; used from the next rollout. With a reference policy the
            # given statistics stay fixed, so that pi_ref stays the policy given.
            obs_norm = obs_norm.update(traj.obs, axis_name)
        if config.normalize_obs:
            traj = traj.replace(obs=normalize(traj.obs), final_obs=normalize(traj.final_obs))
        rewards = traj.rewards
        if config.normalize_reward:
            reward_scaler = reward_scaler.update(traj.rewards, traj.done, hp.gamma, axis_name)
            rewards = reward_scaler.scale(traj.rewards, hp.reward_clip)

        # 2. Critic on s_t and on the final observations it needs, in one pass.
        with jax.named_scope("critic"):
            if config.algorithm == "reinforce":  # no critic
                values = next_values = jnp.zeros_like(rewards)
            elif recurrent:  # from the hidden states the rollout stored
                values, next_values = recurrent_critic_values(
                    lambda params, *a: network.apply(params, *a, method=network.hidden_values),
                    lambda params, *a: network.apply(params, *a, method=network.bootstrap_values),
                    state.params, traj,
                )
            else:
                values, next_values = critic_values(
                    value_fn, state.params, traj, vec_env.truncation_period()
                )

        # 3. GAE, cut at terminations and truncations; truncations bootstrap.
        #    REINFORCE: Monte Carlo returns, of the episodes that end here.
        weights = None
        with jax.named_scope("gae"):
            if config.algorithm in MONTE_CARLO:
                critic = config.algorithm == "reinforce_baseline"
                returns, complete = monte_carlo_returns(
                    rewards, traj.terminated, traj.done, hp.gamma,
                    values if critic else None, next_values if critic else None,
                )
                advantages = returns - values
                weights = sample_weights(complete, axis_name)
            else:
                advantages, returns = gae(
                    rewards, values, next_values, traj.terminated, traj.done,
                    hp.gamma, hp.gae_lambda,
                )

        # 4. K epochs of shuffled minibatch updates on the flattened batch,
        #    or, recurrent, on the N env sequences (N, T), each replayed from
        #    the hidden state it had at the rollout's start.
        if recurrent:
            samples = lambda x: jnp.swapaxes(x, 0, 1)
        else:
            samples = lambda x: x.reshape((T * N,) + x.shape[2:])
        batch = Minibatch(
            obs=samples(traj.obs),
            actions=samples(traj.actions),
            log_probs=samples(traj.log_probs),
            values=samples(values),
            advantages=samples(advantages),
            returns=samples(returns),
            weights=None if weights is None else samples(weights),
        )
        if recurrent:
            batch = batch.replace(starts=samples(episode_starts(traj.done)), hidden=state.env.hidden)
            chex.assert_tree_shape_prefix(batch.replace(hidden=None), (N, T))
        else:
            chex.assert_tree_shape_prefix(batch, (config.batch_size,))
        lr = lr_schedule(state.update_step * config.update_epochs * config.num_minibatches)
        kl_coef = hp.kl_coef if state.kl_coef is None else state.kl_coef
        params = state.params
        if config.algorithm == "trpo":  # the policy's natural-gradient step
            with jax.named_scope("trpo_step"):
                params, policy_diagnostics = trpo_step(
                    params, apply_fn, batch, hp, config.norm_adv, axis_name)
        with jax.named_scope("ppo_update"):
            params, opt_state, diagnostics = ppo_update(
                params, state.opt_state, tx, apply_fn, batch, draws.shuffle_keys,
                hp.replace(kl_coef=kl_coef), settings, reference_params=state.reference_params,
            )
        if config.algorithm == "trpo":  # the minibatch steps fitted the critic alone
            diagnostics.update(policy_diagnostics)
        next_kl_coef = state.kl_coef
        if adaptive_kl:  # beta / 2 below target / 1.5, beta * 2 above 1.5 * target
            with jax.named_scope("adapt_kl"):
                dist, _ = apply_fn(params, *batch.inputs())
                kl = approx_kl(dist.log_prob(batch.actions) - batch.log_probs)
                if axis_name is not None:
                    kl = jax.lax.pmean(kl, axis_name)
                next_kl_coef = jnp.where(kl < hp.target_kl / 1.5, kl_coef / 2,
                                         jnp.where(kl > hp.target_kl * 1.5, kl_coef * 2, kl_coef))

        # 5. Metrics of this update (scalars).
        episode_stats = env_carry.episode_stats
        episodes_finished = jnp.sum(traj.done).astype(jnp.int32)
        if axis_name is not None:
            episodes_finished = jax.lax.psum(episodes_finished, axis_name)
        metrics = {
            **episode_stats.summary(axis_name),
            "episodes_finished": episodes_finished,
            **diagnostics,
            "explained_variance": explained_variance(values, returns, axis_name),
            "learning_rate": jnp.asarray(lr, jnp.float32),
            "kl_coef": jnp.asarray(kl_coef, jnp.float32),
            # 0, or which of loss, gradient norm and parameters went NaN/Inf.
            "nonfinite": nonfinite_flags(diagnostics["loss"], diagnostics["grad_norm"], params),
        }
        new_state = TrainState(
            params=params,
            opt_state=opt_state,
            env=env_carry,
            obs_norm=obs_norm,
            reward_scaler=reward_scaler,
            rng=draws.next_key,
            update_step=state.update_step + 1,
            reference_params=state.reference_params,
            kl_coef=next_kl_coef,
        )
        return new_state, metrics

    def run_updates(state: TrainState, num_updates: int, hp: HyperParams | None = None,
                    first_update: jax.Array | int = 0):
        """``num_updates`` (a Python int) updates from ``state`` in one
        `lax.scan`: ``(state, metrics)``, each metric of shape (num_updates,).
        ``first_update``: the updates done before (for ``log_fn``'s count;
        traced, so each chunk of a long run is the same program)."""
        hp = config.hyperparams() if hp is None else hp

        def step(state, i):
            state, metrics = update(state, hp)
            if log_fn is not None:
                # The host's answer (0) flows into the state, so the call stays.
                token = report(first_update + i + 1, metrics)
                state = state.replace(update_step=state.update_step + token)
            return state, metrics

        return jax.lax.scan(step, state, jnp.arange(num_updates, dtype=jnp.int32))

    def report(update_count: jax.Array, metrics: dict[str, jax.Array]) -> jax.Array:
        """Hand ``metrics`` to ``log_fn`` on the host every ``log_every``
        updates and after the last; returns 0 (int32)."""
        due = (update_count % config.log_every == 0) | (update_count == config.num_updates)
        if axis_name is not None:  # one report per update, from the first device
            due = due & (jax.lax.axis_index(axis_name) == 0)
        answer = jax.ShapeDtypeStruct((), jnp.int32)
        call = lambda: jax.pure_callback(_host_report(log_fn), answer, update_count, metrics,
                                         vmap_method="broadcast_all")
        return jax.lax.cond(due, call, lambda: jnp.zeros((), jnp.int32))

    return Trainer(config=config, env_spec=spec, network=plain_network, init=init, update=update,
                   run_updates=run_updates, random_params=random_params, **given)


def _host_report(log_fn: Callable[[int, dict[str, np.ndarray]], None]):
    """The host side of a report: under `jax.vmap` one call carries every
    run's values (``vmap_method="broadcast_all"``), each metric of the
    batch's shape; a run of one key gets 0-d arrays."""
    def host(update_count, metrics):
        update_count = np.asarray(update_count)
        log_fn(int(update_count.flat[0]), {name: np.asarray(value) for name, value in metrics.items()})
        return np.zeros(update_count.shape, np.int32)
    return host


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What `make_train` returns: the training function and its parts.

    Call it as ``train(rng, hparams=None, params=None, obs_norm=None) ->
    TrainResult``: `init` then ``config.num_updates`` updates in one
    `run_updates`. Pure and jittable; ``rng`` and ``hparams`` may be batched
    with `jax.vmap` (seeds, hyperparameter sweeps) inside one compilation.

    Attributes:
        config: the `PPOConfig` it was built for.
        env_spec: the env's spaces (`purejaxppo.envs.EnvSpec`).
        network: the `ActorCritic` (``network.apply(params, obs)``), or
            the `RecurrentActorCritic` with ``config.recurrent``.
        init: ``init(rng, hparams=None, params=None, obs_norm=None) ->
            TrainState``, the state before the first update.
        update: ``update(state, hparams=None) -> (state, metrics)``, one
            update (rollout, GAE, K epochs of minibatch steps).
        run_updates: ``run_updates(state, num_updates, hparams=None,
            first_update=0) -> (state, metrics)``, ``num_updates`` (a Python
            int) updates in one `lax.scan`, each metric of shape
            (num_updates,); ``first_update`` counts the updates before
            (what ``log_fn`` is told).
        random_params: ``random_params(key)``, the network's initialisation.
        env_devices: the devices one seed's envs are split over, or None.
        env, env_params: the env object and params given to `make_train`,
            or None where ``config.env_name`` names the env.
    """

    config: PPOConfig
    env_spec: EnvSpec
    network: ActorCritic
    init: Callable[..., TrainState]
    update: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    run_updates: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    random_params: Callable[[jax.Array], Any]
    env_devices: tuple | None = None
    env: Any = None
    env_params: Any = None
    hparams_ndim: ClassVar[int] = 0  # the axes of one run's own hyperparameters

    def default_hparams(self) -> HyperParams:
        """The hyperparameters ``train`` runs with when given none: ``config``'s."""
        return self.config.hyperparams()

    def __call__(
        self,
        rng: jax.Array,
        hparams: HyperParams | None = None,
        params: Any = None,
        obs_norm: RunningMeanStd | None = None,
    ) -> TrainResult:
        hp = self.config.hyperparams() if hparams is None else hparams
        state, metrics = self.run_updates(self.init(rng, hp, params, obs_norm), self.config.num_updates, hp, 0)
        return TrainResult(train_state=state, metrics=metrics)


ENV_AXIS = "envs"


def _resolve_env_devices(env_devices: Any) -> list:
    """``env_devices`` as a list of devices: an int D (a Python or NumPy
    integer) takes the first D of `jax.devices()`; a sequence or array of
    devices (e.g. a `Mesh`'s ``devices``) is taken as given."""
    bad = TypeError(
        f"env_devices must be None, an int >= 1 or a sequence of devices, got {env_devices!r}"
    )
    if isinstance(env_devices, (bool, np.bool_, str, bytes)):
        raise bad
    try:
        count = operator.index(env_devices)
    except TypeError:
        count = None
    if count is not None:
        available = jax.devices()
        if not 1 <= count <= len(available):
            hint = (
                "; on a CPU, ask for more devices before JAX starts "
                "(purejaxppo.devices.set_cpu_devices, or JAX_NUM_CPU_DEVICES)"
                if available[0].platform == "cpu" else ""
            )
            raise ValueError(
                f"env_devices={count}: allowed 1 to {len(available)}, the devices "
                f"JAX sees ({available[0].platform}){hint}"
            )
        return list(available[:count])
    if not hasattr(env_devices, "__iter__"):
        raise bad
    devices = list(np.asarray(list(env_devices) if not hasattr(env_devices, "shape") else env_devices,
                              dtype=object).ravel())
    if not devices or len(set(devices)) != len(devices):
        raise ValueError(f"env_devices must be distinct devices, at least one; got {env_devices!r}")
    return devices


def split_envs_over_devices(config: PPOConfig, env_devices: Any, log_fn: LogFn | None = None, *,
                            env: Any = None, env_params: Any = None) -> Trainer:
    """`make_train` (``config``) with each run's envs split over devices.

    ``env_devices``: an int D (the first D of `jax.devices()`) or a sequence
    of D devices; ``config.num_envs`` must be a multiple of D, and each
    device's share of a minibatch, ``minibatch_size / D``, a whole number
    of samples (at least 2 with ``norm_adv``; a multiple of
    ``grad_chunk_size`` if that is set). Returns ``train`` with the
    attributes `make_train` documents; ``train.env_devices`` lists the
    devices.

    Each device runs `make_train`'s functions for ``num_envs / D`` envs
    under a `jax.shard_map` over the axis `ENV_AXIS`: the same number of
    updates, epochs and minibatches (so the same learning-rate schedule),
    each minibatch ``minibatch_size / D`` samples of its own rollout, and per
    gradient step one `jax.lax.pmean` of the gradient and diagnostics (one
    raveled vector) and, with ``norm_adv``, one `jax.lax.all_gather` of each
    share's advantage mean and spread. A checkpoint records D
    (`purejaxppo.checkpoint`). Everything in a `TrainState`
    but its env leaves (``state.env``, ``state.reward_scaler.discounted_return``,
    split along their env axis) is the same on every device.
    """
    devices = _resolve_env_devices(env_devices)
    d = len(devices)
    problem = None
    share = config.minibatch_size // d
    if config.num_envs % d:
        problem = (f"num_envs={config.num_envs} is not a multiple of {d}; allowed: a num_envs "
                   f"that {d} divides")
    elif config.minibatch_size % d:
        problem = (f"minibatch_size={config.minibatch_size} (batch_size/num_minibatches = "
                   f"{config.batch_size}/{config.num_minibatches}) is not a multiple of {d}; allowed: "
                   f"a num_minibatches that leaves minibatches of a multiple of {d} samples")
    elif config.recurrent is not None and (config.num_envs // d) % config.num_minibatches:
        problem = (f"num_minibatches={config.num_minibatches} does not divide each device's "
                   f"{config.num_envs // d} env sequences (recurrent={config.recurrent!r}); "
                   f"allowed: a num_envs that {d * config.num_minibatches} divides")
    elif config.norm_adv and share < 2:
        problem = (f"norm_adv=True with each device's minibatch share of {share} sample "
                   f"(minibatch_size={config.minibatch_size} over {d} devices); allowed: fewer "
                   "num_minibatches, fewer devices, or norm_adv=False")
    elif config.grad_chunk_size is not None and share % config.grad_chunk_size:
        problem = (f"grad_chunk_size={config.grad_chunk_size} does not divide each device's "
                   f"minibatch share of {share} samples; allowed: None or a divisor of {share}")
    if problem:
        raise ValueError(f"env_devices={d}: {problem}; or env_devices=None (one device)")
    local_config = config.replace(
        num_envs=config.num_envs // d,
        total_timesteps=config.num_updates * config.batch_size // d,
    )
    inner = _build_train(local_config, axis_name=ENV_AXIS, log_fn=log_fn, env=env, env_params=env_params)
    mesh = jax.sharding.Mesh(np.array(devices), (ENV_AXIS,))
    split, same = P(ENV_AXIS), P()
    state_spec = TrainState(
        params=same,
        opt_state=same,
        env=split,
        obs_norm=same,
        reward_scaler=RewardScaler(return_stats=same, discounted_return=split),
        rng=same,
        update_step=same,
        reference_params=same if config.reference_kl else None,
    )

    def sharded(fn, in_specs, out_specs):
        # check_vma off: the replicated parameters' gradients are averaged
        # explicitly (`ppo_update`), which the replication type checks would
        # refuse through `networks.matmul`'s custom backward pass.
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    def init(rng, hp=None, params=None, obs_norm=None) -> TrainState:
        hp = config.hyperparams() if hp is None else hp
        return sharded(inner.init, (same, same, same, same), state_spec)(rng, hp, params, obs_norm)

    def update(state: TrainState, hp=None):
        hp = config.hyperparams() if hp is None else hp
        return sharded(inner.update, (state_spec, same), (state_spec, same))(state, hp)

    def run_updates(state: TrainState, num_updates: int, hp=None, first_update=0):
        hp = config.hyperparams() if hp is None else hp
        body = lambda s, h, f: inner.run_updates(s, num_updates, h, f)
        return sharded(body, (state_spec, same, same), (state_spec, same))(state, hp, first_update)

    return Trainer(config=config, env_spec=inner.env_spec, network=inner.network, init=init,
                   update=update, run_updates=run_updates, random_params=inner.random_params,
                   env_devices=tuple(devices), env=inner.env, env_params=inner.env_params)
