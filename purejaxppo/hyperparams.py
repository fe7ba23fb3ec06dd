"""`HyperParams`: the traced numeric hyperparameters of a run (a pytree).

`purejaxppo.config.PPOConfig` holds the static description of a run; its
numeric fields (`purejaxppo.config.HYPERPARAM_FIELDS`) travel into the
compiled program as this pytree of float32 scalars, so one compiled call
can train many settings under `jax.vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purejaxppo.config import _RANGES, HYPERPARAM_FIELDS, _interval


@struct.dataclass
class HyperParams:
    """The traced numeric hyperparameters of a run (a pytree of scalars).

    Any leaf may carry a leading batch axis under `jax.vmap`, so one compiled
    call can train several hyperparameter settings at once.
    """

    lr: jnp.ndarray
    gamma: jnp.ndarray
    gae_lambda: jnp.ndarray
    clip_eps: jnp.ndarray
    ent_coef: jnp.ndarray
    vf_coef: jnp.ndarray
    max_grad_norm: jnp.ndarray
    kl_coef: jnp.ndarray
    reference_kl_coef: jnp.ndarray
    target_kl: jnp.ndarray
    obs_clip: jnp.ndarray
    reward_clip: jnp.ndarray

    def validate(self) -> "HyperParams":
        """Check every value (batched ones element by element) against the
        range `PPOConfig` allows for its field; return ``self``.

        ``train`` cannot check what it is given (its hyperparameters are
        traced), so check a sweep's values with this before the compiled call.
        Raises ``ValueError`` naming the field, the first bad value, its index
        and the allowed interval; ``TypeError`` naming the field on traced
        or non-numeric values.
        """
        for name in HYPERPARAM_FIELDS:
            value = getattr(self, name)
            if isinstance(value, jax.core.Tracer):
                raise TypeError(f"HyperParams.validate() needs concrete values; {name} is traced")
            try:
                v = np.asarray(value, np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"hyperparams.{name} = {value!r}; allowed: numbers (a float, or an "
                                "array of floats for a sweep)") from None
            low, high, low_in, high_in = _RANGES[name]
            ok = np.isfinite(v) & ((v >= low) if low_in else (v > low)) & ((v <= high) if high_in else (v < high))
            if not ok.all():
                index = tuple(int(i) for i in np.argwhere(~ok)[0])
                where = f"{name}[{', '.join(map(str, index))}]" if index else name
                raise ValueError(
                    f"hyperparams.{where} = {v[index]:g}; allowed: finite values in "
                    f"{_interval(low, high, low_in, high_in)}"
                )
        return self

    @classmethod
    def from_config(cls, config) -> "HyperParams":
        """``config``'s numeric fields as float32 scalars."""
        return cls(**{name: jnp.asarray(getattr(config, name), dtype=jnp.float32)
                      for name in HYPERPARAM_FIELDS})
