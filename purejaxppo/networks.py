"""Actor and critic networks (flax linen), separate MLPs with orthogonal init,
and their recurrent form: a GRU between the torso and the heads.

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
from purejaxppo.fast.gru_sequence import gru_sequence
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


class NetworkFields(nn.Module):
    """The fields both actor-critics share: the env's spaces and the torso."""

    spec: EnvSpec
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    torso: str = "mlp"
    cnn_channels: Sequence[int] = (16,)
    transposed_grad: bool = False


def make_torso(net: NetworkFields) -> nn.Module:
    """A fresh torso of the kind ``net``'s fields name: the `CNN` for
    ``torso="cnn"``, else the `MLP` over its flattened observations."""
    if net.torso == "cnn":
        return CNN(net.cnn_channels, net.hidden_sizes, net.activation, net.transposed_grad)
    return MLP(net.hidden_sizes, net.activation, len(net.spec.obs_shape), net.transposed_grad)


def action_distribution(spec: EnvSpec, out: jax.Array, log_std: jax.Array | None):
    """The policy head's output as a distribution: a `Categorical` with
    logits ``out`` for discrete actions, else a `DiagGaussian` of mean
    ``out`` and the state-independent ``log_std``."""
    if spec.discrete:
        return Categorical(logits=out)
    return DiagGaussian(mean=out, log_std=jnp.broadcast_to(log_std, out.shape))


class ActorCritic(NetworkFields):
    """Separate actor and critic MLPs; returns ``(distribution, value)``.

    Input: observations (..., *obs_shape). Output: a `Categorical` with logits
    (..., num_actions) or a `DiagGaussian` with mean (..., action_dim), and
    values (...,).

    ``transposed_grad`` changes how the gradients of the layers' kernels are
    computed, never the values (`matmul`).
    """

    def setup(self):
        self.actor_torso = make_torso(self)
        self.critic_torso = make_torso(self)
        self.policy_head = _dense(self.spec.action_dim, POLICY_GAIN, self.transposed_grad)
        self.value_head = _dense(1, VALUE_GAIN, self.transposed_grad)
        if not self.spec.discrete:
            self.log_std = self.param(
                "log_std", nn.initializers.zeros, (self.spec.action_dim,)
            )

    def policy(self, obs: jax.Array):
        """The action distribution at ``obs``."""
        out = self.policy_head(self.actor_torso(obs))
        return action_distribution(self.spec, out, None if self.spec.discrete else self.log_std)

    def value(self, obs: jax.Array) -> jax.Array:
        """V(obs), shape ``obs.shape[:-len(obs_shape)]``."""
        return self.value_head(self.critic_torso(obs))[..., 0]

    def __call__(self, obs: jax.Array):
        return self.policy(obs), self.value(obs)


def gru_cell(h: jax.Array, gi: jax.Array, recurrent_kernel: jax.Array,
             recurrent_bias: jax.Array, transposed_grad: bool = False) -> jax.Array:
    """One GRU step (Cho et al., 2014), the gates of `flax.linen.GRUCell`::

        r  = sigmoid(x W_ir + b_ir + h W_hr)
        z  = sigmoid(x W_iz + b_iz + h W_hz)
        n  = tanh(x W_in + b_in + r * (h W_hn + b_hn))
        h' = (1 - z) * n + z * h

    Args:
        h: the hidden state (..., H).
        gi: the input's projection ``x [W_ir W_iz W_in] + [b_ir b_iz b_in]``
            (..., 3H), computed for a whole sequence at once by `GRU`.
        recurrent_kernel: ``[W_hr W_hz W_hn]``, (H, 3H).
        recurrent_bias: ``b_hn``, (H,).
    Returns:
        h' (..., H).
    """
    size = h.shape[-1]
    gh = matmul(h, recurrent_kernel, transposed_grad)
    r = jax.nn.sigmoid(gi[..., :size] + gh[..., :size])
    z = jax.nn.sigmoid(gi[..., size : 2 * size] + gh[..., size : 2 * size])
    n = jnp.tanh(gi[..., 2 * size :] + r * (gh[..., 2 * size :] + recurrent_bias))
    return (1.0 - z) * n + z * h


def gate_orthogonal(gain: float = 1.0) -> Callable:
    """An initializer of (H, 3H) recurrent kernels: each gate's (H, H) block
    orthogonal, as three `flax.linen.GRUCell` recurrent kernels."""
    base = nn.initializers.orthogonal(gain)

    def init(key, shape, dtype=jnp.float32):
        rows, cols = shape
        blocks = [base(k, (rows, cols // 3), dtype) for k in jax.random.split(key, 3)]
        return jnp.concatenate(blocks, axis=-1)

    return init


GRU_GAIN = 1.0


class GRU(nn.Module):
    """A GRU over a time-major sequence, reset where an episode starts.

    Input ``(h0, x, starts)``: the hidden state before the sequence (B, H),
    the inputs (T, B, F) and the episode starts (T, B) bool (or None: no
    reset). Before step t, ``h`` is zeroed where ``starts[t]``. Returns
    every step's hidden state (T, B, H).

    The input projection of all T steps is one matmul before the time loop;
    only ``h @ recurrent_kernel`` runs inside it (`gru_cell`). With
    ``fast_backward`` (the default) a sequence goes through
    `purejaxppo.fast.gru_sequence`, the same loop with a hand-written
    backward pass; else through a plain `jax.lax.scan`. Parameters:
    ``kernel`` (F, 3H) and ``bias`` (3H,) of the input, ``recurrent_kernel``
    (H, 3H), ``recurrent_bias`` (H,): the twelve of a `flax.linen.GRUCell`
    (ir, iz, in; hr, hz, hn), gates concatenated in that order.
    """

    features: int
    transposed_grad: bool = False
    fast_backward: bool = True

    @nn.compact
    def __call__(self, h0: jax.Array, x: jax.Array, starts: jax.Array | None = None) -> jax.Array:
        size = self.features
        kernel = self.param("kernel", nn.initializers.orthogonal(GRU_GAIN), (x.shape[-1], 3 * size))
        bias = self.param("bias", nn.initializers.zeros, (3 * size,))
        recurrent_kernel = self.param("recurrent_kernel", gate_orthogonal(GRU_GAIN), (size, 3 * size))
        recurrent_bias = self.param("recurrent_bias", nn.initializers.zeros, (size,))
        gi = matmul(x, kernel, self.transposed_grad) + bias

        def step(h, inputs):
            gi_t, start_t = inputs
            if start_t is not None:
                h = jnp.where(start_t[..., None], jnp.zeros_like(h), h)
            h = gru_cell(h, gi_t, recurrent_kernel, recurrent_bias, self.transposed_grad)
            return h, h

        if x.shape[0] == 1:  # one step (acting): no loop
            return step(h0, (gi[0], None if starts is None else starts[0]))[1][None]
        if self.fast_backward:
            starts = jnp.zeros(gi.shape[:-1], bool) if starts is None else starts
            return gru_sequence(h0, gi, starts, recurrent_kernel, recurrent_bias)
        return jax.lax.scan(step, h0, (gi, starts))[1]


class RecurrentActorCritic(NetworkFields):
    """Torso (MLP or CNN), then a GRU, then the actor and critic heads.

    The hidden state has shape (..., cores, recurrent_size): one core
    (``shared_core``: one torso and one GRU feed both heads) or two (the
    actor's torso and GRU, then the critic's, as `ActorCritic` keeps them
    apart). It is zeroed where an episode starts.

    Methods (``network.apply(params, ..., method=...)``):
        step(obs (B, *obs_shape), hidden (B, C, H)) -> (hidden', distribution):
            one acting step; ``hidden`` is the state before it (already
            zeroed at an episode's start), ``hidden'`` after it.
        hidden_values(hidden (..., C, H)) -> V (...): the value of the
            observation whose step ended in ``hidden``.
        bootstrap_values(hidden (..., C, H), obs (..., *obs_shape)) -> V (...):
            the value of ``obs`` seen one step after ``hidden`` in the same
            episode (the final observation of a truncated episode).
        __call__(obs (B, T, *obs_shape), starts (B, T), hidden0 (B, C, H))
            -> (distribution, values) over (B, T): B sequences replayed
            from their stored hidden state, reset where ``starts``.
    """

    recurrent_size: int = 128
    shared_core: bool = True

    @property
    def cores(self) -> int:
        return 1 if self.shared_core else 2

    def initial_hidden(self, batch: int) -> jax.Array:
        """The hidden state of ``batch`` envs at an episode's start: zeros (batch, C, H)."""
        return jnp.zeros((batch, self.cores, self.recurrent_size), jnp.float32)

    def setup(self):
        self.torsos = [make_torso(self) for _ in range(self.cores)]
        self.grus = [GRU(self.recurrent_size, self.transposed_grad) for _ in range(self.cores)]
        self.policy_head = _dense(self.spec.action_dim, POLICY_GAIN, self.transposed_grad)
        self.value_head = _dense(1, VALUE_GAIN, self.transposed_grad)
        if not self.spec.discrete:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.spec.action_dim,))

    def _unroll(self, h0: jax.Array, obs: jax.Array, starts: jax.Array | None) -> jax.Array:
        """Time-major: obs (T, B, ...), h0 (B, C, H) -> hidden states (T, B, C, H)."""
        return jnp.stack(
            [gru(h0[..., c, :], torso(obs), starts)
             for c, (torso, gru) in enumerate(zip(self.torsos, self.grus))],
            axis=-2,
        )

    def _distribution(self, hidden: jax.Array):
        out = self.policy_head(hidden[..., 0, :])
        return action_distribution(self.spec, out, None if self.spec.discrete else self.log_std)

    def hidden_values(self, hidden: jax.Array) -> jax.Array:
        return self.value_head(hidden[..., -1, :])[..., 0]

    def step(self, obs: jax.Array, hidden: jax.Array):
        new_hidden = self._unroll(hidden, obs[None], None)[0]
        return new_hidden, self._distribution(new_hidden)

    def bootstrap_values(self, hidden: jax.Array, obs: jax.Array) -> jax.Array:
        lead = hidden.shape[:-2]
        flat_hidden = hidden.reshape((-1,) + hidden.shape[-2:])
        flat_obs = obs.reshape((-1,) + obs.shape[len(lead):])
        after = self._unroll(flat_hidden, flat_obs[None], None)[0]
        return self.hidden_values(after).reshape(lead)

    def __call__(self, obs: jax.Array, starts: jax.Array, hidden0: jax.Array):
        time_major = lambda x: jnp.swapaxes(x, 0, 1)
        hidden = time_major(self._unroll(hidden0, time_major(obs), time_major(starts)))
        return self._distribution(hidden), self.hidden_values(hidden)


def make_network(
    spec: EnvSpec,
    hidden_sizes: Sequence[int],
    activation: str,
    torso: str = "auto",
    cnn_channels: Sequence[int] = (16,),
    transposed_grad: bool = False,
    recurrent: str | None = None,
    recurrent_size: int = 128,
    recurrent_core: str = "shared",
) -> ActorCritic | RecurrentActorCritic:
    """The actor-critic for an environment; the head follows its action space
    and the torso (``"auto"``) its observation shape. ``transposed_grad``
    (`matmul`) changes how the kernels' gradients are computed, never the
    network's values or parameters; `make_train` sets it where
    `transposed_grad_pays`.

    Each 3x3 VALID convolution of the CNN torso takes 2 pixels off each
    spatial side, so ``len(cnn_channels)`` must leave at least one pixel: a
    ``ValueError`` otherwise (with none left, the torso's output would not
    depend on the observation at all).

    ``recurrent="gru"`` makes the `RecurrentActorCritic` (a GRU of
    ``recurrent_size`` units after the torso; ``recurrent_core`` "shared" or
    "separate" for the actor and the critic).
    """
    torso = resolve_torso(torso, spec.obs_shape)
    if torso == "cnn" and 2 * len(cnn_channels) >= min(spec.obs_shape[:2]):
        raise ValueError(
            f"cnn_channels={tuple(cnn_channels)} has {len(cnn_channels)} 3x3 VALID convolutions, "
            f"which leave no pixel of the {spec.obs_shape[0]}x{spec.obs_shape[1]} observation; "
            f"allowed: at most {(min(spec.obs_shape[:2]) - 1) // 2} layers"
        )
    common = dict(spec=spec, hidden_sizes=tuple(hidden_sizes), activation=activation, torso=torso,
                  cnn_channels=tuple(cnn_channels), transposed_grad=transposed_grad)
    if recurrent is not None:
        return RecurrentActorCritic(**common, recurrent_size=recurrent_size,
                                   shared_core=recurrent_core == "shared")
    return ActorCritic(**common)
