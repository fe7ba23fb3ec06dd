"""Actor and critic networks (flax linen), separate MLPs with orthogonal init.

Initialisation follows the PPO implementation details: orthogonal weights with
gain sqrt(2) in hidden layers, 0.01 on the policy head, 1.0 on the value head,
zero biases; a state-independent log-std parameter initialised at 0 for
continuous actions. `init_params` (what `make_train` uses) draws that same
initialisation from one random call.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from purejaxppo.distributions import Categorical, DiagGaussian, normal_from_bits
from purejaxppo.envs import EnvSpec
from purejaxppo.prng import straight

ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
}

_HIDDEN_GAIN = math.sqrt(2.0)
_POLICY_GAIN = 0.01
_VALUE_GAIN = 1.0


TRANSPOSED_GRAD_MAX_WIDTH = 256
"""The widest input (n of `matmul`) whose kernel gradient `matmul` takes
from an explicit transpose: training was faster with it for layers of 4 to
256 inputs, slower with the CNN's 1,024-wide layer and no faster with
MinAtar's 400 inputs (benchmarks/NOTES.md, session 18)."""


def matmul(x: jax.Array, kernel: jax.Array, transposed_grad: bool = False) -> jax.Array:
    """``x @ kernel``: x (..., n), kernel (n, m) -> (..., m).

    The value and both gradients are those of ``x @ kernel``; only how the
    kernel's gradient is computed can differ. With X = x reshaped to (B, n)
    and G the cotangent reshaped to (B, m), reverse mode gives

        d/dx = G kernel^T,    d/dkernel = X^T G  (n, m).

    With ``transposed_grad`` and n <= `TRANSPOSED_GRAD_MAX_WIDTH`, X^T is
    materialised first (a transpose copy that
    `jax.lax.optimization_barrier` keeps XLA from folding back into the
    dot), so the kernel's gradient is a dot contracting the minor axis of
    both its (n, B) and (B, m) operands. XLA CPU hands that canonical form
    to its YNNPACK matmul, where a dot contracting X's major axis takes a
    slower path: CartPole's defaults trained x1.05 as fast, 2048 envs x 128
    steps x1.09 (``python benchmarks/compare_revisions.py eaa47e8 f807448``;
    benchmarks/NOTES.md, session 18). For
    wider inputs the transpose costs more than it saves. GPUs multiply
    transposed operands natively, so `make_train` asks for it on CPU only,
    and only where it was measured to pay (`transposed_grad_pays`). The
    summation order, hence the last bits of the gradient, may differ from
    the plain dot's.

    Where the transpose is used this is a `jax.custom_vjp`: `jax.grad` and
    `jax.vjp` go through it, forward mode (`jax.jvp`, `jax.jacfwd`,
    `jax.linearize`) raises a TypeError. Otherwise it is the plain dot.
    """
    if transposed_grad and x.shape[-1] <= TRANSPOSED_GRAD_MAX_WIDTH:
        return _matmul_transposed_grad(x, kernel)
    return x @ kernel


@jax.custom_vjp
def _matmul_transposed_grad(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return x @ kernel


def _matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _matmul_bwd(residuals, g):
    x, kernel = residuals
    x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)
    d_kernel = (x_t @ g.reshape(-1, g.shape[-1])).astype(kernel.dtype)
    if not jnp.issubdtype(x.dtype, jnp.inexact):  # integer or bool inputs: no gradient
        return None, d_kernel
    return (g @ kernel.T).astype(x.dtype), d_kernel


_matmul_transposed_grad.defvjp(_matmul_fwd, _matmul_bwd)


def transposed_grad_pays(backend: str | None = None) -> bool:
    """Whether `make_train` asks `matmul` for the explicit transpose
    (``transposed_grad``) on ``backend`` (default: JAX's default backend).

    An empirical rule, from timings on a 2-core AMD EPYC (Zen 5) CPU
    (benchmarks/NOTES.md, session 18): with jaxlib 0.10.2 (XLA CPU there),
    training ran faster with it (CartPole's defaults x1.05, 2048 envs x 128
    steps x1.09, in ``benchmarks/compare_revisions.py``); with jaxlib 0.11.2
    it brought nothing (within the noise, or 1-2% slower; scratch timings). So it is on for jaxlib 0.10 only,
    until other versions are measured. Off on GPU and TPU, whose matmuls
    take transposed operands natively.
    """
    import jaxlib

    backend = jax.default_backend() if backend is None else backend
    version = tuple(int(part) for part in jaxlib.__version__.split(".")[:2])
    return backend == "cpu" and (0, 10) <= version < (0, 11)


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
            x = act(_dense(width, _HIDDEN_GAIN, self.transposed_grad)(x))
        return x


def conv_valid(x: jax.Array, kernel: jax.Array, transposed_grad: bool = False) -> jax.Array:
    """Stride-1 VALID convolution of x (B, H, W, C) with kernel (kh, kw, C, O).

    Computed as im2col: the kh*kw shifted views are concatenated on the
    channel axis and multiplied by the reshaped kernel in one matmul. The
    maths is that of `lax.conv_general_dilated` (NHWC, HWIO); on CPU, for the
    small images of MinAtar, forward plus backward runs about 15x faster than
    XLA's convolution (benchmarks/NOTES.md). ``transposed_grad``: see `matmul`.
    """
    kh, kw, c, o = kernel.shape
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    patches = jnp.concatenate(
        [x[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    return matmul(patches, kernel.reshape(kh * kw * c, o), transposed_grad)


class Conv3x3(nn.Module):
    """A 3x3 stride-1 VALID convolution layer (`conv_valid`), orthogonal init."""

    features: int
    transposed_grad: bool = False  # see `matmul`

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.orthogonal(_HIDDEN_GAIN), (3, 3, x.shape[-1], self.features)
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
        self.policy_head = _dense(self.spec.action_dim, _POLICY_GAIN, self.transposed_grad)
        self.value_head = _dense(1, _VALUE_GAIN, self.transposed_grad)
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


def kernel_gain(path: Sequence[str]) -> float:
    """The orthogonal-init gain of the kernel at ``path`` in `ActorCritic`'s
    params: 0.01 in the policy head, 1.0 in the value head, sqrt(2) elsewhere
    (the torsos' Dense and Conv3x3 layers)."""
    if "policy_head" in path:
        return _POLICY_GAIN
    if "value_head" in path:
        return _VALUE_GAIN
    return _HIDDEN_GAIN


def _orthogonal_draw_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(n, m), n >= m: the Gaussian matrix whose QR gives an orthogonal
    kernel of ``shape`` (rows = all axes but the last, columns = the last)."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    return (max(rows, cols), min(rows, cols))


def orthonormal_columns(a: jax.Array) -> jax.Array:
    """The Q of the QR decomposition of ``a`` (..., n, m), n >= m, with R's
    diagonal positive: Gram-Schmidt, each column orthogonalised twice
    ("twice is enough": orthogonal to float precision for full-rank ``a``).

    For a standard Gaussian ``a``, Q is Haar-distributed, as from
    `jnp.linalg.qr` with the signs fixed by diag(R). Pure `lax` rather than
    LAPACK: jaxlib's batched CPU QR (the custom call a `jax.vmap` over many
    seeds makes) can deadlock on a small thread pool when two run at once:
    it hung here at 256 seeds on one device (benchmarks/NOTES.md, session 5),
    and at 4 seeds split over two CPU devices (session 12). With no LAPACK
    call, the init can be split over devices (`purejaxppo.devices`).
    """
    def column(j, q):
        v = jax.lax.dynamic_index_in_dim(a, j, axis=-1, keepdims=False)
        for _ in range(2):  # columns >= j of q are still zero
            v = v - jnp.einsum("...nm,...m->...n", q, jnp.einsum("...nm,...n->...m", q, v))
        v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
        return jax.lax.dynamic_update_index_in_dim(q, v, j, axis=-1)

    return jax.lax.fori_loop(0, a.shape[-1], column, jnp.zeros_like(a))


def init_params(network: nn.Module, key: jax.Array, obs: jax.Array) -> Any:
    """Parameters of ``network``, distributed as ``network.init(key, obs)``,
    from one random draw.

    Kernels are orthogonal with `kernel_gain` (Haar-distributed: the Q of the
    QR decomposition of a standard Gaussian matrix with diag(R) > 0, as in
    `jax.nn.initializers.orthogonal`; `orthonormal_columns`); biases and the
    log-std are 0.
    Any other parameter name is an error. `make_train` initialises with this.

    `network.init` draws one Gaussian matrix per layer, and on CPU each draw
    is a threefry kernel that XLA compiles apart. Here all Gaussians come
    from one flat `jax.random.bits` call, through a `purejaxppo.prng.straight`
    key (JAX's threefry bits, with no loop to compile), and all kernels
    whose draws have the same row count share one batched orthogonalisation
    (for an MLP torso: every kernel, one loop). Only the random stream
    differs from `network.init` (benchmarks/NOTES.md, sessions 5, 6 and 14).
    """
    abstract = jax.eval_shape(network.init, key, obs)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    paths = [tuple(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
    # Kernels grouped by the row count n of their Gaussian draw (n, m): one
    # Gram-Schmidt loop per group, over the group's widest m. Column j of Q
    # depends on columns <= j of the draw only, so a narrower kernel takes
    # the first m columns and has exactly the law of its own (n, m) draw.
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (path, (_, leaf)) in enumerate(zip(paths, leaves)):
        if path[-1] == "kernel":
            groups[_orthogonal_draw_shape(leaf.shape)[0]].append(i)
        elif path[-1] not in ("bias", "log_std"):
            raise ValueError(
                f"init_params: no initialiser for parameter {'/'.join(path)}; "
                "allowed leaf names: kernel (orthogonal), bias and log_std (zeros)"
            )
    widths = {
        n: max(_orthogonal_draw_shape(leaves[i][1].shape)[1] for i in idx)
        for n, idx in groups.items()
    }
    sizes = [len(idx) * n * widths[n] for n, idx in groups.items()]
    bits = jax.random.bits(straight(key), (max(sum(sizes), 1),), jnp.uint32)
    gaussian = normal_from_bits(bits)
    values = [jnp.zeros(leaf.shape, leaf.dtype) for _, leaf in leaves]
    offset = 0
    for (n, idx), size in zip(groups.items(), sizes):
        a = gaussian[offset : offset + size].reshape(len(idx), n, widths[n])
        offset += size
        q = orthonormal_columns(a)
        for j, i in enumerate(idx):
            shape = leaves[i][1].shape
            m = _orthogonal_draw_shape(shape)[1]
            w = q[j, :, :m] if math.prod(shape[:-1]) >= shape[-1] else q[j, :, :m].T
            values[i] = (kernel_gain(paths[i]) * w.reshape(shape)).astype(leaves[i][1].dtype)
    return jax.tree_util.tree_unflatten(treedef, values)
