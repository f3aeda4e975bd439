"""Fixtures shared across test files."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.synthetic import block_digits, write_idx_arrays

# One persistent XLA compilation cache for the whole run: both pytest-xdist
# workers, the tests that call the library, and every train.py / sample.py
# they start share it, so a program (the train step at batch 10, sampling)
# compiles once per run, not once per process. Made by the first process to
# configure (the xdist controller), inherited by the workers through the
# environment, removed by that process at the end.
CACHE_ENV = "GAN_TEST_COMPILE_CACHE"


def pytest_configure(config):
    if not os.environ.get(CACHE_ENV):
        os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="cdcgan-test-xla-")
        config._cdcgan_cache_owner = True
    import jax  # noqa: PLC0415 - after the environment is set
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if getattr(config, "_cdcgan_cache_owner", False):
        shutil.rmtree(os.environ.pop(CACHE_ENV), ignore_errors=True)


@pytest.fixture
def data_dir(tmp_path):
    """An IDX folder of 60 synthetic training digits: 6 steps per epoch at
    batch 10. (A test file may define its own `data_dir`; that one wins.)"""
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx_arrays(folder, *block_digits(60))
    return str(folder)
