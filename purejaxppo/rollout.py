"""Rollout collection: ``num_steps`` steps of ``num_envs`` envs by `lax.scan`.

Only the actor runs inside the sequential scan (it must, to pick actions).
The critic is evaluated afterwards on the whole (T, N) batch at once, on both
the observations the actions were taken in and the observations each step
ended in (gymnax's ``final_observation``, before any auto-reset) where those
are not already among the former: one large batched pass instead of T small
ones, and the bootstrap value of a time-limit truncation comes out of it for
free (`critic_values`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

from purejaxppo.distributions import action_noise, random_words
from purejaxppo.envs import VecEnv


@struct.dataclass
class EpisodeStats:
    """Per-env episode bookkeeping on the raw (unscaled) reward, shape (N,)."""

    running_return: jax.Array  # return of the episode in progress
    running_length: jax.Array  # length of the episode in progress
    last_return: jax.Array  # return of the most recently finished episode
    last_length: jax.Array  # its length
    num_finished: jax.Array  # episodes finished so far (int32)

    @classmethod
    def zeros(cls, num_envs: int) -> "EpisodeStats":
        f = jnp.zeros((num_envs,), jnp.float32)
        i = jnp.zeros((num_envs,), jnp.int32)
        return cls(f, i, f, i, i)

    def record(self, reward: jax.Array, done: jax.Array) -> "EpisodeStats":
        """Add one step's reward; close the episodes where ``done``."""
        ret = self.running_return + reward
        length = self.running_length + 1
        return EpisodeStats(
            running_return=jnp.where(done, 0.0, ret),
            running_length=jnp.where(done, 0, length),
            last_return=jnp.where(done, ret, self.last_return),
            last_length=jnp.where(done, length, self.last_length),
            num_finished=self.num_finished + done.astype(jnp.int32),
        )

    def summary(self, axis_name: str | None = None) -> dict[str, jax.Array]:
        """Mean return and length of each env's most recently finished episode.

        Envs with no finished episode yet are left out of the mean; while no
        env has finished one, both are NaN (there is nothing to report).
        With ``axis_name``, over the envs of every member of that mapped axis
        (devices each holding a share of the envs).
        """
        total = lambda x: x if axis_name is None else jax.lax.psum(x, axis_name)
        has = self.num_finished > 0
        count = total(jnp.sum(has))
        mean = lambda x: jnp.where(
            count > 0, total(jnp.sum(jnp.where(has, x, 0.0))) / jnp.maximum(count, 1), jnp.nan
        )
        return {
            "episode_return": mean(self.last_return),
            "episode_length": mean(self.last_length.astype(jnp.float32)),
        }


@struct.dataclass
class EnvCarry:
    """What the env loop carries from one rollout to the next."""

    env_state: Any
    obs: jax.Array  # (N, *obs_shape), the observation to act on next
    episode_stats: EpisodeStats


def pack_leaves(tree: Any, lead_ndim: int) -> tuple[dict[str, jax.Array], tuple]:
    """``tree``'s leaves, which share ``lead_ndim`` leading axes, as one array
    per dtype: ``(arrays, layout)``, ``arrays[dtype name]`` of shape
    (*lead, k), each leaf flattened after the leading axes and the leaves
    concatenated in tree order; ``layout`` (static, hashable) is what
    `unpack_leaves` needs to give the tree back.

    A `lax.scan` carrying many small arrays makes XLA CPU compile and run
    one kernel per array for each elementwise update of the carry (the
    auto-reset's selects, the episode statistics); packed, it is one per
    dtype (benchmarks/NOTES.md, session 21), which pays only for small
    carries (`packs`). Each leaf stays one contiguous block in its own
    layout (the env axis is flattened with the rest, not kept as a leading
    axis), so unpacking one is a contiguous slice.
    """
    leaves, treedef = jax.tree.flatten(tree)
    groups: dict[str, list[jax.Array]] = {}
    spec = []
    for leaf in leaves:
        name = jnp.dtype(leaf.dtype).name
        group = groups.setdefault(name, [])
        offset = sum(math.prod(x.shape[lead_ndim:]) for x in group)
        spec.append((name, offset, tuple(leaf.shape[lead_ndim:])))
        group.append(leaf)
    arrays = {
        name: jnp.concatenate([x.reshape(x.shape[:lead_ndim] + (-1,)) for x in group], axis=-1)
        for name, group in groups.items()
    }
    return arrays, (treedef, tuple(spec))


def unpack_leaves(arrays: dict[str, jax.Array], layout: tuple) -> Any:
    """The tree `pack_leaves` packed into ``arrays`` with ``layout``."""
    treedef, spec = layout
    leaves = []
    for name, offset, shape in spec:
        x = arrays[name]
        size = math.prod(shape)
        leaves.append(x[..., offset : offset + size].reshape(x.shape[:-1] + shape))
    return jax.tree.unflatten(treedef, leaves)


PACK_MAX_SIZE = 128
"""The most elements (all envs' together) of an env carry that the rollout
carries packed (`packs`)."""


def packs(carry: EnvCarry) -> bool:
    """Whether the rollout carries ``carry`` packed (`PackedCarry`): when it
    holds at most `PACK_MAX_SIZE` elements in all (per seed under `vmap`).

    Packing pays where each step's arrays are so small that running a
    kernel costs more than its work: CartPole with 4 envs (56 elements)
    trained 10% faster packed, with 8 (112) 4-5% faster. With more envs
    the packed update of the carry, one kernel that gathers every leaf,
    runs slower than the leaves' own vectorised kernels: CartPole with 16, 64 and 256 envs trained 1-3%
    slower packed, and its env-only rollout 1.4-2.6x slower; a MinAtar
    carry (64 envs of 10 x 10 x 4 observations) rolled out 12x slower
    (benchmarks/NOTES.md, session 21).
    """
    return sum(x.size for x in jax.tree.leaves(carry)) <= PACK_MAX_SIZE


@struct.dataclass
class PackedCarry:
    """An `EnvCarry` packed by `pack_leaves`: one flat array per dtype.

    For a small carry (`packs`), what `collect_rollout`'s loop carries, and
    what ``train.run_updates`` carries from one update to the next (packing
    and unpacking once per call, not once per rollout). `collect_rollout`
    takes and returns either form.
    """

    arrays: dict[str, jax.Array]
    layout: tuple = struct.field(pytree_node=False)

    @classmethod
    def pack(cls, carry: EnvCarry) -> "PackedCarry":
        return cls(*pack_leaves(carry, 0))

    def unpack(self) -> EnvCarry:
        return unpack_leaves(self.arrays, self.layout)


@struct.dataclass
class Trajectory:
    """A rollout, time-major: every field has leading axes (T, N)."""

    obs: jax.Array  # s_t, the observation acted on
    actions: jax.Array  # a_t, unclipped (what the policy sampled and scores)
    log_probs: jax.Array  # log pi_old(a_t | s_t)
    rewards: jax.Array  # r_t (raw env reward)
    terminated: jax.Array  # true end at t: no bootstrap
    truncated: jax.Array  # time limit at t: bootstrap from final_obs
    final_obs: jax.Array  # the observation step t ended in, before auto-reset

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated


def key_words(key: jax.Array) -> int:
    """uint32 words of one PRNG key like ``key`` (2 for threefry)."""
    return jax.random.key_data(key).shape[-1]


def keys_from_words(words: jax.Array, like: jax.Array) -> jax.Array:
    """PRNG keys of the same kind as ``like`` from random uint32 ``words``
    (..., `key_words`): typed keys stay typed, raw uint32 keys stay raw.
    Random words are what `jax.random.split` makes keys of, too."""
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(words, impl=jax.random.key_impl(like))
    return words


@struct.dataclass
class RolloutRandomness:
    """Everything random a rollout of T steps of N envs consumes, drawn
    before its sequential loop (leading axes (T, N) on every field).

    Attributes:
        action_noise: what `sample_from_noise` turns into actions,
            (T, N, action_dim) float32 (Gumbel for discrete actions, standard
            normal for continuous ones).
        env_keys: one PRNG key per env and step for the env's transition.
        resets: `VecEnv.draw_resets` of one key per env and step:
            ``(obs (T, N, *obs_shape), env_state)``, the state an env takes
            if its episode ends at that step; None for envs whose own
            ``step`` must reset them.
    """

    action_noise: jax.Array
    env_keys: jax.Array
    resets: Any

    @staticmethod
    def num_words(vec_env: VecEnv, num_steps: int, key: jax.Array) -> int:
        """uint32 words `from_words` takes: per env and step, the action
        noise, an env key and a reset key."""
        return num_steps * vec_env.num_envs * (vec_env.spec.action_dim + 2 * key_words(key))

    @classmethod
    def from_words(
        cls, words: jax.Array, vec_env: VecEnv, num_steps: int, like: jax.Array
    ) -> "RolloutRandomness":
        """Made of `num_words` random uint32 ``words``; keys of the kind of ``like``."""
        chex.assert_shape(words, (cls.num_words(vec_env, num_steps, like),))
        a, w = vec_env.spec.action_dim, key_words(like)
        bits = words.reshape(num_steps, vec_env.num_envs, a + 2 * w)
        return cls(
            action_noise=action_noise(bits[..., :a], vec_env.spec.discrete),
            env_keys=keys_from_words(bits[..., a : a + w], like),
            resets=vec_env.draw_resets(keys_from_words(bits[..., a + w :], like)),
        )

    @classmethod
    def draw(cls, key: jax.Array, vec_env: VecEnv, num_steps: int) -> "RolloutRandomness":
        """From one flat draw (`random_words`): one threefry kernel for XLA
        to compile (each costs 0.1-0.4 s of compile on CPU; a flat draw
        compiles faster than an N-d one; benchmarks/NOTES.md)."""
        n = cls.num_words(vec_env, num_steps, key)
        return cls.from_words(random_words(key, n), vec_env, num_steps, key)


def collect_rollout(
    policy_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    vec_env: VecEnv,
    carry: EnvCarry | PackedCarry,
    key: jax.Array | RolloutRandomness,
    num_steps: int,
) -> tuple[EnvCarry | PackedCarry, Trajectory]:
    """Step ``vec_env`` for ``num_steps`` with actions sampled from the policy.

    Args:
        policy_fn: ``policy_fn(params, obs) -> distribution``.
        params: network parameters (held fixed during the rollout).
        vec_env: the vectorised environment.
        carry: env state, current observation and episode stats, as an
            `EnvCarry` or a `PackedCarry` (returned in the same form).
        key: PRNG key for action sampling and env transitions, or the
            `RolloutRandomness` already drawn (`make_train` draws it with
            the rest of an update's randomness, in one call).
        num_steps: T (static).

    Returns:
        The new carry and the (T, N) `Trajectory`.
    """
    n = vec_env.num_envs
    spec = vec_env.spec
    # All randomness of the rollout is drawn outside the sequential loop.
    draws = key if isinstance(key, RolloutRandomness) else RolloutRandomness.draw(key, vec_env, num_steps)
    chex.assert_shape(draws.action_noise, (num_steps, n, spec.action_dim))

    # A small carry is packed (`packs`): the loop then carries it packed,
    # takes each step's reset states as rows of one packed (T, k) array per
    # dtype, and stacks each step's transition packed.
    packed = isinstance(carry, PackedCarry) or packs(carry)
    loop_carry = PackedCarry.pack(carry) if packed and isinstance(carry, EnvCarry) else carry
    resets, reset_layout = draws.resets, None
    if packed and resets is not None:
        resets, reset_layout = pack_leaves(resets, 1)

    def env_step(loop_carry, step_inputs):
        carry = loop_carry.unpack() if packed else loop_carry
        step_noise, step_keys, step_resets = step_inputs
        if packed and step_resets is not None:
            step_resets = unpack_leaves(step_resets, reset_layout)
        dist = policy_fn(params, carry.obs)
        action = dist.sample_from_noise(step_noise)
        log_prob = dist.log_prob(action)
        step = vec_env.step_with_keys(step_keys, carry.env_state, action, step_resets)
        done = step.terminated | step.truncated
        transition = Trajectory(
            obs=carry.obs,
            actions=action,
            log_probs=log_prob,
            rewards=step.reward,
            terminated=step.terminated,
            truncated=step.truncated,
            final_obs=step.final_obs,
        )
        new_carry = EnvCarry(
            env_state=step.env_state,
            obs=step.obs,
            episode_stats=carry.episode_stats.record(step.reward, done),
        )
        if not packed:
            return new_carry, transition
        transition, traj_layout[0] = pack_leaves(transition, 0)
        return PackedCarry.pack(new_carry), transition

    traj_layout = [None]  # the packed transition's layout, known once the step is traced
    loop_carry, traj = jax.lax.scan(env_step, loop_carry, (draws.action_noise, draws.env_keys, resets))
    if packed:
        traj = unpack_leaves(traj, traj_layout[0])
    # Returned in the form it came in.
    carry = loop_carry.unpack() if packed and isinstance(carry, EnvCarry) else loop_carry
    chex.assert_shape([traj.obs, traj.final_obs], (num_steps, n, *spec.obs_shape))
    chex.assert_shape(traj.actions, (num_steps, n, *spec.action_shape))
    chex.assert_shape(
        [traj.log_probs, traj.rewards, traj.terminated, traj.truncated], (num_steps, n)
    )
    return carry, traj


def _truncation_windows(num_steps: int, truncation_period: int | None) -> tuple[int, int]:
    """(width, count) of the windows `critic_values` cuts the first T - 1
    steps into, or (0, 0) where the full pass is evaluated."""
    inside = num_steps - 1
    if truncation_period is None or inside < 1:
        return 0, 0
    width = min(truncation_period, inside)
    windows = -(-inside // width)
    return (width, windows) if windows < inside else (0, 0)


def critic_rows(num_steps: int, truncation_period: int | None = None) -> int:
    """Observations per env that `critic_values` evaluates for a rollout of
    ``num_steps``: 2 T for the full pass, T + 1 + the windows' count for the
    reduced one (129 + 1 = 130 for CartPole defaults, against 256)."""
    _, windows = _truncation_windows(num_steps, truncation_period)
    return num_steps + 1 + windows if windows else 2 * num_steps


def critic_values(
    value_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    traj: Trajectory,
    truncation_period: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(values, next_values)``, both (T, N), from one batched critic pass.

    ``values[t] = V(obs[t])``; ``next_values[t] = V(final_obs[t])``: the value
    of the observation step t ended in, before any auto-reset. Inside an
    episode that is V(s_{t+1}); at a time-limit truncation it is the bootstrap
    value of the cut-off episode (never the value of the reset observation);
    at a termination GAE masks it out.

    ``truncation_period``: P such that no env truncates twice in P
    consecutive steps, known before tracing (`VecEnv.truncation_period`).
    With it the pass skips the final observations whose value it already
    has: where step t did not end an episode, ``final_obs[t]`` is
    ``obs[t + 1]`` (the rollout stores the same observation twice), so
    ``next_values[t] = values[t + 1]``, and where it terminated GAE masks the
    value out (``next_values[t]`` is then the reset observation's value, not
    the final one's: the advantages and returns are the full pass's). The
    steps before the last are cut into windows of at most P steps, each
    holding at most one truncation per env; the critic reads ``obs`` (T*N),
    the last step's final observations (N) and one final observation per
    window and env (that window's truncated step, if any): 520 observations
    in place of 1,024 for CartPole defaults (T = 128, N = 4, P = 500). A
    period longer than the envs' true one would give some truncations the
    reset observation's value; `VecEnv.truncation_period` claims one only
    where it is checked. None, or a period too short to save anything:
    every final observation is evaluated.
    """
    num_steps, n = traj.rewards.shape
    obs_shape = traj.obs.shape[2:]
    inside = num_steps - 1  # the steps whose next observation is in the rollout
    width, windows = _truncation_windows(num_steps, truncation_period)
    if not windows:
        both = jnp.concatenate([traj.obs, traj.final_obs], axis=0)
        values, next_values = jnp.split(value_fn(params, both), [num_steps], axis=0)
        chex.assert_equal_shape([values, next_values, traj.rewards])
        return values, next_values
    # Each window's truncated step per env (step 0 of the window where none).
    cut = jnp.pad(traj.truncated[:-1], ((0, windows * width - inside), (0, 0)))
    cut = cut.reshape(windows, width, n)
    step = jnp.argmax(cut, axis=1) + width * jnp.arange(windows)[:, None]  # (windows, N)
    cut_obs = jnp.take_along_axis(
        traj.final_obs[:-1], step.reshape(step.shape + (1,) * len(obs_shape)), axis=0
    )
    batch = jnp.concatenate([traj.obs, traj.final_obs[-1:], cut_obs], axis=0)
    out = value_fn(params, batch)  # (T + 1 + windows, N)
    values, last, cut_values = out[:num_steps], out[num_steps], out[num_steps + 1 :]
    cut_values = jnp.repeat(cut_values, width, axis=0, total_repeat_length=windows * width)[:inside]
    next_values = jnp.concatenate(
        [jnp.where(traj.truncated[:-1], cut_values, values[1:]), last[None]], axis=0
    )
    chex.assert_equal_shape([values, next_values, traj.rewards])
    return values, next_values
