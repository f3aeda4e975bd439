"""Batches padded to a few fixed sizes, so that a long-running process (the web
page) compiles a handful of programs, not one per request shape: each compiled
program holds about 20 MB, and the number of digits times handwritings a page
can be asked for takes hundreds of values."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

# The batch sizes programs are compiled for; a bigger batch runs in chunks of
# the largest. Powers of 4: padding at most quadruples a small request's work.
SIZES = (4, 16, 64, 256)


def size_for(count: int) -> int:
    """The smallest of SIZES holding `count` rows (the largest for more)."""
    return next((s for s in SIZES if s >= count), SIZES[-1])


def in_fixed_batches(fn: Callable[..., Sequence[np.ndarray]],
                     *arrays: np.ndarray) -> list[np.ndarray]:
    """`fn(*chunks)` over the rows of `arrays` (same length), each chunk padded
    with zero rows to a size in SIZES and the padding cut from the results;
    the results' rows concatenated. Rows must not depend on each other (no
    batch statistics): padding then changes no row."""
    count, outs = len(arrays[0]), []
    for start in range(0, count, SIZES[-1]):
        rows = min(SIZES[-1], count - start)
        size = size_for(rows)
        chunk = [np.concatenate([a[start:start + rows],
                                 np.zeros((size - rows, *a.shape[1:]), a.dtype)])
                 for a in arrays]
        outs.append([np.asarray(r)[:rows] for r in fn(*chunk)])
    return [np.concatenate(parts) for parts in zip(*outs)] if outs else []
