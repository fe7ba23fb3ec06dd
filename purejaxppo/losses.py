"""PPO losses: the clipped surrogate, its variants, the value loss, diagnostics.

Conventions: *objectives* are maximised and returned as such
(`clipped_surrogate`); *losses* are minimised (`ppo_loss`). Every function is
elementwise or a mean over a minibatch, pure and differentiable.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct


def clipped_surrogate(
    ratio: jax.Array, advantages: jax.Array, clip_eps: jax.Array | float
) -> jax.Array:
    """PPO-Clip objective per sample (to maximise), broadcasting::

        L^CLIP = min(r * A, clip(r, 1 - eps, 1 + eps) * A)

    The min is asymmetric on purpose. For A > 0 it caps the credit for raising
    r past 1 + eps (the gradient there is exactly 0); for A < 0 it caps the
    credit for lowering r below 1 - eps. It never caps the loss of a harmful
    move: for A < 0 and r > 1 + eps the unclipped term is the smaller one and
    its gradient A flows in full.

    Args:
        ratio: r = pi_theta(a|s) / pi_theta_old(a|s).
        advantages: A, broadcastable against ``ratio``.
        clip_eps: eps > 0.
    Returns:
        The objective per element, of the broadcast shape.
    """
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return jnp.minimum(unclipped, clipped)


def kl_penalty_surrogate(
    ratio: jax.Array, advantages: jax.Array, kl: jax.Array, kl_coef: jax.Array | float
) -> jax.Array:
    """PPO-Penalty objective per sample (to maximise): ``r * A - beta * KL``.

    ``kl`` is KL(pi_old || pi_theta) at the same state.
    """
    return ratio * advantages - kl_coef * kl


def policy_gradient_surrogate(log_prob: jax.Array, advantages: jax.Array) -> jax.Array:
    """Vanilla policy-gradient objective per sample: ``log pi(a|s) * A``.

    With a learned baseline in A this is the actor-critic (REINFORCE with a
    baseline when A is a Monte Carlo return minus V).
    """
    return log_prob * advantages


def kl_estimate(log_ratio: jax.Array) -> jax.Array:
    """Per-sample unbiased, non-negative estimator of KL(pi_old || pi): (r - 1) - log r.

    ``log_ratio`` is log r = log pi(a|s) - log pi_old(a|s) for a ~ pi_old.
    """
    return jnp.expm1(log_ratio) - log_ratio


def approx_kl(log_ratio: jax.Array) -> jax.Array:
    """Mean of `kl_estimate` over the batch: the ``approx_kl`` diagnostic."""
    return jnp.mean(kl_estimate(log_ratio))


def weighted_mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
    """``mean(x)``, or ``mean(weights * x)`` with sample weights (of mean 1
    over the minibatch, `sample_weights`)."""
    return jnp.mean(x) if weights is None else jnp.mean(weights * x)


def value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    clip_eps: jax.Array | float,
    clip_vloss: bool,
    weights: jax.Array | None = None,
) -> jax.Array:
    """0.5 * mean squared error to the value targets.

    With ``clip_vloss`` (PPO2 style): 0.5 * mean(max((V - R)^2,
    (V_old + clip(V - V_old, -eps, eps) - R)^2)). With ``weights``, the
    mean is weighted (`weighted_mean`).
    """
    squared = (values - returns) ** 2
    if clip_vloss:
        clipped_values = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        squared = jnp.maximum(squared, (clipped_values - returns) ** 2)
    return 0.5 * weighted_mean(squared, weights)


def union_mean_var(x: jax.Array, axis_name: str) -> tuple[jax.Array, jax.Array]:
    """Mean and population variance of all elements of ``x`` over the union
    of ``x`` along the mapped axis ``axis_name`` (devices under
    `jax.shard_map`, or a `jax.vmap` axis), whose members must all have
    ``x``'s shape. Each member's mean and sum of squared deviations are
    gathered (one collective) and merged exactly, as `RunningMeanStd` merges
    batches: ``M2 = sum_i M2_i + n * sum_i (mean_i - mean)^2``."""
    local_mean = jnp.mean(x)
    local_m2 = jnp.sum(jnp.square(x - local_mean))
    means, m2s = jax.lax.all_gather(jnp.stack([local_mean, local_m2]), axis_name).T
    mean = jnp.mean(means)
    var = (jnp.sum(m2s) + x.size * jnp.sum(jnp.square(means - mean))) / (x.size * means.shape[0])
    return mean, var


def normalize(x: jax.Array, eps: float = 1e-8, axis_name: str | None = None,
              weights: jax.Array | None = None) -> jax.Array:
    """(x - mean) / (std + eps) over all elements (population std); with
    ``axis_name``, over the union of ``x`` along that mapped axis
    (`union_mean_var`). With ``weights`` (of ``x``'s shape, >= 0), the
    weighted mean and variance, so that zero-weight samples count for
    nothing."""
    if weights is not None:
        moments = jnp.stack([jnp.mean(weights), jnp.mean(weights * x), jnp.mean(weights * x * x)])
        if axis_name is not None:  # equal shares: the union's means are the means' mean
            moments = jax.lax.pmean(moments, axis_name)
        mean = moments[1] / moments[0]
        var = jnp.maximum(moments[2] / moments[0] - mean**2, 0.0)
        return (x - mean) / (jnp.sqrt(var) + eps)
    if axis_name is None:
        return (x - jnp.mean(x)) / (jnp.std(x) + eps)
    mean, var = union_mean_var(x, axis_name)
    return (x - mean) / (jnp.sqrt(var) + eps)


def sample_weights(mask: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Weights of mean 1 from a 0/1 ``mask`` of the samples a loss may use:
    ``mask / mean(mask)`` (the mean over the union along ``axis_name``),
    so that ``mean(weights * x)`` is the mean of ``x`` over the masked-in
    samples, and stays one when summed in equal chunks. All zeros if no
    sample is masked in."""
    mask = mask.astype(jnp.float32)
    fraction = jnp.mean(mask)
    if axis_name is not None:
        fraction = jax.lax.pmean(fraction, axis_name)
    return jnp.where(fraction > 0, mask / jnp.maximum(fraction, 1e-12), 0.0)


@struct.dataclass
class Minibatch:
    """The rollout data one gradient step sees; every field has leading axis B.

    For a feed-forward policy B samples. For a recurrent one B env
    sequences of T steps: every field but ``hidden`` has leading axes
    (B, T), ``starts`` marks the steps that begin an episode inside a
    sequence, and ``hidden`` (B, cores, H) is each sequence's state at its
    first step, from which the policy replays it. ``weights``, where
    given, weigh each sample's terms of the loss (of mean 1 over the
    minibatch, `sample_weights`): the REINFORCE rungs give the samples of
    episodes that do not end inside the rollout weight 0.
    """

    obs: jax.Array
    actions: jax.Array
    log_probs: jax.Array  # log pi_old(a|s)
    values: jax.Array  # V_old(s)
    advantages: jax.Array
    returns: jax.Array  # value targets
    starts: jax.Array | None = None
    hidden: jax.Array | None = None
    weights: jax.Array | None = None

    def inputs(self) -> tuple:
        """What the network is applied to: ``(obs,)``, or ``(obs, starts,
        hidden)`` for a recurrent policy."""
        return (self.obs,) if self.hidden is None else (self.obs, self.starts, self.hidden)


POLICY_OBJECTIVES = ("clip", "kl_penalty", "pg", "none")
"""The per-sample policy objectives of `ppo_loss`; ``"none"`` fits only the
critic (TRPO's minibatch steps, whose policy step is `purejaxppo.trpo`)."""


@struct.dataclass
class LossStatic:
    """The static choices the loss depends on (changing one recompiles).

    ``policy_objective`` is one of `POLICY_OBJECTIVES`; ``critic`` False
    leaves the value loss out (REINFORCE without a baseline).
    """

    norm_adv: bool = struct.field(pytree_node=False)
    clip_vloss: bool = struct.field(pytree_node=False)
    policy_objective: str = struct.field(pytree_node=False)
    critic: bool = struct.field(pytree_node=False, default=True)


def ppo_loss(
    params: Any,
    apply_fn,
    batch: Minibatch,
    hp,
    static: LossStatic,
    reference_params: Any = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total PPO loss of one minibatch and its diagnostics.

        loss = -mean(policy objective) + vf_coef * value_loss - ent_coef * entropy
               [+ reference_kl_coef * KL(pi_ref || pi) if ``reference_params`` is given]

    (``vf_coef * value_loss`` alone with the objective ``"none"``; no value
    loss without ``static.critic``; means weighted by ``batch.weights``
    where given.)

    Args:
        params: network parameters being optimised.
        apply_fn: ``apply_fn(params, *batch.inputs()) -> (distribution,
            values)``.
        batch: a `Minibatch` of B samples (or B sequences).
        hp: the `HyperParams` (clip_eps, vf_coef, ent_coef, kl_coef and
            reference_kl_coef are read).
        static: the `LossStatic` choices.
        reference_params: optional parameters of a fixed reference policy
            (e.g. the pretrained one when fine-tuning); adds a KL penalty.

    Returns:
        ``(loss, diagnostics)``; diagnostics are scalars: ``policy_loss``,
        ``value_loss``, ``entropy``, ``approx_kl``, ``clip_fraction`` (|r-1| >
        eps), ``clip_fraction_pos_adv`` (A > 0 and r > 1 + eps: the gain of a
        good action is capped, zero gradient), ``clip_fraction_neg_adv`` (A <
        0 and r < 1 - eps: the avoidance of a bad action is capped, zero
        gradient); both fractions are of the whole minibatch.
    """
    sample_axes = 1 if batch.hidden is None else 2
    chex.assert_rank([batch.log_probs, batch.values, batch.advantages, batch.returns], sample_axes)
    chex.assert_equal_shape(
        [batch.log_probs, batch.values, batch.advantages, batch.returns]
    )
    chex.assert_equal_shape_prefix([batch.obs, batch.actions, batch.log_probs], sample_axes)

    dist, values = apply_fn(params, *batch.inputs())
    log_probs = dist.log_prob(batch.actions)
    chex.assert_equal_shape([log_probs, batch.log_probs, values])
    log_ratio = log_probs - batch.log_probs
    ratio = jnp.exp(log_ratio)

    weights = batch.weights
    advantages = batch.advantages
    if static.norm_adv:
        advantages = normalize(advantages, weights=weights)

    kl_old_new = kl_estimate(log_ratio)
    if static.policy_objective == "clip":
        objective = clipped_surrogate(ratio, advantages, hp.clip_eps)
    elif static.policy_objective == "kl_penalty":
        objective = kl_penalty_surrogate(ratio, advantages, kl_old_new, hp.kl_coef)
    elif static.policy_objective == "pg":
        objective = policy_gradient_surrogate(log_probs, advantages)
    elif static.policy_objective == "none":
        objective = jnp.zeros_like(ratio)
    else:  # validated in PPOConfig; kept for direct callers
        raise ValueError(f"unknown policy_objective {static.policy_objective!r}; "
                         f"allowed: {', '.join(POLICY_OBJECTIVES)}")
    policy_loss = -weighted_mean(objective, weights)

    if static.critic:
        v_loss = value_loss(values, batch.values, batch.returns, hp.clip_eps, static.clip_vloss,
                            weights)
    else:
        v_loss = jnp.zeros((), jnp.float32)
    entropy = weighted_mean(dist.entropy(), weights)
    if static.policy_objective == "none":  # the critic's loss alone
        loss = hp.vf_coef * v_loss
    else:
        loss = policy_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy

    diagnostics = {}
    if reference_params is not None:
        ref_dist, _ = apply_fn(jax.lax.stop_gradient(reference_params), *batch.inputs())
        ref_kl = jnp.mean(ref_dist.kl(dist))
        loss = loss + hp.reference_kl_coef * ref_kl
        diagnostics["reference_kl"] = ref_kl

    outside = jnp.abs(ratio - 1.0) > hp.clip_eps
    diagnostics.update(
        loss=loss,
        policy_loss=policy_loss,
        value_loss=v_loss,
        entropy=entropy,
        approx_kl=approx_kl(log_ratio),
        clip_fraction=jnp.mean(outside),
        clip_fraction_pos_adv=jnp.mean((advantages > 0) & (ratio > 1.0 + hp.clip_eps)),
        clip_fraction_neg_adv=jnp.mean((advantages < 0) & (ratio < 1.0 - hp.clip_eps)),
    )
    return loss, diagnostics
