"""Population-based training (Jaderberg et al. 2017) inside one compiled program.

A population of P PPO runs, the *members*, trains side by side under
`jax.vmap`, each with its own traced `HyperParams`. Every
``PBTConfig.ready_every`` updates, all in the same `lax.scan`::

    score     each member's mean episode return over the updates since the
              last ready point (NaN returns left out; a member with none
              scores -inf)
    exploit   the ``floor(quantile * P)`` lowest-scoring members each copy the
              parameters, optimizer state and normalisation statistics of a
              member drawn uniformly from the as many highest-scoring ones
    explore   each member that copied perturbs the copied hyperparameters
              named in ``explore``: x0.8 or x1.2 (``perturb``), or with
              probability ``resample_prob`` a fresh draw from the field's
              bounds; always clipped to those bounds

Each member keeps its own envs, episode statistics and PRNG stream; only
what makes up its policy and learner moves. Nothing leaves the device: one
compile trains the whole population, and `jax.vmap` over keys trains several
populations. The metrics record every member's explored hyperparameters at
each update, the member it copied (``parent``) and its score at each ready
point, so the schedules PBT found and each member's lineage can be read back
(`schedules`, `lineage`).

With ``quantile=0`` no member is replaced: the population computes the
plain vmapped sweep ``jax.vmap(make_train(config))(member_keys(key, P),
hparams)``. The two are different XLA programs of the same computation;
on CartPole they are equal bit for bit (``tests/test_pbt.py``), and where
XLA compiles a reduction of the two differently (with ``normalize_obs``, the
observation statistics' on XLA CPU) they agree to float rounding, as a run
and its resumed chunks do (`purejaxppo.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purejaxppo.config import _RANGES, HYPERPARAM_FIELDS, PPOConfig, _interval
from purejaxppo.hyperparams import HyperParams
from purejaxppo.train import Trainer, TrainResult, TrainState, make_train

DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "lr": (1e-5, 1e-2),
    "gamma": (0.9, 0.9999),
    "gae_lambda": (0.8, 1.0),
    "clip_eps": (0.05, 0.5),
    "ent_coef": (0.0, 0.1),
    "vf_coef": (0.1, 2.0),
    "max_grad_norm": (0.1, 10.0),
    "kl_coef": (0.0, 10.0),
    "reference_kl_coef": (0.0, 10.0),
    "target_kl": (0.001, 0.1),
    "obs_clip": (1.0, 100.0),
    "reward_clip": (1.0, 100.0),
}
"""The interval each explored hyperparameter is drawn from and clipped to,
unless `PBTConfig.bounds` says otherwise."""

@dataclasses.dataclass(frozen=True)
class PBTConfig:
    """How a population explores and exploits (static: fixed at compile time).

    Attributes:
        population: members P, trained together (an int >= 2).
        ready_every: updates between exploit steps (>= 1).
        quantile: the fraction of the population replaced at each ready
            point, and the fraction it copies from: ``floor(quantile * P)``
            members each way (0 turns selection off; at most 0.5).
        explore: the `HyperParams` fields each copied member perturbs.
        bounds: ``((field, low, high), ...)``: where an explored field may
            go, over `DEFAULT_BOUNDS`; both ends must be valid values of the
            field (`purejaxppo.config.PPOConfig`'s ranges).
        perturb: the two factors a perturbation multiplies by, each with
            probability 1/2.
        resample_prob: the probability that a copied field is drawn afresh
            from its bounds instead (log-uniform where ``low > 0`` and
            ``high / low >= 10``, else uniform).
    """

    population: int = 8
    ready_every: int = 10
    quantile: float = 0.25
    explore: tuple[str, ...] = ("lr", "ent_coef", "clip_eps")
    bounds: tuple[tuple[str, float, float], ...] = ()
    perturb: tuple[float, float] = (0.8, 1.2)
    resample_prob: float = 0.25

    def __post_init__(self) -> None:
        for name in ("population", "ready_every"):
            value = getattr(self, name)
            low = 2 if name == "population" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"PBTConfig.{name} = {value!r}; allowed: an int >= {low}")
        if not (isinstance(self.quantile, (int, float)) and 0.0 <= self.quantile <= 0.5):
            raise ValueError(f"PBTConfig.quantile = {self.quantile!r}; allowed: a number in [0, 0.5], "
                             "the fraction of members replaced at each ready point (0: no selection)")
        if self.quantile > 0 and self.replaced == 0:
            raise ValueError(f"PBTConfig.quantile = {self.quantile:g} of a population of {self.population} "
                             f"replaces no member; allowed: at least 1/{self.population} = "
                             f"{1 / self.population:.3g} (up to 0.5), or 0 to turn selection off")
        if not self.explore or any(name not in HYPERPARAM_FIELDS for name in self.explore) or len(
                set(self.explore)) != len(self.explore):
            raise ValueError(f"PBTConfig.explore = {self.explore!r}; allowed: distinct fields of "
                             f"{', '.join(HYPERPARAM_FIELDS)}")
        if (len(self.perturb) != 2 or not all(isinstance(f, (int, float)) and math.isfinite(f) and f > 0
                                              for f in self.perturb)):
            raise ValueError(f"PBTConfig.perturb = {self.perturb!r}; allowed: two finite factors > 0")
        if not (isinstance(self.resample_prob, (int, float)) and 0.0 <= self.resample_prob <= 1.0):
            raise ValueError(f"PBTConfig.resample_prob = {self.resample_prob!r}; allowed: a probability "
                             "in [0, 1]")
        seen = set()
        for item in self.bounds:
            if len(item) != 3 or item[0] not in HYPERPARAM_FIELDS or item[0] in seen:
                raise ValueError(f"PBTConfig.bounds item {item!r}; allowed: (field, low, high) with a "
                                 f"field of {', '.join(HYPERPARAM_FIELDS)}, each once")
            seen.add(item[0])
        for name in self.explore:
            low, high = self.bounds_of(name)
            lo, hi, lo_in, hi_in = _RANGES[name]
            valid = lambda v: math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
            if not (valid(low) and valid(high) and low <= high):
                raise ValueError(f"PBTConfig.bounds for {name} = ({low:g}, {high:g}); allowed: "
                                 f"low <= high, both in {_interval(lo, hi, lo_in, hi_in)}")

    def bounds_of(self, name: str) -> tuple[float, float]:
        """``(low, high)`` of field ``name``."""
        for field, low, high in self.bounds:
            if field == name:
                return float(low), float(high)
        return DEFAULT_BOUNDS[name]

    @property
    def replaced(self) -> int:
        """Members replaced at each ready point (and members copied from)."""
        return int(math.floor(self.quantile * self.population))


@struct.dataclass
class PBTState:
    """A population between updates (a named pytree).

    Attributes:
        members: the members' `TrainState`, every leaf with a leading (P,).
        hparams: the members' current `HyperParams`, leaves (P,).
        score_sum, score_count: (P,), the sum and count of each member's
            finite ``episode_return`` since the last ready point.
        key: the PRNG key of the exploit and explore draws (folded with the
            update count at each ready point).
        update_step: updates done (int32, the same for every member).
    """

    members: TrainState
    hparams: HyperParams
    score_sum: jax.Array
    score_count: jax.Array
    key: jax.Array
    update_step: jax.Array


def member_keys(rng: jax.Array, population: int) -> jax.Array:
    """The members' PRNG keys of the population started from ``rng``: the
    keys of a plain sweep it equals with selection off."""
    return jax.random.split(jax.random.fold_in(rng, 0), population)


def _pbt_key(rng: jax.Array) -> jax.Array:
    return jax.random.fold_in(rng, 1)


def select_sources(scores: jax.Array, key: jax.Array, replaced: int) -> jax.Array:
    """Exploit by truncation selection: ``(P,)`` int32, the member each member
    takes its state from (itself, unless it is among the ``replaced`` lowest
    ``scores``, when it is one of the ``replaced`` highest, drawn uniformly
    with ``key``). Ties are broken by member index (the lower ranks lower)."""
    p = scores.shape[0]
    source = jnp.arange(p, dtype=jnp.int32)
    if replaced == 0:
        return source
    order = jnp.argsort(scores, stable=True).astype(jnp.int32)  # ascending
    bottom, top = order[:replaced], order[p - replaced:]
    pick = jax.random.randint(key, (replaced,), 0, replaced)
    return source.at[bottom].set(top[pick])


def copy_members(members: TrainState, source: jax.Array) -> TrainState:
    """``members`` with each one's parameters, optimizer state and
    normalisation statistics taken from member ``source[i]`` (a gather along
    the population axis); envs, episode statistics, keys and update counts
    stay each member's own."""
    take = lambda tree: jax.tree.map(lambda x: x[source], tree)
    scaler = members.reward_scaler
    return members.replace(
        params=take(members.params),
        opt_state=take(members.opt_state),
        obs_norm=take(members.obs_norm),
        reward_scaler=scaler.replace(return_stats=take(scaler.return_stats)),
    )


def explore(hparams: HyperParams, key: jax.Array, pbt: PBTConfig) -> HyperParams:
    """Perturbed hyperparameters (leaves (P,)): each field of ``pbt.explore``
    multiplied by one of ``pbt.perturb`` (equal odds) or, with probability
    ``pbt.resample_prob``, drawn afresh from its bounds; then clipped to
    them. Deterministic given ``key``; other fields unchanged."""
    changes = {}
    for i, name in enumerate(pbt.explore):
        value = getattr(hparams, name)
        k_which, k_factor, k_draw = jax.random.split(jax.random.fold_in(key, i), 3)
        low, high = pbt.bounds_of(name)
        factor = jnp.where(jax.random.bernoulli(k_factor, 0.5, value.shape),
                           jnp.float32(pbt.perturb[0]), jnp.float32(pbt.perturb[1]))
        u = jax.random.uniform(k_draw, value.shape, jnp.float32)
        if low > 0 and high / low >= 10:
            fresh = jnp.exp(jnp.log(jnp.float32(low)) + u * jnp.float32(math.log(high / low)))
        else:
            fresh = jnp.float32(low) + u * jnp.float32(high - low)
        resample = jax.random.uniform(k_which, value.shape) < pbt.resample_prob
        new = jnp.where(resample, fresh, value * factor)
        changes[name] = jnp.clip(new, jnp.float32(low), jnp.float32(high)).astype(value.dtype)
    return hparams.replace(**changes)


def exploit_and_explore(state: PBTState, pbt: PBTConfig) -> tuple[PBTState, jax.Array, jax.Array]:
    """One ready point: ``(state, source (P,), scores (P,))`` with the
    lowest-scoring members replaced (`select_sources`, `copy_members`), their
    copied hyperparameters perturbed (`explore`) and the scores reset."""
    key = jax.random.fold_in(state.key, state.update_step)
    k_select, k_explore = jax.random.split(key)
    scores = jnp.where(state.score_count > 0, state.score_sum / jnp.maximum(state.score_count, 1),
                       -jnp.inf)
    source = select_sources(scores, k_select, pbt.replaced)
    replaced = source != jnp.arange(source.shape[0], dtype=source.dtype)
    copied = jax.tree.map(lambda x: x[source], state.hparams)
    explored = explore(copied, k_explore, pbt)
    hparams = jax.tree.map(lambda new, old: jnp.where(replaced, new, old), explored, state.hparams)
    state = state.replace(
        members=copy_members(state.members, source),
        hparams=hparams,
        score_sum=jnp.zeros_like(state.score_sum),
        score_count=jnp.zeros_like(state.score_count),
    )
    return state, source, scores


def initial_population(config: PPOConfig, pbt: PBTConfig, rng: jax.Array) -> HyperParams:
    """A random first population: leaves (P,), each explored field drawn
    from its bounds (log-uniform where they span a factor of 10 or more, as
    `explore` resamples), the others ``config``'s."""
    base = population_of(config.hyperparams(), pbt.population)
    always = dataclasses.replace(pbt, resample_prob=1.0)
    return explore(base, rng, always)


def population_of(hparams: HyperParams, population: int) -> HyperParams:
    """``hparams`` (scalar leaves) repeated for each of ``population`` members."""
    return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.float32), (population,)), hparams)


@dataclasses.dataclass(frozen=True)
class PBTTrainer:
    """What `make_pbt` returns: a population's training function and parts,
    called as `make_train`'s `Trainer` is (and so usable by
    `purejaxppo.checkpoint.train_with_checkpoints`).

    ``pbt_train(rng, hparams=None) -> TrainResult``: ``hparams`` is the first
    population (leaves (P,); None: ``config``'s values for every member);
    the result's ``train_state`` is a `PBTState` and each metric has shape
    (P, num_updates). Pure and jittable; ``rng`` and ``hparams`` may carry a
    leading batch axis under `jax.vmap` (several populations).

    Attributes:
        config: the members' `PPOConfig` (its hyperparameters are the
            default first population's).
        pbt: the `PBTConfig`.
        trainer: one member's `Trainer`.
        init: ``init(rng, hparams=None, params=None, obs_norm=None) ->
            PBTState``.
        run_updates: ``run_updates(state, num_updates, hparams=None,
            first_update=0) -> (state, metrics)``; exploits after every
            update whose count is a multiple of ``ready_every`` (but not
            after the last). ``hparams`` and ``first_update`` are taken for
            the `Trainer` interface; the state holds both. Its metrics are
            `purejaxppo.train.METRIC_NAMES`, one ``hp_<field>`` per explored
            field, ``parent`` and ``pbt_score``.
    """

    config: PPOConfig
    pbt: PBTConfig
    trainer: Trainer
    init: Callable[..., PBTState]
    run_updates: Callable[..., tuple[PBTState, dict[str, jax.Array]]]
    env_devices: tuple | None = None
    hparams_ndim: ClassVar[int] = 1  # the population axis of ``hparams``

    def default_hparams(self) -> HyperParams:
        """``config``'s hyperparameters for every member."""
        return population_of(self.config.hyperparams(), self.pbt.population)

    def __call__(self, rng: jax.Array, hparams: HyperParams | None = None) -> TrainResult:
        state = self.init(rng, hparams)
        state, metrics = self.run_updates(state, self.config.num_updates)
        return TrainResult(train_state=state, metrics=metrics)


def check_pbt(config: PPOConfig, pbt: PBTConfig) -> None:
    """Refuse a ``pbt`` that does not fit ``config`` (a `ValueError` naming
    the field); starts no JAX backend."""
    if not isinstance(pbt, PBTConfig):
        raise TypeError(f"pbt must be a PBTConfig, got {type(pbt).__name__}")
    if pbt.ready_every >= config.num_updates:
        allowed = (f"1 to {config.num_updates - 1}" if config.num_updates > 1 else
                   "none: the run has one update; give it more total_timesteps")
        raise ValueError(f"PBTConfig.ready_every = {pbt.ready_every} leaves no ready point in the "
                         f"run's {config.num_updates} update(s); allowed: {allowed}")


def make_pbt(config: PPOConfig, pbt: PBTConfig, *, env: Any = None, env_params: Any = None) -> PBTTrainer:
    """Build population-based training of ``config`` as ``pbt`` says (see
    the module's docstring and `PBTTrainer`)."""
    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}")
    check_pbt(config, pbt)
    trainer = make_train(config, env=env, env_params=env_params)
    p = pbt.population

    def init(rng, hparams=None, params=None, obs_norm=None) -> PBTState:
        hparams = population_of(config.hyperparams(), p) if hparams is None else hparams
        shapes = {np.shape(x) for x in jax.tree.leaves(hparams)}
        if shapes != {(p,)}:
            raise ValueError(f"hparams of a population of {p} need leaves of shape ({p},); got "
                             f"shapes {sorted(shapes)} (population_of(hparams, {p}) repeats one setting)")
        members = jax.vmap(trainer.init, in_axes=(0, 0, None, None))(
            member_keys(rng, p), hparams, params, obs_norm)
        zeros = jnp.zeros((p,), jnp.float32)
        return PBTState(members=members, hparams=hparams, score_sum=zeros, score_count=zeros,
                        key=_pbt_key(rng), update_step=jnp.zeros((), jnp.int32))

    member_update = jax.vmap(trainer.update)

    def step(state: PBTState, _):
        members, metrics = member_update(state.members, state.hparams)
        returns = metrics["episode_return"]
        finite = jnp.isfinite(returns)
        state = state.replace(
            members=members,
            score_sum=state.score_sum + jnp.where(finite, returns, 0.0),
            score_count=state.score_count + finite,
            update_step=state.update_step + 1,
        )
        ready = (state.update_step % pbt.ready_every == 0) & (state.update_step < config.num_updates)
        keep = lambda s: (s, jnp.arange(p, dtype=jnp.int32), jnp.full((p,), jnp.nan, jnp.float32))
        hparams_used = state.hparams
        state, source, scores = jax.lax.cond(ready, lambda s: exploit_and_explore(s, pbt), keep, state)
        metrics = {
            **metrics,
            **{f"hp_{name}": getattr(hparams_used, name) for name in pbt.explore},
            "parent": source,
            "pbt_score": scores,
        }
        return state, metrics

    def run_updates(state: PBTState, num_updates: int, hparams=None, first_update=0):
        state, metrics = jax.lax.scan(step, state, None, length=num_updates)
        # (updates, P) -> (P, updates), as a vmapped run's metrics are laid out
        return state, {name: jnp.moveaxis(value, 0, -1) for name, value in metrics.items()}

    return PBTTrainer(config=config, pbt=pbt, trainer=trainer, init=init, run_updates=run_updates)


def schedules(metrics: dict[str, Any], pbt: PBTConfig) -> dict[str, np.ndarray]:
    """Each explored field's value at every update (``(*batch, P, updates)``),
    as the members ran them: the schedules PBT found."""
    return {name: np.asarray(metrics[f"hp_{name}"]) for name in pbt.explore}


def lineage(parent: Any, member: int) -> np.ndarray:
    """The ancestry of ``member`` at the end of one population's run:
    ``(updates,)`` int, the member whose state it carried at each update
    (read backwards through the ``parent`` metric, (P, updates))."""
    parent = np.asarray(parent)
    if parent.ndim != 2 or not 0 <= member < parent.shape[0]:
        raise ValueError(f"lineage needs one population's parent metric (P, updates) and a member in "
                         f"[0, P); got shape {parent.shape}, member {member}")
    out = np.empty(parent.shape[1], np.int64)
    current = member
    for u in range(parent.shape[1] - 1, -1, -1):
        # after update u, ``current`` holds the state member parent[current, u] had
        current = int(parent[current, u])
        out[u] = current
    return out
