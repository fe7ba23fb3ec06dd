"""Watch a trained policy: play episodes, record one, draw it as a GIF.

A policy acts here as it does in training and in `make_evaluate`: on the
env's observations encoded by `VecEnv` (float32, one-hot for a discrete
observation space), normalised by the run's observation statistics with the
config's ``obs_clip`` when the run had ``normalize_obs``, its continuous
actions clipped to the action space's bounds. Greedy play takes the
distribution's mode, the other its samples.

* `play`: the returns of whole episodes, played in parallel in one compiled
  call (`make_evaluate`).
* `record_episode`: one episode's env states and rewards, from one compiled
  `lax.scan`, cut at the episode's end on the host.
* `render_gif`: that episode drawn by gymnax's own renderer
  (``gymnax.visualize.Visualizer``) into a GIF written by Pillow.
* `evaluate_run`: all of it for a run directory's checkpointed policy.

With the same key, `record_episode` plays the episode that
``make_evaluate(config, 1)`` plays: the same reset key and per-step keys.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from purejaxppo.config import PPOConfig
from purejaxppo.envs import make_env
from purejaxppo.evaluation import make_acting, make_evaluate, observation_normalizer
from purejaxppo.normalization import RunningMeanStd
from purejaxppo.paths import output_file

# The envs gymnax's Visualizer draws (by gymnax's ``env.name``, which is the
# registered id for each of these); it leaves any other env's frames blank.
# The classic-control ones are drawn by gymnasium's renderer, with pygame.
CLASSIC_CONTROL = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
                   "MountainCarContinuous-v0")
DRAWABLE = CLASSIC_CONTROL + (
    "Catch-bsuite",
    "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar", "Pong-misc",
    "PointRobot-misc", "MetaMaze-misc", "FourRooms-misc",
)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r}; allowed: an int >= 1")
    return int(value)


@functools.lru_cache(maxsize=16)
def _compiled_evaluate(config: PPOConfig, episodes: int, greedy: bool):
    return jax.jit(make_evaluate(config, episodes, deterministic=greedy))


def play(
    config: PPOConfig,
    params: Any,
    obs_norm: RunningMeanStd | None,
    key: jax.Array,
    episodes: int,
    greedy: bool = True,
) -> np.ndarray:
    """The undiscounted returns, shape ``(episodes,)``, of ``episodes``
    episodes played in parallel, each to its first end (termination or time
    limit), with the mode of the policy (``greedy``) or samples from it.

    One compiled call of `make_evaluate`'s ``evaluate`` (compiled once per
    config, episode count and ``greedy``). ``obs_norm``: the run's
    observation statistics, required when ``config.normalize_obs``.
    """
    episodes = _positive_int("episodes", episodes)
    evaluate = _compiled_evaluate(config, episodes, bool(greedy))
    observation_normalizer(config, obs_norm)  # obs_norm required with normalize_obs: a clear error
    return np.asarray(evaluate(params, key, obs_norm if config.normalize_obs else None))


@functools.lru_cache(maxsize=16)
def _compiled_record(config: PPOConfig, greedy: bool, steps: int):
    """A jitted ``record(params, key, obs_norm) -> (states, rewards, dones)``
    of ``steps`` steps of one env, played as `make_evaluate` plays (the same
    keys): states ``(steps, 1, ...)`` (each the state the step's action was
    taken in), rewards and dones ``(steps,)``."""
    vec_env, _, act, memory = make_acting(config, 1, greedy)

    def record(params, key, obs_norm):
        normalize = observation_normalizer(config, obs_norm)
        reset_key, rng = jax.random.split(key)
        obs, env_state = vec_env.reset(reset_key)

        def step(carry, step_key):
            obs, memory, env_state = carry
            out, memory = act(params, normalize, obs, memory, env_state, step_key)
            done = out.terminated[0] | out.truncated[0]
            return (out.obs, memory, out.env_state), (env_state, out.reward[0], done)

        # Split as make_evaluate does (a prefix of its keys when steps is fewer).
        keys = jax.random.split(rng, steps)
        _, (states, rewards, dones) = jax.lax.scan(step, (obs, memory, env_state), keys)
        return states, rewards, dones

    return jax.jit(record)


def record_episode(
    config: PPOConfig,
    params: Any,
    obs_norm: RunningMeanStd | None,
    key: jax.Array,
    greedy: bool = True,
    max_steps: int | None = None,
) -> tuple[list[Any], np.ndarray]:
    """One episode of one env, played as `play` plays it, to its end or for
    ``max_steps`` steps (default: the env's ``max_steps_in_episode``),
    whichever comes first.

    Returns ``(states, rewards)``: ``states`` a list of L env-state pytrees
    of NumPy arrays, ``states[t]`` the state the (t+1)-th action was taken
    in (the first is the reset state; the state after the last action is
    not included, as gymnax's renderer expects), and ``rewards`` (L,), the
    reward of each action; L is the episode's length (or ``max_steps``).
    One compiled `lax.scan` of ``max_steps`` steps (compiled once per
    config, ``greedy`` and ``max_steps``), cut on the host.
    """
    env_limit = make_acting(config, 1).max_steps
    steps = env_limit if max_steps is None else _positive_int("max_steps", max_steps)
    observation_normalizer(config, obs_norm)  # obs_norm required with normalize_obs: a clear error
    record = _compiled_record(config, bool(greedy), steps)
    states, rewards, dones = jax.device_get(record(params, key, obs_norm if config.normalize_obs else None))
    ended = np.flatnonzero(dones)
    length = int(ended[0]) + 1 if ended.size else steps
    per_step = [jax.tree.map(lambda x, t=t: np.asarray(x[t, 0]), states) for t in range(length)]
    return per_step, np.asarray(rewards[:length], dtype=np.float32)


def check_drawable(env_name: str) -> None:
    """Raise unless gymnax's renderer can draw ``env_name`` here: a
    `ValueError` for an env it has no drawing for, an `ImportError` when
    the classic-control renderer's pygame is not installed."""
    env, _, _ = make_env(env_name)
    if env.name not in DRAWABLE:
        raise ValueError(f"env_name={env_name!r} cannot be drawn by gymnax's renderer; "
                         f"allowed: {list(DRAWABLE)}")
    if env.name in CLASSIC_CONTROL:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame  # noqa: F401
        except ImportError:
            raise ImportError(f"drawing {env_name} needs pygame (gymnasium's classic-control "
                              "renderer draws with it): pip install pygame") from None


def render_gif(
    config: PPOConfig,
    params: Any,
    obs_norm: RunningMeanStd | None,
    path: str | os.PathLike,
    key: jax.Array,
    greedy: bool = True,
    max_steps: int | None = None,
) -> int:
    """Draw the episode `record_episode` plays into the GIF ``path`` (its
    directory created); return the number of frames written.

    One frame per state of `record_episode`, so as many frames as the
    episode has steps (or ``max_steps``), each titled with the step number
    and the return after its action. Drawn by gymnax's
    ``Visualizer(env, env_params, states, cumulative_rewards).animate``,
    which writes GIFs with matplotlib's ``PillowWriter``; the envs it can
    draw are `DRAWABLE` (the classic-control ones need pygame).
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"path={str(path)!r}; allowed: a file name ending in .gif")
    check_drawable(config.env_name)
    output_file("path", path)
    states, rewards = record_episode(config, params, obs_norm, key, greedy, max_steps)

    # Drawn off-screen: no display is needed or opened.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from gymnax.visualize import Visualizer

    env, env_params, _ = make_env(config.env_name, config.env_kwargs, config.env_params)
    Visualizer(env, env_params, states, np.cumsum(rewards)).animate(str(path))
    return len(states)


def evaluate_run(
    run_dir: str | os.PathLike,
    episodes: int = 16,
    seed_index: int = 0,
    greedy: bool = True,
    gif: str | os.PathLike | None = None,
    key_seed: int = 0,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` episodes with one seed's policy of a run directory
    (its latest checkpoint, ``run_dir/checkpoints``), and with ``gif`` draw
    one more episode there (`render_gif`).

    Returns a dict: ``env_name``, ``seed_index``, ``updates_done``,
    ``greedy``, ``episodes``, ``returns`` (a list), their ``mean`` and
    ``std`` (population), and with ``gif`` its ``gif`` path and ``frames``.
    ``key_seed`` seeds the play (and the drawn episode, from its own key);
    ``max_steps`` cuts the drawn episode (default: the env's limit).
    """
    run_dir = Path(run_dir)
    directory = run_dir / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: is {run_dir} a run directory? "
                                f"(python -m purejaxppo --run-dir {run_dir} ...)")
    episodes = _positive_int("episodes", episodes)
    from purejaxppo.checkpoint import restore_policy

    policy = restore_policy(directory, seed=seed_index)
    config = policy.config
    if gif is not None:
        check_drawable(config.env_name)  # before any compile
    play_key, gif_key = jax.random.split(jax.random.PRNGKey(key_seed))
    returns = play(config, policy.params, policy.obs_norm, play_key, episodes, greedy)
    result: dict[str, Any] = {
        "env_name": config.env_name,
        "seed_index": policy.seed,
        "updates_done": policy.updates_done,
        "greedy": bool(greedy),
        "episodes": episodes,
        "returns": returns.tolist(),
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
    }
    if gif is not None:
        result["frames"] = render_gif(config, policy.params, policy.obs_norm, gif, gif_key, greedy,
                                      max_steps)
        result["gif"] = str(gif)
    return result
