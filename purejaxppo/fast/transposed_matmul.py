"""A matmul whose kernel gradient multiplies an explicit transpose (XLA CPU).

Plain JAX equivalent: ``x @ kernel``. The values are the same; the kernel's
gradient is the same product summed in another order (equal to a float
tolerance; ``tests/test_fast.py``).

Gain: on XLA CPU with jaxlib 0.10, CartPole's defaults trained x1.05 as
fast and 2048 envs x 128 steps x1.09 (``python
benchmarks/compare_revisions.py``; benchmarks/NOTES.md). With jaxlib 0.11 it
brought nothing measurable, so `transposed_grad_pays` turns it on for
jaxlib 0.10 on CPU only; GPUs and TPUs multiply transposed operands
natively.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TRANSPOSED_GRAD_MAX_WIDTH = 256
"""The widest input (n of `matmul`) whose kernel gradient `matmul` takes
from an explicit transpose: training was faster with it for layers of 4 to
256 inputs, slower with the CNN's 1,024-wide layer and no faster with
MinAtar's 400 inputs (benchmarks/NOTES.md)."""


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
    benchmarks/NOTES.md). For
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
    (benchmarks/NOTES.md): with jaxlib 0.10.2 (XLA CPU there),
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
