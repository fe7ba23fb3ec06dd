"""purejaxppo: the whole PPO training run as one pure function compiled by `jax.jit`.

    >>> import jax
    >>> from purejaxppo import PPOConfig, make_train
    >>> config = PPOConfig(env_name="CartPole-v1", total_timesteps=500_000)
    >>> result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    >>> result.metrics["episode_return"].shape
    (976,)
"""

from purejaxppo.platform import xla_guard  # noqa: F401  (must run before any computation)
from purejaxppo.config import PPOConfig
from purejaxppo.hyperparams import HyperParams
from purejaxppo.presets import preset_config
from purejaxppo.train import METRIC_NAMES, Trainer, TrainResult, TrainState, make_train

__all__ = [
    "HyperParams",
    "METRIC_NAMES",
    "PPOConfig",
    "Trainer",
    "TrainResult",
    "TrainState",
    "make_train",
    "preset_config",
]
__version__ = "0.1.0"
