"""Seeds over devices: one vmapped training run, split across devices by its keys.

``jax.jit(jax.vmap(train))(keys)`` trains one seed per key. Put the keys on
a device mesh first, ``keys = shard_seeds(keys)``, and ``jax.jit`` partitions
the same program over the seed axis: each device trains its share of the
seeds, and no data moves between devices (the seeds' computations are
independent). The call itself is unchanged, on CPU, GPU or TPU; the
results are those of the one-device run up to float summation order
(tests/test_devices.py): the parameters bitwise with jaxlib 0.10 and 0.11
where each device trains two seeds or more; to float rounding where XLA
compiles a device's share differently (jaxlib 0.12, or one seed per
device). So a checkpointed run resumed on another device count continues
within float rounding, not bit for bit, where a device held one seed.

One seed's envs split over devices instead: ``make_train(config,
env_devices=D)`` (`purejaxppo.train.split_envs_over_devices`). On a CPU,
XLA shows one device unless asked for more before JAX starts:
`purejaxppo.platform.cpu_devices`.
"""

from __future__ import annotations

import numpy as np

SEED_AXIS = "seeds"


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest d <= ``limit`` that divides ``n`` (both >= 1)."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def seed_sharding(num_seeds: int, devices=None):
    """A `NamedSharding` that splits a leading seed axis of ``num_seeds``
    over the most of ``devices`` (default: all of JAX's default backend)
    that divide it evenly; one device when none do."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(jax.devices() if devices is None else devices)
    count = largest_divisor_at_most(num_seeds, len(devices))
    mesh = Mesh(np.array(devices[:count]), (SEED_AXIS,))
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree, devices=None):
    """``tree`` (PRNG keys, or any pytree with the seed axis leading every
    leaf) placed by `seed_sharding`: ``jax.jit(jax.vmap(train))`` of it runs
    each device's seeds there."""
    import jax

    leaves = jax.tree.leaves(tree)
    if not leaves:
        return tree
    num_seeds = leaves[0].shape[0]
    for leaf in leaves:
        if leaf.ndim == 0 or leaf.shape[0] != num_seeds:
            raise ValueError(
                f"shard_seeds: every leaf needs the seed axis first, of size {num_seeds}; "
                f"got a leaf of shape {leaf.shape}"
            )
    return jax.device_put(tree, seed_sharding(num_seeds, devices))
