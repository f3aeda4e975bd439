"""Each fast layer of gan.layers equals the plain Flax/lax layer it replaces.

Outputs and gradients (to inputs and to the kernel) are compared in float32. The
fast forms sum the same products in a different order, so they agree to rounding:
relative error ~1e-6 per sum of a few thousand terms; we allow atol=rtol=1e-4
(with unit-scale inputs and 0.1-scale weights), which any wrong tap, flip,
padding or phase order exceeds by orders of magnitude.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan import layers

TOL = dict(atol=1e-4, rtol=1e-4)


def _inputs(key, x_shape, k_shape):
    kx, kk, kc = jax.random.split(key, 3)
    x = jax.random.normal(kx, x_shape)
    kernel = 0.1 * jax.random.normal(kk, k_shape)
    return x, kernel, kc


def _forward_and_vjp(f, *args, cot_key):
    """f(*args) and its VJP to every argument for a random cotangent, jitted
    (op-by-op execution would compile each small op separately)."""
    out_shape = jax.eval_shape(f, *args)
    cot = jax.tree.map(lambda s: jax.random.normal(cot_key, s.shape), out_shape)

    @jax.jit
    def go(args, cot):
        y, vjp = jax.vjp(f, *args)
        return y, vjp(cot)

    return go(args, cot)


def _check_same(fast, plain, x, kernel, cot_key):
    """Forward outputs and the VJP to (x, kernel) of a random cotangent agree."""
    y_fast, g_fast = _forward_and_vjp(fast, x, kernel, cot_key=cot_key)
    y_plain, g_plain = _forward_and_vjp(plain, x, kernel, cot_key=cot_key)
    np.testing.assert_allclose(y_fast, y_plain, **TOL)
    for a, b in zip(g_fast, g_plain):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("op", [layers.conv_transpose_subpixel,
                                layers.conv_transpose_phases])
@pytest.mark.parametrize("k,stride,hw", [(5, 2, 7), (3, 2, 5),
                                         (4, 2, 6), (5, 3, 4)])
def test_fast_transposed_convs_equal_flax_conv_transpose(op, k, stride, hw):
    x, kernel, key = _inputs(jax.random.key(k * 10 + hw), (3, hw, hw, 4), (k, k, 4, 6))
    plain_layer = nn.ConvTranspose(6, (k, k), strides=(stride, stride),
                                   padding="SAME", use_bias=False)
    plain = lambda x, w: plain_layer.apply({"params": {"kernel": w}}, x)
    fast = lambda x, w: op(x, w, stride)
    _check_same(fast, plain, x, kernel, key)


def test_transposed_conv_of_1x1_equals_flax_conv_transpose():
    x, kernel, key = _inputs(jax.random.key(1), (5, 110), (7, 7, 110, 8))
    plain_layer = nn.ConvTranspose(8, (7, 7), padding="VALID", use_bias=False)
    plain = lambda x, w: plain_layer.apply({"params": {"kernel": w}}, x[:, None, None])
    _check_same(layers.conv_transpose_from_1x1, plain, x, kernel, key)


def test_full_valid_conv_equals_flax_conv():
    x, kernel, key = _inputs(jax.random.key(2), (5, 7, 7, 16), (7, 7, 16, 3))
    plain_layer = nn.Conv(3, (7, 7), padding="VALID", use_bias=False)
    plain = lambda x, w: plain_layer.apply({"params": {"kernel": w}}, x)[:, 0, 0]
    _check_same(layers.conv_valid_full, plain, x, kernel, key)


def test_conv_with_onehot_channels_equals_conv_of_concatenated_label_maps():
    x, kernel, key = _inputs(jax.random.key(3), (6, 28, 28, 1), (5, 5, 11, 8))
    labels = jnp.array([0, 9, 3, 3, 7, 1])
    plain_layer = nn.Conv(8, (5, 5), strides=(2, 2), padding="SAME", use_bias=False)

    def plain(x, w):
        maps = jnp.broadcast_to(jax.nn.one_hot(labels, 10)[:, None, None, :],
                                x.shape[:3] + (10,))
        return plain_layer.apply({"params": {"kernel": w}},
                                 jnp.concatenate([x, maps], axis=-1))

    fast = lambda x, w: layers.conv_with_onehot_channels(x, w, labels)
    _check_same(fast, plain, x, kernel, key)


def test_leaky_relu_equals_the_seed_formula():
    """The models use jax.nn.leaky_relu, a select on the sign; its jitted
    gradients inside the train step are checked in tests/test_models.py."""
    x = jnp.linspace(-5.0, 5.0, 1001)
    a = 0.2
    seed = 0.5 * (1 + a) * x + 0.5 * (1 - a) * jnp.abs(x)
    np.testing.assert_allclose(jax.nn.leaky_relu(x, a), seed, atol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda x: jax.nn.leaky_relu(x, a).sum())(x),
                               jnp.where(x > 0, 1.0, a))


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_grouped_batch_norm_equals_consecutive_flax_batch_norm_calls(groups):
    key = jax.random.key(groups)
    x = 3.0 + 2.0 * jax.random.normal(key, (groups * 4, 5, 5, 6))
    scale = 1.0 + 0.1 * jnp.arange(6.0)
    bias = 0.1 * jnp.arange(6.0)
    mean0, var0 = 0.1 * jnp.ones(6), 2.0 * jnp.ones(6)
    bn = nn.BatchNorm(use_running_average=False, momentum=0.99, epsilon=1e-3)

    def plain(x, scale):
        stats = {"mean": mean0, "var": var0}
        ys = []
        for part in jnp.split(x, groups):
            y, upd = bn.apply({"params": {"scale": scale, "bias": bias},
                               "batch_stats": stats}, part, mutable=["batch_stats"])
            stats = upd["batch_stats"]
            ys.append(y)
        return jnp.concatenate(ys), stats

    def fast(x, scale):
        y, mean, var = layers.batch_norm_train(x, scale, bias, mean0, var0,
                                               momentum=0.99, epsilon=1e-3,
                                               groups=groups)
        return y, {"mean": mean, "var": var}

    (y_fast, s_fast), g_fast = _forward_and_vjp(fast, x, scale, cot_key=key)
    (y_plain, s_plain), g_plain = _forward_and_vjp(plain, x, scale, cot_key=key)
    np.testing.assert_allclose(y_fast, y_plain, **TOL)
    for name in ("mean", "var"):
        np.testing.assert_allclose(s_fast[name], s_plain[name], **TOL)
    for a, b in zip(g_fast, g_plain):
        np.testing.assert_allclose(a, b, **TOL)


def test_eval_batch_norm_equals_flax_running_average():
    x = jax.random.normal(jax.random.key(5), (4, 3, 3, 6))
    scale, bias = 1.5 * jnp.ones(6), 0.5 * jnp.ones(6)
    mean, var = 0.3 * jnp.ones(6), 4.0 * jnp.ones(6)
    bn = nn.BatchNorm(use_running_average=True, epsilon=1e-3)
    plain = bn.apply({"params": {"scale": scale, "bias": bias},
                      "batch_stats": {"mean": mean, "var": var}}, x)
    np.testing.assert_allclose(
        layers.batch_norm_eval(x, scale, bias, mean, var, epsilon=1e-3), plain, **TOL)


@pytest.mark.parametrize("batch", [7, 25, 60])
def test_batch_chunked_convs_equal_whole_batch_convs(batch):
    """Chunking the batch (to stay in cache) changes nothing but summation order."""
    x, kernel, key = _inputs(jax.random.key(batch), (batch, 14, 14, 4), (5, 5, 4, 6))
    plain_layer = nn.Conv(6, (5, 5), strides=(2, 2), padding="SAME", use_bias=False)
    plain = lambda x, w: plain_layer.apply({"params": {"kernel": w}}, x)
    conv = lambda x, w: layers.conv_same(x, w, stride=2)
    _check_same(layers.in_batch_chunks(conv, 10), plain, x, kernel, key)
