"""The network's orthogonal initialisation from one random draw, without LAPACK.

Plain JAX equivalent: ``network.init(key, obs)`` with
``nn.initializers.orthogonal(gain)`` kernels (a QR decomposition per layer).
Same law (Haar-distributed kernels times their gain, zero biases), another
random stream; ``tests/test_networks.py`` checks the law and each kernel.

Why it stays: not speed (its compile gain was within the noise) but
reliability. jaxlib's batched CPU QR, the custom call a ``jax.vmap`` of
flax's init over many seeds makes, can deadlock on a small thread pool when
two run at once (seen at 256 seeds on one device, and at 4 seeds split over
two CPU devices); the Gram-Schmidt here is pure ``lax``. And one draw is one
threefry kernel to compile, not one per layer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import flax.linen as nn  # noqa: F401  (annotations)
import jax
import jax.numpy as jnp

from purejaxppo.fast.random_draws import normal_from_bits
from purejaxppo.fast.straight_threefry import straight
from purejaxppo.networks import GRU_GAIN, HIDDEN_GAIN, POLICY_GAIN, VALUE_GAIN


def kernel_gain(path: Sequence[str]) -> float:
    """The orthogonal-init gain of the kernel at ``path`` in `ActorCritic`'s
    params: 0.01 in the policy head, 1.0 in the value head and a GRU, sqrt(2)
    elsewhere (the torsos' Dense and Conv3x3 layers)."""
    if any(part.startswith("grus") for part in path):
        return GRU_GAIN
    if "policy_head" in path:
        return POLICY_GAIN
    if "value_head" in path:
        return VALUE_GAIN
    return HIDDEN_GAIN


def _orthogonal_draw_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(n, m), n >= m: the Gaussian matrix whose QR gives an orthogonal
    kernel of ``shape`` (rows = all axes but the last, columns = the last)."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    return (max(rows, cols), min(rows, cols))


def orthonormal_columns(a: jax.Array) -> jax.Array:
    """The Q of the QR decomposition of ``a`` (..., n, m), n >= m, with R's
    diagonal positive: Gram-Schmidt, each column orthogonalised twice
    ("twice is enough": orthogonal to float precision for full-rank ``a``).

    For a standard Gaussian ``a``, Q is Haar-distributed, as from
    `jnp.linalg.qr` with the signs fixed by diag(R). Pure `lax` rather than
    LAPACK: jaxlib's batched CPU QR (the custom call a `jax.vmap` over many
    seeds makes) can deadlock on a small thread pool when two run at once:
    it hung here at 256 seeds on one device (benchmarks/NOTES.md),
    and at 4 seeds split over two CPU devices. With no LAPACK
    call, the init can be split over devices (`purejaxppo.devices`).
    """
    def column(j, q):
        v = jax.lax.dynamic_index_in_dim(a, j, axis=-1, keepdims=False)
        for _ in range(2):  # columns >= j of q are still zero
            v = v - jnp.einsum("...nm,...m->...n", q, jnp.einsum("...nm,...n->...m", q, v))
        v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
        return jax.lax.dynamic_update_index_in_dim(q, v, j, axis=-1)

    return jax.lax.fori_loop(0, a.shape[-1], column, jnp.zeros_like(a))


def init_params(network: nn.Module, key: jax.Array, *inputs: jax.Array) -> Any:
    """Parameters of ``network``, distributed as ``network.init(key, *inputs)``,
    from one random draw.

    Kernels are orthogonal with `kernel_gain` (Haar-distributed: the Q of the
    QR decomposition of a standard Gaussian matrix with diag(R) > 0, as in
    `jax.nn.initializers.orthogonal`; `orthonormal_columns`), a GRU's
    recurrent kernel one orthogonal block per gate; biases and the log-std
    are 0.
    Any other parameter name is an error. `make_train` initialises with this.

    `network.init` draws one Gaussian matrix per layer, and on CPU each draw
    is a threefry kernel that XLA compiles apart. Here all Gaussians come
    from one flat `jax.random.bits` call, through a `purejaxppo.fast.straight_threefry.straight`
    key (JAX's threefry bits, with no loop to compile), and all kernels
    whose draws have the same row count share one batched orthogonalisation
    (for an MLP torso: every kernel, one loop). Only the random stream
    differs from `network.init` (benchmarks/NOTES.md).
    """
    abstract = jax.eval_shape(network.init, key, *inputs)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    paths = [tuple(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
    # Each orthogonal block to draw: (leaf index, block index, block shape).
    # A kernel is one block; a GRU's recurrent kernel (H, 3H) is three (H, H)
    # blocks, one per gate (`purejaxppo.networks.gate_orthogonal`).
    blocks: list[tuple[int, int, tuple[int, ...]]] = []
    for i, (path, (_, leaf)) in enumerate(zip(paths, leaves)):
        if path[-1] == "kernel":
            blocks.append((i, 0, tuple(leaf.shape)))
        elif path[-1] == "recurrent_kernel":
            rows, cols = leaf.shape
            blocks.extend((i, b, (rows, cols // 3)) for b in range(3))
        elif path[-1] not in ("bias", "recurrent_bias", "log_std"):
            raise ValueError(
                f"init_params: no initialiser for parameter {'/'.join(path)}; "
                "allowed leaf names: kernel and recurrent_kernel (orthogonal), bias, "
                "recurrent_bias and log_std (zeros)"
            )
    # Blocks grouped by the row count n of their Gaussian draw (n, m): one
    # Gram-Schmidt loop per group, over the group's widest m. Column j of Q
    # depends on columns <= j of the draw only, so a narrower block takes
    # the first m columns and has exactly the law of its own (n, m) draw.
    groups: dict[int, list[int]] = defaultdict(list)
    for j, (_, _, shape) in enumerate(blocks):
        groups[_orthogonal_draw_shape(shape)[0]].append(j)
    widths = {
        n: max(_orthogonal_draw_shape(blocks[j][2])[1] for j in idx)
        for n, idx in groups.items()
    }
    sizes = [len(idx) * n * widths[n] for n, idx in groups.items()]
    bits = jax.random.bits(straight(key), (max(sum(sizes), 1),), jnp.uint32)
    gaussian = normal_from_bits(bits)
    drawn: dict[tuple[int, int], jax.Array] = {}
    offset = 0
    for (n, idx), size in zip(groups.items(), sizes):
        a = gaussian[offset : offset + size].reshape(len(idx), n, widths[n])
        offset += size
        q = orthonormal_columns(a)
        for k, j in enumerate(idx):
            i, b, shape = blocks[j]
            m = _orthogonal_draw_shape(shape)[1]
            w = q[k, :, :m] if math.prod(shape[:-1]) >= shape[-1] else q[k, :, :m].T
            drawn[i, b] = kernel_gain(paths[i]) * w.reshape(shape)
    values = []
    for i, (_, leaf) in enumerate(leaves):
        parts = [drawn[i, b] for b in range(3) if (i, b) in drawn]
        value = jnp.concatenate(parts, axis=-1) if parts else jnp.zeros(leaf.shape)
        values.append(value.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, values)
