"""Writing in the user's own handwriting: one drawn or photographed digit sets
the style of a whole number.

In the conditional GAN the label says which digit and the noise vector z
carries the style (slant, stroke width, roundness). So: prepare the user's
digit as MNIST's digits were prepared (`prepare`), find the z that makes G
redraw it (`fit_style`: Adam on z), and write every digit with that z.

    style = fit_style(g_variables, classifier_params, prepare(picture), label=7)
    G(style.z, 0..9)  # each digit in that handwriting
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, UnidentifiedImageError

from gan import sampling
from gan.classifier import Classifier
from gan.data import IMAGE_SIZE
from gan.errors import one_line
from gan.limits import WriterError
from gan.models import NOISE_DIM, Generator

# MNIST's recipe (LeCun): the digit's longer side scaled to 20 px (aspect kept,
# antialiased), placed in 28x28 with its centre of mass at the centre.
BOX = 20
# Where MNIST's digits have their centre of mass, in pixel indices: (14.0,
# 14.0) on average over the test set (measured: 13.99, 14.00).
CENTRE = IMAGE_SIZE / 2
# A pixel is ink when it is this far from the background towards the darkest
# (lightest, after inversion) value; fainter specks and paper grain are not.
INK_LEVEL = 0.25
# Less contrast than this between background and ink: a blank picture.
MIN_CONTRAST = 0.1
# Largest picture accepted (pixels), and picture file (bytes): a 12-megapixel
# phone photo fits both.
MAX_PIXELS = 4096 * 4096
MAX_FILE_BYTES = 20 * 2**20

# Inversion: restarts fitted at once (a batch), Adam steps and step size, and
# the random candidates the restarts are the best of. Chosen on 40 MNIST test
# digits (docs/handwriting.md) for a fit under 1 s on a 2-core CPU: 8 restarts
# of 60 steps fit 10% closer (pixel error 0.019 against 0.021) in 1.7 s.
RESTARTS = 4
STEPS = 40
STEP_SIZE = 0.15
CANDIDATES = 128
# Loss weights: pixels (mean absolute error in [-1, 1]), the classifier's
# 128-d features (mean squared, features are ReLU outputs of order 1), and the
# prior that keeps |z| near sqrt(NOISE_DIM), where Gaussian noise lives.
FEATURE_WEIGHT = 0.05
PRIOR_WEIGHT = 0.05
# Of the fitted restarts, the one kept minimises its loss plus this weight
# times how badly the classifier reads the other nine digits drawn with it
# (mean cross-entropy): a z can redraw the digit yet sit where G writes the
# others poorly. With 0.1, 99.2% of the other digits are read as asked, from
# 98.1% without, at the same pixel error (150 MNIST test digits).
LEGIBILITY_WEIGHT = 0.1


class HandwritingError(WriterError):
    """A picture that holds no usable digit; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Style:
    """A handwriting fitted to one digit: `number(..., style=)` writes with it."""
    z: np.ndarray          # float32 [NOISE_DIM]
    label: int             # the digit it was fitted to
    source: np.ndarray     # uint8 [28, 28]: the prepared input
    fit: np.ndarray        # uint8 [28, 28]: G(z, label), its redrawing
    pixel_error: float     # mean |fit - source| / 255


def read_picture(path: str) -> Image.Image:
    """A picture file (any format pillow reads), loaded; HandwritingError when
    it is missing, too big, or not a picture."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise HandwritingError(f"cannot read {path}: {one_line(e)}") from None
    if size > MAX_FILE_BYTES:
        raise HandwritingError(f"{path} holds {size:,} bytes; a picture of at most "
                               f"{MAX_FILE_BYTES:,} is read")
    try:
        with Image.open(path) as picture:
            too_big = picture.width * picture.height > MAX_PIXELS
            if not too_big:
                picture.load()
                return picture.copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError,
            SyntaxError, ValueError) as e:  # pillow's errors for damaged files
        raise HandwritingError(f"{path} is not a picture pillow can read "
                               f"({one_line(e)})") from None
    raise HandwritingError(f"{path} has more than {MAX_PIXELS:,} pixels")


def prepare(picture: Any) -> np.ndarray:
    """A picture of one digit as MNIST holds digits: uint8 `[28, 28]`, light
    ink on black, the ink's bounding box scaled to 20 px on its longer side,
    its centre of mass at the centre.

    Args:
      picture: a PIL image (any mode; transparency counts as white paper) or a
        2-D array (uint8 0..255, bool, or floats in [0, 1]). Dark ink on light
        paper (a photo, a mouse drawing) is inverted: the border decides.

    Raises:
      HandwritingError: not a 2-D picture, too big, blank, or no ink.
    """
    gray = _grayscale(picture)                                  # [H, W] in [0, 1]
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:                                 # dark on light
        gray, border = 1.0 - gray, 1.0 - border
    paper, ink = float(np.median(border)), float(gray.max())
    if ink - paper < MIN_CONTRAST:
        raise HandwritingError("the picture is blank: draw or photograph one digit")
    gray = np.clip((gray - paper) / (ink - paper), 0.0, 1.0)
    rows, cols = np.nonzero(gray > INK_LEVEL)
    crop = gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (width, height)
    box = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(
        size, Image.Resampling.LANCZOS)).clip(0.0, 1.0)          # [<=20, <=20]
    return _centred(box)


def _grayscale(picture: Any) -> np.ndarray:
    """float `[H, W]` in [0, 1] from a PIL image or a 2-D array."""
    if isinstance(picture, Image.Image):
        if picture.width * picture.height > MAX_PIXELS:
            raise HandwritingError(f"the picture has {picture.width}x{picture.height} "
                                   f"pixels; at most {MAX_PIXELS:,} are read")
        if "A" in picture.getbands() or picture.mode == "P":
            paper = Image.new("RGBA", picture.size, "white")    # transparent = paper
            picture = Image.alpha_composite(paper, picture.convert("RGBA"))
        return np.asarray(picture.convert("L"), np.float32) / 255.0
    array = np.asarray(picture)
    if array.ndim != 2 or not array.size:
        raise HandwritingError(f"a digit is a 2-D picture (height x width), got shape "
                               f"{array.shape}")
    if array.size > MAX_PIXELS:
        raise HandwritingError(f"the picture has {array.size:,} pixels; at most "
                               f"{MAX_PIXELS:,} are read")
    if array.dtype == bool:
        return array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.number):
        raise HandwritingError(f"a picture holds numbers, got {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise HandwritingError("the picture holds NaN or infinite values")
    return array / 255.0 if array.max() > 1.0 else array.clip(0.0, 1.0)


def _centred(box: np.ndarray) -> np.ndarray:
    """`box` pasted into 28x28 with its centre of mass moved to CENTRE (whole
    pixels, as close as they allow; ink pushed past the edge is cut)."""
    ys, xs = np.indices(box.shape)
    mass = box.sum()
    cy, cx = (ys * box).sum() / mass, (xs * box).sum() / mass
    top, left = round(CENTRE - cy), round(CENTRE - cx)
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    h, w = box.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, IMAGE_SIZE), min(left + w, IMAGE_SIZE)
    out[y0:y1, x0:x1] = box[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.round(out * 255.0).astype(np.uint8)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of an image's centre of mass, in pixel indices."""
    x = np.asarray(image, np.float64)
    ys, xs = np.indices(x.shape)
    return float((ys * x).sum() / x.sum()), float((xs * x).sum() / x.sum())


# ---------------------------------------------------------------------------
# Inversion: the z whose G(z, label) redraws the prepared digit
# ---------------------------------------------------------------------------


def inversion_loss(z: jax.Array, g_variables: Any, classifier_params: Any,
                   target: jax.Array, target_features: jax.Array,
                   labels: jax.Array) -> jax.Array:
    """Per-restart loss `[R]` of noise `z` `[R, NOISE_DIM]`: pixel error plus
    classifier-feature distance to the target `[28, 28, 1]` in [-1, 1], plus
    the prior keeping |z| near sqrt(NOISE_DIM). BatchNorm in inference mode."""
    drawn = Generator().apply(g_variables, z, labels, train=False)     # [R, 28, 28, 1]
    _, features = Classifier().apply({"params": classifier_params}, drawn)
    pixels = jnp.abs(drawn - target).mean(axis=(1, 2, 3))
    feature = ((features - target_features) ** 2).mean(axis=1)
    radius = jnp.sqrt((z ** 2).sum(axis=1))
    prior = (radius - math.sqrt(NOISE_DIM)) ** 2 / NOISE_DIM
    return pixels + FEATURE_WEIGHT * feature + PRIOR_WEIGHT * prior


@functools.partial(jax.jit, static_argnames=("restarts", "steps"))
def _invert(g_variables: Any, classifier_params: Any, target_u8: jax.Array,
            label: jax.Array, key: jax.Array, restarts: int, steps: int
            ) -> tuple[jax.Array, jax.Array]:
    """(z `[restarts, NOISE_DIM]`, loss `[restarts]`) after `steps` Adam steps
    from the best `restarts` of CANDIDATES random starts."""
    target = (target_u8.astype(jnp.float32) / 127.5 - 1.0)[..., None]   # [28, 28, 1]
    _, target_features = Classifier().apply({"params": classifier_params},
                                            target[None])               # [1, 128]
    loss_of = functools.partial(inversion_loss, g_variables=g_variables,
                                classifier_params=classifier_params, target=target,
                                target_features=target_features)
    candidates = jax.random.normal(key, (CANDIDATES, NOISE_DIM))
    first = loss_of(candidates, labels=jnp.full(CANDIDATES, label))
    z = candidates[jnp.argsort(first)[:restarts]]
    labels = jnp.full(restarts, label)
    optimizer = optax.adam(STEP_SIZE)
    # The restarts are independent (inference-mode BatchNorm): the gradient of
    # their summed loss is each one's own gradient.
    grad = jax.grad(lambda z: loss_of(z, labels=labels).sum())

    def step(_, carry):
        z, opt_state = carry
        updates, opt_state = optimizer.update(grad(z), opt_state)
        return optax.apply_updates(z, updates), opt_state

    z, _ = jax.lax.fori_loop(0, steps, step, (z, optimizer.init(z)))
    digits = jnp.arange(10)
    drawn = Generator().apply(g_variables, jnp.repeat(z, 10, axis=0),
                              jnp.tile(digits, restarts), train=False)
    logits, _ = Classifier().apply({"params": classifier_params}, drawn)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.tile(digits, restarts)).reshape(restarts, 10)
    others = (digits != label).astype(jnp.float32)
    illegible = (cross_entropy * others).sum(axis=1) / 9.0
    return z, loss_of(z, labels=labels) + LEGIBILITY_WEIGHT * illegible


def fit_style(g_variables: Any, classifier_params: Any, source: np.ndarray,
              label: int, seed: int = 0, restarts: int = RESTARTS,
              steps: int = STEPS) -> Style:
    """The handwriting of `source` (uint8 `[28, 28]` from `prepare`) as digit
    `label`: the best of `restarts` fits. The same input and seed give the same
    style."""
    z, losses = _invert(g_variables, classifier_params, jnp.asarray(source, jnp.uint8),
                        jnp.int32(label), jax.random.key(seed), restarts, steps)
    best = int(jnp.argmin(losses))
    z = np.asarray(z[best], np.float32)
    fit = sampling.generate_uint8(g_variables, z[None], np.array([label], np.int32))[0]
    error = float(np.abs(fit.astype(np.float32) - source).mean() / 255.0)
    return Style(z, int(label), np.asarray(source, np.uint8), fit, error)
