"""A small env carry packed into one flat array per dtype inside the rollout's scan.

Plain equivalent: the `lax.scan` of the rollout carries the `EnvCarry` as it
is. The values are the same, bit for bit (packing is a copy); only the
number of arrays XLA updates per step differs.

Gain: a `lax.scan` carrying many small arrays makes XLA CPU run one kernel
per array for each elementwise update of the carry (the auto-reset's
selects, the episode statistics); packed, it is one per dtype. CartPole's
defaults (4 envs, 56 elements) trained x1.09 as fast packed; with 16 or
more envs packing lost 1-3%, so only a carry of at most `PACK_MAX_SIZE`
elements is packed (``python benchmarks/compare_revisions.py``;
benchmarks/NOTES.md).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp


def pack_leaves(tree: Any, lead_ndim: int) -> tuple[dict[str, jax.Array], tuple]:
    """``tree``'s leaves, which share ``lead_ndim`` leading axes, as one array
    per dtype: ``(arrays, layout)``, ``arrays[dtype name]`` of shape
    (*lead, k), each leaf flattened after the leading axes and the leaves
    concatenated in tree order; ``layout`` (static, hashable) is what
    `unpack_leaves` needs to give the tree back.

    A `lax.scan` carrying many small arrays makes XLA CPU compile and run
    one kernel per array for each elementwise update of the carry (the
    auto-reset's selects, the episode statistics); packed, it is one per
    dtype (benchmarks/NOTES.md), which pays only for small
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


def packs(carry: Any) -> bool:
    """Whether the rollout carries ``carry`` packed (`packed_scan`): when it
    holds at most `PACK_MAX_SIZE` elements in all (per seed under `vmap`).

    Packing pays where each step's arrays are so small that running a
    kernel costs more than its work: CartPole with 4 envs (56 elements)
    trained 10% faster packed, with 8 (112) 4-5% faster. With more envs
    the packed update of the carry, one kernel that gathers every leaf,
    runs slower than the leaves' own vectorised kernels: CartPole with 16, 64 and 256 envs trained 1-3%
    slower packed, and its env-only rollout 1.4-2.6x slower; a MinAtar
    carry (64 envs of 10 x 10 x 4 observations) rolled out 12x slower
    (benchmarks/NOTES.md).
    """
    return sum(x.size for x in jax.tree.leaves(carry)) <= PACK_MAX_SIZE


def packed_scan(step: Callable, carry: Any, xs: tuple) -> tuple[Any, Any]:
    """``jax.lax.scan(step, carry, xs)`` with ``carry``, the per-step outputs
    and each element of the tuple ``xs`` that holds several arrays (the
    rollout's reset states) packed by `pack_leaves`: ``step`` sees and
    returns them unpacked, the scan carries and stacks them packed. The
    result is the plain scan's, bit for bit."""
    packed_carry, carry_layout = pack_leaves(carry, 0)
    layouts = [None] * len(xs)
    packed_xs = list(xs)
    for i, x in enumerate(xs):
        if x is not None and len(jax.tree.leaves(x)) > 1:
            packed_xs[i], layouts[i] = pack_leaves(x, 1)
    out_layout = [None]  # the packed output's layout, known once `step` is traced

    def packed_step(packed, inputs):
        inputs = tuple(x if layout is None else unpack_leaves(x, layout)
                       for x, layout in zip(inputs, layouts))
        new_carry, out = step(unpack_leaves(packed, carry_layout), inputs)
        out, out_layout[0] = pack_leaves(out, 0)
        return pack_leaves(new_carry, 0)[0], out

    packed_carry, packed_out = jax.lax.scan(packed_step, packed_carry, tuple(packed_xs))
    return unpack_leaves(packed_carry, carry_layout), unpack_leaves(packed_out, out_layout[0])
