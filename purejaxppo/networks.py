"""Actor and critic networks (flax linen), separate MLPs with orthogonal init.

Initialisation follows the PPO implementation details: orthogonal weights with
gain sqrt(2) in hidden layers, 0.01 on the policy head, 1.0 on the value head,
zero biases; a state-independent log-std parameter initialised at 0 for
continuous actions. `make_train` draws that same initialisation from one
random call (`purejaxppo.fast.orthogonal_init.init_params`). Each layer's
product goes through `purejaxppo.fast.transposed_matmul.matmul` and each
convolution through `purejaxppo.fast.im2col.conv_valid`: the maths of
``x @ kernel`` and of ``lax.conv_general_dilated``, faster on CPU.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.envs import EnvSpec
from purejaxppo.fast.im2col import conv_valid
from purejaxppo.fast.transposed_matmul import matmul

ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
}

HIDDEN_GAIN = math.sqrt(2.0)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0


class Dense(nn.Module):
    """``x @ kernel + bias`` (the parameters and maths of `flax.linen.Dense`),
    the product through `matmul` (``transposed_grad`` chooses how the
    kernel's gradient is computed)."""

    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    transposed_grad: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        return matmul(x, kernel, self.transposed_grad) + bias


def _dense(features: int, gain: float, transposed_grad: bool, name: str | None = None) -> Dense:
    return Dense(
        features,
        kernel_init=nn.initializers.orthogonal(gain),
        bias_init=nn.initializers.zeros,
        transposed_grad=transposed_grad,
        name=name,
    )


class MLP(nn.Module):
    """Flatten the observation, then ``len(hidden_sizes)`` Dense+activation layers."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    obs_ndim: int = 1
    transposed_grad: bool = False  # see `matmul`

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,))
        act = ACTIVATION_FNS[self.activation]
        for width in self.hidden_sizes:
            x = act(_dense(width, HIDDEN_GAIN, self.transposed_grad)(x))
        return x


class Conv3x3(nn.Module):
    """A 3x3 stride-1 VALID convolution layer (`conv_valid`), orthogonal init."""

    features: int
    transposed_grad: bool = False  # see `matmul`

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.orthogonal(HIDDEN_GAIN), (3, 3, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return conv_valid(x, kernel, self.transposed_grad) + bias


class CNN(nn.Module):
    """3x3 stride-1 VALID convolutions over (..., H, W, C), then the `MLP`."""

    channels: Sequence[int]
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    transposed_grad: bool = False  # see `matmul`

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        batch_shape = obs.shape[:-3]
        x = obs.reshape((-1,) + obs.shape[-3:])
        act = ACTIVATION_FNS[self.activation]
        for ch in self.channels:
            x = act(Conv3x3(ch, self.transposed_grad)(x))
        x = x.reshape(batch_shape + (-1,))
        return MLP(self.hidden_sizes, self.activation, 1, self.transposed_grad)(x)


def resolve_torso(torso: str, obs_shape: Sequence[int]) -> str:
    """``"mlp"`` or ``"cnn"``; ``"auto"`` picks the CNN for (H, W, C) observations."""
    if torso == "auto":
        return "cnn" if len(obs_shape) == 3 else "mlp"
    if torso == "cnn" and len(obs_shape) != 3:
        raise ValueError(
            f"torso='cnn' needs (H, W, C) image observations, got obs_shape={tuple(obs_shape)}; "
            "allowed for this env: 'mlp' or 'auto'"
        )
    return torso


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs; returns ``(distribution, value)``.

    Input: observations (..., *obs_shape). Output: a `Categorical` with logits
    (..., num_actions) or a `DiagGaussian` with mean (..., action_dim), and
    values (...,).

    ``transposed_grad`` changes how the gradients of the layers' kernels are
    computed, never the values (`matmul`).
    """

    spec: EnvSpec
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    torso: str = "mlp"
    cnn_channels: Sequence[int] = (16,)
    transposed_grad: bool = False

    def setup(self):
        if self.torso == "cnn":
            make = lambda: CNN(self.cnn_channels, self.hidden_sizes, self.activation, self.transposed_grad)
        else:
            obs_ndim = len(self.spec.obs_shape)
            make = lambda: MLP(self.hidden_sizes, self.activation, obs_ndim, self.transposed_grad)
        self.actor_torso = make()
        self.critic_torso = make()
        self.policy_head = _dense(self.spec.action_dim, POLICY_GAIN, self.transposed_grad)
        self.value_head = _dense(1, VALUE_GAIN, self.transposed_grad)
        if not self.spec.discrete:
            self.log_std = self.param(
                "log_std", nn.initializers.zeros, (self.spec.action_dim,)
            )

    def policy(self, obs: jax.Array):
        """The action distribution at ``obs``."""
        out = self.policy_head(self.actor_torso(obs))
        if self.spec.discrete:
            return Categorical(logits=out)
        return DiagGaussian(mean=out, log_std=jnp.broadcast_to(self.log_std, out.shape))

    def value(self, obs: jax.Array) -> jax.Array:
        """V(obs), shape ``obs.shape[:-len(obs_shape)]``."""
        return self.value_head(self.critic_torso(obs))[..., 0]

    def __call__(self, obs: jax.Array):
        return self.policy(obs), self.value(obs)


def make_network(
    spec: EnvSpec,
    hidden_sizes: Sequence[int],
    activation: str,
    torso: str = "auto",
    cnn_channels: Sequence[int] = (16,),
    transposed_grad: bool = False,
) -> ActorCritic:
    """The actor-critic for an environment; the head follows its action space
    and the torso (``"auto"``) its observation shape. ``transposed_grad``
    (`matmul`) changes how the kernels' gradients are computed, never the
    network's values or parameters; `make_train` sets it where
    `transposed_grad_pays`.

    Each 3x3 VALID convolution of the CNN torso takes 2 pixels off each
    spatial side, so ``len(cnn_channels)`` must leave at least one pixel: a
    ``ValueError`` otherwise (with none left, the torso's output would not
    depend on the observation at all).
    """
    torso = resolve_torso(torso, spec.obs_shape)
    if torso == "cnn" and 2 * len(cnn_channels) >= min(spec.obs_shape[:2]):
        raise ValueError(
            f"cnn_channels={tuple(cnn_channels)} has {len(cnn_channels)} 3x3 VALID convolutions, "
            f"which leave no pixel of the {spec.obs_shape[0]}x{spec.obs_shape[1]} observation; "
            f"allowed: at most {(min(spec.obs_shape[:2]) - 1) // 2} layers"
        )
    return ActorCritic(
        spec=spec,
        hidden_sizes=tuple(hidden_sizes),
        activation=activation,
        torso=torso,
        cnn_channels=tuple(cnn_channels),
        transposed_grad=transposed_grad,
    )
