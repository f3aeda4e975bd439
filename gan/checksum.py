"""SHA-256 checksums of saved arrays (checkpoints, generator files), so a
damaged file is refused rather than sampled."""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import jax
import numpy as np

# The name of a saved tree's SHA-256 (`digest`) beside its arrays.
DIGEST = "sha256"

def digest(tree: Any) -> str:
    """SHA-256 over every array of a tree: names, shapes, dtypes and bytes.
    Integers count as int64, so a step saved as a Python int and restored as
    an array has one digest."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
        a = np.asarray(leaf)
        if a.dtype.kind in "iub":
            a = a.astype(np.int64)
        h.update(f"{jax.tree_util.keystr(path)}|{a.shape}|{a.dtype.str}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


_warned: set[str] = set()


def note_unverified(what: str) -> None:
    """Says once per file that it predates checksums (it still loads)."""
    if what not in _warned:
        _warned.add(what)
        print(f"note: {what} has no checksum to verify (written before checksums)",
              file=sys.stderr)
