"""A cost model of PPO's network work per environment step, from the config alone.

Counts the two things that bound a well-compiled PPO step on any device:
multiply-add FLOPs of the dense and convolution layers (2 per multiply-add)
and transcendental evaluations (tanh and the like in hidden layers, exp/log in
the heads). Per env step, a run does:

* rollout: one actor forward (to sample the action);
* critic: one critic forward on s_t, and one on each final observation the
  pass does not already have (`purejaxppo.rollout.critic_rows`): 1 + (1 +
  windows) / T in all with the envs' truncation period, 2 without;
* update: ``update_epochs`` x (actor + critic) x (forward + backward), with a
  backward pass counted as twice the forward FLOPs (gradients with respect to
  weights and inputs) and no transcendentals (the derivative of tanh reuses
  its output).

`benchmarks/throughput.py` divides these counts by the device's measured
matmul and transcendental rates to get the compute floor; the tests check the
forward counts against XLA's own cost analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from purejaxppo.config import PPOConfig
from purejaxppo.envs import EnvSpec
from purejaxppo.networks import resolve_torso
from purejaxppo.rollout import critic_rows

_TRANSCENDENTAL_ACTIVATIONS = {"tanh", "gelu", "silu", "elu"}


@dataclass(frozen=True)
class NetworkCost:
    """Per-sample cost of one forward pass."""

    flops: int
    transcendentals: int

    def __add__(self, other: "NetworkCost") -> "NetworkCost":
        return NetworkCost(self.flops + other.flops, self.transcendentals + other.transcendentals)

    def scale(self, k: float) -> "NetworkCost":
        return NetworkCost(int(round(self.flops * k)), int(round(self.transcendentals * k)))


def _torso_cost(config: PPOConfig, spec: EnvSpec) -> tuple[NetworkCost, int]:
    """Cost of one torso forward and its output width."""
    per_unit = 1 if config.activation in _TRANSCENDENTAL_ACTIVATIONS else 0
    flops = transc = 0
    if resolve_torso(config.torso, spec.obs_shape) == "cnn":
        h, w, c = spec.obs_shape
        for ch in config.cnn_channels:
            h, w = h - 2, w - 2
            flops += 2 * h * w * 9 * c * ch
            transc += per_unit * h * w * ch
            c = ch
        width = h * w * c
    else:
        width = math.prod(spec.obs_shape)
    for hidden in config.hidden_sizes:
        flops += 2 * width * hidden
        transc += per_unit * hidden
        width = hidden
    return NetworkCost(flops, transc), width


def actor_forward_cost(config: PPOConfig, spec: EnvSpec) -> NetworkCost:
    """One actor forward for one observation (torso, head, log-softmax)."""
    torso, width = _torso_cost(config, spec)
    head = NetworkCost(2 * width * spec.action_dim, spec.action_dim + 1 if spec.discrete else 0)
    return torso + head


def critic_forward_cost(config: PPOConfig, spec: EnvSpec) -> NetworkCost:
    """One critic forward for one observation."""
    torso, width = _torso_cost(config, spec)
    return torso + NetworkCost(2 * width, 0)


def cost_per_env_step(
    config: PPOConfig, spec: EnvSpec, truncation_period: int | None = None
) -> dict[str, int]:
    """FLOPs and transcendentals per env step: rollout + critic + update.

    ``truncation_period``: the envs' (`purejaxppo.envs.VecEnv.truncation_period`),
    with which the critic pass skips the final observations it already has;
    None counts the full pass, two critic forwards per step.
    """
    actor = actor_forward_cost(config, spec)
    critic = critic_forward_cost(config, spec)
    both = actor + critic
    rollout = actor
    critic_pass = critic.scale(critic_rows(config.num_steps, truncation_period) / config.num_steps)
    update = NetworkCost(3 * both.flops, both.transcendentals).scale(config.update_epochs)
    total = rollout + critic_pass + update
    return {
        "flops": total.flops,
        "transcendentals": total.transcendentals,
        "rollout_flops": rollout.flops,
        "critic_flops": critic_pass.flops,
        "update_flops": update.flops,
    }
