"""`PPOConfig`: the one typed, frozen, validated description of a PPO run.

The fields split in two kinds, and the split is explicit:

* **Static fields** fix array shapes or the structure of the compiled graph
  (`env_name`, `num_envs`, `num_steps`, `update_epochs`, `num_minibatches`,
  `total_timesteps`, network sizes, activation and every boolean toggle).
  Changing one of them means a new compilation.
* **Numeric hyperparameters** (`lr`, `gamma`, `gae_lambda`, `clip_eps`,
  `ent_coef`, `vf_coef`, `max_grad_norm`, `kl_coef`, `reference_kl_coef`,
  `target_kl`, `obs_clip`, `reward_clip`) never enter Python control flow.
  `PPOConfig.hyperparams()` packs them into the `HyperParams` pytree
  (`purejaxppo.hyperparams`), which
  the training function takes as a traced argument, so a sweep can
  `jax.vmap` over them inside one compiled call.

Building and validating a config imports no JAX and starts no backend, so
a program (the CLI among them) can build one, then choose how JAX starts
(CPU threads, devices) from it.

Every field is checked in ``__post_init__``: a bad value raises ``TypeError``
or ``ValueError`` naming the field, the value and what is allowed, before
anything is traced. What needs the env built (the names in ``env_params``
and ``env_kwargs``, a CNN torso against the observation's shape) is checked
by `make_train`, also before tracing. `HyperParams` given to ``train``
directly are traced values and are not checked.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Annotated, Any, Literal

import sys

import numpy as np
import tyro

AUTO_GRAD_CHUNK = 8192  # the CPU chunk size grad_chunk_size=None aims at
ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "elu", "leaky_relu")
ALGORITHMS = ("ppo_clip", "ppo_penalty", "trpo", "a2c", "reinforce_baseline", "reinforce")
"""The rungs of the policy-gradient ladder `PPOConfig.algorithm` names (docs/algorithm.md)."""
ONE_STEP_ALGORITHMS = ("a2c", "reinforce_baseline", "reinforce")
"""The rungs that take one on-policy gradient step per rollout."""
TORSOS = ("auto", "mlp", "cnn")
RECURRENT = (None, "gru")
RECURRENT_CORES = ("shared", "separate")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PPOConfig:
    """Configuration of a PPO training run.

    Environment and budget (static):
        env_name: the env: a gymnax id (``"CartPole-v1"``), an adapter's
            ``"<suite>/<id>"`` (``"navix/Navix-Empty-5x5-v0"``) or a user's
            ``"module:function"`` (docs/environments.md); with an env object
            given to `make_train`, only its label. Checked by
            `purejaxppo.envs.check_env_name` when the env is made.
        env_kwargs: keyword arguments for the environment's constructor
            (a dict or a tuple of pairs).
        env_params: overrides of fields of the env's default ``EnvParams``,
            e.g. ``{"max_steps_in_episode": 200}`` (a dict or pairs). The
            command line takes both as ``KEY=VALUE`` lists (`purejaxppo.cli`).
        total_timesteps: environment steps over the whole run (all envs
            together). The run does ``num_updates = total_timesteps //
            batch_size`` updates; the remainder is not run.
        num_envs: parallel environments stepped in lockstep.
        num_steps: steps per env per rollout (the rollout length T).
        update_epochs: passes (K) over each rollout batch.
        num_minibatches: minibatches per epoch; must divide ``batch_size``
            (and ``num_envs`` with ``recurrent``: minibatches of whole env
            sequences).
        obs_features: the indices of the features of a flat observation
            the policy sees, e.g. ``(0, 2)`` for CartPole's cart position
            and pole angle without their velocities (a partially observed
            task); None, the default, sees them all.

    Optimisation (numeric, traced):
        lr: Adam learning rate (Adam's eps is 1e-5).
        gamma: discount factor, in [0, 1].
        gae_lambda: GAE lambda, in [0, 1].
        clip_eps: PPO clip range epsilon, > 0.
        ent_coef: entropy bonus coefficient, >= 0.
        vf_coef: value loss coefficient, >= 0.
        max_grad_norm: global gradient norm clip, > 0.
        kl_coef: coefficient beta of the KL penalty (``algorithm=
            "ppo_penalty"``), its first value where ``target_kl`` adapts it;
            > 0 there, 0 with any other algorithm (a coefficient that would
            be ignored is an error).
        target_kl: a target for the KL between the rollout's policy and
            the updated one, read by three algorithms: ``"ppo_clip"`` stops
            an update's epochs at the first minibatch whose ``approx_kl``
            exceeds it; ``"ppo_penalty"`` adapts beta after each update
            (halved when the update's KL is below target_kl / 1.5, doubled
            above 1.5 * target_kl; Schulman et al. 2017, section 4);
            ``"trpo"`` keeps each step's mean KL under it (the trust region
            delta, > 0 there, e.g. 0.01). 0 (the default) turns the first
            two off; other algorithms need 0. Whether the early stop or the
            adaptation is compiled in is fixed by the config's value; a
            sweep may vary a positive value.
        reference_kl_coef: coefficient of the KL to a fixed reference
            policy (``reference_kl``); >= 0, and > 0 with ``reference_kl``.
        obs_clip: normalised observations are clipped to +-obs_clip (with
            ``normalize_obs``); > 0.
        reward_clip: scaled rewards are clipped to +-reward_clip (with
            ``normalize_reward``); > 0.

    Toggles (static):
        anneal_lr: decay the learning rate linearly to 0 over all
            gradient steps (an optax schedule).
        norm_adv: normalise advantages per minibatch (mean 0, std 1).
        clip_vloss: clip the value update around the old value estimate
            (PPO2 style), with the same ``clip_eps``. On by default, as in
            PureJaxRL and CleanRL: with one global gradient-norm clip over
            actor and critic, the large early value gradients otherwise eat
            the policy's share (CartPole defaults, 32 seeds: all finish at 500
            with it, 20 of 32 reach 475 without it; see the README).
            Turn it off where values are large (it limits each value update
            to +-clip_eps), e.g. Pendulum without reward scaling.
        algorithm: the rung of the policy-gradient ladder (docs/algorithm.md):
            ``"ppo_clip"`` (PPO-Clip, the default), ``"ppo_penalty"``
            (PPO-Penalty: ``r*A - beta*KL(old||new)``, beta = ``kl_coef``,
            adapted with ``target_kl``), ``"trpo"`` (one natural-gradient
            step per update inside a KL trust region of ``target_kl``; the
            critic is fitted by the ``update_epochs`` x ``num_minibatches``
            minibatch steps of the value loss), ``"a2c"`` (the actor-critic:
            ``log pi(a|s) * A`` with GAE advantages), ``"reinforce_baseline"``
            (``log pi(a|s) * (G - V(s))`` with Monte Carlo returns G) or
            ``"reinforce"`` (``log pi(a|s) * G``, no critic). The last three
            take one gradient step per rollout (``update_epochs=1,
            num_minibatches=1``); the two REINFORCE rungs learn only from
            the steps whose episode ends inside the rollout.
        normalize_obs: normalise observations by a running mean and
            variance over all envs, carried in the train state and updated
            after each rollout (`purejaxppo.normalization`); the rollout acts
            on, and the update learns from, observations normalised by the
            statistics as they were when the rollout began.
        reference_kl: fine-tune a given policy: add ``reference_kl_coef *
            KL(pi_ref || pi)`` to the loss, pi_ref being the fixed policy of
            the parameters the run starts from, which ``train(rng,
            params=...)`` must then be given (the KL is exact, a mean over
            the minibatch's states; metric ``reference_kl``). With
            ``normalize_obs`` the given ``obs_norm`` is required too, and the
            statistics stay as given, so that pi_ref stays the given policy.
        normalize_reward: divide rewards by the running standard deviation
            of the discounted return (per env, over all envs), updated with
            each rollout before its advantages are computed. Episode returns
            in the metrics stay raw.

    Networks (static):
        hidden_sizes: widths of the hidden layers of both the actor and the
            critic MLP (separate networks).
        activation: one of ``ACTIVATIONS``.
        torso: ``"mlp"`` (observations flattened), ``"cnn"`` (3x3 stride-1
            convolutions over (H, W, C) image observations, then the MLP) or
            ``"auto"``: the CNN for 3-D observations such as MinAtar's
            10x10xC, the MLP otherwise.
        cnn_channels: output channels of each convolution of the CNN torso.
        recurrent: None (a feed-forward policy) or ``"gru"``: the torso
            feeds a GRU of ``recurrent_size`` units whose state is carried
            through the rollout, zeroed at every episode start, and the
            update replays each env's sequence from the state stored at the
            rollout's start (`purejaxppo.networks.RecurrentActorCritic`,
            docs/recurrent.md).
        recurrent_size: the GRU's units.
        recurrent_core: ``"shared"`` (one torso and GRU feed both heads)
            or ``"separate"`` (the actor and the critic each have their
            own, as the feed-forward networks do).

    Performance (static; the maths is the same, up to float summation order):
        grad_chunk_size: samples per chunk of a minibatch's gradient, which
            is accumulated over ``minibatch_size // grad_chunk_size`` chunks
            (`purejaxppo.update.minibatch_gradient`). Must divide
            ``minibatch_size``; ``minibatch_size`` means one pass. ``None``
            (the default) picks per backend when `make_train` is called: on
            CPU, minibatches over `AUTO_GRAD_CHUNK` samples are split into
            the largest chunks of at most that size (cache-sized
            activations: ~30% faster per gradient step at 65,536 samples),
            if such a chunk has at least 1,024 samples; on GPU and TPU, one
            pass.

    Watching (static; the results are the same):
        log_every: updates between live reports to `make_train`'s
            ``log_fn`` (also after the last update); 0, the default, makes
            none. A resumed run may change it.
    """

    env_name: Annotated[str, tyro.conf.arg(aliases=("--env",))] = "CartPole-v1"
    env_kwargs: Annotated[tuple[tuple[str, Any], ...], tyro.conf.Suppress] = ()
    env_params: Annotated[tuple[tuple[str, Any], ...], tyro.conf.Suppress] = ()
    total_timesteps: int = 500_000
    num_envs: int = 4
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4

    lr: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    kl_coef: float = 0.0
    reference_kl_coef: float = 0.0
    target_kl: float = 0.0
    obs_clip: float = 10.0
    reward_clip: float = 10.0

    anneal_lr: bool = True
    norm_adv: bool = True
    clip_vloss: bool = True
    algorithm: Literal["ppo_clip", "ppo_penalty", "trpo", "a2c", "reinforce_baseline",
                       "reinforce"] = "ppo_clip"
    reference_kl: bool = False
    normalize_obs: bool = False
    normalize_reward: bool = False

    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    torso: Literal["auto", "mlp", "cnn"] = "auto"
    cnn_channels: tuple[int, ...] = (16,)
    recurrent: Literal["gru"] | None = None
    recurrent_size: int = 128
    recurrent_core: Literal["shared", "separate"] = "shared"
    obs_features: tuple[int, ...] | None = None

    grad_chunk_size: int | None = None

    log_every: int = 0

    # ------------------------------------------------------------------ sizes
    @property
    def batch_size(self) -> int:
        """Transitions per rollout: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Transitions per minibatch: ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Rollout-and-update iterations: ``total_timesteps // batch_size``."""
        return self.total_timesteps // self.batch_size

    def num_grad_chunks(self, backend: str) -> int:
        """Chunks per minibatch gradient on ``backend`` (see ``grad_chunk_size``)."""
        if self.grad_chunk_size is not None:
            return self.minibatch_size // self.grad_chunk_size
        if self.recurrent is not None:  # chunks of whole sequences: only where asked
            return 1
        if backend != "cpu" or self.minibatch_size <= AUTO_GRAD_CHUNK:
            return 1
        chunk = max(d for d in range(1, AUTO_GRAD_CHUNK + 1) if self.minibatch_size % d == 0)
        return self.minibatch_size // chunk if chunk >= 1024 else 1

    @property
    def num_gradient_steps(self) -> int:
        """Optimizer steps over the run (the length of the lr schedule)."""
        return self.num_updates * self.update_epochs * self.num_minibatches

    # ---------------------------------------------------------------- helpers
    def replace(self, **changes: Any) -> "PPOConfig":
        """A copy with ``changes`` applied (and validated)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(
                f"PPOConfig has no field(s) {unknown}; "
                f"fields are {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def hyperparams(self) -> "HyperParams":
        """The numeric hyperparameters as a traced-friendly pytree of float32
        (`purejaxppo.hyperparams.HyperParams`)."""
        from purejaxppo.hyperparams import HyperParams

        return HyperParams.from_config(self)

    # ------------------------------------------------------------- validation
    def __post_init__(self) -> None:
        # Accept the natural spellings (a dict, a list, NumPy scalars from a
        # sweep's arrays) and store the hashable Python ones, so a config can
        # key caches and be compared.
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.generic):
                object.__setattr__(self, f.name, v.item())
            elif isinstance(v, (list, tuple)) and f.name in _INT_TUPLES:
                object.__setattr__(self, f.name, [x.item() if isinstance(x, np.generic) else x for x in v])
        for name in ("env_kwargs", "env_params"):
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, tuple(sorted(getattr(self, name).items())))
        for name in _INT_TUPLES:
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)


HYPERPARAM_FIELDS = (
    "lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm",
    "kl_coef", "reference_kl_coef", "target_kl", "obs_clip", "reward_clip",
)
"""The numeric `PPOConfig` fields, traced in `purejaxppo.hyperparams.HyperParams`."""

GYMNAX_ENV_NAMES = (
    "CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
    "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar", "Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite",
    "UmbrellaChain-bsuite", "DiscountingChain-bsuite", "MNISTBandit-bsuite", "SimpleBandit-bsuite",
    "FourRooms-misc", "MetaMaze-misc", "PointRobot-misc", "BernoulliBandit-misc",
    "GaussianBandit-misc", "Reacher-misc", "Swimmer-misc", "Pong-misc", "FrozenLake-misc",
)
"""gymnax's built-in environment ids (``gymnax.registered_envs`` of gymnax
1.0; `tests/test_config.py` checks the two agree)."""


# Envs that fetch data over the network when built, and where gymnax keeps it:
# built only once the data is there (a training run does not download).
_DOWNLOADS = {
    "MNISTBandit-bsuite": ("/tmp/mnist", ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")),
}


def _check_downloaded(env_name: str) -> None:
    if env_name not in _DOWNLOADS:
        return
    directory, files = _DOWNLOADS[env_name]
    missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        raise ValueError(
            f"env_name={env_name!r} downloads the MNIST dataset from the network when built "
            f"(into {directory}), which lacks {', '.join(missing)}; a training run does not "
            "download. Fetch it once with python -c 'from gymnax.utils import load_mnist; "
            "load_mnist.load_mnist()', then run again"
        )


def known_env_names() -> list[str]:
    """The env ids a config accepts: gymnax's registry where gymnax is
    imported already (envs registered at run time included), else its
    built-in ids, without importing gymnax (whose import starts JAX)."""
    gymnax = sys.modules.get("gymnax")
    if gymnax is not None and hasattr(gymnax, "registered_envs"):
        return list(gymnax.registered_envs)
    return list(GYMNAX_ENV_NAMES)

_INT32_MAX = 2**31 - 1
_INT_TUPLES = ("hidden_sizes", "cnn_channels", "obs_features")

_INT_FIELDS = (
    "total_timesteps",
    "num_envs",
    "num_steps",
    "update_epochs",
    "num_minibatches",
)
_BOOL_FIELDS = ("anneal_lr", "norm_adv", "clip_vloss", "reference_kl", "normalize_obs", "normalize_reward")
# name -> (low, high, low_inclusive, high_inclusive)
_RANGES = {
    "lr": (0.0, math.inf, False, False),
    "gamma": (0.0, 1.0, True, True),
    "gae_lambda": (0.0, 1.0, True, True),
    "clip_eps": (0.0, math.inf, False, False),
    "ent_coef": (0.0, math.inf, True, False),
    "vf_coef": (0.0, math.inf, True, False),
    "max_grad_norm": (0.0, math.inf, False, False),
    "kl_coef": (0.0, math.inf, True, False),
    "reference_kl_coef": (0.0, math.inf, True, False),
    "target_kl": (0.0, math.inf, True, False),
    "obs_clip": (0.0, math.inf, False, False),
    "reward_clip": (0.0, math.inf, False, False),
}


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    return f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _minibatch_counts_that_work(c) -> list[int]:
    """The ``num_minibatches`` values up to 64 that divide ``c.batch_size``,
    leaving at least 2 samples per minibatch where ``norm_adv`` needs them."""
    smallest = 2 if c.norm_adv else 1
    return [d for d in range(1, min(c.batch_size, 64) + 1)
            if c.batch_size % d == 0 and c.batch_size // d >= smallest]


def _divisors_near(n: int, v: int, count: int = 8) -> list[int]:
    """The ``count`` divisors of ``n`` closest to ``v`` (on a log scale), ascending."""
    divisors = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    divisors = sorted(set(divisors + [n // d for d in divisors]))
    target = math.log(max(v, 1))
    return sorted(sorted(divisors, key=lambda d: abs(math.log(d) - target))[:count])


def _validate(c: PPOConfig) -> None:
    # --- types first, so range checks can compare numbers safely
    if not isinstance(c.env_name, str):
        raise TypeError(f"env_name must be a str, got {c.env_name!r}")
    for name in _INT_FIELDS:
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r} ({type(v).__name__})")
    for name in _BOOL_FIELDS:
        v = getattr(c, name)
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be a bool, got {v!r} ({type(v).__name__})")
    for name in _RANGES:
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(
                f"{name} must be a float, got {v!r} ({type(v).__name__})"
            )
    if not isinstance(c.hidden_sizes, tuple) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in c.hidden_sizes
    ):
        raise TypeError(
            f"hidden_sizes must be a tuple of ints, got {c.hidden_sizes!r}"
        )
    for name in ("env_kwargs", "env_params"):
        pairs = getattr(c, name)
        if not isinstance(pairs, tuple) or not all(
            isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str)
            for kv in pairs
        ):
            raise TypeError(
                f"{name} must be a dict or a tuple of (name, value) pairs, got {pairs!r}"
            )

    # --- values
    if not c.env_name:
        raise ValueError("env_name must name an env, got ''; allowed: a gymnax id, "
                         "'<suite>/<id>' (an adapter) or 'module:function' (docs/environments.md)")
    for name in _INT_FIELDS:
        v = getattr(c, name)
        if v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v}")
    if c.num_envs * c.num_steps > _INT32_MAX:
        # Samples of a batch are indexed (shuffled, drawn for) with int32.
        raise ValueError(
            f"num_envs*num_steps={c.num_envs:,}*{c.num_steps:,}={c.num_envs * c.num_steps:,} samples "
            f"per update, over the int32 index's {_INT32_MAX:,}; allowed: num_envs*num_steps <= "
            f"{_INT32_MAX:,}"
        )
    for name, (low, high, low_in, high_in) in _RANGES.items():
        try:
            v = float(getattr(c, name))
        except OverflowError:  # an int beyond float range
            raise ValueError(f"{name} must be finite and in {_interval(low, high, low_in, high_in)}, "
                             f"got an int of {len(str(abs(getattr(c, name))))} digits") from None
        ok = math.isfinite(v)
        ok = ok and (v >= low if low_in else v > low)
        ok = ok and (v <= high if high_in else v < high)
        if not ok:
            raise ValueError(
                f"{name} must be finite and in {_interval(low, high, low_in, high_in)}, "
                f"got {v}"
            )
    if not c.hidden_sizes or any(h <= 0 for h in c.hidden_sizes):
        raise ValueError(
            f"hidden_sizes must be a non-empty tuple of positive ints, "
            f"got {c.hidden_sizes!r}"
        )
    if c.torso not in TORSOS:
        raise ValueError(f"torso={c.torso!r} is unknown; allowed: {', '.join(TORSOS)}")
    if not isinstance(c.cnn_channels, tuple) or not c.cnn_channels or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in c.cnn_channels
    ):
        raise ValueError(
            f"cnn_channels must be a non-empty tuple of positive ints, got {c.cnn_channels!r}"
        )
    if c.recurrent not in RECURRENT:
        raise ValueError(f"recurrent={c.recurrent!r} is unknown; allowed: None or 'gru'")
    if isinstance(c.recurrent_size, bool) or not isinstance(c.recurrent_size, int) or not (
            0 < c.recurrent_size <= 65_536):
        raise ValueError(f"recurrent_size={c.recurrent_size!r}; allowed: an int in [1, 65536] "
                         "(the GRU's units)")
    if c.recurrent_core not in RECURRENT_CORES:
        raise ValueError(f"recurrent_core={c.recurrent_core!r} is unknown; allowed: "
                         f"{', '.join(RECURRENT_CORES)}")
    if c.obs_features is not None and (
        not isinstance(c.obs_features, tuple) or not c.obs_features
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in c.obs_features)
        or len(set(c.obs_features)) != len(c.obs_features)
    ):
        raise ValueError(f"obs_features={c.obs_features!r}; allowed: None (every feature) or a "
                         "non-empty tuple of distinct feature indices >= 0")
    if c.activation not in ACTIVATIONS:
        raise ValueError(
            f"activation={c.activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}"
        )
    if c.algorithm not in ALGORITHMS:
        raise ValueError(
            f"algorithm={c.algorithm!r} is unknown; allowed: {', '.join(ALGORITHMS)}"
        )
    if c.algorithm in ONE_STEP_ALGORITHMS and (c.update_epochs, c.num_minibatches) != (1, 1):
        raise ValueError(
            f"algorithm={c.algorithm!r} with update_epochs={c.update_epochs}, num_minibatches="
            f"{c.num_minibatches}: its gradient is the policy gradient only at the rollout's own "
            "policy, so it takes one step per rollout; allowed: update_epochs=1, num_minibatches=1"
        )
    if c.batch_size % c.num_minibatches != 0:
        raise ValueError(
            f"num_minibatches={c.num_minibatches} must divide batch_size="
            f"num_envs*num_steps={c.num_envs}*{c.num_steps}={c.batch_size}; "
            f"divisors of {c.batch_size} that work: {_minibatch_counts_that_work(c)}"
        )
    if c.recurrent is not None and c.num_envs % c.num_minibatches:
        fits = [d for d in range(1, min(c.num_envs, 64) + 1) if c.num_envs % d == 0]
        raise ValueError(
            f"num_minibatches={c.num_minibatches} with recurrent={c.recurrent!r} must divide "
            f"num_envs={c.num_envs}: a recurrent minibatch holds whole env sequences; "
            f"allowed: one of {fits}"
        )
    if c.recurrent is not None and c.reference_kl:
        raise ValueError(
            f"reference_kl=True with recurrent={c.recurrent!r}: the reference policy's own "
            "hidden states are not carried; allowed: reference_kl=False with a recurrent policy"
        )
    if (c.recurrent is not None and c.grad_chunk_size is not None
            and c.grad_chunk_size % c.num_steps):
        raise ValueError(
            f"grad_chunk_size={c.grad_chunk_size} with recurrent={c.recurrent!r} must be a multiple "
            f"of num_steps={c.num_steps} (chunks of whole sequences); allowed: None or a multiple "
            f"of {c.num_steps} dividing minibatch_size={c.minibatch_size}"
        )
    if isinstance(c.log_every, bool) or not isinstance(c.log_every, int) or c.log_every < 0:
        raise ValueError(f"log_every={c.log_every!r}; allowed: an int >= 0 (updates between live "
                         "reports; 0: none)")
    if c.grad_chunk_size is not None:
        v = c.grad_chunk_size
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"grad_chunk_size must be an int or None, got {v!r} ({type(v).__name__})")
        if v <= 0 or c.minibatch_size % v:
            raise ValueError(
                f"grad_chunk_size={v} must be None or a positive divisor of "
                f"minibatch_size={c.minibatch_size}; allowed: None or one of "
                f"{_divisors_near(c.minibatch_size, v)}"
            )
    if c.norm_adv and c.minibatch_size < 2:
        raise ValueError(
            f"minibatch_size=batch_size/num_minibatches={c.batch_size}/{c.num_minibatches}=1 "
            "with norm_adv=True: normalised over one sample, every advantage is 0 and the "
            "policy gets no gradient from it; allowed: num_minibatches < batch_size, "
            "or norm_adv=False"
        )
    if c.algorithm == "ppo_penalty" and c.kl_coef == 0:
        raise ValueError(
            "algorithm='ppo_penalty' with kl_coef=0.0 leaves r*A with neither clip nor "
            "penalty; allowed: kl_coef > 0 (e.g. 0.3, beta's first value with target_kl), "
            "or algorithm='ppo_clip'"
        )
    if c.algorithm != "ppo_penalty" and c.kl_coef != 0:
        raise ValueError(
            f"kl_coef={c.kl_coef} has no effect with algorithm={c.algorithm!r}; "
            "allowed: algorithm='ppo_penalty' (PPO-Penalty), or kl_coef=0"
        )
    if c.algorithm == "trpo" and c.target_kl == 0:
        raise ValueError(
            "algorithm='trpo' with target_kl=0.0 gives the trust region no size; allowed: "
            "target_kl > 0, the largest mean KL of a step (e.g. 0.01)"
        )
    if c.algorithm in ONE_STEP_ALGORITHMS and c.target_kl != 0:
        raise ValueError(
            f"target_kl={c.target_kl} has no effect with algorithm={c.algorithm!r}; allowed: "
            "target_kl=0, or algorithm='ppo_clip' (early stop), 'ppo_penalty' (adaptive beta) "
            "or 'trpo' (trust region)"
        )
    if c.algorithm == "trpo" and c.reference_kl:
        raise ValueError(
            "algorithm='trpo' with reference_kl=True: the reference KL would move the policy in "
            "the critic's steps, outside the trust region; allowed: reference_kl=False with trpo, "
            "or algorithm='ppo_clip' for fine-tuning"
        )
    if c.algorithm == "trpo" and c.recurrent is not None and c.recurrent_core == "shared":
        raise ValueError(
            "algorithm='trpo' with recurrent_core='shared': the critic's steps would move the "
            "policy's core outside the trust region; allowed: recurrent_core='separate'"
        )
    if c.reference_kl and c.reference_kl_coef == 0:
        raise ValueError(
            "reference_kl=True with reference_kl_coef=0.0 adds no penalty; allowed: "
            "reference_kl_coef > 0 (e.g. 0.1), or reference_kl=False"
        )
    if not c.reference_kl and c.reference_kl_coef != 0:
        raise ValueError(
            f"reference_kl_coef={c.reference_kl_coef} has no effect with reference_kl=False; "
            "allowed: reference_kl=True (fine-tuning from given parameters), or reference_kl_coef=0"
        )
    if c.num_gradient_steps > _INT32_MAX:
        # The update and gradient-step counters (the learning-rate schedule's
        # count among them) are int32 inside the compiled run.
        raise ValueError(
            f"total_timesteps={c.total_timesteps} makes {c.num_updates:,} updates of "
            f"update_epochs*num_minibatches={c.update_epochs * c.num_minibatches} gradient steps, "
            f"{c.num_gradient_steps:,} in all, over the int32 counters' {_INT32_MAX:,}; allowed: "
            f"total_timesteps <= {_INT32_MAX // (c.update_epochs * c.num_minibatches) * c.batch_size:,} "
            "for this batch and these epochs (or a larger batch per update)"
        )
    if c.total_timesteps < c.batch_size:
        raise ValueError(
            f"total_timesteps={c.total_timesteps} is fewer than one update's "
            f"batch_size=num_envs*num_steps={c.batch_size}; allowed: "
            f"total_timesteps >= {c.batch_size}"
        )
