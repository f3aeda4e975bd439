"""Drawing digits from a generator: eval-mode BatchNorm, explicit keys."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gan import batching
from gan.images import to_uint8
from gan.models import NOISE_DIM, Generator, generator_classes


@jax.jit
def generate(variables: Any, z: jax.Array, labels: jax.Array) -> jax.Array:
    """G(z, labels) with running BatchNorm statistics: `[B, 28, 28, 1]` in [-1, 1]."""
    return Generator(num_classes=generator_classes(variables)).apply(
        variables, z, labels, train=False)


def generate_uint8(variables: Any, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Images as uint8 `[N, 28, 28]` (0 = black background), in batches of the
    fixed sizes of `gan.batching` (a large request never holds all activations
    at once, and only a few programs are ever compiled)."""
    if not len(labels):
        return np.zeros((0, 28, 28), np.uint8)
    (images,) = batching.in_fixed_batches(
        lambda z, y: (to_uint8(generate(variables, jnp.asarray(z), jnp.asarray(y))),),
        np.asarray(z, np.float32), np.asarray(labels))
    return images


def digit_rows(key: jax.Array, digits: Sequence[int], per_digit: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Noise and labels for a grid: one row per digit, one noise per column.

    Column c uses the same noise vector in every row, as the seed's grid, so a row
    change shows only the effect of the label.

    Returns:
      z float32 `[len(digits) * per_digit, NOISE_DIM]` and labels int32, row-major.
    """
    noise = np.asarray(jax.random.normal(key, (per_digit, NOISE_DIM)), np.float32)
    z = np.tile(noise, (len(digits), 1))
    labels = np.repeat(np.asarray(digits, np.int32), per_digit)
    return z, labels


# Columns of a run's progress grid (the seed's 10x10 grid for its 10 digits).
GRID_COLUMNS = 10


def grid_inputs(key: jax.Array, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A run's progress grid: row r is class r, GRID_COLUMNS noise vectors."""
    return digit_rows(key, range(num_classes), GRID_COLUMNS)


def g_variables(g_state: Any) -> dict[str, Any]:
    """The variables sampling needs from a generator train state."""
    return {"params": g_state.params, "batch_stats": g_state.batch_stats}
