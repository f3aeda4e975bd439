"""Fast, exact formulations of the seed's layers, as pure functions.

Each function computes the same result as the plain Flax/lax layer with the same
parameters (same shapes, same layouts), only cheaper on XLA. `tests/test_layers.py`
checks every one against the plain form, outputs and gradients.

Kernel layout is Flax's: `[kh, kw, in, out]`; transposed convolutions follow
`flax.linen.ConvTranspose` (`lax.conv_transpose`, `transpose_kernel=False`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def _same_transpose_padding(k: int, s: int) -> tuple[int, int]:
    """lax.conv_transpose's padding of the dilated input for 'SAME'."""
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else int(np.ceil(pad_len / 2))
    return pad_a, pad_len - pad_a


def _subpixel_taps(k: int, s: int) -> tuple[np.ndarray, int, int]:
    """Which kernel tap serves output phase r at sub-pixel window offset t.

    A stride-s transposed conv computes output `o = s*i + r` from inputs
    `i + d` only, with `d = (r + tap - pad_a) / s` when that divides exactly. So each
    phase r is an ordinary stride-1 convolution over a small window of d.

    Returns:
      taps: int `[T, s]`, tap index for (t, r), or `k` (a zero tap) where none.
      d_min, d_max: the window of input offsets, `T = d_max - d_min + 1`.
    """
    pad_a, _ = _same_transpose_padding(k, s)
    offsets = [(r + tap - pad_a) // s for r in range(s) for tap in range(k)
               if (r + tap - pad_a) % s == 0]
    d_min, d_max = min(offsets), max(offsets)
    taps = np.full((d_max - d_min + 1, s), k, dtype=np.int32)
    for t in range(d_max - d_min + 1):
        for r in range(s):
            tap = s * (t + d_min) + pad_a - r
            if 0 <= tap < k:
                taps[t, r] = tap
    return taps, d_min, d_max


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array,
                            stride: int = 2) -> jax.Array:
    """Stride-s 'SAME' transposed conv as one stride-1 conv plus depth-to-space.

    Equals `lax.conv_transpose(x, kernel, (s, s), 'SAME')`. XLA:CPU computes the
    kernel gradient of the direct form over the zero-dilated input, about ten times
    slower than the gradient of this small dense convolution.

    Args:
      x: `[B, H, W, C_in]`.
      kernel: `[k, k, C_in, C_out]`, square.
      stride: the upsampling factor s.

    Returns:
      `[B, s*H, s*W, C_out]`.
    """
    k, _, c_in, c_out = kernel.shape
    s = stride
    taps, d_min, d_max = _subpixel_taps(k, s)
    t = taps.shape[0]
    # A zero tap at index k lets every (t, r) gather a kernel slice.
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    sub = padded[taps][:, :, taps]                    # [T, s, T, s, C_in, C_out]
    sub = sub.transpose(0, 2, 4, 1, 3, 5).reshape(t, t, c_in, s * s * c_out)
    pad = ((-d_min, d_max), (-d_min, d_max))
    y = lax.conv_general_dilated(x, sub, (1, 1), pad, dimension_numbers=_DN)
    b, h, w, _ = y.shape                               # [B, H, W, s*s*C_out]
    y = y.reshape(b, h, w, s, s, c_out).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h * s, w * s, c_out)


def conv_transpose_phases(x: jax.Array, kernel: jax.Array,
                          stride: int = 2) -> jax.Array:
    """Stride-s 'SAME' transposed conv as s*s small convs, one per output phase.

    Equals `conv_transpose_subpixel` (and `lax.conv_transpose(x, kernel, (s, s),
    'SAME')`), but each phase convolves with only its own taps (for k=5, s=2:
    3x3, 3x2, 2x3 and 2x2, 25 taps in all instead of 4 x 9 = 36).

    Args:
      x: `[B, H, W, C_in]`.
      kernel: `[k, k, C_in, C_out]`, square.
      stride: the upsampling factor s.

    Returns:
      `[B, s*H, s*W, C_out]`.
    """
    k, s = kernel.shape[0], stride
    taps, d_min, _ = _subpixel_taps(k, s)
    b, h, w, _ = x.shape

    def window(r):  # window offsets t and kernel taps of phase r
        ts = [t for t in range(taps.shape[0]) if taps[t, r] < k]
        return ts, taps[ts, r]

    rows = []
    for r in range(s):
        t_r, k_r = window(r)
        cols = []
        for c in range(s):
            t_c, k_c = window(c)
            sub = kernel[k_r][:, k_c]                        # [len(t_r), len(t_c), ...]
            pad = ((-(d_min + t_r[0]), d_min + t_r[-1]),
                   (-(d_min + t_c[0]), d_min + t_c[-1]))
            cols.append(lax.conv_general_dilated(x, sub, (1, 1), pad,
                                                 dimension_numbers=_DN))
        rows.append(jnp.stack(cols, axis=3))                 # [B, H, W, s, C_out]
    y = jnp.stack(rows, axis=2)                              # [B, H, s, W, s, C_out]
    return y.reshape(b, h * s, w * s, -1)


def conv_transpose_from_1x1(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 'VALID' transposed conv of a 1x1 input: a matmul with the flipped kernel.

    Equals `lax.conv_transpose(x[:, None, None], kernel, (1, 1), 'VALID')`.

    Args:
      x: `[B, C_in]`.
      kernel: `[kh, kw, C_in, C_out]`.

    Returns:
      `[B, kh, kw, C_out]`.
    """
    kh, kw, c_in, c_out = kernel.shape
    # Output pixel (h, w) sees tap (kh-1-h, kw-1-w): the only non-padding input.
    flipped = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c_in, kh * kw * c_out)
    return (x @ flipped).reshape(-1, kh, kw, c_out)


def conv_valid_full(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 'VALID' conv whose kernel covers the whole input: a matmul.

    Args:
      x: `[B, H, W, C_in]`.
      kernel: `[H, W, C_in, C_out]`.

    Returns:
      `[B, C_out]`, equal to the `[B, 1, 1, C_out]` conv output.
    """
    h, w, c_in, c_out = kernel.shape
    return x.reshape(x.shape[0], h * w * c_in) @ kernel.reshape(h * w * c_in, c_out)


def conv_with_onehot_channels(x: jax.Array, kernel: jax.Array, labels: jax.Array,
                              stride: int = 2) -> jax.Array:
    """'SAME' conv of `concat([x, one_hot(labels) broadcast over H, W])`.

    The label channels are constant per digit, so their share of the output is a
    per-digit bias map (`[num_classes, H', W', C_out]`, not constant near the
    zero-padded border), computed once per call from the kernel and gathered by label.

    Args:
      x: `[B, H, W, C_x]`.
      kernel: `[k, k, C_x + num_classes, C_out]`.
      labels: int `[B]`.
      stride: conv stride.

    Returns:
      `[B, H', W', C_out]`.
    """
    c_x = x.shape[-1]
    num_classes = kernel.shape[2] - c_x
    strides = (stride, stride)
    y = lax.conv_general_dilated(x, kernel[:, :, :c_x], strides, "SAME",
                                 dimension_numbers=_DN)
    planes = jnp.broadcast_to(jnp.eye(num_classes, dtype=x.dtype)[:, None, None, :],
                              (num_classes,) + x.shape[1:3] + (num_classes,))
    bias_map = lax.conv_general_dilated(planes, kernel[:, :, c_x:], strides, "SAME",
                                        dimension_numbers=_DN)
    return y + bias_map[labels]


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array,
                     mean: jax.Array, var: jax.Array, *, momentum: float,
                     epsilon: float, groups: int = 1
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Train-mode BatchNorm over `groups` equal slices of the batch.

    With `groups=g` the result equals g separate `flax.linen.BatchNorm` calls on the
    slices in order: each slice is normalised with its own statistics, and the running
    averages take the g updates one after the other.

    Args:
      x: `[B, ..., C]`, B divisible by `groups`.
      scale, bias: `[C]`.
      mean, var: running statistics `[C]`.
      momentum, epsilon: as in flax.linen.BatchNorm.
      groups: number of slices.

    Returns:
      (normalised x, new running mean, new running var).
    """
    xg = x.reshape((groups, -1) + x.shape[1:])
    axes = tuple(range(1, xg.ndim - 1))
    mu = jnp.mean(xg, axis=axes, keepdims=True)                 # [g, 1.., C]
    sigma2 = jnp.mean(jnp.square(xg - mu), axis=axes, keepdims=True)
    y = (xg - mu) * (scale * lax.rsqrt(sigma2 + epsilon)) + bias
    for g in range(groups):
        mean = momentum * mean + (1.0 - momentum) * mu[g].reshape(-1)
        var = momentum * var + (1.0 - momentum) * sigma2[g].reshape(-1)
    return y.reshape(x.shape), mean, var


def batch_norm_eval(x: jax.Array, scale: jax.Array, bias: jax.Array,
                    mean: jax.Array, var: jax.Array, *, epsilon: float) -> jax.Array:
    """Eval-mode BatchNorm with the running statistics."""
    return (x - mean) * (scale * lax.rsqrt(var + epsilon)) + bias



def conv_same(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """`lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME')`, NHWC/HWIO."""
    return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                    dimension_numbers=_DN)


def in_batch_chunks(op: Callable[..., jax.Array], chunk: int
                    ) -> Callable[..., jax.Array]:
    """`op(x, kernel)` applied to slices of `chunk` examples, results concatenated.

    The same convolution, computed per slice: XLA:CPU's convolutions (and their
    gradients, where the kernel gradient is summed over the slices) run up to
    twice as fast on batches whose activations stay in cache. The slices are
    unrolled in the program; a loop would lose the fast convolution path.
    """
    def chunked(x: jax.Array, kernel: jax.Array) -> jax.Array:
        if x.shape[0] <= chunk:
            return op(x, kernel)
        return jnp.concatenate([op(x[i:i + chunk], kernel)
                                for i in range(0, x.shape[0], chunk)])
    return chunked
