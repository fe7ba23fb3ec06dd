"""Train PPO on your own environment: a corridor defined here, from Python and from the CLI.

    python examples/custom_env.py                    # check it, train 4 seeds, print the result
    python -m purejaxppo --env examples.custom_env:make_env --total-timesteps 100000

The env keeps purejaxppo's env protocol (docs/environments.md): gymnax's
``Environment`` with ``reset_env``, ``step_env`` (``terminated`` only for a
true end), ``is_truncated`` (the time limit), its spaces and
``default_params``; gymnax's own ``step`` does the automatic reset and puts
the last observation in ``info["final_observation"]``.

The corridor: ``length`` cells, the agent starts at cell 0 and moves left or
right (it cannot leave the corridor). Reaching the last cell ends the
episode (terminated) with reward 1; every step costs ``step_cost``; after
``max_steps_in_episode`` steps the episode is cut (truncated). The
observation is the position one-hot, plus the fraction of the time limit
used. The best return is ``1 - (length - 2) * step_cost``
(``length - 1`` steps); a uniformly random walk of 8 cells mostly runs out
of its 32 steps.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class CorridorState(environment.EnvState):
    position: jax.Array  # int32, the agent's cell
    time: int  # steps since the reset (gymnax's is_truncated reads it)


@struct.dataclass
class CorridorParams(environment.EnvParams):
    step_cost: float = 0.01
    max_steps_in_episode: int = 32


class Corridor(environment.Environment[CorridorState, CorridorParams]):
    """A 1-D corridor: reach the last cell (module docstring)."""

    def __init__(self, length: int = 8):
        if not isinstance(length, int) or length < 2:
            raise ValueError(f"length={length!r}; allowed: an int >= 2")
        self.length = length

    @property
    def default_params(self) -> CorridorParams:
        return CorridorParams()

    def reset_env(self, key, params):
        state = CorridorState(position=jnp.int32(0), time=0)
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params):
        move = jnp.where(action == 1, 1, -1)
        position = jnp.clip(state.position + move, 0, self.length - 1)
        state = CorridorState(position=position, time=state.time + 1)
        terminated = position == self.length - 1
        reward = jnp.where(terminated, 1.0, -params.step_cost)
        return self.get_obs(state, params), state, reward, terminated, {}

    def get_obs(self, state, params=None, key=None):
        where = jax.nn.one_hot(state.position, self.length)
        elapsed = state.time / params.max_steps_in_episode
        return jnp.concatenate([where, jnp.reshape(elapsed, (1,))]).astype(jnp.float32)

    @property
    def name(self) -> str:
        return "Corridor"

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 1.0, (self.length + 1,), jnp.float32)


def make_env(length: int = 8):
    """What ``--env examples.custom_env:make_env`` calls: ``(env, env_params)``.
    Keywords come from ``--env-kwargs length=12``."""
    env = Corridor(length)
    return env, env.default_params


def main() -> None:
    import purejaxppo  # noqa: F401  (the XLA guard, before jax computes anything)
    from purejaxppo import PPOConfig, make_train
    from purejaxppo.envs import check_env
    from purejaxppo.evaluation import final_return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--num-seeds", type=int, default=4)
    parser.add_argument("--total-timesteps", type=int, default=100_000)
    args = parser.parse_args()

    env, env_params = make_env(args.length)
    problems = check_env(env, env_params)
    print("check_env:", "the protocol is kept" if not problems else "; ".join(problems))
    # With an env object, env_name is only the run's label.
    config = PPOConfig(env_name="Corridor", num_envs=16, num_steps=32, total_timesteps=args.total_timesteps,
                       lr=1e-3, ent_coef=0.01)
    train = make_train(config, env=env, env_params=env_params)
    keys = jax.random.split(jax.random.PRNGKey(0), args.num_seeds)
    result = jax.jit(jax.vmap(train))(keys)
    returns = final_return(jax.device_get(result.metrics))
    best = 1 - (args.length - 2) * env_params.step_cost
    print(f"Corridor of {args.length} cells, {args.num_seeds} seeds x {config.total_timesteps:,} steps: "
          f"final returns {', '.join(f'{r:.3f}' for r in returns)} (the best is {best:.2f})")


if __name__ == "__main__":
    main()
