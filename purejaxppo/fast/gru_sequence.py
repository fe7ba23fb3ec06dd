"""A GRU over a sequence whose backward pass takes the weights' gradient after the loop.

Plain equivalent: ``jax.lax.scan`` of `purejaxppo.networks.gru_cell` over
time, differentiated by JAX (`purejaxppo.networks.GRU` with
``fast=False``). The values are the same maths; the gradients agree to float
rounding (``tests/test_fast.py``).

Why: differentiating the plain scan, JAX adds each step's gradient of the
recurrent kernel (H x 3H) into a loop-carried accumulator, so the backward
loop reads and writes the whole kernel T times. Here the backward loop
carries only dh; each step's gate gradients are stacked, and the kernel's
and bias's gradients are one (T*B, H) x (T*B, 3H) matmul after it, as
cuDNN's RNN does. Gain, against the same code with ``GRU.fast_backward``
off (``benchmarks/compare_revisions.py``, 2 alternating pairs, 2-core Zen 5
CPU, jax 0.10.2): x1.21 steps/s on ``cartpole_gru`` and x1.38 on
``cartpole_gru_x8`` (8 seeds on one device), 128 units
(benchmarks/results/compare/compare-a31ba87-e73960e-dirty-cpu-cartpole_gru+cartpole_gru_x8.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _forward(h0, gi, starts, recurrent_kernel, recurrent_bias):
    """The scan, keeping what the backward pass needs per step: the state
    after the reset, the gates r, z, n and ``h W_hn + b_hn``."""
    size = h0.shape[-1]

    def step(h, inputs):
        gi_t, start_t = inputs
        h = jnp.where(start_t[..., None], jnp.zeros_like(h), h)
        gh = h @ recurrent_kernel
        r = jax.nn.sigmoid(gi_t[..., :size] + gh[..., :size])
        z = jax.nn.sigmoid(gi_t[..., size : 2 * size] + gh[..., size : 2 * size])
        hn = gh[..., 2 * size :] + recurrent_bias
        n = jnp.tanh(gi_t[..., 2 * size :] + r * hn)
        new_h = (1.0 - z) * n + z * h
        return new_h, (new_h, (h, r, z, n, hn))

    _, (hs, saved) = jax.lax.scan(step, h0, (gi, starts))
    return hs, saved


@jax.custom_vjp
def gru_sequence(h0, gi, starts, recurrent_kernel, recurrent_bias):
    """Every step's state (T, B, H) of a GRU from ``h0`` (B, H), given the
    input projections ``gi`` (T, B, 3H) and the episode starts (T, B) before
    which the state is zeroed: `purejaxppo.networks.GRU`'s loop."""
    return _forward(h0, gi, starts, recurrent_kernel, recurrent_bias)[0]


def _gru_fwd(h0, gi, starts, recurrent_kernel, recurrent_bias):
    hs, saved = _forward(h0, gi, starts, recurrent_kernel, recurrent_bias)
    return hs, (saved, starts, recurrent_kernel)


def _gru_bwd(residuals, d_hs):
    (h_in, r, z, n, hn), starts, recurrent_kernel = residuals

    def step(dh, inputs):
        d_out, h_t, r_t, z_t, n_t, hn_t, start_t = inputs
        dh = dh + d_out
        dn = dh * (1.0 - z_t)
        dz = dh * (h_t - n_t)
        da_n = dn * (1.0 - n_t * n_t)
        da_r = da_n * hn_t * r_t * (1.0 - r_t)
        da_z = dz * z_t * (1.0 - z_t)
        d_gi = jnp.concatenate([da_r, da_z, da_n], axis=-1)
        d_gh = jnp.concatenate([da_r, da_z, da_n * r_t], axis=-1)
        dh_in = dh * z_t + d_gh @ recurrent_kernel.T
        dh_prev = jnp.where(start_t[..., None], jnp.zeros_like(dh_in), dh_in)
        return dh_prev, (d_gi, d_gh)

    dh0, (d_gi, d_gh) = jax.lax.scan(
        step, jnp.zeros_like(d_hs[0]), (d_hs, h_in, r, z, n, hn, starts), reverse=True
    )
    size = h_in.shape[-1]
    flat = lambda x: x.reshape(-1, x.shape[-1])
    d_kernel = flat(h_in).T @ flat(d_gh)
    d_bias = jnp.sum(flat(d_gh)[:, 2 * size :], axis=0)
    return dh0, d_gi, None, d_kernel, d_bias


gru_sequence.defvjp(_gru_fwd, _gru_bwd)
