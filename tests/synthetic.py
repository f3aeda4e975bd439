"""Small datasets the tests make themselves: IDX files and learnable digits."""

from __future__ import annotations

import gzip
import os

import numpy as np

from gan import data

N = 7  # Small and odd, so nothing lines up with a power of two by chance.


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """Builds an IDX file: big-endian int32 magic and dims, then the payload."""
    return np.array([magic, *dims], dtype=">i4").tobytes() + payload


def write(path, content: bytes, gz: bool = True) -> None:
    """Writes bytes, gzipped when gz is set (the name is taken as given)."""
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(content)


def write_idx_arrays(folder, images: np.ndarray, labels: np.ndarray,
                     split: str = "train", gz: bool = True) -> None:
    """Writes uint8 images `[n, 28, 28]` and labels `[n]` as an IDX file pair."""
    img_name, lbl_name = data.idx_file_names(split)
    if not gz:
        img_name, lbl_name = img_name[:-3], lbl_name[:-3]
    n = len(labels)
    write(os.path.join(folder, img_name),
          idx_bytes(2051, (n, 28, 28), images.astype(np.uint8).tobytes()), gz)
    write(os.path.join(folder, lbl_name),
          idx_bytes(2049, (n,), labels.astype(np.uint8).tobytes()), gz)


def write_idx(folder, split="train", n=N, seed=0, gz=True):
    """Writes a valid IDX image and label file pair of n random digits.

    Returns:
        The (images, labels) that were written.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    write_idx_arrays(folder, images, labels, split, gz)
    return images, labels.astype(np.int32)


# Block digits: class c is a bright 6x6 square at one of ten separate places.
_BLOCK = 6
_CORNERS = [(r, c) for r in (2, 11, 20) for c in (1, 8, 15, 22)][:10]


def block_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable stand-in for MNIST: uint8 `[n, 28, 28]` and labels `[n]`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int32)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        r, c = _CORNERS[label]
        images[i, r:r + _BLOCK, c:c + _BLOCK] = 255
    return images, labels


def block_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Block digits of the given labels: uint8 `[n, 28, 28]`."""
    images = np.random.default_rng(seed).integers(0, 40, size=(len(labels), 28, 28))
    images = images.astype(np.uint8)
    for i, label in enumerate(np.asarray(labels)):
        r, c = _CORNERS[label]
        images[i, r:r + _BLOCK, c:c + _BLOCK] = 255
    return images


def classify_blocks(images: np.ndarray) -> np.ndarray:
    """The class whose square is brightest in each image (any scale)."""
    x = np.asarray(images, np.float32).reshape(len(images), 28, 28)
    scores = np.stack([x[:, r:r + _BLOCK, c:c + _BLOCK].mean(axis=(1, 2))
                       for r, c in _CORNERS], axis=1)
    return scores.argmax(axis=1)
