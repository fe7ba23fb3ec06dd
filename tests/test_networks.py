"""Distributions against closed forms; network heads and initialisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.distributions import Categorical, DiagGaussian
from purejaxppo.fast.random_draws import (
    ODD_DRAW_MAX,
    action_noise,
    odd_draw_length,
    open_unit_interval,
    random_words,
)
from purejaxppo.envs import make_env
from purejaxppo.networks import make_network


def test_categorical_matches_numpy():
    logits = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], np.float32)
    d = Categorical(jnp.asarray(logits))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(d.log_prob(jnp.array([2, 1])), np.log([p[0, 2], p[1, 1]]), rtol=1e-6)
    np.testing.assert_allclose(d.entropy(), -(p * np.log(p)).sum(-1), rtol=1e-6)
    q = Categorical(jnp.zeros_like(d.logits))
    np.testing.assert_allclose(d.kl(q), (p * (np.log(p) - np.log(1 / 3))).sum(-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(d.mode(), [2, 0])


def test_gaussian_matches_numpy():
    mean = np.array([[0.5, -1.0]], np.float32)
    log_std = np.array([[0.1, -0.3]], np.float32)
    a = np.array([[0.0, 0.2]], np.float32)
    d = DiagGaussian(jnp.asarray(mean), jnp.asarray(log_std))
    std = np.exp(log_std)
    ref = (-0.5 * ((a - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(d.log_prob(jnp.asarray(a)), ref, rtol=1e-6)
    np.testing.assert_allclose(d.entropy(), (0.5 * np.log(2 * np.pi * np.e) + log_std).sum(-1), rtol=1e-6)
    o = DiagGaussian(jnp.zeros_like(d.mean), jnp.zeros_like(d.log_std))
    kl = (np.log(1 / std) + (std**2 + mean**2) / 2 - 0.5).sum(-1)
    np.testing.assert_allclose(d.kl(o), kl, rtol=1e-5)
    samples = DiagGaussian(jnp.full((50_000, 2), 1.0), jnp.full((50_000, 2), math.log(2.0))).sample(jax.random.PRNGKey(0))
    np.testing.assert_allclose(samples.mean(0), [1.0, 1.0], atol=0.05)
    np.testing.assert_allclose(samples.std(0), [2.0, 2.0], atol=0.05)


def test_open_unit_interval_is_exact_and_never_hits_the_ends():
    bits = jnp.array([0, 2**9 - 1, 2**31, 2**32 - 1], jnp.uint32)
    u = np.asarray(open_unit_interval(bits), np.float64)
    np.testing.assert_array_equal(u, [2.0**-24, 2.0**-24, 0.5 + 2.0**-24, 1 - 2.0**-24])


@pytest.mark.parametrize("discrete, cdf", [(True, "gumbel_r"), (False, "norm")])
def test_action_noise_from_bits_has_the_right_distribution(discrete, cdf):
    from scipy import stats

    bits = jax.random.bits(jax.random.PRNGKey(0), (200_000,), jnp.uint32)
    noise = np.asarray(action_noise(bits, discrete), np.float64)
    assert np.all(np.isfinite(noise))
    # Kolmogorov-Smirnov against the exact law; a shifted law (mean + 0.02) must fail.
    assert stats.kstest(noise, cdf).pvalue > 1e-3
    assert stats.kstest(noise + 0.02, cdf).pvalue < 1e-6


def test_actions_from_noise_follow_the_policy():
    """Gumbel-max on the rollout's noise samples softmax(logits) (a sign
    slip, argmax(logits - g), does not), and the Gaussian's actions have its
    mean and std: frequencies and moments of 200,000 draws."""
    bits = jax.random.bits(jax.random.PRNGKey(1), (200_000, 3), jnp.uint32)
    logits = jnp.array([0.0, 1.0, 2.0])
    actions = np.asarray(Categorical(logits).sample_from_noise(action_noise(bits, True)))
    freq = np.bincount(actions, minlength=3) / len(actions)
    np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(logits)), atol=0.005)
    mean, log_std = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.0, -1.0, 0.7])
    samples = np.asarray(DiagGaussian(mean, log_std).sample_from_noise(action_noise(bits, False)))
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(samples.std(0), np.exp(log_std), rtol=0.01)


@pytest.mark.parametrize("env_name,discrete", [("CartPole-v1", True), ("Pendulum-v1", False), ("Breakout-MinAtar", True)])
def test_head_follows_action_space(env_name, discrete):
    _, _, spec = make_env(env_name)
    net = make_network(spec, (64, 64), "tanh")
    obs = jnp.zeros((5, *spec.obs_shape))
    params = net.init(jax.random.PRNGKey(0), obs)
    dist, value = net.apply(params, obs)
    assert value.shape == (5,)
    if discrete:
        assert isinstance(dist, Categorical) and dist.logits.shape == (5, spec.action_dim)
    else:
        assert isinstance(dist, DiagGaussian) and dist.mean.shape == (5, spec.action_dim)
        np.testing.assert_array_equal(params["params"]["log_std"], 0.0)


def test_orthogonal_init_gains_and_separate_networks():
    _, _, spec = make_env("CartPole-v1")
    params = make_network(spec, (64, 64), "tanh").init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
    assert set(params) == {"actor_torso", "critic_torso", "policy_head", "value_head"}
    w = np.asarray(params["actor_torso"]["Dense_1"]["kernel"])  # 64 x 64: orthogonal * sqrt(2)
    np.testing.assert_allclose(w.T @ w, 2.0 * np.eye(64), atol=1e-4)
    head = np.asarray(params["policy_head"]["kernel"])  # 64 x 2: orthonormal columns * 0.01
    np.testing.assert_allclose(head.T @ head, 1e-4 * np.eye(2), atol=1e-8)
    v = np.asarray(params["value_head"]["kernel"])
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-5)
    for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if "bias" in jax.tree_util.keystr(leaf_path):
            np.testing.assert_array_equal(leaf, 0.0)


def test_cnn_torso_for_image_observations():
    _, _, spec = make_env("Breakout-MinAtar")  # (10, 10, 4)
    net = make_network(spec, (64,), "relu", torso="auto", cnn_channels=(16,))
    obs = jnp.zeros((2, 7, *spec.obs_shape))  # extra batch axes pass through
    params = net.init(jax.random.PRNGKey(0), obs)
    conv = params["params"]["actor_torso"]["Conv3x3_0"]["kernel"]
    assert conv.shape == (3, 3, 4, 16)
    dense = params["params"]["actor_torso"]["MLP_0"]["Dense_0"]["kernel"]
    assert dense.shape == (8 * 8 * 16, 64)  # VALID 3x3 conv: 10x10 -> 8x8
    dist, value = net.apply(params, obs)
    assert dist.logits.shape == (2, 7, spec.action_dim) and value.shape == (2, 7)
    mlp = make_network(spec, (64,), "relu", torso="mlp").init(jax.random.PRNGKey(0), obs)
    assert mlp["params"]["actor_torso"]["Dense_0"]["kernel"].shape == (400, 64)


def test_cnn_torso_rejects_flat_observations():
    from purejaxppo import PPOConfig, make_train

    with pytest.raises(ValueError, match=r"torso='cnn' needs \(H, W, C\) image observations, got obs_shape=\(4,\)"):
        make_train(PPOConfig(torso="cnn"))
    with pytest.raises(ValueError, match="torso='conv' is unknown"):
        PPOConfig(torso="conv")


def test_cnn_deeper_than_the_image_is_rejected():
    """Each 3x3 VALID convolution takes 2 pixels off a side: on MinAtar's
    10 x 10, 4 layers leave 2 x 2 and 5 would leave none (a torso whose output
    ignores the observation), so 5 fails before anything is traced."""
    from purejaxppo import PPOConfig, make_train

    _, _, spec = make_env("Breakout-MinAtar")
    net = make_network(spec, (8,), "relu", cnn_channels=(2,) * 4)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, *spec.obs_shape)))
    assert params["params"]["actor_torso"]["MLP_0"]["Dense_0"]["kernel"].shape == (2 * 2 * 2, 8)
    with pytest.raises(ValueError, match=r"cnn_channels=\(4, 4, 4, 4, 4\) has 5 3x3 VALID convolutions, "
                                         r"which leave no pixel of the 10x10 observation; allowed: at most 4 layers"):
        make_train(PPOConfig(env_name="Breakout-MinAtar", cnn_channels=(4,) * 5))


@pytest.mark.parametrize("transposed_grad", [False, True])
def test_im2col_convolution_equals_lax_conv(transposed_grad):
    from purejaxppo.fast.im2col import conv_valid

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 10, 9, 4))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 5))
    ref = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(conv_valid(x, k, transposed_grad), ref, rtol=1e-5, atol=1e-5)
    g = jax.grad(lambda k: jnp.sum(jnp.sin(conv_valid(x, k, transposed_grad))))(k)
    g_ref = jax.grad(lambda k: jnp.sum(jnp.sin(jax.lax.conv_general_dilated(
        x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))))(k)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("env_name", ["CartPole-v1", "Pendulum-v1", "Breakout-MinAtar"])
def test_one_draw_init_matches_flax_init_in_distribution(env_name):
    """`init_params` gives the tree of `network.init`, with the same law per leaf:
    the Gram matrix of each kernel (gain^2 * I on its smaller side) and zeros."""
    from purejaxppo.fast.orthogonal_init import init_params

    _, _, spec = make_env(env_name)
    net = make_network(spec, (64, 64), "tanh")
    obs = jnp.zeros((1, *spec.obs_shape))
    ours = init_params(net, jax.random.PRNGKey(3), obs)
    flax_init = net.init(jax.random.PRNGKey(3), obs)
    assert jax.tree.structure(ours) == jax.tree.structure(flax_init)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(ours)[0], jax.tree.leaves(flax_init)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, jax.tree_util.keystr(path)
        if a.ndim < 2:
            np.testing.assert_array_equal(a, 0.0)
            continue
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        gram = lambda w: w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram(a), gram(b), atol=1e-5, err_msg=jax.tree_util.keystr(path))
        assert not np.allclose(a, b)  # its own random stream


def test_one_draw_init_is_haar_distributed():
    """An entry x of a Haar-random orthogonal n x n matrix is symmetric, with
    x^2 ~ Beta(1/2, (n-1)/2). 600 seeds under vmap also exercise the batched
    path that deadlocked with LAPACK's QR."""
    from scipy import stats

    from purejaxppo.fast.orthogonal_init import init_params

    _, _, spec = make_env("CartPole-v1")
    net = make_network(spec, (64, 64), "tanh")
    keys = jax.random.split(jax.random.PRNGKey(0), 600)
    params = jax.jit(jax.vmap(lambda k: init_params(net, k, jnp.zeros((1, 4)))))(keys)["params"]
    # Every kernel here is orthogonalised in one batch, padded to 64 columns;
    # the narrow ones (the 4 x 64 first layers, the heads) keep their own law:
    # each entry is one of a Haar-random unit vector in R^64.
    kernels = [
        (params["actor_torso"]["Dense_1"]["kernel"], math.sqrt(2.0)),
        (params["critic_torso"]["Dense_0"]["kernel"], math.sqrt(2.0)),
        (params["policy_head"]["kernel"], 0.01),
        (params["value_head"]["kernel"], 1.0),
    ]
    for kernel, gain in kernels:
        x = np.asarray(kernel[:, 0, -1], np.float64) / gain
        assert stats.kstest(x**2, stats.beta(0.5, 63 / 2).cdf).pvalue > 1e-3
        assert stats.binomtest(int(np.sum(x > 0)), len(x)).pvalue > 1e-3
    # Layers orthogonalised together must stay independent.
    a = np.asarray(params["actor_torso"]["Dense_1"]["kernel"][:, 0, 0])
    c = np.asarray(params["critic_torso"]["Dense_1"]["kernel"][:, 0, 0])
    assert abs(stats.pearsonr(a, c).statistic) < 0.15


def test_one_draw_init_names_a_parameter_it_cannot_initialise():
    import flax.linen as nn

    from purejaxppo.fast.orthogonal_init import init_params

    class Scaled(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x) * self.param("scale", nn.initializers.ones, ())

    with pytest.raises(ValueError, match="no initialiser for parameter params/scale; allowed leaf names"):
        init_params(Scaled(), jax.random.PRNGKey(0), jnp.zeros((1, 3)))


def test_orthonormal_columns_is_the_qr_with_positive_diagonal():
    """Against NumPy's (LAPACK) QR with R's diagonal made positive: the same Q."""
    from purejaxppo.fast.orthogonal_init import orthonormal_columns

    a = np.random.default_rng(0).standard_normal((3, 64, 16)).astype(np.float32)
    q, r = np.linalg.qr(a.astype(np.float64))
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    np.testing.assert_allclose(orthonormal_columns(jnp.asarray(a)), q, atol=1e-5)


@pytest.mark.parametrize("num_actions", [2, 3, 12])  # 12: the jnp reduction path
def test_small_axis_categorical_matches_jax_nn_with_gradients(num_actions):
    """The column-wise log-softmax, entropy, KL and log-prob (and their
    gradients) against `jax.nn.log_softmax` and `take_along_axis`."""
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, num_actions)) * 3.0
    other = jax.random.normal(jax.random.PRNGKey(1), (5, num_actions))
    actions = jnp.arange(5) % num_actions

    def ours(lg):
        d = Categorical(lg)
        return d.log_probs, d.entropy(), d.kl(Categorical(other)), d.log_prob(actions)

    def reference(lg):
        lp, lq = jax.nn.log_softmax(lg), jax.nn.log_softmax(other)
        return (lp, -jnp.sum(jnp.exp(lp) * lp, -1), jnp.sum(jnp.exp(lp) * (lp - lq), -1),
                jnp.take_along_axis(lp, actions[:, None], -1)[:, 0])

    for a, b in zip(ours(logits), reference(logits)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for i in range(4):
        g = jax.grad(lambda lg: jnp.sum(jnp.sin(ours(lg)[i])))(logits)
        g_ref = jax.grad(lambda lg: jnp.sum(jnp.sin(reference(lg)[i])))(logits)
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 3124, 3125, ODD_DRAW_MAX, ODD_DRAW_MAX + 2])
@pytest.mark.parametrize("typed", [False, True])
def test_random_words_are_jax_random_bits(n, typed):
    # Drawn at an odd length and sliced (a faster compile on CPU), they must
    # still be exactly the words of jax.random.bits(key, (n,)).
    key = jax.random.key(7) if typed else jax.random.PRNGKey(7)
    expected = np.asarray(jax.random.bits(key, (n,), jnp.uint32))
    np.testing.assert_array_equal(np.asarray(random_words(key, n)), expected)


def test_odd_draw_length():
    assert [odd_draw_length(n) for n in (1, 2, 511, 512)] == [1, 3, 511, 513]
    assert odd_draw_length(ODD_DRAW_MAX) == ODD_DRAW_MAX + 1
    assert odd_draw_length(ODD_DRAW_MAX + 2) == ODD_DRAW_MAX + 2  # large: the vectorised loop


# --- matmul with the kernel's gradient from an explicit transpose ---------------------------------


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 64), (4, 256), (3, 300)])
def test_transposed_grad_matmul_has_the_dot_value_and_gradients(shape):
    """Value and both reverse-mode gradients of `matmul(..., transposed_grad=True)`
    against NumPy: y = x K, dL/dx = G K^T, dL/dK = X^T G (X, G flattened to rows).
    n = 300 is above TRANSPOSED_GRAD_MAX_WIDTH, where the plain dot is used."""
    from purejaxppo.fast.transposed_matmul import matmul

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), shape), np.float64)
    k = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (shape[-1], 6)), np.float64)
    g = np.asarray(jax.random.normal(jax.random.PRNGKey(2), shape[:-1] + (6,)), np.float64)
    y, vjp = jax.vjp(lambda x, k: matmul(x, k, True), jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32))
    dx, dk = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(y, x @ k, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, g @ k.T, rtol=1e-4, atol=1e-4)
    rows = lambda a: a.reshape(-1, a.shape[-1])
    np.testing.assert_allclose(dk, rows(x).T @ rows(g), rtol=1e-4, atol=1e-4)
    assert dk.shape == k.shape and dx.shape == x.shape


def test_transposed_grad_matmul_under_vmap_and_jit_matches_the_plain_dot():
    from purejaxppo.fast.transposed_matmul import matmul

    x = jax.random.normal(jax.random.PRNGKey(0), (5, 16, 8))  # 5 seeds of (16, 8)
    k = jax.random.normal(jax.random.PRNGKey(1), (5, 8, 3))
    loss = lambda t: lambda x, k: jnp.sum(jnp.tanh(matmul(x, k, t)) ** 2)
    grads = jax.jit(jax.vmap(jax.grad(loss(True), argnums=(0, 1))))(x, k)
    plain = jax.vmap(jax.grad(loss(False), argnums=(0, 1)))(x, k)
    for a, b in zip(grads, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_dtype", [jnp.bool_, jnp.int32, jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("kernel_dtype", [jnp.float32, jnp.bfloat16])
def test_transposed_grad_matmul_gives_the_plain_dots_cotangent_dtypes(x_dtype, kernel_dtype):
    from purejaxppo.fast.transposed_matmul import matmul

    x = jnp.ones((4, 3), x_dtype)
    k = jnp.ones((3, 2), kernel_dtype)
    g = jnp.ones((4, 2), jnp.result_type(x_dtype, kernel_dtype))
    plain = jax.vjp(lambda x, k: matmul(x, k, False), x, k)[1](g)
    transposed = jax.vjp(lambda x, k: matmul(x, k, True), x, k)[1](g)
    for a, b in zip(transposed, plain):
        assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(transposed[1], np.float32), np.asarray(plain[1], np.float32))


def test_transposed_grad_matmul_is_reverse_mode_only():
    from purejaxppo.fast.transposed_matmul import matmul

    x, k = jnp.ones((4, 3)), jnp.ones((3, 2))
    jax.jvp(lambda x: matmul(x, k, False), (x,), (x,))  # the plain dot: both modes
    with pytest.raises(TypeError):
        jax.jvp(lambda x: matmul(x, k, True), (x,), (x,))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA CPU's dot forms")
def test_transposed_grad_leaves_no_dot_contracting_the_batch_axis_of_its_input():
    """The point of `transposed_grad`: in the compiled gradient, the kernel's
    gradient is a dot contracting the minor axis of both operands. Without it
    XLA keeps X^T G as a dot contracting X's axis 0, the slower form."""
    import re

    from purejaxppo.fast.transposed_matmul import matmul

    x = jax.random.normal(jax.random.PRNGKey(0), (128, 64))
    k = jax.random.normal(jax.random.PRNGKey(1), (64, 32))

    def contracted_lhs_axes(transposed_grad):
        # x is an argument: a closed-over constant would be transposed at compile time.
        grad = jax.grad(lambda k, x: jnp.sum(jnp.tanh(matmul(jnp.tanh(x), k, transposed_grad))))
        hlo = jax.jit(grad).lower(k, x).compile().as_text()
        return re.findall(r"lhs_contracting_dims=\{(\d)\}", hlo)

    from purejaxppo.fast.transposed_matmul import transposed_grad_pays

    if transposed_grad_pays():  # the XLA it was measured on keeps the slower form
        assert "0" in contracted_lhs_axes(False)
    axes = contracted_lhs_axes(True)
    assert axes and "0" not in axes


def test_transposed_grad_changes_no_value_and_no_parameter_of_the_network():
    spec = make_env("Breakout-MinAtar")[2]
    obs = jax.random.uniform(jax.random.PRNGKey(0), (6,) + spec.obs_shape)
    nets = [make_network(spec, (64,), "relu", transposed_grad=t) for t in (False, True)]
    params = nets[0].init(jax.random.PRNGKey(1), obs)
    assert jax.tree.structure(nets[1].init(jax.random.PRNGKey(1), obs)) == jax.tree.structure(params)

    def loss(net):
        def f(p):
            dist, value = net.apply(p, obs)
            return jnp.sum(jax.nn.log_softmax(dist.logits)[:, 0]) + jnp.sum(value**2)
        return f

    for a, b in zip(nets[0].apply(params, obs), nets[1].apply(params, obs)):
        np.testing.assert_array_equal(getattr(a, "logits", a), getattr(b, "logits", b))
    grads = [jax.grad(loss(net))(params) for net in nets]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *grads)


def test_transposed_grad_pays_on_cpu_with_jaxlib_0_10_only(monkeypatch):
    """Measured to pay on jaxlib 0.10.2 only (0.11.2: no gain; older: not measured)."""
    import jaxlib

    from purejaxppo.fast.transposed_matmul import transposed_grad_pays

    for version, cpu in [
        ("0.10.2", True), ("0.10.0", True), ("0.10.2.dev20250101", True),
        ("0.9.0", False), ("0.6.2", False), ("0.11.0rc1", False), ("0.11.2", False), ("1.0.0", False),
    ]:
        monkeypatch.setattr(jaxlib, "__version__", version)
        assert transposed_grad_pays("cpu") is cpu
        assert transposed_grad_pays("gpu") is False
        assert transposed_grad_pays("tpu") is False


def _transposed_matmuls(net, params, obs):
    """How many of ``net``'s matmuls take the transposed backward pass (custom_vjp calls)."""
    jaxpr = jax.make_jaxpr(lambda p: net.apply(p, obs)[1].sum())(params)
    return str(jaxpr).count("custom_vjp_call")


@pytest.mark.parametrize(
    "env_name, hidden, expected",
    [
        ("CartPole-v1", (64, 64), 6),  # 2 torsos x 2 layers + 2 heads
        ("Breakout-MinAtar", (64,), 4),  # 2 convs + 2 heads; the 1,024-wide dense layers stay plain
        ("Breakout-MinAtar", (256, 257), 4),  # 2 convs + the 2 layers of 256 inputs; 1,024 and 257 plain
    ],
)
def test_transposed_grad_reaches_every_layer_up_to_the_width_limit(env_name, hidden, expected):
    spec = make_env(env_name)[2]
    obs = jnp.zeros((3,) + spec.obs_shape)
    plain = make_network(spec, hidden, "relu")
    params = plain.init(jax.random.PRNGKey(0), obs)
    assert _transposed_matmuls(plain, params, obs) == 0
    transposed = make_network(spec, hidden, "relu", transposed_grad=True)
    assert _transposed_matmuls(transposed, params, obs) == expected


def test_make_train_trains_with_the_transposed_grad_where_it_pays_and_exposes_the_plain_network():
    from purejaxppo import PPOConfig, make_train
    from purejaxppo.fast.transposed_matmul import transposed_grad_pays

    config = PPOConfig(num_envs=2, num_steps=8, total_timesteps=16, num_minibatches=1)
    train = make_train(config)
    assert train.network.transposed_grad is False
    # What the update differentiates: the network inside the compiled update.
    state = jax.eval_shape(train.init, jax.random.PRNGKey(0))
    jaxpr = str(jax.make_jaxpr(train.update)(state))
    assert ("custom_vjp_call" in jaxpr) is transposed_grad_pays()
    # The exposed network supports forward mode too.
    obs = jnp.zeros((2, 4))
    params = train.random_params(jax.random.PRNGKey(1))
    jax.jvp(lambda o: train.network.apply(params, o)[1], (obs,), (obs,))


# --- init_params: every kernel from its own part of the one draw ---------------------------------


def _draw_orientation(kernel):
    """A kernel as the (n, m) matrix of orthonormal columns it was made of
    (n >= m; a wide kernel is the transpose of its Q)."""
    w = np.asarray(kernel, np.float64).reshape(-1, np.shape(kernel)[-1])
    return w if w.shape[0] >= w.shape[1] else w.T


def _reference_init_params(net, key, obs):
    """`init_params` as its docstring and comments specify it, written out
    apart: one flat ``jax.random.bits(key, (total,), uint32)`` draw (the
    caller's key itself: the straight key draws the same bits), turned
    standard normal by `normal_from_bits`; the kernels grouped by the row
    count n of their Gaussian draw (n, m), n >= m, the groups in the order of
    their first kernel, each group one block (kernels, n, widest m) after the
    other, each kernel its own (n, widest m) slice; Q from LAPACK's QR in
    float64 with diag(R) > 0, the first m columns (transposed for a wide
    kernel), times the gain of its layer; biases and log-std zero."""
    from purejaxppo.fast.random_draws import normal_from_bits

    abstract = jax.eval_shape(net.init, key, obs)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    names = [[str(getattr(k, "key", k)) for k in path] for path, _ in leaves]
    groups = {}  # n -> kernel indices, in order of first appearance
    for i, ((_, leaf), name) in enumerate(zip(leaves, names)):
        if name[-1] == "kernel":
            rows, cols = math.prod(leaf.shape[:-1]), leaf.shape[-1]
            groups.setdefault(max(rows, cols), []).append(i)
    width = {n: max(min(math.prod(leaves[i][1].shape[:-1]), leaves[i][1].shape[-1]) for i in idx)
             for n, idx in groups.items()}
    total = sum(len(idx) * n * width[n] for n, idx in groups.items())
    gaussian = np.asarray(normal_from_bits(jax.random.bits(key, (total,), jnp.uint32)), np.float64)
    values = [np.zeros(leaf.shape) for _, leaf in leaves]
    offset = 0
    for n, idx in groups.items():
        block = gaussian[offset : offset + len(idx) * n * width[n]].reshape(len(idx), n, width[n])
        offset += block.size
        for a, i in zip(block, idx):
            q, r = np.linalg.qr(a)
            q = q * np.sign(np.diag(r))
            shape = leaves[i][1].shape
            rows, cols = math.prod(shape[:-1]), shape[-1]
            w = q[:, : min(rows, cols)]
            w = w if rows >= cols else w.T
            gain = 0.01 if "policy_head" in names[i] else 1.0 if "value_head" in names[i] else math.sqrt(2.0)
            values[i] = (gain * w).reshape(shape)  # float64
    return jax.tree_util.tree_unflatten(treedef, values)


@pytest.mark.parametrize(
    "env_name, hidden, key_kind",
    [
        ("CartPole-v1", (64, 64), "raw"),  # MLP: one group
        ("Breakout-MinAtar", (64, 64), "raw"),  # CNN: groups of n = 36 (convs), 1024, 64
        ("Breakout-MinAtar", (64,), "typed"),
        ("Breakout-MinAtar", (8,), "rbg"),  # a key `straight` leaves as it is
    ],
)
def test_one_draw_init_is_the_specified_draw(env_name, hidden, key_kind):
    """Every kernel is the orthogonalisation of its own slice of the one
    Gaussian draw (`_reference_init_params`): a group reading another's
    numbers, or two layers sharing one slice, gives other kernels."""
    from purejaxppo.fast.orthogonal_init import init_params

    spec = make_env(env_name)[2]
    net = make_network(spec, hidden, "relu")
    obs = jnp.zeros((1, *spec.obs_shape))
    key = {
        "raw": jax.random.PRNGKey(11),
        "typed": jax.random.key(11),
        "rbg": jax.random.key(11, impl="rbg"),
    }[key_kind]
    ours = init_params(net, key, obs)
    reference = _reference_init_params(net, key, obs)
    assert jax.tree.structure(ours) == jax.tree.structure(reference)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(ours)[0], jax.tree.leaves(reference)):
        assert a.shape == b.shape and a.dtype == jnp.float32, jax.tree_util.keystr(path)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-2)  # the policy head's gain: 0.01
        np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=0, atol=2e-5 * scale,
                                   err_msg=jax.tree_util.keystr(path))


def test_one_draw_init_gives_each_kernel_its_own_random_numbers():
    """Whatever the layout of the one draw: across 1,000 seeds, no entry of
    any kernel's first orthonormal column (its first Gaussian column,
    normalised) is correlated with any entry of another kernel. Kernels
    whose Gaussians shared numbers (one group reading another's, layers
    sharing a slice) would have entries correlated near 1; independent ones
    stay below ~0.17 (5.5 sigma of 1/sqrt(1000) over the 2.6 million pairs).
    The CNN's three groups (n = 36, 256, 8) and two kernels each."""
    from purejaxppo.fast.orthogonal_init import init_params

    spec = make_env("Breakout-MinAtar")[2]
    net = make_network(spec, (8,), "relu", cnn_channels=(4,))
    obs = jnp.zeros((1, *spec.obs_shape))
    seeds = 1000
    params = jax.jit(jax.vmap(lambda k: init_params(net, k, obs)))(jax.random.split(jax.random.PRNGKey(0), seeds))
    kernels = [
        (jax.tree_util.keystr(path), np.stack([_draw_orientation(k) for k in np.asarray(leaf)]))
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
        if str(getattr(path[-1], "key", path[-1])) == "kernel"
    ]
    assert sorted(q.shape[1] for _, q in kernels) == [8, 8, 36, 36, 256, 256]

    def standardized(x):  # (seeds, features), each feature to mean 0, norm 1 over the seeds
        x = x - x.mean(0)
        return x / np.linalg.norm(x, axis=0)

    for i, (name_i, q_i) in enumerate(kernels):
        first = standardized(q_i[:, :, 0])
        for j, (name_j, q_j) in enumerate(kernels):
            if i == j:
                continue
            corr = first.T @ standardized(q_j.reshape(seeds, -1))
            assert np.max(np.abs(corr)) < 0.35, (name_i, name_j, float(np.max(np.abs(corr))))
