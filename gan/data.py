"""MNIST loading from LeCun IDX files or a TensorFlow Datasets (TFDS) copy.

Every loader returns ``(images, labels)`` as numpy arrays: images uint8
``[N, 28, 28]`` and labels int32 ``[N]``. Every data problem is raised as
:class:`DataError` with a one-line message that the CLI can print as is.

TensorFlow is imported only inside :func:`load_tfds`, so the IDX path (and
importing this module) never pays TF's start-up cost or touches the GPU.
"""

from __future__ import annotations

import gzip
import os
import socket
import zlib
from typing import Any, Iterator

import numpy as np

NUM_CLASSES = 10
IMAGE_SIZE = 28

SPLITS = ("train", "test")

# LeCun file-name prefixes per split; the test split is called "t10k".
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte data, 3 dimensions.
_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte data, 1 dimension.
_IMAGES_HEADER = 16  # magic, count, rows, cols as big-endian int32.
_LABELS_HEADER = 8  # magic, count as big-endian int32.

# Where TFDS downloads MNIST from; probed so an offline machine fails in
# milliseconds instead of sitting through ~3.5 minutes of urllib3 retries.
_DOWNLOAD_HOST = "storage.googleapis.com"
_REASON_CHARS = 160

# (index, count): the index-th of count equal contiguous parts of a split.
Shard = tuple[int, int]

_HINT = (
    "Supply it with --data-dir DIR or TFDS_DATA_DIR=DIR (a TFDS data dir "
    "holding mnist/3.0.1), or --data-dir FOLDER holding the four IDX .gz files."
)


class DataError(Exception):
    """A missing, unreadable or malformed dataset; the message is one line."""


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------


def idx_file_names(split: str = "train") -> tuple[str, str]:
    """Returns the gzipped IDX (images, labels) file names for a split.

    Args:
        split: "train" or "test".

    Returns:
        Names such as ``("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")``.
    """
    _check_split(split)
    prefix = _IDX_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


def load_idx(folder: str, split: str = "train", shard: Shard | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Loads one MNIST split from the standard LeCun IDX files in a folder.

    The ``.gz`` files are preferred; uncompressed files of the same name
    without ``.gz`` are used when the ``.gz`` is absent.

    Args:
        folder: Folder holding the IDX files.
        split: "train" or "test".
        shard: ``(index, count)``: keep only that contiguous part (see
            :func:`shard_range`). The image file is streamed, so the rest of it
            is checked but never held in memory.

    Returns:
        Images uint8 [N, 28, 28] and labels int32 [N] (N: the shard's size).

    Raises:
        DataError: A file is missing, unreadable, truncated or malformed, or
            the images and labels do not match.
    """
    images_name, labels_name = idx_file_names(split)
    images_path = _find_idx_file(folder, images_name)
    labels_path = _find_idx_file(folder, labels_name)
    images, count = _read_images(images_path, shard)
    labels = _parse_labels(labels_path, _read_file(labels_path))
    if count != len(labels):
        raise DataError(
            f"MNIST IDX mismatch: {images_path} has {count} images but "
            f"{labels_path} has {len(labels)} labels."
        )
    start, stop = shard_range(count, shard)
    return images, labels[start:stop]


def shard_range(count: int, shard: Shard | None) -> tuple[int, int]:
    """The examples ``[start, stop)`` of shard ``(index, n)`` of ``count``.

    Shards are contiguous and equal, ``count // n`` examples each; the
    ``count % n`` last examples belong to none (as ``tfds.even_splits`` with
    ``drop_remainder=True``). No shard means all examples.
    """
    if shard is None:
        return 0, count
    _check_shard(shard)
    index, n = shard
    per = count // n
    return index * per, (index + 1) * per


def _check_shard(shard: Shard) -> None:
    index, n = shard
    if not 0 <= index < n:
        raise DataError(f"Data shard {index} of {n} does not exist.")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"Unknown MNIST split {split!r}: use 'train' or 'test'.")


def _find_idx_file(folder: str, gz_name: str) -> str:
    """Returns the path of ``gz_name`` in folder, or its uncompressed twin."""
    gz_path = os.path.join(folder, gz_name)
    raw_path = gz_path[: -len(".gz")]
    for path in (gz_path, raw_path):
        if os.path.isfile(path):
            return path
    raise DataError(
        f"MNIST IDX file missing: {gz_path} (nor uncompressed {os.path.basename(raw_path)})."
    )


def _open(path: str):
    """Opens an IDX file for reading, gunzipping when its name ends in .gz."""
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _read_errors(path: str, e: BaseException) -> DataError:
    """The one-line DataError for an exception raised while reading ``path``."""
    if isinstance(e, EOFError):
        # gzip raises EOFError when the stream stops before its end marker.
        return DataError(f"MNIST IDX file {path} is truncated (gzip stream ends early).")
    # BadGzipFile is an OSError; zlib.error is raised for mangled deflate data.
    return DataError(f"MNIST IDX file {path} is unreadable or corrupt gzip ({_short(e)}).")


def _read_file(path: str) -> bytes:
    """Reads a whole file, gunzipping it when its name ends in .gz."""
    try:
        with _open(path) as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as e:
        raise _read_errors(path, e) from None


def _read_images(path: str, shard: Shard | None) -> tuple[np.ndarray, int]:
    """Checks an IDX image file and returns (its shard's images, its image count).

    The payload is streamed in chunks: only the shard's bytes are kept, the rest
    is counted (so truncated or over-long files are still caught).
    """
    try:
        with _open(path) as f:
            head = f.read(_IMAGES_HEADER)
            try:
                header = _parse_header(path, head, _IMAGES_HEADER, _IMAGES_MAGIC,
                                       "images")
                count, rows, cols = (int(v) for v in header[1:])
                if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
                    raise DataError(
                        f"MNIST IDX file {path} has wrong image dims {rows}x{cols} "
                        f"(expected {IMAGE_SIZE}x{IMAGE_SIZE})."
                    )
            except DataError:
                _skip(f, None)  # a damaged gzip stream is the real cause: raise that
                raise
            item = rows * cols
            start, stop = shard_range(count, shard)
            skipped = _skip(f, start * item)
            kept = _take(f, (stop - start) * item) if skipped == start * item else b""
            total = skipped + len(kept) + _skip(f, None)
    except (EOFError, OSError, zlib.error) as e:
        raise _read_errors(path, e) from None
    _check_payload(path, total, count, item, "images")
    # Copy so callers get a writable array that does not pin the raw bytes.
    return np.frombuffer(kept, np.uint8).reshape(-1, rows, cols).copy(), count


def _chunks(f: Any, size: int | None, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Up to ``size`` bytes of ``f`` (None: to the end), a chunk at a time, so
    memory follows what the file holds, not what a damaged header asks for."""
    done = 0
    while size is None or done < size:
        block = f.read(chunk if size is None else min(chunk, size - done))
        if not block:
            return
        done += len(block)
        yield block


def _skip(f: Any, size: int | None) -> int:
    """Reads and drops ``size`` bytes (None: up to the end); returns how many."""
    return sum(map(len, _chunks(f, size)))


def _take(f: Any, size: int) -> bytes:
    """Reads up to ``size`` bytes."""
    return b"".join(_chunks(f, size))


def _parse_header(path: str, data: bytes, header_len: int, magic: int, kind: str) -> np.ndarray:
    """Checks size and magic number; returns the header as int32 fields."""
    if len(data) < header_len:
        raise DataError(
            f"MNIST IDX file {path} is truncated: {len(data)} bytes, shorter than "
            f"the {header_len}-byte {kind} header."
        )
    header = np.frombuffer(data, dtype=">i4", count=header_len // 4)
    if header[0] != magic:
        raise DataError(
            f"MNIST IDX file {path} has bad magic number {int(header[0])} "
            f"(expected {magic} for {kind}); is it an MNIST {kind} file?"
        )
    if header[1] <= 0:
        raise DataError(f"MNIST IDX file {path} declares {int(header[1])} {kind}; expected at least 1.")
    return header


def _check_payload(path: str, actual: int, count: int, item_bytes: int, kind: str) -> None:
    """Raises unless the ``actual`` payload bytes hold exactly ``count`` items."""
    expected = count * item_bytes
    if actual < expected:
        raise DataError(
            f"MNIST IDX file {path} is truncated: header count says {count} {kind} "
            f"({expected} bytes) but only {actual} bytes follow."
        )
    if actual > expected:
        raise DataError(
            f"MNIST IDX file {path} has a wrong count: header says {count} {kind} "
            f"({expected} bytes) but {actual} bytes follow."
        )


def _parse_labels(path: str, data: bytes) -> np.ndarray:
    header = _parse_header(path, data, _LABELS_HEADER, _LABELS_MAGIC, "labels")
    count = int(header[1])
    _check_payload(path, len(data) - _LABELS_HEADER, count, 1, "labels")
    labels = np.frombuffer(data, dtype=np.uint8, offset=_LABELS_HEADER).astype(np.int32)
    _check_label_range(labels, path)
    return labels


def _check_label_range(labels: np.ndarray, source: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"MNIST labels in {source} out of range: label {int(labels[i])} at index {i} "
            f"({bad.size} bad in all; expected 0..{NUM_CLASSES - 1})."
        )


# --------------------------------------------------------------------------
# TFDS
# --------------------------------------------------------------------------


def load_tfds(
    data_dir: str | None = None, split: str = "train", *, download: bool = True,
    shard: Shard | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one MNIST split through TensorFlow Datasets.

    Reads a local TFDS copy first. Only if there is none and ``download`` is
    set does it let TFDS download and prepare MNIST.

    Args:
        data_dir: TFDS data dir; defaults to ``$TFDS_DATA_DIR``, then to
            TFDS's own default (``~/tensorflow_datasets``).
        split: "train" or "test".
        download: Whether a missing dataset may be downloaded.
        shard: ``(index, count)``: read only that part, the same examples as
            :func:`shard_range` (``tfds.even_splits`` with ``drop_remainder``).

    Returns:
        Images uint8 [N, 28, 28] and labels int32 [N].

    Raises:
        DataError: TF/TFDS are not installed, the dataset is missing and
            cannot be downloaded, or the local copy cannot be read.
    """
    _check_split(split)
    # TFDS reads TFDS_DATA_DIR only once, when it is imported; resolving it
    # here also honours a variable set later, and names the dir in messages.
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    where = data_dir or os.path.join("~", "tensorflow_datasets")
    _, tfds = _import_tf()
    if shard is not None:
        _check_shard(shard)
        tfds_split = tfds.even_splits(split, shard[1], drop_remainder=True)[shard[0]]
    else:
        tfds_split = split

    def read(allow_download: bool) -> tuple[np.ndarray, np.ndarray]:
        ds = tfds.load(
            "mnist",
            split=tfds_split,
            data_dir=data_dir,
            download=allow_download,
            as_supervised=True,
            shuffle_files=False,
        )
        # batch_size=-1 would be simpler but aborts the whole process with a
        # C++ std::length_error under tfds.testing.mock_data; batching works.
        batches = list(tfds.as_numpy(ds.batch(10_000)))
        if not batches:
            raise DataError(f"MNIST {split} split under {where} is empty.")
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return images, labels

    try:
        images, labels = read(allow_download=False)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - TFDS/TF raise many unrelated types.
        if not _is_not_found(e):
            raise DataError(
                f"MNIST TFDS copy under {where} could not be read ({_short(e)}). {_HINT}"
            ) from None
        if not download:
            reason = "download disabled"
        else:
            reason = _download_blocker()
            if reason is None:
                try:
                    images, labels = read(allow_download=True)
                except DataError:
                    raise
                except Exception as e2:  # noqa: BLE001 - network, disk, TFDS errors.
                    reason = _short(e2)
        if reason is not None:
            raise DataError(
                f"MNIST not found: no local TFDS copy under {where} and download "
                f"failed ({reason}). {_HINT}"
            ) from None
    return _normalise_tfds(images, labels, where)


def _import_tf() -> tuple[Any, Any]:
    """Imports TF and TFDS lazily, hiding all GPUs from TF first."""
    # Quiets TF's C++ start-up chatter; the user can still override it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TF 2.21 logs a oneDNN notice through absl's C++ logger regardless of the
    # level above; oneDNN's ops do not matter for reading MNIST records.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise DataError(
            f"Reading MNIST via TFDS needs tensorflow and tensorflow-datasets ({_short(e)}); "
            "or pass --data-dir FOLDER holding the four IDX .gz files."
        ) from None
    try:
        # TF would otherwise reserve the GPU memory that JAX needs; it only
        # feeds data here, so the CPU is enough.
        tf.config.set_visible_devices([], "GPU")
    except Exception:  # noqa: BLE001 - e.g. RuntimeError once TF is initialised.
        pass
    try:
        import tensorflow_datasets as tfds
        from absl import logging as absl_logging

        # TFDS warns about folders it probes; our own errors say what matters.
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError as e:
        raise DataError(
            f"Reading MNIST via TFDS needs tensorflow-datasets ({_short(e)}); "
            "or pass --data-dir FOLDER holding the four IDX .gz files."
        ) from None
    return tf, tfds


def _is_not_found(e: Exception) -> bool:
    """Tells whether a TFDS error means "no prepared copy in the data dir"."""
    # DatasetBuilder.as_dataset raises a bare AssertionError for this.
    return isinstance(e, AssertionError) or "could not find data" in str(e)


def _download_blocker() -> str | None:
    """Returns why a download cannot work, or None if it is worth trying."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # A proxy may work where a direct connection does not.
    try:
        socket.create_connection((_DOWNLOAD_HOST, 443), timeout=5).close()
    except OSError as e:
        return f"no network: cannot reach {_DOWNLOAD_HOST}: {_short(e)}"
    return None


def _normalise_tfds(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Matches load_idx's output: uint8 [N, 28, 28] and int32 [N]."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DataError(
            f"MNIST TFDS copy under {where} has unexpected images "
            f"{images.dtype}{list(images.shape)} (expected uint8 [N, 28, 28])."
        )
    if len(images) != len(labels):
        raise DataError(
            f"MNIST TFDS copy under {where} has {len(images)} images but {len(labels)} labels."
        )
    labels = labels.astype(np.int32)
    _check_label_range(labels, f"the TFDS copy under {where}")
    return np.ascontiguousarray(images), labels


# --------------------------------------------------------------------------
# Front door
# --------------------------------------------------------------------------


def load_mnist(
    data_dir: str | None = None, split: str = "train", download: bool = True,
    shard: Shard | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one MNIST split from an IDX folder or through TFDS.

    A ``data_dir`` holding any of the LeCun IDX files is read with
    :func:`load_idx`; anything else (including None) goes to :func:`load_tfds`.

    Args:
        data_dir: IDX folder or TFDS data dir; None means TFDS's default.
        split: "train" or "test".
        download: Whether TFDS may download a missing dataset.
        shard: ``(index, count)``: only that contiguous part of the split
            (:func:`shard_range`), read without holding the rest in memory;
            each process of a multi-process run reads its own.

    Returns:
        Images uint8 [N, 28, 28] and labels int32 [N].

    Raises:
        DataError: For any missing or malformed data.
    """
    _check_split(split)
    if data_dir is not None:
        data_dir = os.path.expanduser(data_dir)
        if not os.path.exists(data_dir):
            raise DataError(f"Data dir {data_dir} does not exist. {_HINT}")
        if not os.path.isdir(data_dir):
            raise DataError(f"Data dir {data_dir} is not a folder. {_HINT}")
        if _has_idx_files(data_dir):
            # Any IDX file marks an IDX folder, so a missing sibling gets a
            # precise "file missing" message instead of a TFDS one.
            return load_idx(data_dir, split, shard)
    return load_tfds(data_dir, split, download=download, shard=shard)


def _has_idx_files(folder: str) -> bool:
    for split in SPLITS:
        for name in idx_file_names(split):
            if os.path.isfile(os.path.join(folder, name)) or os.path.isfile(
                os.path.join(folder, name[: -len(".gz")])
            ):
                return True
    return False


def to_float(images: Any) -> Any:
    """Scales uint8 images to float32 in [-1, 1] with a channel axis.

    Works on numpy and JAX arrays alike (it only uses array methods).

    Args:
        images: uint8 array [..., 28, 28].

    Returns:
        float32 array [..., 28, 28, 1]; 0 maps to -1.0 and 255 to 1.0 exactly.
    """
    x = images[..., None].astype(np.float32)
    # Under jax.jit XLA turns "/ 255" into "* (1/255)", which maps 255 to
    # 1.0000001; the clip keeps the range (and both end values) exact.
    return ((x / 255.0 - 0.5) / 0.5).clip(-1.0, 1.0)


def _short(e: BaseException) -> str:
    """One-line, length-capped description of an exception."""
    text = " ".join(str(e).split()) or "no details"
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 3] + "..."
    return f"{type(e).__name__}: {text}"
