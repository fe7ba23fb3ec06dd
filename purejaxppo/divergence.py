"""Non-finite training, flagged inside the compiled run and found on the host.

Each update's ``nonfinite`` metric (`nonfinite_flags`) is 0 while the update's
loss, gradient norm and new parameters are all finite, else a bitmask of
which are not: 1 the loss, 2 the gradient norm, 4 the parameters. The loss
and gradient norm are the update's means over its gradient steps, so a NaN
or Inf in any one step shows. It costs one sum over the parameters per
update.

`first_nonfinite` reads the metrics of a run (any leading batch axes, e.g.
seeds) and returns where it first went non-finite; `train_with_checkpoints`
stops there (`NonFiniteError`) and the command line exits with it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Bit i of the ``nonfinite`` metric: PARTS[i] was NaN or infinite.
PARTS = ("loss", "grad_norm", "params")


def nonfinite_flags(loss: jax.Array, grad_norm: jax.Array, params: Any) -> jax.Array:
    """int32 bitmask: bit 0 ``loss``, bit 1 ``grad_norm``, bit 2 ``params``
    not finite; 0 when all are.

    The parameters are checked through their sum, which is finite exactly
    when every parameter is (NaN and Inf propagate), short of values so
    large that the sum overflows float32, a run diverged too. One sum per
    leaf compiles faster than a finiteness test per element."""
    total = sum(jnp.sum(x, dtype=jnp.float32) for x in jax.tree.leaves(params))
    bad = (~jnp.isfinite(loss), ~jnp.isfinite(grad_norm), ~jnp.isfinite(total))
    return sum(b.astype(jnp.int32) << i for i, b in enumerate(bad))


@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where a run first went non-finite.

    Attributes:
        update: the update (counted from 1) whose loss, gradient norm or
            parameters were first non-finite; the state after
            ``update - 1`` updates was finite.
        seed: the first seed (flat index over the batch axes) it happened to
            at that update.
        parts: which of `PARTS` were non-finite there.
        seeds: how many seeds had gone non-finite by then.
    """

    update: int
    seed: int
    parts: tuple[str, ...]
    seeds: int = 1

    def __str__(self) -> str:
        others = f" and {self.seeds - 1} other seed(s)" if self.seeds > 1 else ""
        return (f"non-finite {', '.join(self.parts)} at update {self.update} "
                f"(seed {self.seed}{others})")


def first_nonfinite(metrics: Mapping[str, Any]) -> Divergence | None:
    """The first update at which ``metrics["nonfinite"]`` (shape (*batch,
    updates)) flags a non-finite value, None when it never does."""
    flags = np.asarray(metrics["nonfinite"])
    flat = flags.reshape(math.prod(flags.shape[:-1]), flags.shape[-1])  # (seeds, updates)
    bad = flat != 0
    if not bad.any():
        return None
    update = int(np.argmax(bad.any(axis=0)))
    seeds = np.flatnonzero(bad[:, update])
    mask = int(np.bitwise_or.reduce(flat[seeds, update]))
    parts = tuple(name for i, name in enumerate(PARTS) if mask >> i & 1)
    return Divergence(update=update + 1, seed=int(seeds[0]), parts=parts, seeds=len(seeds))


class NonFiniteError(RuntimeError):
    """Training went non-finite. ``.divergence`` says where; ``.last_good``
    is the update count of the newest checkpoint saved before it (None when
    none was); ``.metrics`` holds every update's metrics up to the chunk in
    which it happened (NumPy, (*batch, updates))."""

    def __init__(self, divergence: Divergence, last_good: int | None, directory: str | None,
                 metrics: dict[str, np.ndarray]):
        where = (f"; the last good checkpoint is {directory}/{last_good} (update {last_good})"
                 if last_good is not None else "; no checkpoint was saved before it")
        super().__init__(f"training diverged: {divergence}{where}")
        self.divergence, self.last_good, self.metrics = divergence, last_good, metrics
