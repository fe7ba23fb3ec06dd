"""Running statistics: observation normalisation and reward scaling.

Both are pytrees carried in the `TrainState` and updated inside the jitted
training loop, once per rollout:

* `RunningMeanStd`: running mean and variance of a stream of batches, merged
  with the parallel-variance formula (Chan, Golub & LeVeque, 1979)::

      n = n_a + n_b
      delta = mean_b - mean_a
      mean = mean_a + delta * n_b / n
      M2 = M2_a + M2_b + delta^2 * n_a * n_b / n          (M2 = var * n)

  A whole (T, N) rollout is one batch: its mean and variance over every env
  and step are computed first, then merged into the running statistics, so
  the result does not depend on how the stream was cut into batches. With
  ``axis_name``, the batch statistics are first summed exactly across a
  mapped axis (devices under `shard_map`/`pmap`, or a `vmap` axis).
  Observations are normalised as ``clip((x - mean) / sqrt(var + eps), -c, c)``.
  The safe start is mean 0, variance 1 and a count of 0: before any data,
  normalising is the identity (then clipped); the first batch then replaces
  the start exactly (weight 0), so no made-up prior sample biases the
  statistics. (A small positive start count, as in Stable-Baselines3, adds
  ``mean^2 * 1e-4 / n`` of spurious variance: 5x the true variance for a
  feature at 1e4 +- 1 after 2048 samples.)

* `RewardScaler`: divides rewards by the running standard deviation of the
  discounted return ``R_t = gamma * R_{t-1} * (1 - done_{t-1}) + r_t``, kept
  per env across rollouts (as in Stable-Baselines3's ``VecNormalize``, and
  the reward scaling of the "37 implementation details"). The mean is not
  subtracted, so the sign of every reward is kept; the scaled reward is
  clipped to ``+-clip``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

EPS = 1e-8
START_COUNT = 0.0


@struct.dataclass
class RunningMeanStd:
    """Running mean and (population) variance of arrays of a fixed shape.

    Attributes:
        mean: running mean, the shape of one sample.
        var: running variance, the same shape.
        count: samples seen so far (float32 scalar; 0 at the start).
    """

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: tuple[int, ...] = ()) -> "RunningMeanStd":
        """The safe start: mean 0, variance 1, count 0."""
        return cls(
            mean=jnp.zeros(shape, jnp.float32),
            var=jnp.ones(shape, jnp.float32),
            count=jnp.asarray(START_COUNT, jnp.float32),
        )

    def merge(self, mean: jax.Array, var: jax.Array, count: jax.Array) -> "RunningMeanStd":
        """Merge in the statistics (mean, var, count) of another sample set.

        ``count`` must be positive (an empty batch has no statistics).
        """
        chex.assert_equal_shape([self.mean, mean, var])
        total = self.count + count
        delta = mean - self.mean
        new_mean = self.mean + delta * (count / total)
        m2 = self.var * self.count + var * count + jnp.square(delta) * (self.count * count / total)
        return RunningMeanStd(mean=new_mean, var=m2 / total, count=total)

    def update(self, batch: jax.Array, axis_name: str | None = None) -> "RunningMeanStd":
        """Merge in ``batch``, whose trailing axes are one sample's shape.

        Every leading axis is a sample axis (e.g. (T, N) for a rollout).
        With ``axis_name``, the batch is the union of the batches along that
        mapped axis: count, mean and the sum of squared deviations from the
        union's mean are summed across it exactly (two passes, no loss of
        precision from ``E[x^2] - E[x]^2``).
        """
        batch = jnp.asarray(batch, jnp.float32)
        sample_ndim = self.mean.ndim
        if batch.ndim < sample_ndim or batch.shape[batch.ndim - sample_ndim:] != self.mean.shape:
            raise ValueError(
                f"batch of shape {batch.shape} does not end in the statistics' "
                f"sample shape {self.mean.shape}"
            )
        axes = tuple(range(batch.ndim - sample_ndim))
        count = jnp.asarray(batch.size // max(self.mean.size, 1), jnp.float32)
        total = jnp.sum(batch, axis=axes)
        if axis_name is not None:
            count = jax.lax.psum(count, axis_name)
            total = jax.lax.psum(total, axis_name)
        mean = total / count
        sq_dev = jnp.sum(jnp.square(batch - mean), axis=axes)
        if axis_name is not None:
            sq_dev = jax.lax.psum(sq_dev, axis_name)
        return self.merge(mean, sq_dev / count, count)

    @property
    def std(self) -> jax.Array:
        """``sqrt(var + EPS)``."""
        return jnp.sqrt(self.var + EPS)

    def normalize(self, x: jax.Array, clip: jax.Array | float) -> jax.Array:
        """``clip((x - mean) / sqrt(var + EPS), -clip, clip)``, any leading axes."""
        return jnp.clip((x - self.mean) / self.std, -clip, clip)


@struct.dataclass
class RewardScaler:
    """Reward scaling by the running std of each env's discounted return.

    Attributes:
        return_stats: `RunningMeanStd` of the discounted returns (scalar).
        discounted_return: ``R`` of the episode in progress, per env (N,).
    """

    return_stats: RunningMeanStd
    discounted_return: jax.Array

    @classmethod
    def create(cls, num_envs: int) -> "RewardScaler":
        return cls(
            return_stats=RunningMeanStd.create(()),
            discounted_return=jnp.zeros((num_envs,), jnp.float32),
        )

    def update(
        self, rewards: jax.Array, dones: jax.Array, gamma: jax.Array | float,
        axis_name: str | None = None,
    ) -> "RewardScaler":
        """Advance the discounted returns over a (T, N) rollout and merge them in.

        ``R_t = gamma * R_{t-1} + r_t``, with ``R`` reset to 0 after a step
        where ``dones`` (termination or truncation) is set.
        """
        chex.assert_equal_shape([rewards, dones])
        chex.assert_shape(self.discounted_return, rewards.shape[1:])

        def step(ret, inputs):
            reward, done = inputs
            ret = gamma * ret + reward
            return jnp.where(done, 0.0, ret), ret

        last, returns = jax.lax.scan(
            step, self.discounted_return, (rewards.astype(jnp.float32), dones)
        )
        return RewardScaler(
            return_stats=self.return_stats.update(returns, axis_name),
            discounted_return=last,
        )

    def scale(self, rewards: jax.Array, clip: jax.Array | float) -> jax.Array:
        """``clip(rewards / sqrt(var(R) + EPS), -clip, clip)``."""
        return jnp.clip(rewards / self.return_stats.std, -clip, clip)
