"""chex assertions catch wrong shapes when tracing, before anything runs."""

import jax
import jax.numpy as jnp
import pytest

from purejaxppo import PPOConfig
from purejaxppo.advantages import gae
from purejaxppo.envs import VecEnv, make_env
from purejaxppo.losses import LossStatic, Minibatch, ppo_loss
from purejaxppo.distributions import Categorical

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode


def test_gae_rejects_mismatched_shapes_at_trace_time():
    r = jnp.zeros((8, 4))
    bad = jnp.zeros((8, 3))
    with pytest.raises(AssertionError):
        jax.jit(gae).lower(r, r, bad, r, r, 0.99, 0.95)
    with pytest.raises(AssertionError):
        jax.jit(gae).lower(r[0], r[0], r[0], r[0], r[0], 0.99, 0.95)  # rank 1, not (T, N)


def test_env_step_rejects_wrong_action_shape():
    env, params, spec = make_env("CartPole-v1")
    vec = VecEnv(env, params, spec, 4)
    _, state = vec.reset(jax.random.PRNGKey(0))
    with pytest.raises(AssertionError):
        jax.jit(vec.step).lower(jax.random.PRNGKey(0), state, jnp.zeros((3,), jnp.int32))


def test_loss_rejects_mismatched_minibatch():
    apply = lambda p, o: (Categorical(logits=o @ p), (o @ p)[:, 0])
    params = jnp.zeros((3, 2))
    batch = Minibatch(
        obs=jnp.zeros((8, 3)), actions=jnp.zeros((8,), jnp.int32), log_probs=jnp.zeros((8,)),
        values=jnp.zeros((7,)), advantages=jnp.zeros((8,)), returns=jnp.zeros((8,)),
    )
    static = LossStatic(norm_adv=True, clip_vloss=False, policy_objective="clip")
    with pytest.raises(AssertionError):
        ppo_loss(params, apply, batch, PPOConfig().hyperparams(), static)
