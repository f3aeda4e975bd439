"""MNIST and its family (any TFDS classification set of 28x28 grayscale
images) as uint8 `[N, 28, 28]` and int32 `[N]` arrays, from LeCun IDX files or
TFDS (TensorFlow imported only then); any data problem is a one-line
`DataError`. Which dataset a run uses, and folders of your own images, are
`gan.datasets`' job."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import socket
import zlib
from typing import Any

import numpy as np

from gan.errors import one_line

NUM_CLASSES = 10
IMAGE_SIZE = 28
SPLITS = ("train", "test")
# LeCun file-name prefixes per split, and the magic numbers of the two kinds.
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_MAGIC = {"images": 2051, "labels": 2049}
# Probed before a TFDS download: offline, fail at once, not after HTTP retries.
_DOWNLOAD_HOST = "storage.googleapis.com"
_HINT = ("Supply it with `data_dir` DIR or TFDS_DATA_DIR=DIR (a TFDS data dir "
         "holding mnist/3.0.1), or `data_dir` FOLDER holding the four IDX .gz files.")
Shard = tuple[int, int]  # (index, count): the index-th of count equal parts


class DataError(Exception):
    """A missing, unreadable or malformed dataset; the message is one line."""


def load_mnist(data_dir: str | None = None, split: str = "train",
               download: bool = True, shard: Shard | None = None, *,
               name: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """One split (or its `shard`) of MNIST, or of the TFDS dataset `name`:
    from `data_dir` when it holds IDX files, else through TFDS (`data_dir` as
    its data dir). Labels are as `tfds_classes(name)` numbers them."""
    idx_file_names(split)  # checks the split
    if data_dir is not None:
        data_dir = os.path.expanduser(data_dir)
        if not os.path.isdir(data_dir):
            problem = "is not a folder" if os.path.exists(data_dir) else "does not exist"
            raise DataError(f"Data dir {data_dir} {problem}. {_hint(name)}")
        # Any IDX file marks an IDX folder, so a missing sibling is named.
        if _idx_files(data_dir, name):
            return load_idx(data_dir, split, shard, name=name)
    return load_tfds(data_dir, split, download=download, shard=shard, name=name)


def source_files(data_dir: str | None, name: str = "mnist") -> list[str]:
    """What `load_mnist(data_dir, name=name)` reads, for outputs to keep clear
    of: the IDX files there, or the TFDS copy in it (`data_dir/<name>`); none
    for TFDS's default place."""
    if data_dir is None:
        return []
    data_dir = os.path.expanduser(data_dir)
    return _idx_files(data_dir, name) or [os.path.join(data_dir, name.split("/")[0])]


def title(name: str) -> str:
    """A dataset's name in messages: "MNIST", else as given."""
    return "MNIST" if name == "mnist" else name


def _hint(name: str) -> str:
    if name == "mnist":
        return _HINT
    return (f"Supply it with `data_dir` DIR or TFDS_DATA_DIR=DIR (a TFDS data dir "
            f"holding {name}), or `data_dir` FOLDER holding its four IDX files.")


# TFDS labels that differ from what a run needs: {name: (first label, names)}.
# EMNIST letters labels the 26 letters 1-26 (upper and lower case merged) in
# 37 classes; EMNIST balanced names its 47 classes by number. Sources: the
# EMNIST paper (Cohen et al., 2017) and its `emnist-*-mapping.txt` files.
_RELABELLED = {
    "emnist/letters": (1, tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")),
    "emnist/balanced": (0, tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")),
}


def tfds_classes(name: str) -> tuple[str, ...]:
    """The class names of TFDS dataset `name`, checked to be a classification
    set of 28x28 grayscale uint8 images (from TFDS's code: no data needed)."""
    if name == "mnist":
        return tuple(str(d) for d in range(NUM_CLASSES))
    tfds = _import_tfds(name)
    try:
        info = tfds.builder(name).info
    except Exception as e:  # noqa: BLE001 - DatasetNotFoundError and others
        raise DataError(f"Unknown dataset {name!r} ({one_line(e)[:160]}); use mnist, a "
                        "TFDS name such as fashion_mnist, or folder:PATH.") from None
    keys = info.supervised_keys or ("image", "label")
    image, label = (info.features[k] if k in info.features else None for k in keys)
    shape = getattr(image, "shape", None)
    dtype = np.dtype(getattr(image, "np_dtype", np.float32))
    if tuple(shape or ()) != (IMAGE_SIZE, IMAGE_SIZE, 1) or dtype != np.uint8:
        what = ("x".join(map(str, shape)) + f" {dtype.name}" if shape
                else "no image feature")
        raise DataError(f"TFDS dataset {name} has {what} images; a run needs 28x28x1 "
                        "uint8 (grayscale) images with a class label (or use "
                        "folder:PATH, which converts any images).")
    if not hasattr(label, "names"):
        raise DataError(f"TFDS dataset {name} has no class label; a run needs "
                        "28x28 grayscale images with a class label.")
    if name in _RELABELLED:
        return _RELABELLED[name][1]
    return tuple(str(n) for n in label.names)


def _relabel(labels: np.ndarray, name: str, count: int, where: str) -> np.ndarray:
    """Labels numbered from 0, as `tfds_classes` names them; DataError past them."""
    first = _RELABELLED.get(name, (0,))[0]
    labels = labels.astype(np.int64) - first
    bad = np.flatnonzero((labels < 0) | (labels >= count))
    if len(bad):
        raise DataError(f"{title(name)} labels in {where} out of range: label "
                        f"{labels[bad[0]] + first} at index {bad[0]} ({len(bad)} bad "
                        f"in all; {count} classes from {first}).")
    return labels.astype(np.int32)


def fingerprint(labels: np.ndarray, count: int | None = None,
                images: np.ndarray | None = None) -> dict[str, Any]:
    """What identifies a training set for resuming: its size and the SHA-256 of
    its labels in order (MNIST's images are not hashed: a different set or
    order of digits has different labels), and of `images` when given (a
    folder's labels are sorted blocks, the same for other pictures). `count`:
    the whole set's size when `labels` are one process's shard; a shard's hash
    would differ by process, so then only the size is kept."""
    if count is not None and count != len(labels):
        return {"examples": int(count)}
    digest = hashlib.sha256(np.asarray(labels, np.uint8).tobytes()).hexdigest()
    found = {"examples": len(labels), "labels_sha256": digest[:16]}
    if images is not None:
        found["images_sha256"] = hashlib.sha256(
            np.ascontiguousarray(images, np.uint8).tobytes()).hexdigest()[:16]
    return found


def shard_range(count: int, shard: Shard | None) -> tuple[int, int]:
    """Examples `[start, stop)` of shard `(index, n)`, `count // n` each (as
    `tfds.even_splits(drop_remainder=True)`)."""
    index, n = shard or (0, 1)
    if not 0 <= index < n:
        raise DataError(f"Data shard {index} of {n} does not exist.")
    return index * (count // n), (index + 1) * (count // n)


def idx_file_names(split: str = "train") -> tuple[str, str]:
    """(images, labels) file names of a split, e.g. `train-images-idx3-ubyte.gz`."""
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use 'train' or 'test'.")
    prefix = _IDX_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


def _idx_name_pairs(name: str, split: str) -> list[tuple[str, str]]:
    """The (images, labels) file names a split of dataset `name` may have:
    EMNIST's own for emnist/<set> (`emnist-letters-test-images-idx3-ubyte.gz`),
    then LeCun's (`t10k-images-idx3-ubyte.gz`: MNIST, Fashion-MNIST, KMNIST)."""
    pairs = [idx_file_names(split)]
    if name.startswith("emnist/"):
        subset = name.split("/")[1]
        pairs.insert(0, (f"emnist-{subset}-{split}-images-idx3-ubyte.gz",
                         f"emnist-{subset}-{split}-labels-idx1-ubyte.gz"))
    return pairs


def _idx_files(folder: str, name: str = "mnist") -> list[str]:
    """The IDX files of dataset `name` in `folder` (an empty list: none)."""
    return [path for s in SPLITS for pair in _idx_name_pairs(name, s) for file in pair
            if (path := _idx_path(folder, file))]


def load_idx(folder: str, split: str = "train", shard: Shard | None = None, *,
             name: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """One split from the IDX files in `folder` (`.gz`, or uncompressed without),
    of MNIST or of the TFDS dataset `name` (its classes: `tfds_classes`)."""
    pairs = _idx_name_pairs(name, split)
    names = next((pair for pair in pairs if any(_idx_path(folder, f) for f in pair)),
                 pairs[0])
    paths = []
    for file in names:
        path = _idx_path(folder, file)
        if path is None:
            raise DataError(f"{title(name)} IDX file missing: "
                            f"{os.path.join(folder, file)} (nor uncompressed "
                            f"{file[:-3]}).")
        paths.append(path)
    images = _read_idx(paths[0], "images", (IMAGE_SIZE, IMAGE_SIZE))
    labels = _read_idx(paths[1], "labels", ()).astype(np.int32)
    if len(images) != len(labels):
        raise DataError(f"{title(name)} IDX mismatch: {paths[0]} has {len(images)} "
                        f"images but {paths[1]} has {len(labels)} labels.")
    labels = _relabel(labels, name, len(tfds_classes(name)), paths[1])
    start, stop = shard_range(len(labels), shard)
    return images[start:stop].copy(), labels[start:stop].copy()


def _idx_path(folder: str, gz_name: str) -> str | None:
    paths = (os.path.join(folder, gz_name), os.path.join(folder, gz_name[:-3]))
    return next((p for p in paths if os.path.isfile(p)), None)


def _read_idx(path: str, kind: str, item_shape: tuple[int, ...]) -> np.ndarray:
    """The items `[count, *item_shape]` of an IDX file, header and length checked
    (read whole first: a damaged count is an error, never a huge allocation)."""
    bad = lambda what: DataError(f"MNIST IDX file {path} {what}")  # noqa: E731
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except EOFError:  # the gzip stream stops before its end marker
        raise bad("is truncated (gzip stream ends early).") from None
    except (OSError, zlib.error) as e:  # BadGzipFile is an OSError
        raise bad(f"is unreadable or corrupt gzip ({one_line(e)}).") from None
    head = 4 * (2 + len(item_shape))  # magic, count, dims: big-endian int32
    if len(data) < head:
        raise bad(f"is truncated: {len(data)} bytes, short of the {kind} header.")
    magic, count, *dims = (int(v) for v in np.frombuffer(data, ">i4", head // 4))
    if magic != _MAGIC[kind]:
        raise bad(f"has bad magic number {magic}, not MNIST {kind} ({_MAGIC[kind]}).")
    if count <= 0:
        raise bad(f"declares {count} {kind}; expected at least 1.")
    if tuple(dims) != item_shape:
        raise bad(f"has wrong image dims {'x'.join(map(str, dims))} (expected "
                  f"{IMAGE_SIZE}x{IMAGE_SIZE}).")
    want, got = count * int(np.prod(item_shape)), len(data) - head
    if got != want:
        raise bad(f"{'is truncated' if got < want else 'has a wrong count'}: header "
                  f"says {count} {kind} ({want} bytes) but {got} bytes follow.")
    return np.frombuffer(data, np.uint8, offset=head).reshape((count, *item_shape))


def load_tfds(data_dir: str | None = None, split: str = "train", *,
              download: bool = True, shard: Shard | None = None,
              name: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """One split of MNIST (or of the TFDS dataset `name`, checked by
    `tfds_classes`) through TFDS: its copy in `data_dir` (default
    `$TFDS_DATA_DIR`, then `~/tensorflow_datasets`), else downloaded when
    allowed and reachable."""
    # TFDS reads TFDS_DATA_DIR once, at import; reading it here also names it.
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    where = data_dir or os.path.join("~", "tensorflow_datasets")
    shown, hint = title(name), _hint(name)
    classes = tfds_classes(name)
    tfds = _import_tfds(name)
    shard_range(0, shard)  # checks it
    part = split if shard is None else tfds.even_splits(
        split, shard[1], drop_remainder=True)[shard[0]]
    for fetch in (False, True):  # the local copy first
        if fetch and (reason := _offline_reason() if download else "download disabled"):
            break
        try:
            ds = tfds.load(name, split=part, data_dir=data_dir, download=fetch,
                           as_supervised=True, shuffle_files=False)
            # In batches: batch_size=-1 aborts the process under tfds mock_data.
            batches = list(tfds.as_numpy(ds.batch(10_000)))
        except Exception as e:  # noqa: BLE001 - TF, TFDS and network errors.
            # DatasetBuilder.as_dataset raises a bare AssertionError for "no copy".
            if not (fetch or isinstance(e, AssertionError)
                    or "could not find data" in str(e)):
                raise DataError(f"{shown} TFDS copy under {where} could not be read "
                                f"({one_line(e)}). {hint}") from None
            reason = one_line(e)
            continue
        if not batches:
            raise DataError(f"{shown} {split} split under {where} is empty.")
        # The features (tfds_classes) fix the rest: uint8 [N, 28, 28, 1].
        images, labels = (np.concatenate(parts) for parts in zip(*batches))
        return images[..., 0], _relabel(labels, name, len(classes), where)
    raise DataError(f"{shown} not found: no local TFDS copy under {where} and download "
                    f"failed ({reason}). {hint}")


def _import_tfds(name: str = "mnist") -> Any:
    """TFDS, with TensorFlow off the GPUs (JAX needs them). Its log noise is
    the entry points' to silence (`gan.cli.set_up_process`)."""
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"Reading {title(name)} via TFDS needs tensorflow-datasets "
                        f"({one_line(e)}). {_hint(name)}") from None
    with contextlib.suppress(Exception):  # e.g. RuntimeError once TF is initialised
        tf.config.set_visible_devices([], "GPU")
    return tfds


def _offline_reason() -> str | None:
    """Why a download cannot work, or None when it is worth trying."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return None  # a proxy may work where a direct connection does not
    try:
        socket.create_connection((_DOWNLOAD_HOST, 443), timeout=5).close()
        return None
    except OSError as e:
        return f"no network: cannot reach {_DOWNLOAD_HOST}: {one_line(e)}"


def to_float(images: Any) -> Any:
    """uint8 `[..., 28, 28]` to float32 `[..., 28, 28, 1]` in [-1, 1] (numpy or
    JAX); the clip keeps 255 at 1.0 under jit, where "/ 255" is "* (1/255)"."""
    x = images[..., None].astype(np.float32)
    return ((x / 255.0 - 0.5) / 0.5).clip(-1.0, 1.0)

