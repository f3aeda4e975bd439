"""G and D equal an independent jax.numpy/lax reference of the seed's layers.

The reference below is the seed's network written plainly: concatenated one-hot
inputs, `lax.conv_transpose` / `lax.conv_general_dilated` convolutions, BatchNorm
by its formula. It shares nothing with gan.layers but the parameters. Tolerance:
float32 with different summation orders over up to ~7k terms: atol=rtol=1e-4.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gan import models
from gan.config import Config
from gan.training import create_train_states

TOL = dict(atol=1e-4, rtol=1e-4)
DN = ("NHWC", "HWIO", "NHWC")
B = 6


def ref_lrelu(x):
    a = 0.2  # the seed's tf.maximum(0.2 * x, x); not models.LEAK, which this checks
    return 0.5 * (1 + a) * x + 0.5 * (1 - a) * jnp.abs(x)


def ref_bn(x, p, s, train, momentum=0.99, eps=1e-3):
    """Returns (y, new_stats): batch statistics in train mode, running in eval."""
    if train:
        mean = x.mean(axis=(0, 1, 2))
        var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
        new = {"mean": momentum * s["mean"] + (1 - momentum) * mean,
               "var": momentum * s["var"] + (1 - momentum) * var}
    else:
        mean, var, new = s["mean"], s["var"], s
    return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"], new


def ref_generator(params, stats, z, labels, train):
    x = jnp.concatenate([z, jax.nn.one_hot(labels, 10)], -1)[:, None, None, :]
    x = lax.conv_transpose(x, params["deconv1"]["kernel"], (1, 1), "VALID",
                           dimension_numbers=DN) + params["deconv1"]["bias"]
    x, s1 = ref_bn(x, params["bn1"], stats["bn1"], train)
    x = lax.conv_transpose(ref_lrelu(x), params["deconv2"]["kernel"], (2, 2), "SAME",
                           dimension_numbers=DN) + params["deconv2"]["bias"]
    x, s2 = ref_bn(x, params["bn2"], stats["bn2"], train)
    x = lax.conv_transpose(ref_lrelu(x), params["deconv3"]["kernel"], (2, 2), "SAME",
                           dimension_numbers=DN) + params["deconv3"]["bias"]
    return jnp.tanh(x), {"bn1": s1, "bn2": s2}


def ref_discriminator(params, stats, images, labels, train):
    maps = jnp.broadcast_to(jax.nn.one_hot(labels, 10)[:, None, None, :],
                            images.shape[:3] + (10,))
    x = jnp.concatenate([images, maps], -1)                      # [B, 28, 28, 11]
    conv = lambda x, p, s, pad: lax.conv_general_dilated(
        x, p["kernel"], (s, s), pad, dimension_numbers=DN) + p["bias"]
    x = ref_lrelu(conv(x, params["conv1"], 2, "SAME"))
    x, s2 = ref_bn(conv(x, params["conv2"], 2, "SAME"), params["bn2"], stats["bn2"],
                   train)
    x = conv(ref_lrelu(x), params["conv3"], 1, "VALID")          # [B, 1, 1, 1]
    return x.reshape(-1), {"bn2": s2}


@pytest.fixture(scope="module")
def states():
    g, d = create_train_states(Config(), jax.random.key(0))
    # Non-trivial BN parameters and running statistics, so both modes are tested.
    perturb = lambda t, k: jax.tree.map(
        lambda a: a + 0.1 * jax.random.normal(k, a.shape), t)
    g = g.replace(batch_stats=perturb(g.batch_stats, jax.random.key(1)),
                  params=perturb(g.params, jax.random.key(2)))
    d = d.replace(batch_stats=jax.tree.map(jnp.abs, perturb(d.batch_stats,
                                                            jax.random.key(3))),
                  params=perturb(d.params, jax.random.key(4)))
    return g, d


def _count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def test_parameter_counts_equal_the_seed():
    g, d = create_train_states(Config(), jax.random.key(0))
    assert _count(g.params) == 2_203_393
    assert _count(d.params) == 867_841


def test_kernels_have_the_plain_flax_layouts():
    g, d = create_train_states(Config(), jax.random.key(0))
    assert g.params["deconv1"]["kernel"].shape == (7, 7, 110, 256)
    assert g.params["deconv2"]["kernel"].shape == (5, 5, 256, 128)
    assert g.params["deconv3"]["kernel"].shape == (5, 5, 128, 1)
    assert d.params["conv1"]["kernel"].shape == (5, 5, 11, 128)
    assert d.params["conv2"]["kernel"].shape == (5, 5, 128, 256)
    assert d.params["conv3"]["kernel"].shape == (7, 7, 256, 1)


def test_initialisation_is_truncated_normal_002_with_zero_biases():
    g, _ = create_train_states(Config(), jax.random.key(0))
    k = np.asarray(g.params["deconv2"]["kernel"])
    assert abs(k.std() - 0.02 * 0.88) < 0.002      # std of N(0, .02) cut at 2 sigma
    assert np.abs(k).max() <= 0.04 + 1e-6
    assert not np.any(g.params["deconv2"]["bias"])


@pytest.mark.parametrize("train", [True, False])
def test_generator_equals_reference(states, train):
    g, _ = states
    z = jax.random.normal(jax.random.key(5), (B, models.NOISE_DIM))
    labels = jnp.arange(B) % 10
    variables = {"params": g.params, "batch_stats": g.batch_stats}
    out, upd = jax.jit(lambda v: models.Generator().apply(
        v, z, labels, train=train, mutable=["batch_stats"]))(variables)
    ref, ref_stats = jax.jit(ref_generator, static_argnums=4)(
        g.params, g.batch_stats, z, labels, train)
    assert out.shape == (B, 28, 28, 1)
    np.testing.assert_allclose(out, ref, **TOL)
    for a, b in zip(jax.tree.leaves(upd["batch_stats"]), jax.tree.leaves(ref_stats)):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("train", [True, False])
def test_discriminator_equals_reference(states, train):
    _, d = states
    images = jnp.tanh(jax.random.normal(jax.random.key(6), (B, 28, 28, 1)))
    labels = jnp.array([9, 0, 4, 4, 1, 7])
    variables = {"params": d.params, "batch_stats": d.batch_stats}
    out, upd = jax.jit(lambda v: models.Discriminator().apply(
        v, images, labels, train=train, mutable=["batch_stats"]))(variables)
    ref, ref_stats = jax.jit(ref_discriminator, static_argnums=4)(
        d.params, d.batch_stats, images, labels, train)
    assert out.shape == (B,)
    np.testing.assert_allclose(out, ref, **TOL)
    for a, b in zip(jax.tree.leaves(upd["batch_stats"]), jax.tree.leaves(ref_stats)):
        np.testing.assert_allclose(a, b, **TOL)


def test_generator_weights_load_into_plain_flax_layers(states):
    """The stored kernel means what it would in nn.ConvTranspose."""
    g, _ = states
    x = jax.random.normal(jax.random.key(7), (2, 7, 7, 256))
    p = g.params["deconv2"]
    plain = nn.ConvTranspose(128, (5, 5), strides=(2, 2), padding="SAME").apply(
        {"params": p}, x)
    from gan.layers import conv_transpose_subpixel
    np.testing.assert_allclose(conv_transpose_subpixel(x, p["kernel"]) + p["bias"],
                               plain, **TOL)


def test_bfloat16_convolutions_stay_close_to_the_reference(states):
    """`compute_dtype="bfloat16"`: every convolution and matmul runs in bf16
    (seen in the traced program) while BatchNorm, the activations and the
    outputs are float32, and G's and D's outputs stay within bf16 rounding of the
    float32 reference with the same parameters. Tolerance, relative to the
    output's norm: bf16 keeps 8 mantissa bits (rounding up to 2e-3 of a value),
    each layer rounds its inputs and weights and BatchNorm rescales the errors:
    3e-2 (measured 6e-3 for G, 1e-2 for D); float32 agrees to 1e-4 (above), and a model that
    ignored the flag would fail the dtype checks."""
    g, d = states
    z = jax.random.normal(jax.random.key(5), (B, models.NOISE_DIM))
    labels = jnp.arange(B) % 10
    g_vars = {"params": g.params, "batch_stats": g.batch_stats}
    gen = models.Generator("bfloat16")
    fake, _ = jax.jit(lambda v: gen.apply(v, z, labels, mutable=["batch_stats"]))(g_vars)
    ref, _ = jax.jit(ref_generator, static_argnums=4)(g.params, g.batch_stats, z,
                                                      labels, True)
    assert fake.dtype == jnp.float32
    assert _relative_error(fake, ref) < 3e-2

    images = jnp.tanh(jax.random.normal(jax.random.key(6), (B, 28, 28, 1)))
    d_vars = {"params": d.params, "batch_stats": d.batch_stats}
    disc = models.Discriminator("bfloat16")
    logits, _ = jax.jit(lambda v: disc.apply(v, images, labels,
                                             mutable=["batch_stats"]))(d_vars)
    ref, _ = jax.jit(ref_discriminator, static_argnums=4)(d.params, d.batch_stats,
                                                          images, labels, True)
    assert logits.dtype == jnp.float32
    assert _relative_error(logits, ref) < 3e-2

    for module, inputs in ((gen, (g_vars, z, labels)), (disc, (d_vars, images, labels))):
        jaxpr = jax.make_jaxpr(lambda v, *x: module.apply(
            v, *x, mutable=["batch_stats"]))(*inputs)
        products = [e for e in _equations(jaxpr.jaxpr)
                    if e.primitive.name in ("conv_general_dilated", "dot_general")]
        assert products and all(v.aval.dtype == jnp.bfloat16
                                for e in products for v in e.invars)
        # BatchNorm (rsqrt), leaky ReLU (max) and G's tanh see float32 only.
        rest = [e for e in _equations(jaxpr.jaxpr)
                if e.primitive.name in ("rsqrt", "max", "tanh")]
        assert rest and all(v.aval.dtype == jnp.float32 for e in rest for v in e.invars)


def _relative_error(x, ref):
    return float(jnp.linalg.norm(x - ref) / jnp.linalg.norm(ref))


def _equations(jaxpr):
    """Every equation of a jaxpr, nested ones (jit, custom rules) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                yield from _equations(inner)


# --- the fast network against the plain one (gan.models.Plain*) -------------


def _plain_and_fast_g(g, train):
    """(plain, fast) functions of the variables: image sum-of-squares-weighted
    scalar for gradients, the images, and the new statistics."""
    z = jax.random.normal(jax.random.key(8), (B, models.NOISE_DIM))
    labels = jnp.arange(B) % 10
    w = jax.random.normal(jax.random.key(9), (B, 28, 28, 1))

    def run(module):
        def f(params):
            out, upd = module.apply({"params": params, "batch_stats": g.batch_stats},
                                    z, labels, train=train, mutable=["batch_stats"])
            return jnp.sum(w * out), (out, upd["batch_stats"])
        return jax.jit(jax.value_and_grad(f, has_aux=True))(g.params)
    return run(models.PlainGenerator()), run(models.Generator())


def _assert_grads_close(a, b):
    """Per parameter (and input), in the L2 norm: |a - b| <= 1e-2 |a| + 1e-4.

    Not element by element: the fast layers sum in other orders, so a
    pre-activation within rounding of 0 can fall on the other side of the leaky
    ReLU's kink, and one such element moves a bias gradient (a sum over the
    batch) by 0.8x its upstream gradient (seen: 0.11 of 5.3 in one channel). The
    1e-4 floor covers the conv biases in front of train-mode BatchNorm, whose
    gradient is 0 in exact arithmetic (rounding leaves ~1e-6). Measured: at most
    ~1e-3 relative. A bug that drops gradients, as `jnp.maximum` did, gives
    0.2 to 0.7."""
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        err, norm = float(jnp.linalg.norm(x - y)), float(jnp.linalg.norm(x))
        assert err <= 1e-2 * norm + 1e-4, (jax.tree_util.keystr(path), err, norm)


@pytest.mark.parametrize("train", [True, False])
def test_fast_generator_equals_the_plain_flax_generator(states, train):
    """Same parameters: images, new BatchNorm statistics and the gradients of
    every parameter agree (atol=rtol=1e-4 as above; gradients see
    `_assert_grads_close`)."""
    g, _ = states
    ((_, (out_p, stats_p)), grad_p), ((_, (out_f, stats_f)), grad_f) = \
        _plain_and_fast_g(g, train)
    np.testing.assert_allclose(out_f, out_p, **TOL)
    for a, b in zip(jax.tree.leaves(stats_f), jax.tree.leaves(stats_p)):
        np.testing.assert_allclose(a, b, **TOL)
    _assert_grads_close(grad_p, grad_f)


@pytest.mark.parametrize("train", [True, False])
def test_fast_discriminator_equals_the_plain_flax_discriminator(states, train):
    """D on real then fake as two plain calls, and as one fast call with
    `groups=2`: logits, statistics (updated twice, real first) and gradients
    of the parameters and of the images agree."""
    _, d = states
    real = jnp.tanh(jax.random.normal(jax.random.key(10), (B, 28, 28, 1)))
    fake = jnp.tanh(jax.random.normal(jax.random.key(11), (B, 28, 28, 1)))
    labels = jnp.array([9, 0, 4, 4, 1, 7])

    def plain(params, real, fake):
        stats, outs = d.batch_stats, []
        for x in (real, fake):
            out, upd = models.PlainDiscriminator().apply(
                {"params": params, "batch_stats": stats}, x, labels, train=train,
                mutable=["batch_stats"])
            stats, outs = upd["batch_stats"], outs + [out]
        logits = jnp.concatenate(outs)
        return jnp.sum(jnp.sin(logits)), (logits, stats)

    def fast(params, real, fake):
        logits, upd = models.Discriminator().apply(
            {"params": params, "batch_stats": d.batch_stats},
            jnp.concatenate([real, fake]), jnp.concatenate([labels, labels]),
            train=train, groups=2, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(logits)), (logits, upd["batch_stats"])

    grads = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(
        d.params, real, fake)
    (_, (logits_p, stats_p)), grad_p = grads(plain)
    (_, (logits_f, stats_f)), grad_f = grads(fast)
    np.testing.assert_allclose(logits_f, logits_p, **TOL)
    for a, b in zip(jax.tree.leaves(stats_f), jax.tree.leaves(stats_p)):
        np.testing.assert_allclose(a, b, **TOL)
    _assert_grads_close(grad_p, grad_f)


def test_fast_networks_equal_the_plain_ones_for_another_class_count():
    """A dataset's class count C replaces the seed's 10 in both label inputs:
    for C = 26 the fast G and D agree with the plain Flax ones in outputs and
    gradients (tolerances as above), and their first layers take 100 + C and
    1 + C inputs."""
    c = 26
    g, d = create_train_states(Config(), jax.random.key(5), c)
    assert g.params["deconv1"]["kernel"].shape[2] == models.NOISE_DIM + c
    assert d.params["conv1"]["kernel"].shape[2] == 1 + c
    assert models.generator_classes(g.params) == c
    assert models.discriminator_classes(d.params) == c
    z = jax.random.normal(jax.random.key(6), (B, models.NOISE_DIM))
    labels = jnp.array([25, 0, 13, 13, 1, 7])
    images = jnp.tanh(jax.random.normal(jax.random.key(7), (B, 28, 28, 1)))

    def run(module, state, inputs):
        def f(params):
            out, _ = module.apply({"params": params, "batch_stats": state.batch_stats},
                                  *inputs, train=True, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(out)), out
        return jax.jit(jax.value_and_grad(f, has_aux=True))(state.params)

    for plain, fast, state, inputs in (
            (models.PlainGenerator(num_classes=c), models.Generator(num_classes=c),
             g, (z, labels)),
            (models.PlainDiscriminator(num_classes=c),
             models.Discriminator(num_classes=c), d, (images, labels))):
        (_, out_p), grad_p = run(plain, state, inputs)
        (_, out_f), grad_f = run(fast, state, inputs)
        np.testing.assert_allclose(out_f, out_p, **TOL)
        _assert_grads_close(grad_p, grad_f)
