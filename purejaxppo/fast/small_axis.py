"""Reductions over a small last axis (the action axis) as elementwise ops.

Plain JAX equivalents: ``jnp.sum(x, axis=-1)``, ``jax.nn.log_softmax(x)``
and ``jnp.take_along_axis(x, i[..., None], axis=-1)[..., 0]``, which a wide
axis (more than `SMALL_AXIS`) still uses. Equal to them up to float
summation order (``tests/test_fast.py``).

Gain: XLA on CPU runs a reduction over a 2-wide axis of an (8192, 2) array,
and the reduction that is its gradient, many times slower than the
elementwise fusion these become; a gather's gradient is a scatter, a
select's is elementwise. The 2048 envs x 128 steps CartPole case trained
about 10% faster with them (1.86-1.89 s per update against 1.88-1.98 s;
benchmarks/NOTES.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

SMALL_AXIS = 8
"""Action axes up to this size are reduced by unrolled elementwise ops."""


def _columns(x: jax.Array) -> list[jax.Array]:
    return [x[..., i] for i in range(x.shape[-1])]


def sum_last(x: jax.Array) -> jax.Array:
    """``jnp.sum(x, axis=-1)``; for a last axis of at most `SMALL_AXIS`, as a
    chain of elementwise adds of its columns.

    XLA on CPU runs a reduction over a 2-wide axis of an (8192, 2) array, and
    the reduction that is its gradient, many times slower than the
    elementwise fusion this becomes (benchmarks/NOTES.md). The
    gradient of a column slice is elementwise too.
    """
    if x.shape[-1] > SMALL_AXIS:
        return jnp.sum(x, axis=-1)
    return functools.reduce(jnp.add, _columns(x))


def log_softmax(logits: jax.Array) -> jax.Array:
    """``jax.nn.log_softmax`` over the last axis, by `sum_last`'s rule:
    log p_i = l_i - m - log sum_j exp(l_j - m), m = max_j l_j (held constant
    under differentiation, as the result does not depend on it)."""
    if logits.shape[-1] > SMALL_AXIS:
        return jax.nn.log_softmax(logits, axis=-1)
    cols = _columns(logits)
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, cols))
    lse = m + jnp.log(functools.reduce(jnp.add, [jnp.exp(c - m) for c in cols]))
    # Stacked columns, not `logits - lse[..., None]`: the gradient of that
    # broadcast would be a reduction over the action axis again.
    return jnp.stack([c - lse for c in cols], axis=-1)


def take_last(x: jax.Array, index: jax.Array) -> jax.Array:
    """``x[..., index]`` elementwise over the leading axes: ``x`` (..., k),
    integer ``index`` of ``x.shape[:-1]``; for k <= `SMALL_AXIS`, a chain
    of selects (elementwise forward and backward)."""
    if x.shape[-1] > SMALL_AXIS:
        return jnp.take_along_axis(x, index[..., None], axis=-1)[..., 0]
    cols = _columns(x)
    return functools.reduce(
        lambda out, i: jnp.where(index == i, cols[i], out), range(1, len(cols)), cols[0]
    )
