"""The seed's conditional DCGAN: generator and discriminator (Flax linen modules).

`PlainGenerator` and `PlainDiscriminator` are the seed's network as written,
with Flax's stock layers: read them first. `Generator` and `Discriminator`, which
training and sampling use, compute the same functions with the exact fast forms
of `gan.layers` (XLA:CPU runs the stock transposed convolutions about 5x slower,
README "Speed"). Each fast layer keeps the parameter names and shapes of the
stock layer it stands for (`kernel`/`bias` of `nn.ConvTranspose`/`nn.Conv`,
`scale`/`bias` and `mean`/`var` of `nn.BatchNorm`), so the two pairs share one
parameter tree; `tests/test_models.py` checks that they agree in outputs,
BatchNorm statistics and gradients.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan import layers
from gan.data import NUM_CLASSES

NOISE_DIM = 100
LEAK = 0.2
# TF1's tf.layers.batch_normalization defaults, which the seed used.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
# Examples per convolution call in the two big layers (see layers.in_batch_chunks);
# chosen by measurement on XLA:CPU, harmless elsewhere.
CONV_CHUNK = 25

Initializer = Callable[..., jax.Array]
kernel_init: Initializer = nn.initializers.truncated_normal(stddev=0.02)
bias_init: Initializer = nn.initializers.zeros


# ---------------------------------------------------------------------------
# The seed's network, with Flax's stock layers
# ---------------------------------------------------------------------------


def label_input(labels: jax.Array, dtype: Any, num_classes: int = NUM_CLASSES
                ) -> jax.Array:
    """G's label input `[B, C]`: the one-hot rows of int labels `[B]`, or label
    vectors `[B, C]` as given (blends of classes, for morphing one into another)."""
    if labels.ndim == 2:
        return labels.astype(dtype)
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def generator_classes(variables: Any) -> int:
    """The class count C of a generator's variables (or params): its first layer
    takes NOISE_DIM + C inputs. A shape, so static under jit."""
    params = variables.get("params", variables)
    return params["deconv1"]["kernel"].shape[2] - NOISE_DIM


def discriminator_classes(params: Any) -> int:
    """The class count C of a discriminator's params: its first layer takes the
    image's channel and C label maps."""
    return params["conv1"]["kernel"].shape[2] - 1


def _plain_bn(name: str, train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                        epsilon=BN_EPSILON, name=name)


class PlainGenerator(nn.Module):
    """G(z, y) as the seed writes it: noise and one-hot label, three transposed
    convolutions, BatchNorm and leaky ReLU between them, tanh at the end.

    `num_classes`: the seed's 10 digits, or a dataset's class count."""
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array, train: bool = True
                 ) -> jax.Array:
        x = jnp.concatenate([z, label_input(labels, z.dtype, self.num_classes)],
                            axis=-1)[:, None, None, :]                 # [B, 1, 1, 110]
        conv_t = functools.partial(nn.ConvTranspose, kernel_init=kernel_init,
                                   bias_init=bias_init)
        x = conv_t(256, (7, 7), padding="VALID", name="deconv1")(x)    # [B, 7, 7, 256]
        x = nn.leaky_relu(_plain_bn("bn1", train)(x), LEAK)
        x = conv_t(128, (5, 5), strides=(2, 2), padding="SAME",
                   name="deconv2")(x)                                  # [B, 14, 14, 128]
        x = nn.leaky_relu(_plain_bn("bn2", train)(x), LEAK)
        x = conv_t(1, (5, 5), strides=(2, 2), padding="SAME",
                   name="deconv3")(x)                                  # [B, 28, 28, 1]
        return jnp.tanh(x)


class PlainDiscriminator(nn.Module):
    """D(x, y) as the seed writes it: the image with a one-hot label map per
    class (the seed's ten) stacked on, three convolutions, BatchNorm after the
    second; a logit `[B]`.

    `num_classes`: as `PlainGenerator`."""
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, images: jax.Array, labels: jax.Array, train: bool = True
                 ) -> jax.Array:
        b, h, w, _ = images.shape
        c = self.num_classes
        maps = jnp.broadcast_to(jax.nn.one_hot(labels, c)[:, None, None, :],
                                (b, h, w, c))
        x = jnp.concatenate([images, maps], axis=-1)                   # [B, 28, 28, 1+C]
        conv = functools.partial(nn.Conv, kernel_init=kernel_init, bias_init=bias_init)
        x = nn.leaky_relu(conv(128, (5, 5), strides=(2, 2), padding="SAME",
                               name="conv1")(x), LEAK)                 # [B, 14, 14, 128]
        x = conv(256, (5, 5), strides=(2, 2), padding="SAME", name="conv2")(x)
        x = nn.leaky_relu(_plain_bn("bn2", train)(x), LEAK)            # [B, 7, 7, 256]
        x = conv(1, (7, 7), padding="VALID", name="conv3")(x)          # [B, 1, 1, 1]
        return x[:, 0, 0, 0]


# ---------------------------------------------------------------------------
# The same network with the fast layers of gan.layers (what runs)
# ---------------------------------------------------------------------------


class BatchNorm(nn.Module):
    """`nn.BatchNorm` (same variables) that can normalise batch slices separately.

    `groups=2` on `concat([a, b])` is the same as calling the layer on `a`, then on
    `b`: the discriminator sees real and fake images in one call that way.
    """
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, groups: int = 1) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if not train:
            return layers.batch_norm_eval(x, scale, bias, mean.value, var.value,
                                          epsilon=self.epsilon)
        y, new_mean, new_var = layers.batch_norm_train(
            x, scale, bias, mean.value, var.value, momentum=self.momentum,
            epsilon=self.epsilon, groups=groups)
        if not self.is_initializing():  # as nn.BatchNorm: init leaves stats alone
            mean.value, var.value = new_mean, new_var
        return y


class Conv(nn.Module):
    """A conv layer with the `kernel` `[k, k, in, out]` and `bias` of `nn.Conv` or
    `nn.ConvTranspose`, computed by `op(x, kernel, *args)`, one of `gan.layers`.

    `dtype` is the compute precision of `op` only: the parameters stay float32
    and the result returns to float32 before the bias, so BatchNorm, the
    activations and the losses stay float32 (mixed precision).
    """
    features: int
    kernel_size: int
    op: Callable[..., jax.Array]
    in_features: int | None = None  # default: x.shape[-1]
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, *args) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", kernel_init,
                            (k, k, self.in_features or x.shape[-1], self.features))
        bias = self.param("bias", bias_init, (self.features,))
        y = self.op(x.astype(self.dtype), kernel.astype(self.dtype), *args)
        return y.astype(jnp.float32) + bias


class Generator(nn.Module):
    """`PlainGenerator` with the fast layers: noise and digit label to a
    `[B, 28, 28, 1]` image in [-1, 1].

    `dtype`: compute precision of the convolutions ("float32" or "bfloat16").
    `num_classes`: as `PlainGenerator`.
    """
    dtype: str = "float32"
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array, train: bool = True
                 ) -> jax.Array:
        x = jnp.concatenate([z, label_input(labels, z.dtype, self.num_classes)],
                            axis=-1)                                   # [B, 110]
        # nn.ConvTranspose(256, (7, 7), padding='VALID') of the [B, 1, 1, 110] input.
        conv = functools.partial(Conv, dtype=self.dtype)
        x = conv(256, 7, layers.conv_transpose_from_1x1, name="deconv1")(x)  # [B, 7, 7, 256]
        x = jax.nn.leaky_relu(BatchNorm(name="bn1")(x, train), LEAK)
        # nn.ConvTranspose(128, (5, 5), strides=(2, 2), padding='SAME').
        x = conv(128, 5, layers.in_batch_chunks(layers.conv_transpose_phases,
                                                CONV_CHUNK), name="deconv2")(x)  # [B, 14, 14, 128]
        x = jax.nn.leaky_relu(BatchNorm(name="bn2")(x, train), LEAK)
        x = conv(1, 5, layers.conv_transpose_subpixel, name="deconv3")(x)   # [B, 28, 28, 1]
        return jnp.tanh(x)


class Discriminator(nn.Module):
    """`PlainDiscriminator` with the fast layers: image and digit label to a
    real/fake logit `[B]`.

    `groups=2` with `concat([real, fake])` runs BatchNorm per half, the same as two
    calls (real first), with bigger matrix products. `dtype`, `num_classes` as
    `Generator`.
    """
    dtype: str = "float32"
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, images: jax.Array, labels: jax.Array, train: bool = True,
                 groups: int = 1) -> jax.Array:
        # nn.Conv(128, (5, 5), strides=2, padding='SAME') on concat(image, one-hot maps).
        conv = functools.partial(Conv, dtype=self.dtype)
        x = conv(128, 5, layers.conv_with_onehot_channels,
                 in_features=images.shape[-1] + self.num_classes,
                 name="conv1")(images, labels)
        x = jax.nn.leaky_relu(x, LEAK)                                 # [B, 14, 14, 128]
        # nn.Conv(256, (5, 5), strides=(2, 2), padding='SAME').
        conv2 = functools.partial(layers.conv_same, stride=2)
        x = conv(256, 5, layers.in_batch_chunks(conv2, CONV_CHUNK),
                 name="conv2")(x)                                  # [B, 7, 7, 256]
        x = jax.nn.leaky_relu(BatchNorm(name="bn2")(x, train, groups), LEAK)
        # nn.Conv(1, (7, 7), padding='VALID'): the kernel covers the whole 7x7 map.
        x = conv(1, 7, layers.conv_valid_full, name="conv3")(x)        # [B, 1]
        return x[:, 0]
