"""A cost model of PPO's network work per environment step, from the config alone.

Counts the two things that bound a well-compiled PPO step on any device:
multiply-add FLOPs of the dense and convolution layers (2 per multiply-add)
and transcendental evaluations (tanh and the like in hidden layers, exp/log in
the heads). Per env step, a run does:

* rollout: one actor forward (to sample the action);
* critic: one critic forward on s_t, and one on each final observation the
  pass does not already have (`purejaxppo.rollout.critic_rows`): 1 + (1 +
  windows) / T in all with the envs' truncation period, 2 without;
* update: ``update_epochs`` x (actor + critic) x (forward + backward). A
  backward pass computes each layer's gradient with respect to its weights
  (the forward's FLOPs again) and with respect to its inputs (once more),
  except the first layer's: the observations are not differentiated, so
  forward + backward is three forwards less the first layer's FLOPs. It
  adds no transcendentals (the derivative of tanh reuses its output). With
  ``reference_kl`` each epoch also runs the reference policy's actor
  forward on every sample.

`benchmarks/throughput.py` divides these counts by the device's measured
matmul and transcendental rates to get the compute floor; the tests check the
forward counts, and the forward and backward ones, against XLA's own cost
analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from purejaxppo.config import PPOConfig
from purejaxppo.envs import EnvSpec
from purejaxppo.networks import resolve_torso
from purejaxppo.fast.reduced_critic import critic_rows

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


def _torso_layers(config: PPOConfig, spec: EnvSpec) -> tuple[list[NetworkCost], int]:
    """The cost of each torso layer's forward, in order, and the torso's output width."""
    per_unit = 1 if config.activation in _TRANSCENDENTAL_ACTIVATIONS else 0
    layers = []
    if resolve_torso(config.torso, spec.obs_shape) == "cnn":
        h, w, c = spec.obs_shape
        for ch in config.cnn_channels:
            h, w = h - 2, w - 2
            layers.append(NetworkCost(2 * h * w * 9 * c * ch, per_unit * h * w * ch))
            c = ch
        width = h * w * c
    else:
        width = math.prod(spec.obs_shape)
    for hidden in config.hidden_sizes:
        layers.append(NetworkCost(2 * width * hidden, per_unit * hidden))
        width = hidden
    return layers, width


def _torso_cost(config: PPOConfig, spec: EnvSpec) -> tuple[NetworkCost, int]:
    """Cost of one torso forward and its output width; with a recurrent
    policy, the torso and its GRU step (input and recurrent projections,
    2 sigmoids and a tanh per unit)."""
    layers, width = _torso_layers(config, spec)
    cost = sum(layers, NetworkCost(0, 0))
    if config.recurrent is not None:
        size = config.recurrent_size
        cost = cost + NetworkCost(2 * (width + size) * 3 * size, 3 * size)
        width = size
    return cost, width


def _shared_core(config: PPOConfig) -> bool:
    return config.recurrent is not None and config.recurrent_core == "shared"


def forward_backward_flops(config: PPOConfig, spec: EnvSpec) -> tuple[int, int]:
    """FLOPs of one forward and backward pass for one sample, with gradients
    with respect to the parameters only: ``(actor, critic)``. Three forwards
    less the first layer's input gradient, which is not computed."""
    # The torso always has a layer (`PPOConfig` refuses empty hidden_sizes
    # and cnn_channels), and actor and critic have torsos of the same shape.
    first = _torso_layers(config, spec)[0][0].flops
    actor, critic = actor_forward_cost(config, spec), critic_forward_cost(config, spec)
    if _shared_core(config):  # one torso and GRU: the critic adds its head only
        return 3 * actor.flops - first, 3 * (critic.flops - _torso_cost(config, spec)[0].flops)
    return 3 * actor.flops - first, 3 * critic.flops - first


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
    if config.recurrent is not None:
        torso = _torso_cost(config, spec)[0]
        if not _shared_core(config):  # the critic's core steps in the rollout too
            rollout = rollout + torso
        # The values from the stored states (a head), the bootstrap one GRU step on.
        critic_pass = critic + NetworkCost(2 * config.recurrent_size, 0)
        if _shared_core(config):
            both = actor + NetworkCost(2 * config.recurrent_size, 0)
    update = NetworkCost(sum(forward_backward_flops(config, spec)), both.transcendentals)
    if config.reference_kl:
        update = update + actor
    update = update.scale(config.update_epochs)
    total = rollout + critic_pass + update
    return {
        "flops": total.flops,
        "transcendentals": total.transcendentals,
        "rollout_flops": rollout.flops,
        "critic_flops": critic_pass.flops,
        "update_flops": update.flops,
    }
