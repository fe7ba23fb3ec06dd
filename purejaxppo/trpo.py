"""TRPO's policy step: a natural-gradient step inside a KL trust region.

Trust Region Policy Optimization (Schulman et al. 2015, "Trust Region
Policy Optimization", appendix C) maximises the surrogate subject to a hard
constraint on the mean KL divergence from the rollout's policy::

    maximise  L(theta) = mean(r * A) + ent_coef * mean(H[pi_theta])
    s.t.      KL(theta) = mean(KL(pi_old(.|s) || pi_theta(.|s))) <= delta

It approximates L to first order (its gradient g at theta_old) and the KL
to second order (its Hessian at theta_old, the Fisher information matrix
F), solves F x = g by conjugate gradient from Fisher-vector products
(forward-over-reverse differentiation of the KL, never forming F), scales
the step to the trust region's edge::

    step = sqrt(2 delta / (x^T F x)) * x

and backtracks, ``theta_old + c^j * step`` for j = 0, 1, ..., to the first
point whose exact mean KL is at most delta and whose surrogate improves; if
none does, the policy stays. PPO replaced this second-order machinery by a
first-order clip in the objective (Schulman et al. 2017).

The critic is not part of this step: `purejaxppo.train` fits it by the
minibatch steps of the value loss, as PPO does.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from purejaxppo.losses import Minibatch, normalize, weighted_mean

CG_ITERS = 10
"""Conjugate-gradient iterations per step."""
CG_DAMPING = 0.1
"""lambda of the damped Fisher matrix F + lambda * I the step solves with."""
BACKTRACK_COEF = 0.8
"""c: each backtracking step shrinks the step by this factor."""
BACKTRACKS = 10
"""The most points the line search tries."""


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array,
                       iters: int = CG_ITERS) -> jax.Array:
    """x with ``matvec(x) ~= b`` for a symmetric positive-definite operator,
    by ``iters`` conjugate-gradient iterations from x = 0 (Hestenes and
    Stiefel 1952). Exact after n iterations for an n x n matrix, in exact
    arithmetic; stops moving once the residual is 0."""

    def iteration(_, state):
        x, r, p, rr = state
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_next = jnp.vdot(r, r)
        beta = jnp.where(rr > 0, rr_next / jnp.where(rr > 0, rr, 1.0), 0.0)
        return x, r, r + beta * p, rr_next

    x0 = jnp.zeros_like(b)
    x, *_ = jax.lax.fori_loop(0, iters, iteration, (x0, b, b, jnp.vdot(b, b)))
    return x


def trpo_step(
    params: Any,
    apply_fn: Callable,
    batch: Minibatch,
    hp,
    norm_adv: bool,
    axis_name: str | None = None,
    cg_iters: int = CG_ITERS,
    damping: float = CG_DAMPING,
    backtracks: int = BACKTRACKS,
    backtrack_coef: float = BACKTRACK_COEF,
) -> tuple[Any, dict[str, jax.Array]]:
    """One TRPO policy step on the whole ``batch``; delta is ``hp.target_kl``.

    Args:
        params: the network's parameters (a pytree), those of the rollout's
            policy. Parameters the policy does not read (the critic's) get
            a zero gradient and so a zero step.
        apply_fn: ``apply_fn(params, *batch.inputs()) -> (distribution,
            values)``.
        batch: the rollout's samples (B, or B sequences), with the
            advantages, and optional ``weights``.
        hp: the `HyperParams` (``target_kl`` as delta, ``ent_coef``).
        norm_adv: normalise the advantages over the batch first.
        axis_name: a mapped axis of devices each holding an equal share of
            the batch: gradients, Fisher-vector products and the line
            search's KL and surrogate are averaged over it, so every device
            takes the same step.

    Returns:
        ``(params, diagnostics)``: ``policy_loss`` (-L at theta_old),
        ``entropy`` and ``approx_kl`` (the exact mean KL of the step taken),
        and ``gradient_steps`` (1.0 if a step was taken, else 0.0).
    """
    flat, unravel = ravel_pytree(params)
    inputs = batch.inputs()
    weights = batch.weights
    advantages = batch.advantages
    if norm_adv:
        advantages = normalize(advantages, axis_name=axis_name, weights=weights)
    pmean = (lambda x: x) if axis_name is None else (lambda x: jax.lax.pmean(x, axis_name))
    old_dist = jax.lax.stop_gradient(apply_fn(params, *inputs)[0])

    def surrogate_and_kl(theta):  # this device's means
        dist, _ = apply_fn(unravel(theta), *inputs)
        ratio = jnp.exp(dist.log_prob(batch.actions) - batch.log_probs)
        entropy = weighted_mean(dist.entropy(), weights)
        surrogate = weighted_mean(ratio * advantages, weights) + hp.ent_coef * entropy
        kl = weighted_mean(old_dist.kl(dist), weights)
        return surrogate, (kl, entropy)

    grad_surrogate = jax.grad(lambda theta: surrogate_and_kl(theta)[0])
    grad_kl = jax.grad(lambda theta: surrogate_and_kl(theta)[1][0])

    def fisher_vector(v):  # (F + damping * I) v, F the Hessian of the mean KL at theta_old
        return pmean(jax.jvp(grad_kl, (flat,), (v,))[1]) + damping * v

    g = pmean(grad_surrogate(flat))
    x = conjugate_gradient(fisher_vector, g, cg_iters)
    xfx = jnp.vdot(x, fisher_vector(x))
    full_step = jnp.sqrt(2.0 * hp.target_kl / jnp.maximum(xfx, 1e-12)) * x

    surrogate_old, (_, entropy) = pmean(surrogate_and_kl(flat))

    def evaluate(fraction):
        surrogate, (kl, _) = pmean(surrogate_and_kl(flat + fraction * full_step))
        ok = (kl <= hp.target_kl) & (surrogate > surrogate_old) & jnp.isfinite(surrogate)
        return ok, kl

    def searching(state):
        j, accepted, _ = state
        return ~accepted & (j < backtracks)

    def try_next(state):
        j, _, _ = state
        accepted, kl = evaluate(backtrack_coef ** j.astype(jnp.float32))
        return j + 1, accepted, kl

    j, accepted, kl = jax.lax.while_loop(
        searching, try_next, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.zeros(()))
    )
    fraction = jnp.where(accepted, backtrack_coef ** (j - 1).astype(jnp.float32), 0.0)
    diagnostics = {
        "policy_loss": -surrogate_old,
        "entropy": entropy,
        "approx_kl": jnp.where(accepted, kl, 0.0),
        "gradient_steps": accepted.astype(jnp.float32),
    }
    return unravel(flat + fraction * full_step), diagnostics
