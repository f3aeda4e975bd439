"""Fixtures shared across test files."""

from __future__ import annotations

import pytest

from tests.synthetic import block_digits, write_idx_arrays


@pytest.fixture
def data_dir(tmp_path):
    """An IDX folder of 60 synthetic training digits: 6 steps per epoch at
    batch 10. (A test file may define its own `data_dir`; that one wins.)"""
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx_arrays(folder, *block_digits(60))
    return str(folder)
