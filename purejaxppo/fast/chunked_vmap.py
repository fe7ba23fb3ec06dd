"""A function whose `jax.vmap` runs over chunks of the batch.

Plain equivalent: ``fn`` under `jax.vmap` as it is, the whole batch at
once. The outputs are the same (``tests/test_fast.py``).

Gain: an env whose reset is a large graph can run much slower per element
vmapped over thousands of keys than over a few, and training's automatic
reset draws one reset per env step (`purejaxppo.envs.VecEnv.draw_resets`,
T x N per rollout). Craftax-Classic's world generation, on 2 shared CPU
cores: ~17 worlds/s vmapped over 1,024 keys at once, ~1,700-2,100/s in
chunks of 8; training its preset ran at ~650 steps/s with chunks against
~260 without (`python benchmarks/returns.py --presets
craftax/Craftax-Classic-Symbolic-v1`; the craftax adapter applies it to its
``reset_env``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def chunked_vmap(fn: Callable, chunk: int) -> Callable:
    """``fn``, unchanged when called, whose batching under `jax.vmap` is
    `jax.lax.map` over chunks of ``chunk`` rows, each chunk vmapped (the
    batch need not be a multiple of ``chunk``). Unbatched arguments are
    broadcast; every output is batched."""
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r}; allowed: an int >= 1")
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        args = jax.tree.map(
            lambda x, batched: x if batched else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)),
            args, tuple(in_batched))
        out = jax.lax.map(lambda row: fn(*row), args, batch_size=min(chunk, axis_size))
        return out, jax.tree.map(lambda _: True, out)

    return wrapped
