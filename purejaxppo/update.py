"""The PPO update: ``update_epochs`` passes of shuffled minibatch gradient steps."""

from __future__ import annotations

import functools

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from purejaxppo.distributions import random_words
from purejaxppo.losses import LossStatic, Minibatch, normalize, ppo_loss


def _global_norm(tree) -> jax.Array:
    """sqrt(sum of squares) over every leaf: the norm `clip_by_global_norm` clips."""
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def make_optimizer(
    lr: jax.Array | float,
    max_grad_norm: jax.Array | float,
    anneal_lr: bool,
    num_gradient_steps: int,
) -> tuple[optax.GradientTransformation, optax.ScalarOrSchedule]:
    """Global-norm clipping then Adam (eps 1e-5); return ``(tx, lr_schedule)``.

    With ``anneal_lr`` the learning rate falls linearly from ``lr`` to 0 over
    ``num_gradient_steps`` optimizer steps (`optax.linear_schedule`).
    """
    if anneal_lr:
        schedule = optax.linear_schedule(lr, 0.0, num_gradient_steps)
    else:
        schedule = lambda count: jnp.asarray(lr, jnp.float32) * jnp.ones_like(count, jnp.float32)
    tx = optax.chain(
        optax.clip_by_global_norm(max_grad_norm),
        optax.adam(schedule, eps=1e-5),
    )
    return tx, schedule


def init_opt_state(tx: optax.GradientTransformation, params: Any) -> optax.OptState:
    """The optimizer state `ppo_update` expects: over the raveled parameters."""
    return tx.init(ravel_pytree(params)[0])


FEISTEL_ROUNDS = 12
_MIN_DOMAIN_BITS = 8


def _mix32(x: jax.Array) -> jax.Array:
    """A 32-bit avalanche hash (the MurmurHash3 finaliser), uint32 -> uint32."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def feistel_bijection(x: jax.Array, round_keys: jax.Array, bits: int) -> jax.Array:
    """A keyed bijection of ``[0, 2**bits)`` (uint32 in, uint32 out, elementwise).

    ``x`` is split into a high part H (``bits // 2`` bits) and a low part L;
    round i replaces H by ``H ^ f(L ^ k_i)`` (even i) or L by ``L ^ f(H ^ k_i)``
    (odd i), where f is `_mix32` cut to the part's width and k_i =
    ``round_keys[i]``. Each round is its own inverse given the other part, so
    the composition is a bijection for any keys: a (generalised) Feistel
    network.
    """
    high_bits = bits // 2
    low_bits = bits - high_bits
    high_mask = jnp.uint32((1 << high_bits) - 1)
    low_mask = jnp.uint32((1 << low_bits) - 1)
    high, low = x >> low_bits, x & low_mask
    for i in range(round_keys.shape[0]):
        if i % 2 == 0:
            high = high ^ (_mix32(low ^ round_keys[i]) & high_mask)
        else:
            low = low ^ (_mix32(high ^ round_keys[i]) & low_mask)
    return (high << low_bits) | low


def random_permutations(
    key: jax.Array, num: int, size: int, rounds: int = FEISTEL_ROUNDS
) -> jax.Array:
    """``num`` independent pseudo-random permutations of ``range(size)``.

    Row r maps i to a keyed `feistel_bijection` of ``[0, 2**k)``, the
    smallest power of two >= ``size`` (and >= 256), cycle-walked into
    ``range(size)``: while the image is >= ``size``, apply the bijection
    again (Black and Rogaway, "Ciphers with arbitrary finite domains",
    2002). The first image inside the range is the first in-range point on
    i's cycle, so the result is a permutation; for a uniformly random
    bijection it would be uniform. Each row has its own round keys from
    ``key``. With ``size`` a power of two (>= 256) no walking happens; else,
    for ``size`` >= 128, at least half the domain is in range, so walks are
    short (a smaller size still has the 256-point domain: size 7 walks about
    37 steps on average, a cost only small batches pay).

    It costs a few elementwise integer passes over the indices and no sort.
    A sort on 64-bit random keys, the previous method, took ~95 ms per
    permutation of 262,144 indices on the project's CPU; this takes
    under 1 ms (benchmarks/NOTES.md). Like every PRNG-keyed shuffle,
    including `jax.random.permutation`, it reaches only a tiny subset of
    the ``size!`` orderings. `tests/test_update.py` checks with chi-square
    tests that orderings, positions and neighbouring indices come out as
    from a uniform shuffle, and that the same tests reject 1 or 2 rounds.

    Returns:
        int32 array (num, size); row i is a permutation.
    """
    round_keys = random_words(key, num * rounds).reshape(num, rounds)
    return permutations_from_round_keys(round_keys, size)


def permutations_from_round_keys(round_keys: jax.Array, size: int) -> jax.Array:
    """`random_permutations` with its round keys given: uint32 (num, rounds),
    random words, one row per permutation. Returns int32 (num, size)."""
    if size < 1 or size > 2**31:
        raise ValueError(f"size must be in [1, 2**31], got {size}")
    chex.assert_rank(round_keys, 2)
    chex.assert_type(round_keys, jnp.uint32)
    bits = max(_MIN_DOMAIN_BITS, (size - 1).bit_length())
    indices = jax.lax.iota(jnp.uint32, size)

    def one(keys):
        step = lambda y: feistel_bijection(y, keys, bits)
        if size == 1 << bits:  # the domain is the range: no walking (and no loop to compile)
            return step(indices).astype(jnp.int32)
        outside = lambda y: y >= size
        y = jax.lax.while_loop(
            lambda y: jnp.any(outside(y)),
            lambda y: jnp.where(outside(y), step(y), y),
            step(indices),
        )
        return y.astype(jnp.int32)

    return jax.vmap(one)(round_keys)


def minibatch_indices(perms: jax.Array, num_minibatches: int) -> jax.Array:
    """The sample indices of every gradient step of an update, in order.

    ``perms`` (E, B) holds one permutation of the B samples per epoch; step
    ``e * M + m`` (epoch e, minibatch m of M) takes the samples
    ``perms[e, m * B // M : (m + 1) * B // M]``. Returns (E * M, B // M).
    """
    epochs, size = perms.shape
    if size % num_minibatches:
        raise ValueError(f"num_minibatches={num_minibatches} must divide the batch size {size}")
    return perms.reshape(epochs * num_minibatches, size // num_minibatches)


def take_minibatch(batch: Minibatch, indices: jax.Array) -> Minibatch:
    """The samples of ``batch`` at ``indices`` (n,), in that order."""
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0), batch)


def minibatch_gradient(
    params: Any,
    apply_fn: Callable,
    minibatch: Minibatch,
    hp,
    static: LossStatic,
    num_chunks: int = 1,
    reference_params: Any = None,
    axis_name: str | None = None,
) -> tuple[Any, dict[str, jax.Array]]:
    """Gradient of `ppo_loss` over ``minibatch`` (n samples), and its diagnostics.

    With ``num_chunks`` C > 1 the n samples are split into C equal chunks
    and the gradient is accumulated over them in a `lax.scan`::

        grad L(minibatch) = (1 / C) * sum_c grad L(chunk_c)

    which holds exactly (up to float summation order) because every term
    of the loss and every diagnostic is a mean over samples. Advantages are
    normalised over the whole minibatch first (``static.norm_adv``), so the
    chunks see the same advantages as the one-pass gradient. On CPU, chunks
    whose activations fit in the caches make a large minibatch's gradient
    ~30% cheaper (benchmarks/NOTES.md); on GPU one pass is better.

    ``reference_params``, if given, are those of the fixed reference policy
    of the loss's KL term (in the form ``apply_fn`` takes).

    With ``axis_name`` (a mapped axis of devices, each holding an equal share
    of the minibatch: `make_train`'s ``env_devices``), the minibatch is the
    union of the shares: advantages are normalised over the union, and the
    gradient and diagnostics are averaged across the axis (one `jax.lax.pmean`),
    the mean of equal shares' means being the union's mean. Every device
    then holds the same gradient.

    Returns:
        ``(grads, diagnostics)``, each diagnostic the minibatch mean.
    """
    grad_fn = functools.partial(jax.grad(ppo_loss, has_aux=True), reference_params=reference_params)
    size = minibatch.advantages.shape[0]
    if size % num_chunks:
        raise ValueError(f"num_chunks={num_chunks} must divide the minibatch size {size}")
    if static.norm_adv and (num_chunks > 1 or axis_name is not None):
        # Normalised over the whole minibatch (every device's share) before
        # the loss sees a part of it.
        minibatch = minibatch.replace(advantages=normalize(minibatch.advantages, axis_name=axis_name))
        static = static.replace(norm_adv=False)
    if num_chunks == 1:
        grads = grad_fn(params, apply_fn, minibatch, hp, static)
    else:
        chunks = jax.tree.map(
            lambda x: x.reshape((num_chunks, size // num_chunks) + x.shape[1:]), minibatch
        )

        chunk_grad = lambda chunk: grad_fn(params, apply_fn, chunk, hp, static)

        def add_chunk(total, chunk: Minibatch):
            return jax.tree.map(jnp.add, total, chunk_grad(chunk)), None

        shapes = jax.eval_shape(chunk_grad, jax.tree.map(lambda x: x[0], chunks))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        total, _ = jax.lax.scan(add_chunk, zeros, chunks)
        grads = jax.tree.map(lambda x: x / num_chunks, total)
    if axis_name is None:
        return grads
    # One all-reduce for the gradient and every diagnostic together.
    flat, unravel = ravel_pytree(grads)
    return unravel(jax.lax.pmean(flat, axis_name))


def ppo_update(
    params: Any,
    opt_state: optax.OptState,
    tx: optax.GradientTransformation,
    apply_fn: Callable,
    batch: Minibatch,
    key: jax.Array,
    hp,
    static: LossStatic,
    update_epochs: int,
    num_minibatches: int,
    num_chunks: int = 1,
    reference_params: Any = None,
    axis_name: str | None = None,
) -> tuple[Any, optax.OptState, dict[str, jax.Array]]:
    """Run ``update_epochs`` epochs over ``batch``, reshuffled every epoch.

    Args:
        batch: a flat `Minibatch` of all B = T * N samples of the rollout.
        key: PRNG key for the shuffles (one `random_permutations` row per
            epoch), or their round keys already drawn: uint32
            (update_epochs, FEISTEL_ROUNDS) random words (`make_train` draws
            them with the rest of an update's randomness, in one call).
        hp, static: see `purejaxppo.losses.ppo_loss`.
        num_chunks: chunks per minibatch gradient (`minibatch_gradient`).
        reference_params: parameters of a fixed reference policy (a pytree
            like ``params``) for the loss's KL term, or None.
        axis_name: a mapped axis of devices (`jax.shard_map`) over which
            ``batch`` is split in equal shares, or None. Each device shuffles
            its own share, and a gradient step's minibatch is the union of
            the devices' minibatches (`minibatch_gradient`): every device
            takes the same optimizer step, so ``params`` and ``opt_state``
            stay identical across the axis.

    Returns:
        ``(params, opt_state, diagnostics)``; ``opt_state`` is the state of
        ``tx`` over the raveled parameter vector (``ravel_pytree(params)[0]``,
        see `init_opt_state`); each diagnostic is the mean over
        all ``update_epochs * num_minibatches`` gradient steps, and includes
        ``grad_norm`` (the global norm before clipping).
    """
    chex.assert_rank(batch.advantages, 1)
    # The optimizer works on one raveled parameter vector: Adam and the norm
    # clip become a few kernels over one array instead of a few per leaf
    # (the same maths; -12% per gradient step on CPU, benchmarks/NOTES.md).
    flat_params, unravel = ravel_pytree(params)
    flat_apply = lambda flat, obs: apply_fn(unravel(flat), obs)
    flat_reference = None if reference_params is None else ravel_pytree(reference_params)[0]

    def minibatch_step(carry, indices):
        params, opt_state = carry
        minibatch = take_minibatch(batch, indices)
        grads, diagnostics = minibatch_gradient(
            params, flat_apply, minibatch, hp, static, num_chunks, flat_reference, axis_name
        )
        diagnostics["grad_norm"] = _global_norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), diagnostics

    # Every epoch's shuffle drawn in one batched call, before the loop; the
    # epochs' minibatches then run as one scan of update_epochs *
    # num_minibatches steps (one loop for XLA to compile, not two nested).
    size = batch.advantages.shape[0]
    if key.ndim == 2:  # round keys (a PRNG key is a scalar or one row of words)
        # Fewer rounds would shuffle measurably worse (`random_permutations`).
        chex.assert_shape(key, (update_epochs, FEISTEL_ROUNDS))
        perms = permutations_from_round_keys(key, size)
    else:
        perms = random_permutations(key, update_epochs, size)
    steps = minibatch_indices(perms, num_minibatches)
    (flat_params, opt_state), diagnostics = jax.lax.scan(minibatch_step, (flat_params, opt_state), steps)
    return unravel(flat_params), opt_state, jax.tree.map(jnp.mean, diagnostics)
