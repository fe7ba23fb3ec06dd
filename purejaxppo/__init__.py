"""purejaxppo: the whole PPO training run as one pure function compiled by `jax.jit`.

    >>> import jax
    >>> from purejaxppo import PPOConfig, make_train
    >>> config = PPOConfig(env_name="CartPole-v1", total_timesteps=500_000)
    >>> result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    >>> result.metrics["episode_return"].shape
    (976,)
"""

from purejaxppo import _xla_guard  # noqa: F401  (must run before any computation)
from purejaxppo.config import HyperParams, PPOConfig
from purejaxppo.train import METRIC_NAMES, TrainResult, TrainState, make_train

__all__ = [
    "HyperParams",
    "METRIC_NAMES",
    "PPOConfig",
    "TrainResult",
    "TrainState",
    "make_train",
]
__version__ = "0.1.0"
