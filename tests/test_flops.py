"""The FLOP/transcendental cost model against XLA's own cost analysis."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig
from purejaxppo.envs import make_env
from flops import (
    actor_forward_cost,
    cost_per_env_step,
    critic_forward_cost,
    forward_backward_flops,
)
from purejaxppo.config import ACTIVATIONS
from purejaxppo.networks import make_network

B = 256


def _xla_cost(fn, *args):
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, list):  # older jax returned one dict per device
        analysis = analysis[0]
    return analysis.get("flops", 0.0) / B, analysis.get("transcendentals", 0.0) / B


def _setup(config):
    _, _, spec = make_env(config.env_name)
    net = make_network(spec, config.hidden_sizes, config.activation, config.torso, config.cnn_channels)
    obs = jnp.ones((B, *spec.obs_shape))
    return spec, net, net.init(jax.random.PRNGKey(0), obs), obs


CONFIGS = [
    PPOConfig(),
    PPOConfig(env_name="Pendulum-v1", hidden_sizes=(32, 48, 16)),
    PPOConfig(env_name="Breakout-MinAtar", activation="relu", hidden_sizes=(64,)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.env_name)
def test_forward_counts_match_xla(config):
    spec, net, params, obs = _setup(config)

    def actor(p, o):
        dist = net.apply(p, o, method=net.policy)
        return dist.log_probs if spec.discrete else dist.mean

    for fn, ours in ((actor, actor_forward_cost(config, spec)),
                     (lambda p, o: net.apply(p, o, method=net.value), critic_forward_cost(config, spec))):
        flops, transcendentals = _xla_cost(fn, params, obs)
        # XLA also counts bias adds and other elementwise ops: a few percent more.
        assert ours.flops <= flops <= 1.03 * ours.flops, (flops, ours)
        assert transcendentals == ours.transcendentals


BACKWARD_CONFIGS = CONFIGS + [
    PPOConfig(env_name="Breakout-MinAtar", torso="cnn", cnn_channels=(8, 16), hidden_sizes=(32,)),
]


@pytest.mark.parametrize("config", BACKWARD_CONFIGS, ids=lambda c: f"{c.env_name}-{c.torso}")
def test_forward_and_backward_counts_match_xla(config):
    """A gradient with respect to the parameters: three forwards less the
    first layer's input gradient (the observations are not differentiated).
    XLA's count also has the elementwise work, a few percent more. Three
    whole forwards, the count before, overstated the CNN's by over 10%."""
    spec, net, params, obs = _setup(config)

    def actor(p, o):
        dist = net.apply(p, o, method=net.policy)
        return jnp.sum(dist.log_probs if spec.discrete else dist.mean)

    value = lambda p, o: jnp.sum(net.apply(p, o, method=net.value))
    for fn, ours in zip((actor, value), forward_backward_flops(config, spec)):
        flops, _ = _xla_cost(jax.value_and_grad(fn), params, obs)
        assert ours <= flops <= 1.05 * ours, (flops, ours)


def test_cost_per_env_step_composition():
    config = PPOConfig()
    _, _, spec = make_env(config.env_name)
    a, c = actor_forward_cost(config, spec), critic_forward_cost(config, spec)
    cost = cost_per_env_step(config, spec)
    assert cost["rollout_flops"] == a.flops and cost["critic_flops"] == 2 * c.flops
    # Each network's first layer reads CartPole's 4 observations into 64 units.
    first = 2 * 4 * 64
    assert forward_backward_flops(config, spec) == (3 * a.flops - first, 3 * c.flops - first)
    assert cost["update_flops"] == 4 * (3 * (a.flops + c.flops) - 2 * first)
    assert cost["flops"] == a.flops + 2 * c.flops + cost["update_flops"]
    # With CartPole's time limit the critic reads 128 + 1 + 1 observations per env, not 256.
    reduced = cost_per_env_step(config, spec, truncation_period=500)
    assert reduced["critic_flops"] == round(c.flops * 130 / 128)
    assert reduced["update_flops"] == cost["update_flops"] and reduced["rollout_flops"] == a.flops


def test_reference_kl_adds_an_actor_forward_per_epoch():
    config = PPOConfig()
    _, _, spec = make_env(config.env_name)
    a = actor_forward_cost(config, spec)
    plain, tuned = cost_per_env_step(config, spec), cost_per_env_step(config.replace(reference_kl=True, reference_kl_coef=0.1), spec)
    assert tuned["update_flops"] - plain["update_flops"] == config.update_epochs * a.flops
    assert tuned["transcendentals"] - plain["transcendentals"] == config.update_epochs * a.transcendentals
    assert tuned["rollout_flops"] == plain["rollout_flops"] and tuned["critic_flops"] == plain["critic_flops"]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_transcendentals_of_every_activation_match_xla(activation):
    config = PPOConfig(activation=activation, hidden_sizes=(32, 16))
    spec, net, params, obs = _setup(config)
    actor = lambda p, o: net.apply(p, o, method=net.policy).log_probs
    value = lambda p, o: net.apply(p, o, method=net.value)
    assert _xla_cost(actor, params, obs)[1] == actor_forward_cost(config, spec).transcendentals
    assert _xla_cost(value, params, obs)[1] == critic_forward_cost(config, spec).transcendentals


@pytest.mark.parametrize("config", CONFIGS[:2], ids=lambda c: c.env_name)
def test_forward_flops_are_two_per_weight_of_the_dense_kernels(config):
    """Exact: 2 FLOPs per multiply-add, one multiply-add per kernel weight
    and sample, summed over the kernels of each network's own layers."""
    spec, net, params, obs = _setup(config)
    kernels = lambda *parts: sum(2 * int(np.prod(leaf.shape)) for path, leaf in
                                 jax.tree_util.tree_leaves_with_path(params)
                                 if path[-1].key == "kernel" and path[1].key in parts)
    assert actor_forward_cost(config, spec).flops == kernels("actor_torso", "policy_head")
    assert critic_forward_cost(config, spec).flops == kernels("critic_torso", "value_head")


def test_backward_adds_no_transcendentals():
    """The update counts its passes' transcendentals once per epoch and
    network (the backward reuses tanh's output), as XLA's count of a
    forward and backward pass shows."""
    config = CONFIGS[0]
    spec, net, params, obs = _setup(config)
    value = lambda p, o: jnp.sum(net.apply(p, o, method=net.value))
    assert _xla_cost(jax.value_and_grad(value), params, obs)[1] == _xla_cost(value, params, obs)[1]
    a, c = actor_forward_cost(config, spec), critic_forward_cost(config, spec)
    cost = cost_per_env_step(config, spec)
    epochs = config.update_epochs
    assert cost["transcendentals"] == a.transcendentals + 2 * c.transcendentals + epochs * (
        a.transcendentals + c.transcendentals)


def test_recurrent_step_counts_match_xla():
    """One acting step of the shared-core GRU network: torso, GRU (two
    sigmoids and a tanh per unit) and the policy head."""
    config = PPOConfig(recurrent="gru", recurrent_size=96)
    _, _, spec = make_env(config.env_name)
    net = make_network(spec, config.hidden_sizes, config.activation, recurrent="gru", recurrent_size=96)
    hidden = net.initial_hidden(B)
    obs = jnp.ones((B, *spec.obs_shape))
    params = net.init(jax.random.PRNGKey(0), obs[:, None], jnp.zeros((B, 1), bool), hidden)
    flops, transcendentals = _xla_cost(
        lambda p, o, h: net.apply(p, o, h, method=net.step)[1].log_probs, params, obs, hidden)
    ours = actor_forward_cost(config, spec)
    assert ours.flops <= flops <= 1.03 * ours.flops, (flops, ours)
    assert transcendentals == ours.transcendentals
