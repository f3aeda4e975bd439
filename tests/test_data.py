"""Tests for gan.data: IDX parsing and validation, TFDS loading, to_float.

All data is made here (tiny IDX files, tfds mock data); no network, no
shared data folders.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gan import data
from gan.data import DataError, load_idx, load_mnist, to_float

from tests.synthetic import N, idx_bytes, write, write_idx


def expect_error(match_words, fn, *args, **kwargs) -> str:
    """Calls fn, requires a one-line DataError naming every word; returns it."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    for word in match_words:
        assert word.lower() in msg.lower(), f"{word!r} not in {msg!r}"
    return msg


IMAGES_GZ = "train-images-idx3-ubyte.gz"
LABELS_GZ = "train-labels-idx1-ubyte.gz"


# --------------------------------------------------------------------------
# IDX: good files
# --------------------------------------------------------------------------


def test_idx_round_trip_is_exact(tmp_path):
    want_images, want_labels = write_idx(tmp_path)
    images, labels = load_idx(str(tmp_path))
    assert images.dtype == np.uint8 and images.shape == (N, 28, 28)
    assert labels.dtype == np.int32 and labels.shape == (N,)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    images[0, 0, 0] = 1  # Callers may edit in place: the array is writable.


def test_idx_test_split_reads_t10k_files(tmp_path):
    write_idx(tmp_path, "train", n=N, seed=1)
    want_images, want_labels = write_idx(tmp_path, "test", n=3, seed=2)
    images, labels = load_idx(str(tmp_path), split="test")
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


def test_idx_uncompressed_files_are_used_without_gz(tmp_path):
    want_images, want_labels = write_idx(tmp_path, gz=False)
    images, labels = load_idx(str(tmp_path))
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_shards_are_equal_contiguous_parts(tmp_path, gz):
    # Big enough that shard 2's skipped bytes cross the 1 MiB read chunks.
    n = 3001
    want_images, want_labels = write_idx(tmp_path, n=n, gz=gz)
    parts = [load_idx(str(tmp_path), shard=(i, 3)) for i in range(3)]
    for i, (images, labels) in enumerate(parts):
        assert images.shape == (1000, 28, 28) and labels.shape == (1000,)
        np.testing.assert_array_equal(images, want_images[1000 * i:1000 * (i + 1)])
        np.testing.assert_array_equal(labels, want_labels[1000 * i:1000 * (i + 1)])
    assert data.shard_range(n, (2, 3)) == (2000, 3000)
    assert data.shard_range(n, None) == (0, n)


def test_idx_shard_still_checks_the_whole_file(tmp_path):
    write_idx(tmp_path)
    # Shard 0 of 2 lies in the part that is there; the missing tail is still seen.
    payload = np.zeros(N * 784 - 100, np.uint8).tobytes()
    write(tmp_path / IMAGES_GZ, idx_bytes(2051, (N, 28, 28), payload))
    expect_error(["truncated", IMAGES_GZ], load_idx, str(tmp_path), shard=(0, 2))
    write(tmp_path / IMAGES_GZ, idx_bytes(2051, (N, 28, 28), bytes((N + 1) * 784)))
    expect_error(["wrong count", IMAGES_GZ], load_idx, str(tmp_path), shard=(0, 2))


def test_idx_huge_header_count_is_a_data_error_not_a_memory_error(tmp_path):
    # A damaged count must not make the loader allocate what the header claims.
    write_idx(tmp_path)
    write(tmp_path / IMAGES_GZ, idx_bytes(2051, (2**31 - 1, 28, 28), bytes(N * 784)))
    expect_error(["truncated", "2147483647", IMAGES_GZ], load_idx, str(tmp_path))


def test_idx_gzip_damage_in_the_header_is_reported_as_gzip_damage(tmp_path):
    write_idx(tmp_path)
    path = tmp_path / IMAGES_GZ
    # As if a flipped byte turned the dims into 32x32: the IDX header looks wrong,
    # but the gzip CRC at the end of the stream says why.
    write(path, idx_bytes(2051, (N, 32, 32), bytes(N * 32 * 32)))
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the stored CRC32
    path.write_bytes(bytes(raw))
    expect_error(["corrupt gzip", IMAGES_GZ], load_idx, str(tmp_path))


def test_shard_index_out_of_range(tmp_path):
    write_idx(tmp_path)
    expect_error(["shard 2 of 2"], load_mnist, str(tmp_path), shard=(2, 2))


# --------------------------------------------------------------------------
# IDX: bad files
# --------------------------------------------------------------------------


def test_idx_missing_file(tmp_path):
    write_idx(tmp_path)
    os.remove(tmp_path / LABELS_GZ)
    expect_error(["missing", LABELS_GZ], load_idx, str(tmp_path))


def test_idx_missing_split(tmp_path):
    write_idx(tmp_path, "train")
    expect_error(["missing", "t10k-images-idx3-ubyte.gz"], load_idx, str(tmp_path), "test")


def test_idx_truncated_payload(tmp_path):
    write_idx(tmp_path)
    payload = np.zeros(N * 784 - 100, np.uint8).tobytes()
    write(tmp_path / IMAGES_GZ, idx_bytes(2051, (N, 28, 28), payload))
    expect_error(["truncated", IMAGES_GZ], load_idx, str(tmp_path))


def test_idx_truncated_header(tmp_path):
    write_idx(tmp_path)
    write(tmp_path / LABELS_GZ, b"\x00\x00\x08")
    expect_error(["truncated", "header", LABELS_GZ], load_idx, str(tmp_path))


def test_idx_truncated_gzip_stream(tmp_path):
    write_idx(tmp_path)
    path = tmp_path / IMAGES_GZ
    path.write_bytes(path.read_bytes()[:500])
    expect_error(["truncated", "gzip", IMAGES_GZ], load_idx, str(tmp_path))


def test_idx_corrupt_gzip(tmp_path):
    write_idx(tmp_path)
    (tmp_path / LABELS_GZ).write_bytes(b"this is not gzip data at all")
    expect_error(["corrupt gzip", LABELS_GZ], load_idx, str(tmp_path))


def test_idx_bad_magic(tmp_path):
    write_idx(tmp_path)
    # A labels header in the images file, as when the two files are swapped.
    write(tmp_path / IMAGES_GZ, idx_bytes(2049, (N, 28, 28), bytes(N * 784)))
    expect_error(["magic", "2049", "2051", IMAGES_GZ], load_idx, str(tmp_path))


def test_idx_wrong_dims(tmp_path):
    write_idx(tmp_path)
    write(tmp_path / IMAGES_GZ, idx_bytes(2051, (N, 32, 32), bytes(N * 32 * 32)))
    expect_error(["dims", "32x32", IMAGES_GZ], load_idx, str(tmp_path))


def test_idx_header_count_below_payload(tmp_path):
    write_idx(tmp_path)
    labels = bytes(N)
    write(tmp_path / LABELS_GZ, idx_bytes(2049, (N - 2,), labels))
    expect_error(["wrong count", LABELS_GZ], load_idx, str(tmp_path))


def test_idx_zero_count(tmp_path):
    write_idx(tmp_path)
    write(tmp_path / LABELS_GZ, idx_bytes(2049, (0,), b""))
    expect_error(["0 labels", LABELS_GZ], load_idx, str(tmp_path))


def test_idx_images_and_labels_differ_in_length(tmp_path):
    write_idx(tmp_path, n=N)
    write(tmp_path / LABELS_GZ, idx_bytes(2049, (N + 1,), bytes(N + 1)))
    expect_error(["mismatch", f"{N} images", f"{N + 1} labels"], load_idx, str(tmp_path))


def test_idx_label_out_of_range(tmp_path):
    write_idx(tmp_path)
    labels = np.array([0, 1, 2, 12, 3, 4, 5], np.uint8)
    write(tmp_path / LABELS_GZ, idx_bytes(2049, (N,), labels.tobytes()))
    expect_error(["out of range", "label 12", "index 3", LABELS_GZ], load_idx, str(tmp_path))


def test_unknown_split_is_a_data_error(tmp_path):
    write_idx(tmp_path)
    expect_error(["split", "validation"], load_idx, str(tmp_path), "validation")
    expect_error(["split"], load_mnist, str(tmp_path), "validation")


# --------------------------------------------------------------------------
# load_mnist dispatch
# --------------------------------------------------------------------------


def test_load_mnist_reads_an_idx_folder(tmp_path):
    want_images, want_labels = write_idx(tmp_path, "test", n=4, seed=3)
    images, labels = load_mnist(str(tmp_path), split="test", download=False)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


def test_load_mnist_idx_folder_missing_split_names_the_file(tmp_path):
    # Train files mark the folder as IDX, so the test split's absence is
    # reported as a missing file, not as a TFDS lookup failure.
    write_idx(tmp_path, "train")
    expect_error(["missing", "t10k-images-idx3-ubyte.gz"], load_mnist, str(tmp_path), "test")


def test_load_mnist_nonexistent_dir(tmp_path):
    expect_error(["does not exist", "nope"], load_mnist, str(tmp_path / "nope"))


def test_load_mnist_dir_is_a_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    expect_error(["not a folder"], load_mnist, str(path))


def test_importing_gan_data_does_not_import_tensorflow():
    code = "import sys, gan.data; sys.exit('tensorflow' in sys.modules)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60)
    assert result.returncode == 0


# --------------------------------------------------------------------------
# to_float
# --------------------------------------------------------------------------


def test_to_float_numpy():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    y = to_float(x)
    assert y.dtype == np.float32 and y.shape == (1, 16, 16, 1)
    assert y.min() == -1.0 and y.max() == 1.0
    flat = y.ravel()
    assert flat[0] == -1.0 and flat[255] == 1.0
    np.testing.assert_allclose(flat, (np.arange(256) / 255.0 - 0.5) / 0.5, atol=1e-6)


def test_to_float_jax_eager_and_jit():
    jax = pytest.importorskip("jax")
    x = jax.numpy.arange(256, dtype=jax.numpy.uint8).reshape(16, 16)
    want = to_float(np.arange(256, dtype=np.uint8).reshape(16, 16))
    for y in (to_float(x), jax.jit(to_float)(x)):
        assert y.dtype == jax.numpy.float32 and y.shape == (16, 16, 1)
        y = np.asarray(y)
        # Exact ends even under jit, where XLA multiplies by 1/255 instead.
        assert y[0, 0, 0] == -1.0 and y[15, 15, 0] == 1.0
        assert y.min() >= -1.0 and y.max() <= 1.0
        np.testing.assert_allclose(y, want, atol=1e-6)


# --------------------------------------------------------------------------
# TFDS (mocked; never touches the network)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds():
    import tensorflow_datasets  # a requirement; imported only for these tests
    return tensorflow_datasets


@pytest.mark.parametrize("split,n", [("train", 23), ("test", 5)])
def test_load_tfds_mocked(tfds, tmp_path, split, n):
    with tfds.testing.mock_data(num_examples=n):
        images, labels = data.load_tfds(str(tmp_path), split, download=False)
    assert images.dtype == np.uint8 and images.shape == (n, 28, 28)
    assert labels.dtype == np.int32 and labels.shape == (n,)
    assert labels.min() >= 0 and labels.max() <= 9


def test_load_tfds_shard_reads_an_even_split(tfds, tmp_path, monkeypatch):
    # tfds.testing.mock_data ignores split slicing, so check what is asked of
    # tfds.load: the same examples as shard_range (checked on the real MNIST copy
    # by hand: shard 1 of 3 is train rows 20,000..39,999).
    asked = []
    real_load = tfds.load

    def load(name, split, **kwargs):
        asked.append(split)
        return real_load(name, split="train", **kwargs)

    monkeypatch.setattr(tfds, "load", load)
    with tfds.testing.mock_data(num_examples=4):
        data.load_tfds(str(tmp_path), "train", download=False, shard=(1, 3))
    assert asked == [tfds.even_splits("train", 3, drop_remainder=True)[1]]


def test_load_mnist_without_idx_files_goes_to_tfds(tfds, tmp_path):
    with tfds.testing.mock_data(num_examples=3):
        images, labels = load_mnist(str(tmp_path), "train", download=False)
    assert images.shape == (3, 28, 28) and labels.shape == (3,)


def test_load_tfds_not_found_without_download(tfds, tmp_path):
    msg = expect_error(
        ["not found", str(tmp_path), "download disabled", "TFDS_DATA_DIR", "IDX"],
        data.load_tfds,
        str(tmp_path),
        download=False,
    )
    assert "`data_dir`" in msg             # the setting; the CLI shows --data-dir


def test_load_tfds_honours_tfds_data_dir_env(tfds, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "from-env"))
    expect_error(["from-env", "TFDS_DATA_DIR"], data.load_tfds, None, download=False)


def test_load_tfds_offline_download_fails_fast(tfds, tmp_path, monkeypatch):
    # Simulates an offline machine; the probe must stop TFDS from sitting
    # through minutes of HTTP retries.
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(data.socket, "create_connection", no_network)
    expect_error(
        ["not found", "download failed", "no network", "TFDS_DATA_DIR", "IDX"],
        data.load_tfds,
        str(tmp_path),
        download=True,
    )
